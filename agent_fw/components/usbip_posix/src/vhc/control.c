/*
 * control.c - EP0: SETUP / DATA / STATUS, and the standard requests the host
 * answers from its own state.
 *
 * Requests about things the host tracks (descriptors it cached, the active
 * configuration, alternate settings, endpoint halt and toggles) are answered
 * here so host and device state cannot drift; the device model sees the side
 * effects through set_interface / reset_endpoint. Everything else goes to
 * the model's control(). A control transfer cannot be cancelled: it ends
 * when the device answers (or is unplugged).
 */
#include <string.h>

#include "vhc_internal.h"

enum {
    REQ_GET_STATUS = 0,
    REQ_CLEAR_FEATURE = 1,
    REQ_SET_FEATURE = 3,
    REQ_SET_ADDRESS = 5,
    REQ_GET_DESCRIPTOR = 6,
    REQ_GET_CONFIGURATION = 8,
    REQ_SET_CONFIGURATION = 9,
    REQ_GET_INTERFACE = 10,
    REQ_SET_INTERFACE = 11,
};
#define FEATURE_ENDPOINT_HALT 0
#define HANDLED_NOT 1000 /* not ours: ask the device */

void vhc_reset_device_side(vhc_dev_t *d)
{
    memset(d->cur_alt, 0, sizeof d->cur_alt);
    memset(d->dev_toggle, 0, sizeof d->dev_toggle);
    memset(d->dev_halted, 0, sizeof d->dev_halted);
}

static int reply(uint8_t *data, uint16_t wlen, const void *src, size_t n)
{
    if (n > wlen)
        n = wlen;
    memcpy(data, src, n);
    return (int)n;
}

/* Does the active configuration (any current alt) have this endpoint? */
static bool ep_exists(const vhc_dev_t *d, uint8_t ep)
{
    for (int i = 0; i < d->config[4] && i < VHC_MAX_INTF; i++) {
        vhc_alt_t a;
        if (vhc_find_alt(d, (uint8_t)i, d->cur_alt[i], &a))
            for (int k = 0; k < a.num_ep; k++)
                if (a.ep[k][2] == ep)
                    return true;
    }
    return false;
}

static void reset_ep_both_sides(vhc_dev_t *d, uint8_t ep)
{
    int key = vhc_ep_key(ep);
    d->dev_toggle[key] = 0;
    d->dev_halted[key] = false;
    if (d->pipes[key].in_use)
        d->pipes[key].toggle = 0;
    if (d->vdev->ops->reset_endpoint)
        d->vdev->ops->reset_endpoint(d->vdev, ep);
}

static int std_request(vhc_t *v, vhc_dev_t *d, const vdev_setup_t *s, uint8_t *data)
{
    uint8_t recip = s->bmRequestType & 0x1f;
    bool in = s->bmRequestType & 0x80;
    switch (s->bRequest) {
    case REQ_GET_DESCRIPTOR: {
        if (!in || recip != 0)
            return HANDLED_NOT;
        uint8_t type = (uint8_t)(s->wValue >> 8), idx = (uint8_t)s->wValue;
        if (type == 1)
            return reply(data, s->wLength, d->dev_desc, 18);
        if (type == 2)
            return idx == 0 ? reply(data, s->wLength, d->config, d->config_len) : VDEV_STALL;
        if (type == 3) {
            const vdev_t *dev = d->vdev;
            if (idx >= dev->num_strings || !dev->strings || !dev->strings[idx])
                return VDEV_STALL;
            return reply(data, s->wLength, dev->strings[idx], dev->strings[idx][0]);
        }
        return HANDLED_NOT; /* qualifier, other-speed, BOS, class descriptors */
    }
    case REQ_SET_ADDRESS:
        vhc_log(v, "%s: SET_ADDRESS from the core refused: the host owns addresses", d->path);
        return VDEV_STALL;
    case REQ_GET_CONFIGURATION:
        if (!in || recip != 0)
            return HANDLED_NOT;
        return reply(data, s->wLength, &d->config[5], 1);
    case REQ_SET_CONFIGURATION:
        if (in || recip != 0)
            return HANDLED_NOT;
        if (s->wValue != d->config[5]) {
            vhc_log(v, "%s: SET_CONFIGURATION %u refused: only configuration %u is supported "
                       "(ESP-IDF cannot change configuration)", d->path, s->wValue, d->config[5]);
            return VDEV_STALL;
        }
        /* Re-selecting the configuration resets every endpoint on both sides. */
        vhc_reset_device_side(d);
        for (int k = 0; k < VHC_EP_KEYS; k++)
            d->pipes[k].toggle = 0;
        if (d->vdev->ops->reset_endpoint)
            d->vdev->ops->reset_endpoint(d->vdev, 0xff);
        return 0;
    case REQ_GET_INTERFACE: {
        vhc_alt_t a;
        if (!in || recip != 1)
            return HANDLED_NOT;
        if (s->wIndex >= VHC_MAX_INTF || !vhc_find_alt(d, (uint8_t)s->wIndex, 0, &a))
            return VDEV_STALL;
        return reply(data, s->wLength, &d->cur_alt[s->wIndex], 1);
    }
    case REQ_SET_INTERFACE: {
        vhc_alt_t old, nw;
        if (in || recip != 1)
            return HANDLED_NOT;
        uint8_t intf = (uint8_t)s->wIndex, alt = (uint8_t)s->wValue;
        if (s->wIndex >= VHC_MAX_INTF || s->wValue > 255 ||
            !vhc_find_alt(d, intf, alt, &nw)) {
            vhc_log(v, "%s: SET_INTERFACE %u alt %u: no such alternate setting", d->path,
                    s->wIndex, s->wValue);
            return VDEV_STALL;
        }
        vhc_find_alt(d, intf, d->cur_alt[intf], &old);
        d->cur_alt[intf] = alt;
        if (d->vdev->ops->set_interface)
            d->vdev->ops->set_interface(d->vdev, intf, alt);
        for (int k = 0; k < old.num_ep; k++)
            reset_ep_both_sides(d, old.ep[k][2]);
        for (int k = 0; k < nw.num_ep; k++)
            reset_ep_both_sides(d, nw.ep[k][2]);
        return 0;
    }
    case REQ_CLEAR_FEATURE:
    case REQ_SET_FEATURE: {
        if (in || recip != 2 || s->wValue != FEATURE_ENDPOINT_HALT)
            return HANDLED_NOT;
        uint8_t ep = (uint8_t)s->wIndex;
        if ((ep & 0x0f) == 0)
            return 0; /* halting EP0 is meaningless; the request itself succeeds */
        if (s->wIndex > 0xff || !ep_exists(d, ep))
            return VDEV_STALL;
        if (s->bRequest == REQ_SET_FEATURE) {
            d->dev_halted[vhc_ep_key(ep)] = true;
            return 0;
        }
        /* Device side only: the host pipe keeps its toggle until ep_clear.
         * That split is what a core must get right. */
        int key = vhc_ep_key(ep);
        d->dev_toggle[key] = 0;
        d->dev_halted[key] = false;
        if (d->vdev->ops->reset_endpoint)
            d->vdev->ops->reset_endpoint(d->vdev, ep);
        return 0;
    }
    case REQ_GET_STATUS: {
        uint8_t st[2] = {0, 0};
        if (!in)
            return HANDLED_NOT;
        if (recip == 0) {
            st[0] = (d->config[7] & 0x40) ? 1 : 0; /* self-powered */
        } else if (recip == 1) {
            vhc_alt_t a;
            if (s->wIndex >= VHC_MAX_INTF || !vhc_find_alt(d, (uint8_t)s->wIndex, 0, &a))
                return VDEV_STALL;
        } else if (recip == 2) {
            uint8_t ep = (uint8_t)s->wIndex;
            if ((ep & 0x0f) != 0) {
                if (s->wIndex > 0xff || !ep_exists(d, ep))
                    return VDEV_STALL;
                st[0] = d->dev_halted[vhc_ep_key(ep)] ? 1 : 0;
            }
        } else {
            return HANDLED_NOT;
        }
        return reply(data, s->wLength, st, 2);
    }
    default:
        return HANDLED_NOT;
    }
}

bool vhc_control_step(vhc_t *v, vhc_dev_t *d, vhc_pipe_t *p, uint64_t now)
{
    vhc_xfer_t *x = p->head;
    if (!x->ctrl_answered) {
        const uint8_t *raw = x->pub.data;
        vdev_setup_t s = {
            .bmRequestType = raw[0],
            .bRequest = raw[1],
            .wValue = (uint16_t)(raw[2] | (raw[3] << 8)),
            .wIndex = (uint16_t)(raw[4] | (raw[5] << 8)),
            .wLength = (uint16_t)(raw[6] | (raw[7] << 8)),
        };
        uint8_t *data = x->pub.data + 8;
        int rc = HANDLED_NOT;
        if ((s.bmRequestType & 0x60) == 0)
            rc = std_request(v, d, &s, data);
        if (rc == HANDLED_NOT)
            rc = d->vdev->ops->control(d->vdev, &s, data);
        if (rc == VDEV_NAK) {
            v->stats.naks++;
            int frames = 1 << (p->nak_streak < 5 ? p->nak_streak : 5);
            p->nak_streak++;
            p->due_ns = now + (uint64_t)frames * vhc_frame_ns_for(v, d);
            return false;
        }
        p->nak_streak = 0;
        x->ctrl_answered = true;
        int data_pkts = 0;
        if (rc < 0) {
            v->stats.stalls++;
            x->ctrl_status = UHP_STATUS_STALL; /* protocol stall: EP0 is not halted */
            x->ctrl_actual = 8;
        } else if ((s.bmRequestType & 0x80) && rc > s.wLength) {
            vhc_log(v, "%s: control IN answered %d bytes for wLength %u: babble", d->path, rc,
                    s.wLength);
            x->ctrl_status = UHP_STATUS_OVERFLOW;
            x->ctrl_actual = 8 + s.wLength;
            data_pkts = (s.wLength + p->mps - 1) / p->mps;
        } else {
            int n = (s.bmRequestType & 0x80) ? rc : s.wLength;
            x->ctrl_status = UHP_STATUS_COMPLETED;
            x->ctrl_actual = 8 + n;
            data_pkts = (n + p->mps - 1) / p->mps;
        }
        /* SETUP + data packets + STATUS: the bus time the transfer costs. */
        x->ctrl_cost_left = data_pkts + 2;
    }
    /* One packet of bus time per step; the stage bookkeeping is done. */
    x->ctrl_cost_left--;
    v->stats.packets++;
    if (x->ctrl_cost_left <= 0) {
        vhc_complete(v, vhc_pipe_pop(p), x->ctrl_status);
    }
    return true;
}
