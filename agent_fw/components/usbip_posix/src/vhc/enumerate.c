/*
 * enumerate.c - reading and distrusting a new device's descriptors.
 *
 * The device is a stranger: every length, count and max packet size is
 * checked before the core ever sees it, the way a USB/IP box facing hostile
 * hardware must (esp-usb 1.4.0 fixed an out-of-bounds read in exactly this
 * spot). A device that fails is refused with one log line naming the fault;
 * it stays plugged (its port is occupied) but is never reported.
 */
#include <stdlib.h>
#include <string.h>

#include "vhc_internal.h"

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

int vhc_ep_key(uint8_t ep_addr)
{
    return (ep_addr & 0x0f) | ((ep_addr & 0x80) ? 0x10 : 0);
}

static bool mps0_ok(vdev_speed_t s, uint8_t mps0)
{
    switch (s) {
    case VDEV_SPEED_LOW:
        return mps0 == 8;
    case VDEV_SPEED_FULL:
        return mps0 == 8 || mps0 == 16 || mps0 == 32 || mps0 == 64;
    case VDEV_SPEED_HIGH:
        return mps0 == 64;
    }
    return false;
}

/* USB 2.0 5.5.3, 5.6.3, 5.7.3, 5.8.3: legal wMaxPacketSize per type/speed. */
static const char *ep_check(vdev_speed_t s, const uint8_t *ep)
{
    uint8_t addr = ep[2], type = ep[3] & 3, interval = ep[6];
    uint16_t w = rd16(ep + 4), mps = w & 0x7ff, extra = (w >> 11) & 3;
    if ((addr & 0x0f) == 0 || (addr & 0x70))
        return "endpoint address is 0 or has reserved bits";
    if (w & 0xe000)
        return "wMaxPacketSize has reserved bits set";
    if (extra && !(s == VDEV_SPEED_HIGH && (type == VHC_EP_ISO || type == VHC_EP_INTERRUPT)))
        return "additional transactions are only legal on High-Speed periodic endpoints";
    if (extra == 3)
        return "wMaxPacketSize bits 12:11 = 3 is reserved";
    switch (type) {
    case VHC_EP_CONTROL:
        return "control endpoints other than EP0 are not supported";
    case VHC_EP_BULK:
        if (s == VDEV_SPEED_LOW)
            return "Low-Speed devices cannot have bulk endpoints";
        if (s == VDEV_SPEED_HIGH ? mps != 512
                                 : !(mps == 8 || mps == 16 || mps == 32 || mps == 64))
            return "bulk max packet size illegal for the device speed";
        return NULL;
    case VHC_EP_INTERRUPT:
        if (mps == 0 || mps > (s == VDEV_SPEED_LOW ? 8 : s == VDEV_SPEED_FULL ? 64 : 1024))
            return "interrupt max packet size illegal for the device speed";
        if (interval == 0 || (s == VDEV_SPEED_HIGH && interval > 16))
            return "interrupt bInterval out of range";
        return NULL;
    case VHC_EP_ISO:
        if (s == VDEV_SPEED_LOW)
            return "Low-Speed devices cannot have isochronous endpoints";
        if (mps > (s == VDEV_SPEED_FULL ? 1023 : 1024))
            return "isochronous max packet size illegal for the device speed";
        if (interval == 0 || interval > 16)
            return "isochronous bInterval out of range";
        return NULL;
    }
    return "bad endpoint type";
}

static int validate_config(const vhc_dev_t *d, const uint8_t *c, char *err, size_t len)
{
    vdev_speed_t s = d->vdev->speed;
    if (c[0] != 9 || c[1] != 2) {
        vhc_seterr(err, len, "configuration descriptor header is not bLength 9 / type 2");
        return -1;
    }
    uint16_t total = rd16(c + 2);
    if (total < 9 || total > VHC_MAX_CONFIG_LEN) {
        vhc_seterr(err, len, "wTotalLength %u outside 9..%d", total, VHC_MAX_CONFIG_LEN);
        return -1;
    }
    uint8_t num_intf = c[4];
    if (num_intf == 0 || num_intf > VHC_MAX_INTF) {
        vhc_seterr(err, len, "bNumInterfaces %u outside 1..%d", num_intf, VHC_MAX_INTF);
        return -1;
    }
    bool seen_alt0[VHC_MAX_INTF] = {false};
    bool seen_ep[VHC_EP_KEYS];
    int eps_expected = 0, eps_found = 0;
    const uint8_t *cur_intf = NULL;
    for (size_t off = 9; off < total;) {
        const uint8_t *p = c + off;
        if (total - off < 2 || p[0] < 2 || p[0] > total - off) {
            vhc_seterr(err, len, "descriptor at offset %zu has bLength %u beyond wTotalLength %u",
                       off, total - off >= 1 ? p[0] : 0, total);
            return -1;
        }
        if (p[1] == 4) { /* interface */
            if (p[0] < 9) {
                vhc_seterr(err, len, "interface descriptor at offset %zu is %u bytes", off, p[0]);
                return -1;
            }
            if (cur_intf && eps_found != eps_expected) {
                vhc_seterr(err, len, "interface %u alt %u declares %d endpoints, has %d",
                           cur_intf[2], cur_intf[3], eps_expected, eps_found);
                return -1;
            }
            if (p[2] >= num_intf) {
                vhc_seterr(err, len, "interface number %u >= bNumInterfaces %u", p[2], num_intf);
                return -1;
            }
            if (p[3] == 0) {
                if (seen_alt0[p[2]]) {
                    vhc_seterr(err, len, "interface %u alt 0 appears twice", p[2]);
                    return -1;
                }
                seen_alt0[p[2]] = true;
            }
            cur_intf = p;
            eps_expected = p[4];
            eps_found = 0;
            memset(seen_ep, 0, sizeof seen_ep);
        } else if (p[1] == 5) { /* endpoint */
            if (p[0] < 7) {
                vhc_seterr(err, len, "endpoint descriptor at offset %zu is %u bytes", off, p[0]);
                return -1;
            }
            if (!cur_intf) {
                vhc_seterr(err, len, "endpoint 0x%02x outside any interface", p[2]);
                return -1;
            }
            const char *why = ep_check(s, p);
            if (why) {
                vhc_seterr(err, len, "endpoint 0x%02x: %s", p[2], why);
                return -1;
            }
            int key = vhc_ep_key(p[2]);
            if (seen_ep[key]) {
                vhc_seterr(err, len, "endpoint 0x%02x listed twice in interface %u alt %u", p[2],
                           cur_intf[2], cur_intf[3]);
                return -1;
            }
            seen_ep[key] = true;
            eps_found++;
        }
        off += p[0];
    }
    if (cur_intf && eps_found != eps_expected) {
        vhc_seterr(err, len, "interface %u alt %u declares %d endpoints, has %d", cur_intf[2],
                   cur_intf[3], eps_expected, eps_found);
        return -1;
    }
    for (int i = 0; i < num_intf; i++) {
        if (!seen_alt0[i]) {
            vhc_seterr(err, len, "bNumInterfaces is %u but interface %d has no alternate setting 0",
                       num_intf, i);
            return -1;
        }
    }
    return 0;
}

int vhc_validate_device(const vhc_t *v, const vhc_dev_t *d, char *err, size_t len)
{
    const uint8_t *dd = d->vdev->device_desc;
    (void)v;
    if (dd[0] != 18 || dd[1] != 1) {
        vhc_seterr(err, len, "device descriptor is not bLength 18 / type 1");
        return -1;
    }
    if (!mps0_ok(d->vdev->speed, dd[7])) {
        vhc_seterr(err, len, "bMaxPacketSize0 %u illegal at %s-Speed", dd[7],
                   d->vdev->speed == VDEV_SPEED_HIGH  ? "High"
                   : d->vdev->speed == VDEV_SPEED_FULL ? "Full"
                                                       : "Low");
        return -1;
    }
    if (dd[17] < 1) {
        vhc_seterr(err, len, "bNumConfigurations is 0");
        return -1;
    }
    if (validate_config(d, d->vdev->config_desc, err, len) != 0)
        return -1;
    if (d->is_hub) {
        /* A hub needs its status-change interrupt IN endpoint (2nd channel). */
        vhc_alt_t alt;
        bool has_int = false;
        vhc_dev_t tmp = *d;
        tmp.config = (uint8_t *)d->vdev->config_desc;
        tmp.config_len = rd16(d->vdev->config_desc + 2);
        if (vhc_find_alt(&tmp, 0, 0, &alt))
            for (int i = 0; i < alt.num_ep; i++)
                if ((alt.ep[i][3] & 3) == VHC_EP_INTERRUPT && (alt.ep[i][2] & 0x80))
                    has_int = true;
        if (dd[4] != 9 || !has_int) {
            vhc_seterr(err, len, "hub without bDeviceClass 9 and an interrupt IN endpoint");
            return -1;
        }
    }
    return 0;
}

bool vhc_find_alt(const vhc_dev_t *d, uint8_t intf, uint8_t alt, vhc_alt_t *out)
{
    const uint8_t *c = d->config;
    size_t total = d->config_len;
    bool in = false;
    memset(out, 0, sizeof *out);
    for (size_t off = 9; off + 2 <= total && c[off] >= 2; off += c[off]) {
        const uint8_t *p = c + off;
        if (p[1] == 4) {
            if (in)
                return true;
            in = p[2] == intf && p[3] == alt;
            if (in) {
                out->intf = intf;
                out->alt = alt;
                out->intf_desc = p;
            }
        } else if (p[1] == 5 && in && out->num_ep < VHC_EP_KEYS) {
            out->ep[out->num_ep++] = p;
        }
    }
    return in;
}

void vhc_pipe_from_desc(vhc_pipe_t *p, const vhc_dev_t *d, const uint8_t *ep, uint8_t intf)
{
    uint16_t w = rd16(ep + 4);
    memset(p, 0, sizeof *p);
    p->in_use = true;
    p->ep_addr = ep[2];
    p->type = ep[3] & 3;
    p->mps = w & 0x7ff;
    p->mult = (uint8_t)(1 + ((w >> 11) & 3));
    p->intf = intf;
    uint8_t bi = ep[6];
    bool hs = d->vdev && d->vdev->speed == VDEV_SPEED_HIGH;
    if (p->type == VHC_EP_ISO || (p->type == VHC_EP_INTERRUPT && hs))
        p->interval_frames = 1u << (bi - 1); /* 2^(bInterval-1) (micro)frames */
    else if (p->type == VHC_EP_INTERRUPT)
        p->interval_frames = bi;              /* FS/LS: frames */
    else
        p->interval_frames = 0;
}

static uint8_t alloc_addr(vhc_t *v)
{
    for (int tries = 0; tries < 127; tries++) {
        uint8_t a = v->next_addr;
        v->next_addr = (uint8_t)(a >= 127 ? 1 : a + 1);
        bool used = false;
        for (vhc_dev_t *d = v->devs; d; d = d->next_all)
            if (d->addr == a)
                used = true;
        if (!used)
            return a;
    }
    return 0;
}

static void cache_string(vhc_dev_t *d, int slot, uint8_t index)
{
    const vdev_t *dev = d->vdev;
    if (index == 0 || index >= dev->num_strings || !dev->strings || !dev->strings[index])
        return;
    const uint8_t *s = dev->strings[index];
    if (s[0] < 2 || (s[0] & 1) || s[1] != 3) {
        vhc_log(d->vhc, "%s: string descriptor %u malformed, not cached", d->path, index);
        return;
    }
    d->str[slot] = malloc(s[0]);
    if (d->str[slot])
        memcpy(d->str[slot], s, s[0]);
}

static void refuse(vhc_t *v, vhc_dev_t *d, const char *why)
{
    v->stats.enum_refusals++;
    d->state = VHC_DEV_REFUSED;
    vhc_log(v, "%s: %s device refused: %s", d->path, d->vdev->model, why);
}

static void enumerate(vhc_t *v, vhc_dev_t *d)
{
    char why[200];
    const vhc_dev_t *hub = d->parent;
    if (hub && hub->state != VHC_DEV_CONFIGURED) {
        /* Parent hub not working (yet): nothing to talk through. Try again
         * once it is configured, or never if it was refused. */
        if (hub->state == VHC_DEV_REFUSED)
            refuse(v, d, "parent hub was refused");
        else if (d->enum_due_ns < hub->enum_due_ns)
            d->enum_due_ns = hub->enum_due_ns; /* don't re-arm the timer before the hub is due */
        return;
    }
    if (hub && hub->vdev->speed == VDEV_SPEED_HIGH && d->vdev->speed != VDEV_SPEED_HIGH) {
        refuse(v, d, "Full/Low-Speed device behind a High-Speed hub needs a transaction "
                     "translator, which ESP-IDF does not support");
        return;
    }
    if (vhc_validate_device(v, d, why, sizeof why) != 0) {
        refuse(v, d, why);
        return;
    }
    uint8_t addr = alloc_addr(v);
    if (!addr) {
        refuse(v, d, "all 127 addresses in use");
        return;
    }
    if (vhc_take_channels(v, d, d->is_hub ? 2 : 1, d->is_hub ? "hub (EP0 + interrupt IN)" : "EP0") !=
        0) {
        refuse(v, d, "no free host channel");
        return;
    }
    const uint8_t *cd = d->vdev->config_desc;
    d->config_len = rd16(cd + 2);
    d->config = malloc(d->config_len);
    if (!d->config) {
        vhc_return_channels(v, d, d->channels);
        refuse(v, d, "out of memory");
        return;
    }
    memcpy(d->config, cd, d->config_len);
    memcpy(d->dev_desc, d->vdev->device_desc, 18);
    d->addr = addr;
    const uint8_t *dd = d->dev_desc;
    cache_string(d, 0, dd[14]);
    cache_string(d, 1, dd[15]);
    cache_string(d, 2, dd[16]);
    memset(&d->ep0, 0, sizeof d->ep0);
    d->ep0.in_use = true;
    d->ep0.type = VHC_EP_CONTROL;
    d->ep0.mps = dd[7];
    d->ep0.mult = 1;
    vhc_reset_device_side(d);
    if (d->vdev->ops->reset_endpoint)
        d->vdev->ops->reset_endpoint(d->vdev, 0xff);
    d->state = VHC_DEV_CONFIGURED;
    d->report_pending = !d->is_hub;
}

void vhc_enumerate_due(vhc_t *v, uint64_t now)
{
    /* Hubs come before their children in the list (plug order), so a whole
     * chain plugged at once enumerates in one pass. */
    for (vhc_dev_t *d = v->devs; d; d = d->next_all)
        if (d->state == VHC_DEV_PENDING && d->enum_due_ns <= now)
            enumerate(v, d);
}
