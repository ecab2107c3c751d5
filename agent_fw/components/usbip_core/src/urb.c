/*
 * urb.c - the URB engine.
 *
 * Per endpoint, URBs wait in submission order; only the head URB is in the
 * host, and only one of its chunks at a time. That one rule makes the rest
 * exact: a split URB puts on the bus exactly the packets the unsplit URB
 * would, a short IN chunk ends the URB before the next chunk could swallow
 * the next URB's data, and cancelling the in-flight URB (halt -> flush ->
 * clear, the only cancel ESP-IDF has) never hits a bystander.
 *
 * Split: chunk = the largest multiple of MPS <= min(block size, the host's
 * max transfer); chunk i lives in block i. IN chunks are rounded up to MPS
 * for the host and the reply is clamped to what the client asked.
 */
#include <string.h>

#include "server_priv.h"

static size_t round_up(size_t v, size_t m)
{
    return m ? (v + m - 1) / m * m : v;
}

size_t urb_chunk_len(const urb_t *u, int i)
{
    size_t start = (size_t)i * u->chunk;
    if ((size_t)u->tbl <= start)
        return 0;
    size_t left = (size_t)u->tbl - start;
    return left < u->chunk ? left : u->chunk;
}

int urb_blocks_needed(usbip_server_t *srv, const urb_t *u, size_t *chunk)
{
    size_t bs = srv->pool.block_size;
    if (u->type == XFER_CONTROL) {
        size_t wlen = (size_t)(u->setup[6] | (u->setup[7] << 8));
        *chunk = bs;
        return 8 + wlen <= bs ? 1 : -1;
    }
    if (u->type == XFER_ISO) {
        *chunk = bs;
        size_t need = (size_t)u->tbl + (size_t)u->np * USBIP_ISO_DESC_LEN;
        return u->np <= srv->cfg.max_iso_packets && need <= bs ? 1 : -1;
    }
    size_t maxx = srv->p.usb->max_transfer_bytes(srv->p.usb_ctx, u->d->h, u->mps);
    size_t lim = bs < maxx ? bs : maxx;
    size_t c = u->mps ? lim - lim % u->mps : 0;
    if (c == 0)
        return -1;
    *chunk = c;
    size_t n = u->tbl == 0 ? 1 : ((size_t)u->tbl + c - 1) / c;
    return n <= (size_t)srv->pool.nblocks ? (int)n : -1;
}

int32_t urb_map_uhp_err(int rc)
{
    switch (rc) {
    case UHP_ERR_GONE: return USBIP_ENODEV;
    case UHP_ERR_NO_MEM: return USBIP_ENOMEM;
    case UHP_ERR_NO_CHANNEL: return USBIP_ENOSPC;
    case UHP_ERR_NOT_FOUND: return USBIP_ENOENT;
    default: return USBIP_EINVAL;
    }
}

static int32_t map_status(uhp_status_t st)
{
    switch (st) {
    case UHP_STATUS_COMPLETED: return 0;
    case UHP_STATUS_ERROR: return USBIP_EPROTO;
    case UHP_STATUS_TIMED_OUT: return USBIP_ETIMEDOUT;
    case UHP_STATUS_CANCELED: return USBIP_ECONNRESET;
    case UHP_STATUS_STALL: return USBIP_EPIPE;
    case UHP_STATUS_OVERFLOW: return USBIP_EOVERFLOW;
    case UHP_STATUS_SKIPPED: return USBIP_EXDEV;
    case UHP_STATUS_NO_DEVICE: return USBIP_ENODEV;
    }
    return USBIP_EPROTO;
}

void urb_free_blocks(usbip_server_t *srv, urb_t *u)
{
    if (u->blk_head < 0)
        return;
    pool_free(&srv->pool, u->blk_head);
    u->blk_head = -1;
    urb_blocks_freed(srv);
}

/* Blocks came back: serve IN endpoint heads and stalled sessions. Not
 * re-entered; a nested call just asks the running one for another round. */
void urb_blocks_freed(usbip_server_t *srv)
{
    if (srv->destroying)
        return;
    if (srv->in_kick) {
        srv->kick_pending = true;
        return;
    }
    srv->in_kick = true;
    do {
        srv->kick_pending = false;
        urb_kick_waiters(srv);
        sess_resume_waiters(srv);
    } while (srv->kick_pending);
    srv->in_kick = false;
}

void urb_kick_waiters(usbip_server_t *srv)
{
    for (int i = 0; i < srv->cfg.max_devices; i++) {
        device_t *d = &srv->devs[i];
        if (!d->used)
            continue;
        for (int q = 0; q < USBIP_NUM_EPQ; q++)
            if (d->q[q].waiting_blocks)
                urb_ep_kick(srv, d, q);
    }
}

static void q_remove(epq_t *q, urb_t *u)
{
    urb_t **pp = &q->head, *prev = NULL;
    while (*pp && *pp != u) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return;
    *pp = u->next;
    if (q->tail == u)
        q->tail = prev;
    u->next = NULL;
}

/* The URB is over: build its reply (RET_SUBMIT, or RET_UNLINK when it was
 * unlinked) and queue it. OUT blocks go back now, IN blocks after sending. */
static void kick_all(usbip_server_t *srv, device_t *d)
{
    for (int qi = 1; qi < USBIP_NUM_EPQ; qi++)
        if (d->q[qi].head)
            urb_ep_kick(srv, d, qi);
}

static void urb_complete(usbip_server_t *srv, urb_t *u, int32_t status)
{
    device_t *d = u->d;
    if (d) {
        q_remove(&d->q[u->qidx], u);
        d->queued--;
    }
    session_t *s = u->s;
    if (u->internal) {
        if (status != 0 && d)
            srv_log(srv, USBIP_LOG_WARN, "%s: resetting the device's data toggles at import failed (%d)",
                    d->busid, (int)status);
        sess_release_urb(srv, u);
        int gate = u->gate_qi;
        if (d && gate >= 0) {
            d->q[gate].resync = false;
            if (!d->gone)
                urb_ep_kick(srv, d, gate);
        } else if (d && d->resetting) {
            d->resetting = false;
            if (!d->gone)
                kick_all(srv, d);
        }
        return;
    }
    if (u->timed_out && !u->unlinked)
        status = USBIP_ETIMEDOUT;
    stats_complete(srv, d, u, u->unlinked ? USBIP_ECONNRESET : status);
    if (u->unlinked) {
        /* status 0 here = the cancel raced with a normal completion: the
         * kernel stub answers 0 and drops the data; so do we. */
        u->kind = URB_KIND_UNLINK_REPLY;
        usbip_pack_ret_unlink(u->hdr, u->unlink_seq, status == 0 ? 0 : USBIP_ECONNRESET);
        u->done = 0;
        urb_free_blocks(srv, u);
    } else {
        int32_t actual = (int32_t)u->done;
        if (u->np > 0) {
            /* ISO: per-packet results in the descriptors at the block tail */
            uhp_xfer_t *x = pool_block(&srv->pool, u->blk_head, 0);
            uint8_t *dp = x->data + x->capacity - (size_t)u->np * USBIP_ISO_DESC_LEN;
            uint32_t off = 0;
            for (int k = 0; k < u->np; k++) {
                usbip_iso_desc_t dsc;
                usbip_unpack_iso_desc(dp + (size_t)k * USBIP_ISO_DESC_LEN, USBIP_ISO_DESC_LEN, u->tbl, &dsc);
                dsc.offset = off;
                off += dsc.length;
                dsc.actual_length = (uint32_t)x->iso[k].actual_num_bytes;
                dsc.status = status == 0 ? map_status(x->iso[k].status) : status;
                usbip_pack_iso_desc(dp + (size_t)k * USBIP_ISO_DESC_LEN, &dsc);
            }
        }
        usbip_pack_ret_submit(u->hdr, u->seqnum, status, actual, u->np > 0 ? u->start_frame : 0, u->raw_np,
                              u->error_count);
        if (u->dir == USBIP_DIR_OUT && u->np == 0)
            urb_free_blocks(srv, u);
    }
    sess_queue_reply(srv, s, u);
}

static int ctrl_forward(usbip_server_t *srv, urb_t *u)
{
    uhp_xfer_t *x = pool_block(&srv->pool, u->blk_head, 0);
    uint16_t wlen = (uint16_t)(u->setup[6] | (u->setup[7] << 8));
    memcpy(x->data, u->setup, 8); /* the SETUP packet, not payload */
    x->dev = u->d->h;
    x->ep_addr = 0;
    x->num_bytes = 8 + wlen;
    x->flags = 0;
    x->iso_count = 0;
    x->callback = urb_xfer_cb;
    x->context = u;
    int rc = srv->p.usb->submit_control(srv->p.usb_ctx, x);
    if (rc != UHP_OK) {
        urb_complete(srv, u, urb_map_uhp_err(rc));
        return -1;
    }
    u->cur = 0;
    u->cur_xfer = x;
    u->d->in_host++;
    return 0;
}

/* halt -> flush -> clear: cancels what is in the host on this endpoint and
 * resets the host-side data toggle. */
static void ep_reset_host(usbip_server_t *srv, device_t *d, uint8_t ep_addr, bool flush)
{
    const uhp_ops_t *o = srv->p.usb;
    int rc = o->ep_halt(srv->p.usb_ctx, d->h, ep_addr);
    if (rc == UHP_OK && flush)
        rc = o->ep_flush(srv->p.usb_ctx, d->h, ep_addr);
    int rc2 = o->ep_clear(srv->p.usb_ctx, d->h, ep_addr);
    if ((rc != UHP_OK || rc2 != UHP_OK) && !d->gone)
        srv_log(srv, USBIP_LOG_WARN, "%s: resetting endpoint 0x%02x in the host failed (%d/%d)", d->busid,
                ep_addr, rc, rc2);
}

static uint8_t qidx_addr(int qi)
{
    return (uint8_t)((qi & 15) | ((qi & 16) ? 0x80 : 0));
}

/* SET_INTERFACE needs the interface's endpoints idle: queued URBs end with
 * -ECONNRESET, the one in the host is cancelled. Returns true when idle. */
static bool intf_drain(usbip_server_t *srv, device_t *d, int islot)
{
    bool idle = true;
    for (int qi = 1; qi < USBIP_NUM_EPQ; qi++) {
        if (!d->ep[qi].valid || d->ep[qi].intf != islot)
            continue;
        epq_t *q = &d->q[qi];
        urb_t *u = q->head;
        while (u) {
            urb_t *nx = u->next;
            if (u->state == URB_QUEUED)
                urb_complete(srv, u, USBIP_ECONNRESET);
            u = nx;
        }
        if (q->head) {
            idle = false;
            if (q->head->cur >= 0)
                ep_reset_host(srv, d, qidx_addr(qi), true);
        }
    }
    return idle;
}

static void set_interface_now(usbip_server_t *srv, urb_t *u)
{
    device_t *d = u->d;
    uint8_t num = u->setup[4], alt = u->setup[2];
    int islot = -1;
    for (int i = 0; i < d->num_intf; i++)
        if (d->intf[i].num == num)
            islot = i;
    uint8_t old = d->intf[islot].alt;
    const uhp_ops_t *o = srv->p.usb;
    o->interface_release(srv->p.usb_ctx, d->h, num);
    int rc = o->interface_claim(srv->p.usb_ctx, d->h, num, alt);
    if (rc != UHP_OK) {
        srv_log(srv, USBIP_LOG_WARN, "%s: interface %u alt %u refused by the host (%d%s)", d->busid, num, alt,
                rc, rc == UHP_ERR_NO_CHANNEL ? ": host channels exhausted" : "");
        if (o->interface_claim(srv->p.usb_ctx, d->h, num, old) != UHP_OK)
            d->intf[islot].claimed = false;
        urb_complete(srv, u, rc == UHP_ERR_NO_CHANNEL ? USBIP_ENOSPC : USBIP_EPIPE);
        return;
    }
    d->intf[islot].alt = alt;
    dev_parse_config(d);
    /* The host has fresh pipes (DATA0); now tell the device. */
    ctrl_forward(srv, u);
}

/* Start the control URB at the head of EP0. Returns 0 in the host or done,
 * 1 when it waits for an interface to drain. */
static int ctrl_start(usbip_server_t *srv, urb_t *u)
{
    device_t *d = u->d;
    uint8_t rt = u->setup[0], req = u->setup[1];
    uint16_t wval = (uint16_t)(u->setup[2] | (u->setup[3] << 8));
    uint16_t widx = (uint16_t)(u->setup[4] | (u->setup[5] << 8));
    if (rt == 0x00 && req == 0x09) { /* SET_CONFIGURATION */
        if (wval != d->cfg_value) {
            srv_log(srv, USBIP_LOG_INFO, "%s: SET_CONFIGURATION %u refused (only %u is supported)", d->busid,
                    wval, d->cfg_value);
            urb_complete(srv, u, USBIP_EPIPE);
            return 0;
        }
        u->std = STD_SET_CONFIG;
    } else if (rt == 0x01 && req == 0x0B) { /* SET_INTERFACE */
        int islot = -1;
        for (int i = 0; i < d->num_intf; i++)
            if (d->intf[i].num == (widx & 0xff))
                islot = i;
        if (islot < 0 || wval > 255) {
            urb_complete(srv, u, USBIP_EPIPE);
            return 0;
        }
        u->std = STD_SET_INTERFACE;
        if (!intf_drain(srv, d, islot)) {
            u->cur = -2; /* waits: retried as the endpoints go idle */
            return 1;
        }
        set_interface_now(srv, u);
        return 0;
    } else if (rt == 0x02 && req == 0x01 && wval == 0) { /* CLEAR_FEATURE(ENDPOINT_HALT) */
        uint8_t addr = (uint8_t)(widx & 0x8f);
        int qi = dev_epq_index(addr & 15, (addr & 0x80) ? 1 : 0);
        u->std = STD_CLEAR_HALT;
        if (qi != 0 && d->ep[qi].valid)
            ep_reset_host(srv, d, addr, true);
    }
    ctrl_forward(srv, u);
    return 0;
}

static int chunk_submit(usbip_server_t *srv, urb_t *u, int i)
{
    device_t *d = u->d;
    uhp_xfer_t *x = pool_block(&srv->pool, u->blk_head, i);
    x->dev = d->h;
    x->ep_addr = (uint8_t)(u->epnum | (u->dir ? 0x80 : 0));
    x->flags = 0;
    x->iso_count = 0;
    x->callback = urb_xfer_cb;
    x->context = u;
    if (u->np > 0) {
        int total = 0;
        for (int k = 0; k < u->np; k++)
            total += x->iso[k].num_bytes;
        x->iso_count = u->np;
        x->num_bytes = total;
    } else {
        size_t len = urb_chunk_len(u, i);
        if (u->dir == USBIP_DIR_IN) {
            x->num_bytes = (int)round_up(len, u->mps);
        } else {
            x->num_bytes = (int)len;
            bool last = (size_t)(i + 1) * u->chunk >= (size_t)u->tbl;
            /* exactly the unsplit URB's packets: a ZLP only after the last
             * chunk, only if the client asked, only at a multiple of MPS */
            if (last && (u->flags & USBIP_URB_ZERO_PACKET) && u->tbl > 0 && u->tbl % u->mps == 0)
                x->flags = UHP_XFER_FLAG_ZERO_PACK;
        }
    }
    int rc = srv->p.usb->submit(srv->p.usb_ctx, x);
    if (rc != UHP_OK) {
        srv_log(srv, USBIP_LOG_WARN, "%s: host refused transfer on ep 0x%02x (%d)", d->busid, x->ep_addr, rc);
        urb_complete(srv, u, urb_map_uhp_err(rc));
        return -1;
    }
    u->cur = i;
    u->cur_xfer = x;
    d->in_host++;
    return 0;
}

void urb_ep_kick(usbip_server_t *srv, device_t *d, int qi)
{
    epq_t *q = &d->q[qi];
    for (;;) {
        urb_t *u = q->head;
        if (!u || d->gone || (qi != 0 && (d->resetting || q->resync)))
            return;
        if (u->state == URB_ACTIVE) {
            if (u->cur == -2 && ctrl_start(srv, u) == 1)
                return;
            if (u->state == URB_ACTIVE)
                return;
            continue;
        }
        if (u->blk_head < 0) {
            u->blk_head = pool_alloc(&srv->pool, u->nblocks);
            if (u->blk_head < 0) {
                if (!q->waiting_blocks)
                    srv->pool.waits++;
                q->waiting_blocks = true;
                return;
            }
        }
        q->waiting_blocks = false;
        u->state = URB_ACTIVE;
        u->t_start_us = srv_now(srv);
        if (u->type == XFER_CONTROL) {
            if (ctrl_start(srv, u) == 1)
                return;
        } else {
            chunk_submit(srv, u, 0);
        }
        if (q->head == u && u->state == URB_ACTIVE)
            return;
    }
}

/* A fresh import gets fresh host pipes (DATA0) but the device may still be
 * at DATA1 from the previous client: SET_CONFIGURATION(active) resets the
 * device's toggles (and, through STD_SET_CONFIG, the host's) before any
 * client URB runs, so a client that skips SET_CONFIGURATION loses nothing. */
static bool internal_control(usbip_server_t *srv, session_t *s, device_t *d, const uint8_t setup[8], int gate_qi)
{
    urb_t *u = sess_slot_get(srv, s);
    if (!u) {
        srv_log(srv, USBIP_LOG_WARN, "%s: no URB slot to resynchronise data toggles", d->busid);
        return false;
    }
    u->internal = true;
    u->gate_qi = (int8_t)gate_qi;
    u->d = d;
    u->type = XFER_CONTROL;
    u->dir = USBIP_DIR_OUT;
    u->mps = d->ep[0].mps;
    memcpy(u->setup, setup, 8);
    u->nblocks = 1;
    u->chunk = srv->pool.block_size;
    u->t_submit_us = srv_now(srv);
    if (gate_qi >= 0)
        d->q[gate_qi].resync = true;
    else
        d->resetting = true;
    urb_submit(srv, u);
    return true;
}

void urb_start_import_reset(usbip_server_t *srv, session_t *s, device_t *d)
{
    const uint8_t setcfg[8] = {0x00, 0x09, d->cfg_value, 0, 0, 0, 0, 0};
    internal_control(srv, s, d, setcfg, -1);
}

/* Cancelling in the host (halt -> flush -> clear) leaves the host pipe at
 * DATA0 while the device may expect DATA1: CLEAR_FEATURE(ENDPOINT_HALT)
 * resets the device's side too. The endpoint's next URB waits for it. */
static void resync_toggle(usbip_server_t *srv, session_t *s, device_t *d, uint8_t ep_addr)
{
    const uint8_t clr[8] = {0x02, 0x01, 0, 0, ep_addr, 0, 0, 0};
    internal_control(srv, s, d, clr, dev_epq_index(ep_addr & 15, (ep_addr & 0x80) ? 1 : 0));
}

void urb_submit(usbip_server_t *srv, urb_t *u)
{
    device_t *d = u->d;
    if (!d || d->gone) {
        urb_free_blocks(srv, u);
        usbip_pack_ret_submit(u->hdr, u->seqnum, USBIP_ENODEV, 0, 0, u->raw_np, 0);
        sess_queue_reply(srv, u->s, u);
        return;
    }
    u->state = URB_QUEUED;
    u->next = NULL;
    epq_t *q = &d->q[u->qidx];
    if (q->tail)
        q->tail->next = u;
    else
        q->head = u;
    q->tail = u;
    d->queued++;
    urb_ep_kick(srv, d, u->qidx);
}

bool urb_unlink(usbip_server_t *srv, session_t *s, uint32_t unlink_seq, uint32_t target)
{
    urb_t *t = NULL;
    for (int i = 0; i < srv->cfg.max_urbs_per_session; i++) {
        urb_t *u = &s->urbs[i];
        if (u->state != URB_FREE && u->state != URB_ORPHAN && u->kind == URB_KIND_SUBMIT && !u->internal &&
            u->seqnum == target) {
            t = u;
            break;
        }
    }
    if (t && t->state == URB_QUEUED) {
        /* never reached the host: answer now, no RET_SUBMIT */
        t->unlinked = true;
        t->unlink_seq = unlink_seq;
        urb_complete(srv, t, USBIP_ECONNRESET);
        return true;
    }
    if (t && t->state == URB_ACTIVE && !t->unlinked) {
        t->unlinked = true;
        t->unlink_seq = unlink_seq;
        if (t->cur == -2) {
            urb_complete(srv, t, USBIP_ECONNRESET);
            urb_ep_kick(srv, t->d, 0);
        } else if (t->type != XFER_CONTROL) {
            /* only this URB's chunk is in the host: the flush hits nobody else */
            uint8_t addr = (uint8_t)(t->epnum | (t->dir ? 0x80 : 0));
            ep_reset_host(srv, t->d, addr, true);
            if (t->type != XFER_ISO) /* isochronous endpoints have no toggle */
                resync_toggle(srv, s, t->d, addr);
        }
        /* EP0 cannot be cancelled: answered when the transfer ends (or the
         * watchdog resets the port). */
        return true;
    }
    /* Unknown, already completed (its RET_SUBMIT is queued or sent: ours
     * goes after it on the wire) or already being unlinked: status 0. */
    urb_t *r = sess_slot_get(srv, s);
    if (!r)
        return false;
    r->kind = URB_KIND_UNLINK_REPLY;
    r->seqnum = unlink_seq;
    usbip_pack_ret_unlink(r->hdr, unlink_seq, 0);
    sess_queue_reply(srv, s, r);
    return true;
}

void urb_xfer_cb(uhp_xfer_t *xfer)
{
    urb_t *u = xfer->context;
    if (!u)
        return;
    usbip_server_t *srv = u->srv;
    srv_lock(srv);
    device_t *d = u->d;
    int i = u->cur;
    u->cur = -1;
    u->cur_xfer = NULL;
    if (d)
        d->in_host--;
    if (u->state == URB_ORPHAN) {
        sess_release_urb(srv, u);
        if (d && d->owner && d->owner->phase == PHASE_CLOSING)
            sess_check_teardown(srv, d->owner);
        else if (d && !d->owner)
            dev_try_release(srv, d);
        srv_unlock(srv);
        return;
    }
    int32_t st = map_status(xfer->status);
    bool more = false;
    if (u->type == XFER_CONTROL) {
        int act = xfer->actual_num_bytes - 8;
        if (act < 0)
            act = 0;
        if (u->dir == USBIP_DIR_IN && (size_t)act > (size_t)u->tbl) {
            act = u->tbl;
            if (st == 0)
                st = USBIP_EOVERFLOW;
        }
        u->done = (size_t)act;
        if (st == 0 && u->std == STD_SET_CONFIG) {
            /* the device reset its toggles: reset the host's to match */
            for (int qi = 1; qi < USBIP_NUM_EPQ; qi++)
                if (d->ep[qi].valid && !(d->q[qi].head && d->q[qi].head->cur >= 0))
                    ep_reset_host(srv, d, qidx_addr(qi), false);
        }
        if (u->unlinked)
            st = USBIP_ECONNRESET;
    } else if (u->np > 0) {
        size_t total = 0;
        int errs = 0;
        for (int k = 0; k < u->np; k++) {
            uhp_iso_packet_t *p = &xfer->iso[k];
            usbip_iso_desc_t dsc;
            const uint8_t *dp = xfer->data + xfer->capacity - (size_t)u->np * USBIP_ISO_DESC_LEN;
            usbip_unpack_iso_desc(dp + (size_t)k * USBIP_ISO_DESC_LEN, USBIP_ISO_DESC_LEN, u->tbl, &dsc);
            if (p->actual_num_bytes < 0)
                p->actual_num_bytes = 0;
            if ((uint32_t)p->actual_num_bytes > dsc.length) {
                p->actual_num_bytes = (int)dsc.length;
                p->status = UHP_STATUS_OVERFLOW;
            }
            if (p->status != UHP_STATUS_COMPLETED)
                errs++;
            total += (size_t)p->actual_num_bytes;
        }
        u->done = total;
        u->error_count = errs;
    } else {
        size_t len = urb_chunk_len(u, i);
        size_t act = xfer->actual_num_bytes > 0 ? (size_t)xfer->actual_num_bytes : 0;
        if (u->dir == USBIP_DIR_IN) {
            if (act > len) {
                /* the device sent more than the client asked for: babble */
                act = len;
                if (st == 0)
                    st = USBIP_EOVERFLOW;
            }
            u->done += act;
            bool last = (size_t)(i + 1) * u->chunk >= (size_t)u->tbl;
            if (st == 0 && act < len) {
                if (u->flags & USBIP_URB_SHORT_NOT_OK)
                    st = USBIP_EREMOTEIO;
            } else if (st == 0 && !last) {
                more = true;
            }
        } else {
            if (act > len)
                act = len;
            u->done += act;
            bool last = (size_t)(i + 1) * u->chunk >= (size_t)u->tbl;
            more = st == 0 && act == len && !last;
        }
    }
    if (more && u->unlinked) {
        more = false;
        st = USBIP_ECONNRESET;
    }
    if (more && !d->gone) {
        chunk_submit(srv, u, i + 1);
    } else {
        int qi = u->qidx;
        urb_complete(srv, u, st); /* u may be gone after this */
        if (d && !d->gone) {
            urb_ep_kick(srv, d, qi);
            /* a SET_INTERFACE may be waiting for this endpoint to go idle */
            if (d->q[0].head && d->q[0].head->cur == -2)
                urb_ep_kick(srv, d, 0);
        }
    }
    sess_flush_all(srv);
    srv_unlock(srv);
}

void urb_cancel_session(usbip_server_t *srv, session_t *s)
{
    for (int i = 0; i < srv->cfg.max_urbs_per_session; i++) {
        urb_t *u = &s->urbs[i];
        device_t *d = u->d;
        switch (u->state) {
        case URB_QUEUED:
        case URB_ACTIVE:
            if (d) {
                q_remove(&d->q[u->qidx], u);
                d->queued--;
                if (u->internal && u->gate_qi >= 0)
                    d->q[u->gate_qi].resync = false;
                else if (u->internal)
                    d->resetting = false;
            }
            if (u->cur >= 0) {
                /* in the host: its callback frees it */
                u->state = URB_ORPHAN;
                if (d && u->type != XFER_CONTROL)
                    ep_reset_host(srv, d, (uint8_t)(u->epnum | (u->dir ? 0x80 : 0)), true);
            } else {
                sess_release_urb(srv, u);
            }
            break;
        case URB_WAIT_BLOCKS:
        case URB_RX:
        case URB_TX:
            sess_release_urb(srv, u);
            break;
        default:
            break;
        }
    }
}

void urb_fail_device(usbip_server_t *srv, device_t *d, int32_t status)
{
    for (int qi = 0; qi < USBIP_NUM_EPQ; qi++) {
        while (d->q[qi].head) {
            urb_t *u = d->q[qi].head;
            if (u->state == URB_ORPHAN || u->cur >= 0) {
                /* cannot happen per the port contract; never leave it queued */
                q_remove(&d->q[qi], u);
                d->queued--;
                continue;
            }
            urb_complete(srv, u, status);
        }
        d->q[qi].waiting_blocks = false;
    }
}

void urb_watchdog(usbip_server_t *srv)
{
    if (srv->cfg.control_watchdog_ms == 0)
        return;
    uint64_t now = srv_now(srv), lim = (uint64_t)srv->cfg.control_watchdog_ms * 1000u;
    for (int i = 0; i < srv->cfg.max_devices; i++) {
        device_t *d = &srv->devs[i];
        urb_t *u = d->used ? d->q[0].head : NULL;
        if (!u || u->state != URB_ACTIVE || u->cur < 0 || u->timed_out || now - u->t_start_us < lim)
            continue;
        u->timed_out = true;
        srv_log(srv, USBIP_LOG_WARN, "%s: control transfer stuck for %u ms: resetting the port", d->busid,
                (unsigned)srv->cfg.control_watchdog_ms);
        if (!srv->p.usb->port_reset || srv->p.usb->port_reset(srv->p.usb_ctx, d->h) != UHP_OK) {
            /* nothing can end the transfer: at least free the client */
            if (d->owner)
                sess_close(srv, d->owner, "control transfer stuck and the port cannot be reset");
        }
    }
}
