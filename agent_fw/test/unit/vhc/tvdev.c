/* tvdev.c - see tvdev.h. */
#define _GNU_SOURCE
#include "tvdev.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* testlib's counters are per translation unit: the harness counts its own
 * failures and every test asserts tc.harness_errors == 0. */
#define H_EQ(c, a, b)                                                                     \
    do {                                                                                  \
        long long h_a_ = (long long)(a), h_b_ = (long long)(b);                           \
        if (h_a_ != h_b_) {                                                               \
            (c)->harness_errors++;                                                        \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, \
                    #a, #b, h_a_, h_b_);                                                  \
        }                                                                                 \
    } while (0)

int tc_in_op;
int tc_ret_;
static tcore_t *g_core; /* callbacks carry no context but the xfer's */

static const uint8_t s_lang[] = {4, 3, 0x09, 0x04};
static const uint8_t s_manu[] = {10, 3, 'f', 0, 'l', 0, 'e', 0, 'e', 0};
static const uint8_t s_prod[] = {6, 3, 't', 0, 'v', 0};
static const uint8_t s_serial[] = {8, 3, '0', 0, '4', 0, '2', 0};

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static size_t add_intf(uint8_t *c, size_t off, uint8_t num, uint8_t alt, uint8_t neps,
                       uint8_t cls)
{
    uint8_t d[9] = {9, 4, num, alt, neps, cls, 0, 0, 0};
    memcpy(c + off, d, 9);
    return off + 9;
}

static size_t add_ep(uint8_t *c, size_t off, uint8_t addr, uint8_t type, uint16_t mps,
                     uint8_t interval)
{
    uint8_t d[7] = {7, 5, addr, type, 0, 0, interval};
    put16(d + 4, mps);
    memcpy(c + off, d, 7);
    return off + 7;
}

static int tv_control(vdev_t *dev, const vdev_setup_t *s, uint8_t *data)
{
    tvdev_t *t = (tvdev_t *)dev;
    t->ctrl_calls++;
    t->last_ctrl_req = s->bRequest;
    if ((s->bmRequestType & 0x60) != 0x40)
        return VDEV_STALL;
    switch (s->bRequest) {
    case 0x01: /* IN: pattern of wLength bytes */
        for (int i = 0; i < s->wLength; i++)
            data[i] = (uint8_t)(i ^ 0x5a);
        return s->wLength;
    case 0x02:
        if (t->ctrl_nak > 0) {
            t->ctrl_nak--;
            return VDEV_NAK;
        }
        return 0;
    case 0x03:
        return VDEV_STALL;
    case 0x04: /* babble: claims more than asked (writes nothing beyond) */
        return s->wLength + 5;
    case 0x05: /* OUT: remember data */
        memcpy(t->out_data, data, s->wLength);
        return 0;
    }
    return VDEV_STALL;
}

static int tv_out(vdev_t *dev, uint8_t ep, const uint8_t *data, size_t len)
{
    tvdev_t *t = (tvdev_t *)dev;
    if (t->stall_out) {
        t->stall_out = false;
        return VDEV_STALL;
    }
    if (t->nak_out > 0) {
        t->nak_out--;
        return VDEV_NAK;
    }
    if (ep == 0x05) {
        if (t->iso_out_count < 64)
            t->iso_out_lens[t->iso_out_count++] = (int)len;
        return 0;
    }
    if (ep != 0x01)
        return VDEV_STALL;
    if (t->out_count < TV_MAX_PKTS) {
        t->out_lens[t->out_count] = (int)len;
        t->out_ns[t->out_count] = dev->host->now_ns(dev->host->host_ctx);
        t->out_count++;
    }
    if (t->out_bytes + (int)len <= (int)sizeof t->out_data) {
        memcpy(t->out_data + t->out_bytes, data, len);
        t->out_bytes += (int)len;
    }
    if (t->loopback)
        tv_push_in(t, data, (int)len);
    return 0;
}

static int tv_in(vdev_t *dev, uint8_t ep, uint8_t *buf, size_t mps)
{
    tvdev_t *t = (tvdev_t *)dev;
    if (ep == 0x82 || ep == 0x83) {
        if (t->int_polls < 64)
            t->int_poll_ns[t->int_polls] = dev->host->now_ns(dev->host->host_ctx);
        t->int_polls++;
        if (t->int_reports == 0)
            return VDEV_NAK;
        t->int_reports--;
        memset(buf, 0xab, 8 < mps ? 8 : mps);
        return 8 < (int)mps ? 8 : (int)mps;
    }
    if (ep == 0x85) {
        /* every third frame the device has nothing to send */
        if (++t->iso_in_polls % 3 == 0)
            return VDEV_NAK;
        memset(buf, (uint8_t)t->iso_in_polls, mps);
        return (int)mps;
    }
    if (ep != 0x81)
        return VDEV_STALL;
    t->in_polls++;
    if (t->stall_in) {
        t->stall_in = false;
        return VDEV_STALL;
    }
    if (t->babble_in) {
        t->babble_in = false;
        memset(buf, 0xee, mps);
        return (int)mps + 1;
    }
    if (t->nak_in_forever || t->inq_head == t->inq_tail)
        return VDEV_NAK;
    int i = t->inq_head % TV_MAX_PKTS;
    int n = t->inq_len[i];
    if (n > (int)mps)
        n = (int)mps;
    memcpy(buf, t->inq[i], (size_t)n);
    t->inq_head++;
    return n;
}

static void tv_reset_ep(vdev_t *dev, uint8_t ep)
{
    tvdev_t *t = (tvdev_t *)dev;
    if (t->reset_calls < 64)
        t->reset_eps[t->reset_calls] = ep;
    t->reset_calls++;
}

static void tv_set_intf(vdev_t *dev, uint8_t intf, uint8_t alt)
{
    tvdev_t *t = (tvdev_t *)dev;
    t->set_intf_calls++;
    t->last_intf = intf;
    t->last_alt = alt;
}

static void tv_destroy(vdev_t *dev)
{
    tvdev_t *t = (tvdev_t *)dev;
    if (t->destroyed)
        (*t->destroyed)++;
    free(t);
}

static int tv_command(vdev_t *dev, const char *cmd, char *reply, size_t len)
{
    tvdev_t *t = (tvdev_t *)dev;
    if (strcmp(cmd, "report") == 0) {
        t->int_reports++;
        dev->host->wake(dev->host->host_ctx, dev, 0x82, 0);
        snprintf(reply, len, "queued");
        return 0;
    }
    snprintf(reply, len, "unknown command");
    return -1;
}

static const vdev_ops_t tv_ops = {
    .control = tv_control,
    .out_packet = tv_out,
    .in_packet = tv_in,
    .reset_endpoint = tv_reset_ep,
    .set_interface = tv_set_intf,
    .command = tv_command,
    .destroy = tv_destroy,
};

void tv_push_in(tvdev_t *t, const uint8_t *data, int len)
{
    int i = t->inq_tail % TV_MAX_PKTS;
    memcpy(t->inq[i], data, (size_t)len);
    t->inq_len[i] = len;
    t->inq_tail++;
    if (t->dev.host)
        t->dev.host->wake(t->dev.host->host_ctx, &t->dev, 0x81, 0);
}

tvdev_t *tv_create(const tv_opts_t *o, int *destroyed)
{
    tvdev_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    bool hs = o->speed == VDEV_SPEED_HIGH;
    t->bulk_mps = hs ? 512 : 64;
    t->loopback = true;
    t->destroyed = destroyed;
    uint8_t dd[18] = {18, 1, 0x00, 0x02, o->hub ? 9 : 0, 0, hs && o->hub ? 1 : 0, 64,
                      0x09, 0x12, 0x34, 0x12, 0x00, 0x01, 1, 2, 3, 1};
    memcpy(t->device_desc, dd, 18);
    uint8_t *c = t->config;
    size_t off = 9;
    if (o->hub) {
        off = add_intf(c, off, 0, 0, 1, 9);
        off = add_ep(c, off, 0x81, 3, 1, hs ? 12 : 255);
        c[4] = 1;
    } else {
        uint16_t bmps = o->bad_bulk_mps ? 100 : t->bulk_mps;
        off = add_intf(c, off, 0, 0, 3, 0xff);
        off = add_ep(c, off, 0x01, 2, bmps, 0);
        off = add_ep(c, off, 0x81, 2, t->bulk_mps, 0);
        off = add_ep(c, off, 0x82, 3, 8, hs ? 4 : 4); /* HS: 2^3 uframes = 1 ms; FS: 4 ms */
        off = add_intf(c, off, 0, 1, 2, 0xff);
        off = add_ep(c, off, 0x01, 2, t->bulk_mps, 0);
        off = add_ep(c, off, 0x81, 2, t->bulk_mps, 0);
        off = add_intf(c, off, 1, 0, 1, 0xff);
        off = add_ep(c, off, 0x83, 3, 8, hs ? 4 : 4);
        c[4] = o->bad_num_intf ? 3 : 2;
        if (o->iso) {
            off = add_intf(c, off, 2, 0, 2, 0xff);
            off = add_ep(c, off, 0x85, 1, 192, 1);
            off = add_ep(c, off, 0x05, 1, 192, 2);
            c[4] = 3;
        }
    }
    c[0] = 9;
    c[1] = 2;
    put16(c + 2, (uint16_t)(off + (o->bad_total_len ? 20 : 0)));
    c[5] = 1;
    c[6] = 0;
    c[7] = 0x80;
    c[8] = 50;
    t->strings[0] = s_lang;
    t->strings[1] = s_manu;
    t->strings[2] = s_prod;
    t->strings[3] = s_serial;
    t->dev.ops = &tv_ops;
    t->dev.speed = o->speed;
    t->dev.device_desc = t->device_desc;
    t->dev.config_desc = t->config;
    t->dev.strings = t->strings;
    t->dev.num_strings = 4;
    t->dev.is_hub = o->hub;
    t->dev.hub_ports = o->hub ? o->hub_ports : 0;
    snprintf(t->dev.model, sizeof t->dev.model, "%s", o->hub ? "hub" : "tv");
    return t;
}

tvdev_t *tv_simple(int *destroyed)
{
    tv_opts_t o = {.speed = VDEV_SPEED_FULL};
    return tv_create(&o, destroyed);
}

/* ---- pretend core ---- */

static void on_added(void *ctx, const uhp_dev_info_t *info)
{
    tcore_t *c = ctx;
    if (tc_in_op)
        c->cb_inside_op++;
    if (c->num_added < TC_MAX_DEVS)
        c->added[c->num_added++] = *info;
}

static void on_gone(void *ctx, uhp_dev_handle_t dev)
{
    tcore_t *c = ctx;
    if (tc_in_op)
        c->cb_inside_op++;
    if (c->num_gone < TC_MAX_DEVS)
        c->gone[c->num_gone++] = dev;
}

void tc_xfer_cb(uhp_xfer_t *x)
{
    tcore_t *c = g_core;
    if (tc_in_op)
        c->cb_inside_op++;
    for (int i = 0; i < c->num_gone; i++)
        if (c->gone[i] == x->dev)
            c->event_order_errors++;
    if (c->num_done < TC_MAX_DONE) {
        c->done[c->num_done] = x;
        c->done_status[c->num_done] = x->status;
        c->done_actual[c->num_done] = x->actual_num_bytes;
        c->num_done++;
    }
}

static void on_log(void *ctx, const char *line)
{
    tcore_t *c = ctx;
    snprintf(c->last_log, sizeof c->last_log, "%s", line);
    c->logs++;
}

void tc_init(tcore_t *c, vhc_t *v)
{
    memset(c, 0, sizeof *c);
    c->vhc = v;
    c->ops = vhc_uhp_ops();
    g_core = c;
    vhc_set_log(v, on_log, c);
    uhp_event_cbs_t cbs = {.dev_added = on_added, .dev_gone = on_gone};
    H_EQ(c, c->ops->install(v, &cbs, c), UHP_OK);
}

bool tc_pump_until(tcore_t *c, bool (*cond)(tcore_t *), int timeout_ms)
{
    struct pollfd pfd = {.fd = vhc_fd(c->vhc), .events = POLLIN};
    for (int waited = 0; waited <= timeout_ms;) {
        if (cond && cond(c))
            return true;
        int r = poll(&pfd, 1, 1);
        if (r > 0) {
            c->process_calls++;
            vhc_process(c->vhc);
        }
        else
            waited++;
    }
    return cond ? cond(c) : true;
}

static int want_done;
static bool done_reached(tcore_t *c)
{
    return c->num_done >= want_done;
}

bool tc_pump_done(tcore_t *c, int num_done, int timeout_ms)
{
    want_done = num_done;
    return tc_pump_until(c, done_reached, timeout_ms);
}

void tc_pump_idle(tcore_t *c, int ms)
{
    tc_pump_until(c, NULL, ms);
}

static int want_added;
static bool added_reached(tcore_t *c)
{
    return c->num_added >= want_added;
}

uhp_dev_handle_t tc_plug(tcore_t *c, const char *path, tvdev_t *t)
{
    char err[160];
    int rc = vhc_plug(c->vhc, path, &t->dev, err, sizeof err);
    H_EQ(c, rc, 0);
    if (rc != 0) {
        fprintf(stderr, "plug %s: %s\n", path, err);
        return NULL;
    }
    want_added = c->num_added + 1;
    if (!tc_pump_until(c, added_reached, 1000)) {
        H_EQ(c, c->num_added, want_added);
        return NULL;
    }
    return c->added[c->num_added - 1].handle;
}

uhp_xfer_t *tc_alloc(tcore_t *c, size_t size)
{
    uhp_xfer_t *x = NULL;
    H_EQ(c, c->ops->xfer_alloc(c->vhc, size, 0, &x), UHP_OK);
    return x;
}

int tc_submit(tcore_t *c, uhp_xfer_t *x, uhp_dev_handle_t dev, uint8_t ep, int n, uint32_t flags)
{
    x->dev = dev;
    x->ep_addr = ep;
    x->num_bytes = n;
    x->flags = flags;
    x->callback = tc_xfer_cb;
    return OP(c->ops->submit(c->vhc, x));
}

int tc_control(tcore_t *c, uhp_xfer_t *x, uhp_dev_handle_t dev, uint8_t bm, uint8_t req,
               uint16_t val, uint16_t idx, uint16_t len)
{
    uint8_t *s = x->data;
    s[0] = bm;
    s[1] = req;
    put16(s + 2, val);
    put16(s + 4, idx);
    put16(s + 6, len);
    x->dev = dev;
    x->ep_addr = 0;
    x->num_bytes = 8 + len;
    x->flags = 0;
    x->callback = tc_xfer_cb;
    return OP(c->ops->submit_control(c->vhc, x));
}

int tc_done_index(const tcore_t *c, const uhp_xfer_t *x)
{
    for (int i = 0; i < c->num_done; i++)
        if (c->done[i] == x)
            return i;
    return -1;
}
