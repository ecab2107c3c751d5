/*
 * pipes.c - what the core may ask of an endpoint, and what it may not.
 *
 * The rules are ESP-IDF's (usbh.c transfer_check_usb_compliance, hcd_dwc.c
 * hcd_urb_enqueue), plus the per-transfer size limit ESP-IDF documents but
 * does not check: a core that breaks one gets an error and a log line naming
 * the rule here, instead of silent corruption on the chip.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vhc_internal.h"

vhc_pipe_t *vhc_pipe_for(vhc_dev_t *d, uint8_t ep_addr)
{
    if ((ep_addr & 0x0f) == 0)
        return d->ep0.in_use ? &d->ep0 : NULL;
    vhc_pipe_t *p = &d->pipes[vhc_ep_key(ep_addr)];
    return p->in_use ? p : NULL;
}

void vhc_pipe_push(vhc_pipe_t *p, vhc_xfer_t *x)
{
    x->next = NULL;
    if (p->tail)
        p->tail->next = x;
    else
        p->head = x;
    p->tail = x;
    p->queued++;
}

vhc_xfer_t *vhc_pipe_pop(vhc_pipe_t *p)
{
    vhc_xfer_t *x = p->head;
    if (!x)
        return NULL;
    p->head = x->next;
    if (!p->head)
        p->tail = NULL;
    x->next = NULL;
    p->queued--;
    return x;
}

/* Completion is only queued here; callbacks run from vhc_process. */
void vhc_complete(vhc_t *v, vhc_xfer_t *x, uhp_status_t st)
{
    x->pub.status = st;
    if (x->pub.ep_addr & 0x0f || x->pub.num_bytes < 8)
        x->pub.actual_num_bytes = x->moved;
    else
        x->pub.actual_num_bytes = x->ctrl_answered ? x->ctrl_actual : 0;
    x->done_next = NULL;
    if (v->done_tail)
        v->done_tail->done_next = x;
    else
        v->done_head = x;
    v->done_tail = x;
    v->stats.transfers++;
    vhc_kick(v);
}

void vhc_pipe_fail_all(vhc_t *v, vhc_pipe_t *p, uhp_status_t st)
{
    vhc_xfer_t *x;
    while ((x = vhc_pipe_pop(p)) != NULL)
        vhc_complete(v, x, st);
}

size_t vhc_max_transfer(const vhc_t *v, const vhc_dev_t *d, uint16_t mps)
{
    bool hs = d && d->vdev ? d->vdev->speed == VDEV_SPEED_HIGH : v->cfg.high_speed;
    size_t m = mps;
    if (v->cfg.chip == VHC_CHIP_ESP32P4 && v->cfg.chip_revision >= 300 && hs)
        return m * 1023 < 524287 ? m * 1023 : 524287;
    return m * 127 < 65535 ? m * 127 : 65535;
}

size_t vhc_op_max_transfer(void *ctx, uhp_dev_handle_t dev, uint16_t mps)
{
    vhc_t *v = ctx;
    return vhc_max_transfer(v, vhc_dev_from_handle(v, dev), mps);
}

/* Open = reported to the core and not closed; gone devices are not open. */
static int open_dev(vhc_t *v, uhp_dev_handle_t h, vhc_dev_t **out)
{
    vhc_dev_t *d = vhc_dev_from_handle(v, h);
    if (!d || d->closed || (!d->reported && d->state != VHC_DEV_GONE))
        return UHP_ERR_NOT_FOUND;
    *out = d;
    return d->state == VHC_DEV_GONE ? UHP_ERR_GONE : UHP_OK;
}

int vhc_op_claim(void *ctx, uhp_dev_handle_t dev, uint8_t intf, uint8_t alt)
{
    vhc_t *v = ctx;
    vhc_dev_t *d;
    int rc = open_dev(v, dev, &d);
    if (rc)
        return rc;
    vhc_alt_t a;
    if (intf >= VHC_MAX_INTF || !vhc_find_alt(d, intf, alt, &a)) {
        vhc_log(v, "%s: claim interface %u alt %u: no such interface/alternate setting", d->path,
                intf, alt);
        return UHP_ERR_NOT_FOUND;
    }
    if (d->claimed[intf]) {
        vhc_log(v, "%s: claim interface %u: already claimed", d->path, intf);
        return UHP_ERR_INVALID_STATE;
    }
    for (int i = 0; i < a.num_ep; i++) {
        if (d->pipes[vhc_ep_key(a.ep[i][2])].in_use) {
            vhc_log(v, "%s: claim interface %u: endpoint 0x%02x already belongs to interface %u",
                    d->path, intf, a.ep[i][2], d->pipes[vhc_ep_key(a.ep[i][2])].intf);
            return UHP_ERR_INVALID_STATE;
        }
    }
    char what[48];
    snprintf(what, sizeof what, "interface %u alt %u (%d endpoints)", intf, alt, a.num_ep);
    if (a.num_ep && vhc_take_channels(v, d, a.num_ep, what) != 0)
        return UHP_ERR_NO_CHANNEL; /* nothing allocated yet: nothing half-claimed */
    for (int i = 0; i < a.num_ep; i++)
        vhc_pipe_from_desc(&d->pipes[vhc_ep_key(a.ep[i][2])], d, a.ep[i], intf);
    d->claimed[intf] = true;
    d->claimed_alt[intf] = alt;
    return UHP_OK;
}

int vhc_op_release(void *ctx, uhp_dev_handle_t dev, uint8_t intf)
{
    vhc_t *v = ctx;
    vhc_dev_t *d;
    int rc = open_dev(v, dev, &d);
    if (rc && rc != UHP_ERR_GONE)
        return rc;
    if (intf >= VHC_MAX_INTF || !d->claimed[intf])
        return UHP_ERR_NOT_FOUND;
    int n = 0;
    for (int k = 0; k < VHC_EP_KEYS; k++) {
        if (d->pipes[k].in_use && d->pipes[k].intf == intf && d->pipes[k].head) {
            vhc_log(v, "%s: release interface %u refused: transfers in flight on ep 0x%02x",
                    d->path, intf, d->pipes[k].ep_addr);
            return UHP_ERR_NOT_FINISHED;
        }
    }
    for (int k = 0; k < VHC_EP_KEYS; k++) {
        if (d->pipes[k].in_use && d->pipes[k].intf == intf) {
            memset(&d->pipes[k], 0, sizeof d->pipes[k]);
            n++;
        }
    }
    /* A gone device returned its channels at unplug already. */
    if (d->state != VHC_DEV_GONE)
        vhc_return_channels(v, d, n);
    d->claimed[intf] = false;
    return UHP_OK;
}

static int violation(vhc_t *v, vhc_dev_t *d, uhp_xfer_t *x, int err, const char *rule)
{
    v->stats.rule_violations++;
    vhc_log(v, "%s ep 0x%02x: submit refused (%s): %s", d ? d->path : "?", x->ep_addr,
            err == UHP_ERR_TOO_BIG ? "UHP_ERR_TOO_BIG" : "UHP_ERR_INVALID_ARG", rule);
    return err;
}

/* Checks common to both submit paths. */
static int check_common(vhc_t *v, uhp_xfer_t *xfer, vhc_xfer_t **xo, vhc_dev_t **dout)
{
    vhc_xfer_t *x = (vhc_xfer_t *)xfer;
    if (!xfer || x->magic != VHC_XFER_MAGIC) {
        v->stats.rule_violations++;
        vhc_log(v, "submit refused (UHP_ERR_INVALID_ARG): transfer not allocated by xfer_alloc");
        return UHP_ERR_INVALID_ARG;
    }
    if (x->in_flight)
        return UHP_ERR_NOT_FINISHED;
    vhc_dev_t *d;
    int rc = open_dev(v, xfer->dev, &d);
    if (rc == UHP_ERR_NOT_FOUND)
        return violation(v, NULL, xfer, UHP_ERR_INVALID_ARG, "device handle is not an open device");
    if (rc)
        return rc;
    if (!xfer->callback)
        return violation(v, d, xfer, UHP_ERR_INVALID_ARG, "callback is NULL");
    if (xfer->num_bytes < 0 || (size_t)xfer->num_bytes > xfer->capacity)
        return violation(v, d, xfer, UHP_ERR_INVALID_ARG, "num_bytes exceeds the buffer capacity");
    if (xfer->flags & ~UHP_XFER_FLAG_ZERO_PACK)
        return violation(v, d, xfer, UHP_ERR_INVALID_ARG, "unknown flag bits");
    *xo = x;
    *dout = d;
    return UHP_OK;
}

static void start(vhc_t *v, vhc_pipe_t *p, vhc_xfer_t *x)
{
    x->in_flight = true;
    x->moved = 0;
    x->zlp_done = false;
    x->iso_idx = 0;
    x->iso_offset = 0;
    x->ctrl_answered = false;
    x->ctrl_cost_left = 0;
    x->pub.actual_num_bytes = 0;
    x->pub.status = UHP_STATUS_COMPLETED;
    /* An idle non-periodic pipe starts at once (forget an old NAK back-off);
     * a periodic one keeps its polling schedule. */
    if (!p->head && (p->type == VHC_EP_BULK || p->type == VHC_EP_CONTROL)) {
        p->due_ns = 0;
        p->nak_streak = 0;
    }
    vhc_pipe_push(p, x);
    vhc_kick(v);
}

int vhc_op_submit(void *ctx, uhp_xfer_t *xfer)
{
    vhc_t *v = ctx;
    vhc_xfer_t *x;
    vhc_dev_t *d;
    int rc = check_common(v, xfer, &x, &d);
    if (rc)
        return rc;
    if ((xfer->ep_addr & 0x0f) == 0)
        return violation(v, d, xfer, UHP_ERR_INVALID_ARG, "EP0 goes through submit_control");
    vhc_pipe_t *p = vhc_pipe_for(d, xfer->ep_addr);
    if (!p) {
        vhc_log(v, "%s ep 0x%02x: submit refused (UHP_ERR_NOT_FOUND): endpoint not in a claimed "
                   "interface", d->path, xfer->ep_addr);
        return UHP_ERR_NOT_FOUND;
    }
    bool in = xfer->ep_addr & 0x80;
    if ((size_t)xfer->num_bytes > vhc_max_transfer(v, d, p->mps)) {
        char rule[96];
        snprintf(rule, sizeof rule, "num_bytes %d > max_transfer_bytes %zu (MPS %u); split it",
                 xfer->num_bytes, vhc_max_transfer(v, d, p->mps), p->mps);
        return violation(v, d, xfer, UHP_ERR_TOO_BIG, rule);
    }
    if (p->type == VHC_EP_ISO) {
        if (xfer->iso_count < 1 || xfer->iso_count > xfer->num_iso_packets || !xfer->iso)
            return violation(v, d, xfer, UHP_ERR_INVALID_ARG,
                             "isochronous: iso_count must be 1..num_iso_packets");
        if ((uint64_t)xfer->iso_count * p->interval_frames > 64)
            return violation(v, d, xfer, UHP_ERR_INVALID_ARG,
                             "isochronous: iso_count x interval > 64 (XFER_LIST_LEN_ISOC)");
        long sum = 0;
        for (int i = 0; i < xfer->iso_count; i++) {
            int n = xfer->iso[i].num_bytes;
            if (n < 0 || n > p->mps * p->mult)
                return violation(v, d, xfer, UHP_ERR_INVALID_ARG,
                                 "isochronous: packet size outside 0..MPS");
            if (in && n % p->mps)
                return violation(v, d, xfer, UHP_ERR_INVALID_ARG,
                                 "isochronous IN: packet size not a multiple of MPS");
            sum += n;
        }
        if (sum != xfer->num_bytes)
            return violation(v, d, xfer, UHP_ERR_INVALID_ARG,
                             "isochronous: sum of packet sizes != num_bytes");
    } else if (in && xfer->num_bytes % p->mps) {
        char rule[96];
        snprintf(rule, sizeof rule, "%s IN num_bytes %d is not a multiple of MPS %u",
                 p->type == VHC_EP_BULK ? "bulk" : "interrupt", xfer->num_bytes, p->mps);
        return violation(v, d, xfer, UHP_ERR_INVALID_ARG, rule);
    }
    start(v, p, x);
    return UHP_OK;
}

int vhc_op_submit_control(void *ctx, uhp_xfer_t *xfer)
{
    vhc_t *v = ctx;
    vhc_xfer_t *x;
    vhc_dev_t *d;
    int rc = check_common(v, xfer, &x, &d);
    if (rc)
        return rc;
    if ((xfer->ep_addr & 0x0f) != 0)
        return violation(v, d, xfer, UHP_ERR_INVALID_ARG, "submit_control is for EP0 only");
    if (xfer->num_bytes < 8)
        return violation(v, d, xfer, UHP_ERR_INVALID_ARG, "control: num_bytes < 8 (no SETUP)");
    const uint8_t *s = xfer->data;
    int wlen = s[6] | (s[7] << 8);
    if ((s[0] & 0x80) ? xfer->num_bytes < 8 + wlen : xfer->num_bytes != 8 + wlen)
        return violation(v, d, xfer, UHP_ERR_INVALID_ARG,
                         (s[0] & 0x80) ? "control IN: num_bytes < 8 + wLength"
                                       : "control OUT: num_bytes != 8 + wLength");
    if ((size_t)xfer->num_bytes > vhc_max_transfer(v, d, d->ep0.mps))
        return violation(v, d, xfer, UHP_ERR_TOO_BIG, "control transfer above max_transfer_bytes");
    start(v, &d->ep0, x);
    return UHP_OK;
}

static int ep_lookup(vhc_t *v, uhp_dev_handle_t dev, uint8_t ep, vhc_dev_t **dout,
                     vhc_pipe_t **pout)
{
    vhc_dev_t *d;
    int rc = open_dev(v, dev, &d);
    if (rc && rc != UHP_ERR_GONE)
        return rc;
    if ((ep & 0x0f) == 0)
        return UHP_ERR_NOT_SUPPORTED; /* EP0 is not an interface endpoint on ESP-IDF */
    vhc_pipe_t *p = vhc_pipe_for(d, ep);
    if (!p)
        return UHP_ERR_NOT_FOUND;
    *dout = d;
    *pout = p;
    return UHP_OK;
}

int vhc_op_ep_halt(void *ctx, uhp_dev_handle_t dev, uint8_t ep)
{
    vhc_t *v = ctx;
    vhc_dev_t *d;
    vhc_pipe_t *p;
    int rc = ep_lookup(v, dev, ep, &d, &p);
    if (rc == UHP_ERR_NOT_SUPPORTED)
        vhc_log(v, "ep_halt on EP0 refused: control transfers cannot be cancelled on ESP-IDF");
    if (rc)
        return rc;
    /* Ops never run mid-packet, so "after the current packet" is now. */
    p->halted = true;
    return UHP_OK;
}

int vhc_op_ep_flush(void *ctx, uhp_dev_handle_t dev, uint8_t ep)
{
    vhc_t *v = ctx;
    vhc_dev_t *d;
    vhc_pipe_t *p;
    int rc = ep_lookup(v, dev, ep, &d, &p);
    if (rc)
        return rc;
    if (!p->halted)
        return UHP_ERR_INVALID_STATE;
    /* A partly moved head keeps its byte count: the core must cope. */
    vhc_pipe_fail_all(v, p, UHP_STATUS_CANCELED);
    return UHP_OK;
}

int vhc_op_ep_clear(void *ctx, uhp_dev_handle_t dev, uint8_t ep)
{
    vhc_t *v = ctx;
    vhc_dev_t *d;
    vhc_pipe_t *p;
    int rc = ep_lookup(v, dev, ep, &d, &p);
    if (rc)
        return rc;
    if (!p->halted)
        return UHP_ERR_INVALID_STATE;
    p->halted = false;
    p->toggle = 0;
    p->due_ns = 0;
    p->nak_streak = 0;
    if (p->head)
        vhc_kick(v);
    return UHP_OK;
}
