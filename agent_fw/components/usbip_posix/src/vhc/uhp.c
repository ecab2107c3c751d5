/*
 * uhp.c - the uhp_ops_t table the core calls, and vhc_process, the one
 * place callbacks come from.
 *
 * Order inside vhc_process: enumerate what is due, move bus packets, then
 * deliver transfer completions, then device events. Because completions go
 * first, every NO_DEVICE callback of an unplugged device has run before its
 * dev_gone - the guarantee usb_host_port.h gives the core.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vhc_internal.h"

static int op_install(void *ctx, const uhp_event_cbs_t *cbs, void *core_ctx)
{
    vhc_t *v = ctx;
    if (!cbs || !cbs->dev_added || !cbs->dev_gone)
        return UHP_ERR_INVALID_ARG;
    if (v->installed)
        return UHP_ERR_INVALID_STATE;
    v->cbs = *cbs;
    v->core_ctx = core_ctx;
    v->installed = true;
    /* Devices already present are reported from the next vhc_process. */
    for (vhc_dev_t *d = v->devs; d; d = d->next_all) {
        if (d->state == VHC_DEV_CONFIGURED && !d->is_hub && !d->reported) {
            d->report_pending = true;
            d->closed = false;
        }
    }
    vhc_kick(v);
    return UHP_OK;
}

static void op_uninstall(void *ctx)
{
    vhc_t *v = ctx;
    v->installed = false;
    for (vhc_xfer_t *x = v->done_head; x; x = x->done_next)
        x->in_flight = false;
    v->done_head = v->done_tail = NULL;
    memset(&v->cbs, 0, sizeof v->cbs);
    v->core_ctx = NULL;
    /* The core forgets its handles: gone devices it never closed are freed,
     * present ones are reported afresh to the next install. */
    for (vhc_dev_t *d = v->devs; d; d = d->next_all) {
        if (d->state == VHC_DEV_GONE && !d->is_hub) {
            d->gone_pending = false;
            d->reap = true;
        }
        if (d->state == VHC_DEV_CONFIGURED) {
            d->reported = false;
            d->report_pending = false;
            d->closed = false;
            memset(d->claimed, 0, sizeof d->claimed);
            for (int k = -1; k < VHC_EP_KEYS; k++) {
                /* No callbacks into a core that is gone: transfers are just
                 * dropped (and become free-able). */
                vhc_pipe_t *p = k < 0 ? &d->ep0 : &d->pipes[k];
                vhc_xfer_t *x;
                while ((x = vhc_pipe_pop(p)) != NULL)
                    x->in_flight = false;
                if (k >= 0 && d->pipes[k].in_use) {
                    vhc_return_channels(v, d, 1);
                    memset(&d->pipes[k], 0, sizeof d->pipes[k]);
                }
            }
        }
    }
    vhc_kick(v);
}

#define XFER_MAX_BYTES (16u * 1024u * 1024u)

static int op_xfer_alloc(void *ctx, size_t size, int num_iso_packets, uhp_xfer_t **out)
{
    vhc_t *v = ctx;
    if (!out || num_iso_packets < 0 || num_iso_packets > 4096 || size > XFER_MAX_BYTES) {
        vhc_log(v, "xfer_alloc(%zu, %d) refused: size above 16 MiB or bad packet count", size,
                num_iso_packets);
        return UHP_ERR_INVALID_ARG;
    }
    /* Round up like the chip's cache-aligned DMA allocation does. */
    size_t cap = (size + 3u) & ~(size_t)3u;
    vhc_xfer_t *x = calloc(1, sizeof *x);
    uint8_t *buf = malloc(cap ? cap : 4);
    uhp_iso_packet_t *iso = num_iso_packets ? calloc((size_t)num_iso_packets, sizeof *iso) : NULL;
    if (!x || !buf || (num_iso_packets && !iso)) {
        free(x);
        free(buf);
        free(iso);
        return UHP_ERR_NO_MEM;
    }
    x->magic = VHC_XFER_MAGIC;
    x->pub.data = buf;
    x->pub.capacity = cap;
    x->pub.num_iso_packets = num_iso_packets;
    x->pub.iso = iso;
    *out = &x->pub;
    return UHP_OK;
}

static void op_xfer_free(void *ctx, uhp_xfer_t *xfer)
{
    vhc_t *v = ctx;
    vhc_xfer_t *x = (vhc_xfer_t *)xfer;
    if (!xfer)
        return;
    if (x->magic != VHC_XFER_MAGIC) {
        vhc_log(v, "xfer_free of a transfer not from xfer_alloc: ignored");
        return;
    }
    if (x->in_flight) {
        /* Leaking beats a use-after-free inside the controller. */
        v->stats.rule_violations++;
        vhc_log(v, "xfer_free of a transfer still in flight on ep 0x%02x: refused (leaked)",
                xfer->ep_addr);
        return;
    }
    x->magic = 0;
    free(xfer->data);
    free(xfer->iso);
    free(x);
}

static vhc_dev_t *usable(vhc_t *v, uhp_dev_handle_t h)
{
    vhc_dev_t *d = vhc_dev_from_handle(v, h);
    if (!d || d->closed || !d->config)
        return NULL;
    return d;
}

static int op_get_device_desc(void *ctx, uhp_dev_handle_t dev, const uint8_t **desc18)
{
    vhc_dev_t *d = usable(ctx, dev);
    if (!d || !desc18)
        return UHP_ERR_NOT_FOUND;
    *desc18 = d->dev_desc;
    return UHP_OK;
}

static int op_get_config_desc(void *ctx, uhp_dev_handle_t dev, const uint8_t **desc, size_t *len)
{
    vhc_dev_t *d = usable(ctx, dev);
    if (!d || !desc || !len)
        return UHP_ERR_NOT_FOUND;
    *desc = d->config;
    *len = d->config_len;
    return UHP_OK;
}

static int op_port_reset(void *ctx, uhp_dev_handle_t dev)
{
    vhc_t *v = ctx;
    vhc_dev_t *d = vhc_dev_from_handle(v, dev);
    if (!d || d->closed)
        return UHP_ERR_NOT_FOUND;
    if (d->state == VHC_DEV_GONE)
        return UHP_ERR_GONE;
    vhc_log(v, "%s: port reset requested: device re-enumerates", d->path);
    return vhc_reset_port(v, d) == 0 ? UHP_OK : UHP_ERR_NO_MEM;
}

static int op_dev_close(void *ctx, uhp_dev_handle_t dev)
{
    vhc_t *v = ctx;
    vhc_dev_t *d = vhc_dev_from_handle(v, dev);
    if (!d || d->closed || (!d->reported && d->state != VHC_DEV_GONE))
        return UHP_ERR_NOT_FOUND;
    for (int i = 0; i < VHC_MAX_INTF; i++)
        if (d->claimed[i])
            return UHP_ERR_INVALID_STATE;
    if (d->ep0.head)
        return UHP_ERR_NOT_FINISHED;
    d->reported = false;
    if (d->state == VHC_DEV_GONE) {
        /* Frees the address and destroys the model (if it still owns one). */
        d->gone_pending = false;
        d->reap = true;
        vhc_kick(v);
    } else {
        d->closed = true; /* still plugged; reported again on the next install */
    }
    return UHP_OK;
}

static const uhp_ops_t vhc_ops = {
    .install = op_install,
    .uninstall = op_uninstall,
    .xfer_alloc = op_xfer_alloc,
    .xfer_free = op_xfer_free,
    .get_device_desc = op_get_device_desc,
    .get_config_desc = op_get_config_desc,
    .interface_claim = vhc_op_claim,
    .interface_release = vhc_op_release,
    .submit = vhc_op_submit,
    .submit_control = vhc_op_submit_control,
    .ep_halt = vhc_op_ep_halt,
    .ep_flush = vhc_op_ep_flush,
    .ep_clear = vhc_op_ep_clear,
    .max_transfer_bytes = vhc_op_max_transfer,
    .port_reset = op_port_reset,
    .dev_close = op_dev_close,
};

const uhp_ops_t *vhc_uhp_ops(void)
{
    return &vhc_ops;
}

static void deliver_completions(vhc_t *v)
{
    /* Detach the queue first: callbacks resubmit, and what they submit
     * moves in the next bus round. */
    vhc_xfer_t *x = v->done_head;
    v->done_head = v->done_tail = NULL;
    while (x) {
        vhc_xfer_t *next = x->done_next;
        x->done_next = NULL;
        x->in_flight = false;
        x->pub.callback(&x->pub);
        x = next;
    }
}

static void deliver_events(vhc_t *v)
{
    if (!v->installed)
        return;
    for (vhc_dev_t *d = v->devs; d; d = d->next_all) {
        if (d->gone_pending) {
            d->gone_pending = false;
            v->cbs.dev_gone(v->core_ctx, (uhp_dev_handle_t)d);
        }
    }
    for (vhc_dev_t *d = v->devs; d; d = d->next_all) {
        if (!d->report_pending || d->state != VHC_DEV_CONFIGURED)
            continue;
        d->report_pending = false;
        d->reported = true;
        uhp_dev_info_t info;
        memset(&info, 0, sizeof info);
        info.handle = (uhp_dev_handle_t)d;
        memcpy(info.port_path, d->path, sizeof info.port_path);
        info.speed = (uhp_speed_t)d->vdev->speed;
        info.dev_addr = d->addr;
        info.bMaxPacketSize0 = d->dev_desc[7];
        info.bConfigurationValue = d->config[5];
        info.str_manufacturer = d->str[0];
        info.str_product = d->str[1];
        info.str_serial = d->str[2];
        v->cbs.dev_added(v->core_ctx, &info);
    }
}

void vhc_process(vhc_t *vhc)
{
    /* The timerfd is not read (see timing.c): the final rearm decides
     * whether it stays readable. */
    vhc->in_process = true;
    vhc->proc_now = vhc_clock_ns();
    vhc->sim_now = vhc->proc_now;
    if (!vhc->cfg.bus_timing)
        vhc->frame_busy = false;
    vhc_enumerate_due(vhc, vhc->proc_now);
    int packets_left = VHC_PACKETS_PER_PROCESS;
    for (int round = 0;; round++) {
        vhc_bus_run(vhc, &packets_left);
        bool completed = vhc->done_head != NULL;
        vhc->more_work = false;
        deliver_completions(vhc);
        /* Bounded: a device that completes at once and a core that
         * resubmits at once cannot keep one call going forever. */
        if (!completed || !vhc->more_work || packets_left <= 0 || round + 1 >= VHC_ROUNDS_PER_PROCESS)
            break;
    }
    deliver_events(vhc);
    vhc_reap(vhc);
    vhc->in_process = false;
    vhc_timer_rearm(vhc);
}

void vhc_get_stats(const vhc_t *vhc, vhc_stats_t *out)
{
    *out = vhc->stats;
    out->channels_in_use = vhc->channels_in_use;
}
