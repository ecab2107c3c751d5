/*
 * test_host.c - see test_host.h.
 */
#include "test_host.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void th_wake(void *ctx, vdev_t *dev, uint8_t ep, uint64_t delay_ns)
{
    th_host_t *h = ctx;
    (void)dev;
    h->wakes++;
    h->last_wake_ep = ep;
    h->last_wake_delay_ns = delay_ns;
}

static uint64_t th_now(void *ctx)
{
    return ((th_host_t *)ctx)->now_ns;
}

vdev_t *th_create(const char *spec_text)
{
    vdev_spec_t spec;
    char err[256];
    if (vdev_spec_parse(spec_text, &spec, err, sizeof err) != 0) {
        fprintf(stderr, "th_create(%s): parse: %s\n", spec_text, err);
        exit(2);
    }
    vdev_t *dev = vdev_create(&spec, err, sizeof err);
    if (!dev) {
        fprintf(stderr, "th_create(%s): create: %s\n", spec_text, err);
        exit(2);
    }
    return dev;
}

const char *th_create_error(const char *spec_text)
{
    static char err[256];
    vdev_spec_t spec;
    err[0] = '\0';
    if (vdev_spec_parse(spec_text, &spec, err, sizeof err) != 0)
        return err;
    vdev_t *dev = vdev_create(&spec, err, sizeof err);
    if (dev) {
        dev->ops->destroy(dev);
        return "(created)";
    }
    return err;
}

void th_attach(th_host_t *h, vdev_t *dev)
{
    memset(h, 0, sizeof *h);
    h->host.wake = th_wake;
    h->host.now_ns = th_now;
    h->host.host_ctx = h;
    dev->host = &h->host;
}

void th_destroy(vdev_t *dev)
{
    dev->ops->destroy(dev);
}

int th_control(vdev_t *dev, uint8_t bm_request_type, uint8_t b_request, uint16_t w_value,
               uint16_t w_index, uint16_t w_length, uint8_t *data)
{
    vdev_setup_t s = {bm_request_type, b_request, w_value, w_index, w_length};
    return dev->ops->control(dev, &s, data);
}

th_xfer_t th_out(vdev_t *dev, uint8_t ep, uint16_t mps, const uint8_t *data, size_t len, bool zlp)
{
    th_xfer_t x = {TH_OK, 0, 0};
    do {
        size_t n = len - x.actual < mps ? len - x.actual : mps;
        int r = dev->ops->out_packet(dev, ep, data ? data + x.actual : NULL, n);
        if (r < 0) {
            x.status = r;
            return x;
        }
        x.actual += n;
        x.packets++;
        if (n < mps)
            return x; /* a short packet (or the ZLP) ended it */
    } while (x.actual < len);
    if (zlp) {
        int r = dev->ops->out_packet(dev, ep, NULL, 0);
        if (r < 0)
            x.status = r;
        else
            x.packets++;
    }
    return x;
}

th_xfer_t th_in(vdev_t *dev, uint8_t ep, uint16_t mps, uint8_t *buf, size_t len)
{
    th_xfer_t x = {TH_OK, 0, 0};
    uint8_t pkt[1024];
    while (x.actual < len) {
        int r = dev->ops->in_packet(dev, ep, pkt, mps);
        if (r < 0) {
            x.status = r;
            return x;
        }
        x.packets++;
        if ((size_t)r > mps || (size_t)r > len - x.actual) {
            x.status = TH_OVERFLOW;
            return x;
        }
        memcpy(buf + x.actual, pkt, (size_t)r);
        x.actual += (size_t)r;
        if ((size_t)r < mps)
            break;
    }
    return x;
}

void th_clear_halt(vdev_t *dev, uint8_t ep)
{
    if (dev->ops->reset_endpoint)
        dev->ops->reset_endpoint(dev, ep);
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

const char *th_check_config(const uint8_t *cfg, vdev_speed_t speed, uint8_t expect_type,
                            th_config_t *out)
{
    static char why[160];
    memset(out, 0, sizeof *out);
    if (cfg[0] != 9 || cfg[1] != expect_type)
        return "configuration header has the wrong bLength or type";
    size_t total = get16(cfg + 2), off = 9;
    int seen_intf[16] = {0};
    int eps_left = 0;
    while (off < total) {
        uint8_t bl = cfg[off], type = cfg[off + 1];
        if (bl < 2 || off + bl > total) {
            snprintf(why, sizeof why, "descriptor at %zu has bLength %u overrunning wTotalLength %zu",
                     off, bl, total);
            return why;
        }
        const uint8_t *d = cfg + off;
        if (type == 0x04) {
            if (eps_left != 0)
                return "an interface announced more endpoints than it has";
            if (bl != 9)
                return "interface bLength != 9";
            if (d[2] < 16 && !seen_intf[d[2]]) {
                seen_intf[d[2]] = 1;
                if (out->num_interfaces < 4)
                    memcpy(out->intf_class[out->num_interfaces], d + 5, 3);
                out->num_interfaces++;
            }
            eps_left = d[4];
        } else if (type == 0x05) {
            if (bl != 7)
                return "endpoint bLength != 7";
            if (eps_left-- <= 0)
                return "endpoint outside an interface's bNumEndpoints";
            th_ep_t e = {d[2], d[3], d[6], get16(d + 4)};
            uint8_t kind = e.attributes & 3;
            if (kind == 2 && e.mps != (speed == VDEV_SPEED_HIGH ? 512 : 64)) {
                snprintf(why, sizeof why, "bulk endpoint 0x%02x has MPS %u at %s", e.address,
                         e.mps, speed == VDEV_SPEED_HIGH ? "high speed" : "full speed");
                return why;
            }
            if (kind == 3 && (e.interval == 0 || (speed == VDEV_SPEED_HIGH && e.interval > 16)))
                return "interrupt endpoint with an illegal bInterval";
            if (kind == 3 && speed == VDEV_SPEED_LOW && e.mps > 8)
                return "low-speed interrupt endpoint with MPS > 8";
            if (out->num_endpoints < 8)
                out->ep[out->num_endpoints++] = e;
        } else if (type == 0x0b) {
            if (bl != 8)
                return "IAD bLength != 8";
            out->num_iads++;
        } else {
            out->class_descs++;
        }
        off += bl;
    }
    if (eps_left != 0)
        return "last interface announced more endpoints than it has";
    if (cfg[4] != out->num_interfaces) {
        snprintf(why, sizeof why, "bNumInterfaces %u but %d interfaces present", cfg[4],
                 out->num_interfaces);
        return why;
    }
    return NULL;
}

const char *th_string(vdev_t *dev, uint8_t index, char *buf, size_t len)
{
    uint8_t d[256];
    buf[0] = '\0';
    int r = th_control(dev, 0x80, 0x06, (uint16_t)(0x0300 | index), 0x0409, 255, d);
    if (r < 2 || d[0] != r || d[1] != 0x03)
        return buf;
    size_t n = 0;
    for (int i = 2; i + 1 < r && n + 1 < len; i += 2)
        buf[n++] = (char)d[i];
    buf[n] = '\0';
    return buf;
}

void th_fill(uint8_t *buf, size_t len, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (uint8_t)x;
    }
}

uint32_t th_crc32(const uint8_t *buf, size_t len, uint32_t crc)
{
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc ^= buf[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static void put32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void th_cbw(uint8_t cbw[31], uint32_t tag, uint32_t host_len, bool dir_in, const uint8_t *cdb,
            uint8_t cdb_len)
{
    memset(cbw, 0, 31);
    put32le(cbw, 0x43425355u);
    put32le(cbw + 4, tag);
    put32le(cbw + 8, host_len);
    cbw[12] = dir_in ? 0x80 : 0x00;
    cbw[13] = 0;
    cbw[14] = cdb_len;
    memcpy(cbw + 15, cdb, cdb_len);
}

th_bot_t th_bot(vdev_t *dev, uint16_t mps, const uint8_t *cdb, uint8_t cdb_len, bool dir_in,
                uint32_t host_len, uint8_t *data)
{
    static uint32_t tag = 0x1000;
    th_bot_t r;
    memset(&r, 0, sizeof r);
    uint8_t cbw[31], csw[512];
    th_cbw(cbw, ++tag, host_len, dir_in, cdb, cdb_len);
    th_xfer_t x = th_out(dev, 0x01, mps, cbw, sizeof cbw, false);
    r.cbw_ok = x.status == TH_OK && x.actual == 31;
    if (host_len > 0) {
        r.data = dir_in ? th_in(dev, 0x81, mps, data, host_len)
                        : th_out(dev, 0x01, mps, data, host_len, false);
        if (r.data.status == VDEV_STALL) {
            r.data_stalled = true;
            th_clear_halt(dev, dir_in ? 0x81 : 0x01);
        }
    }
    x = th_in(dev, 0x81, mps, csw, mps);
    if (x.status == VDEV_STALL) {
        th_clear_halt(dev, 0x81);
        x = th_in(dev, 0x81, mps, csw, mps);
        r.csw_stalled = x.status == VDEV_STALL;
    }
    r.csw_ok = x.status == TH_OK && x.actual == 13 && get32le(csw) == 0x53425355u &&
               get32le(csw + 4) == tag;
    r.residue = get32le(csw + 8);
    r.status = csw[12];
    return r;
}
