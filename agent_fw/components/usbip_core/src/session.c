/*
 * session.c - one TCP connection: the management phase (DEVLIST, IMPORT),
 * then URB PDUs. Reads exactly one PDU part at a time so OUT payload lands
 * straight in the URB's transfer blocks (zero copy); replies are sent as one
 * gather send per batch, header and payload straight from the blocks.
 * Any protocol violation closes this session only, with a log line naming it.
 */
#include <stdlib.h>
#include <string.h>

#include "server_priv.h"

#define PDUS_PER_READ 32 /* fairness: one client cannot starve the loop */

session_t *sess_by_sock(usbip_server_t *srv, usbip_sock_t sock)
{
    for (int i = 0; i < srv->cfg.max_sessions; i++)
        if (srv->sessions[i].used && srv->sessions[i].sock_open && srv->sessions[i].sock == sock)
            return &srv->sessions[i];
    return NULL;
}

void sess_update_interest(usbip_server_t *srv, session_t *s)
{
    if (!s->sock_open)
        return;
    /* one management request at a time: the next waits for this reply */
    bool mgmt_busy = s->phase == PHASE_MGMT && s->mgmt_len > s->mgmt_off;
    bool r = s->phase != PHASE_CLOSING && !s->rx_stalled && !s->close_after_tx && !mgmt_busy;
    /* Replies are sent at the end of every entry point; writability is only
     * worth an epoll change once the socket pushed back. */
    bool w = s->tx_blocked && (s->tx_head != NULL || s->mgmt_len > s->mgmt_off);
    if (r != s->want_read || w != s->want_write) {
        s->want_read = r;
        s->want_write = w;
        srv->p.net->set_interest(srv->p.net_ctx, s->sock, r, w);
    }
}

static void protocol_error(usbip_server_t *srv, session_t *s, const char *what, uint32_t value)
{
    srv_log(srv, USBIP_LOG_WARN, "client %s: protocol error: %s (0x%x); closing its session", s->peer,
            what, (unsigned)value);
    sess_close(srv, s, NULL);
}

/* ---- URB slots ---------------------------------------------------------- */

urb_t *sess_slot_get(usbip_server_t *srv, session_t *s)
{
    urb_t *u = s->free_urbs;
    if (!u)
        return NULL;
    s->free_urbs = u->next;
    memset(u, 0, sizeof(*u));
    u->srv = srv;
    u->s = s;
    u->blk_head = -1;
    u->cur = -1;
    u->gate_qi = -1;
    s->urbs_used++;
    return u;
}

void sess_release_urb(usbip_server_t *srv, urb_t *u)
{
    session_t *s = u->s;
    urb_free_blocks(srv, u);
    u->state = URB_FREE;
    u->next = s->free_urbs;
    s->free_urbs = u;
    s->urbs_used--;
    if (s->rx_stalled && s->phase == PHASE_URB)
        sess_retry_stalled(srv, s);
    sess_check_teardown(srv, s);
}

void sess_check_teardown(usbip_server_t *srv, session_t *s)
{
    if (s->phase != PHASE_CLOSING || s->urbs_used > 0 || !s->used)
        return;
    device_t *d = s->dev;
    s->used = false;
    s->dev = NULL;
    if (d && d->owner == s)
        dev_try_release(srv, d);
}

/* ---- replies ------------------------------------------------------------ */

void sess_queue_reply(usbip_server_t *srv, session_t *s, urb_t *u)
{
    u->state = URB_TX;
    u->next = NULL;
    if (s->tx_tail)
        s->tx_tail->next = u;
    else
        s->tx_head = u;
    s->tx_tail = u;
    sess_update_interest(srv, s);
}

/* Segments of one reply: header, payload straight from the blocks, ISO
 * descriptors. Returns the number of iov entries used (0 = does not fit). */
static int reply_iov(usbip_server_t *srv, const urb_t *u, usbip_iovec_t *iov, int room, size_t *total)
{
    int n = 0;
    *total = 0;
#define ADD(p, l)                                \
    do {                                         \
        if ((l) > 0) {                           \
            if (n >= room)                       \
                return 0;                        \
            iov[n].base = (p);                   \
            iov[n].len = (l);                    \
            *total += (l);                       \
            n++;                                 \
        }                                        \
    } while (0)
    ADD(u->hdr, (size_t)USBIP_URB_HDR_LEN);
    if (u->kind != URB_KIND_SUBMIT)
        return n;
    const pool_t *pool = &srv->pool;
    if (u->np > 0 && u->blk_head < 0) {
        /* refused ISO URB: the client still reads np descriptors; zeros
         * (length 0, actual 0) keep the stream in sync */
        static const uint8_t zeros[1024];
        size_t left = (size_t)u->np * USBIP_ISO_DESC_LEN;
        while (left > 0) {
            size_t l = left < sizeof(zeros) ? left : sizeof(zeros);
            ADD(zeros, l);
            left -= l;
        }
        return n;
    }
    if (u->np > 0) {
        uhp_xfer_t *x = pool_block(pool, u->blk_head, 0);
        if (u->dir == USBIP_DIR_IN) {
            size_t off = 0;
            for (int k = 0; k < u->np; k++) {
                ADD(x->data + off, (size_t)x->iso[k].actual_num_bytes);
                off += (size_t)x->iso[k].num_bytes;
            }
        }
        ADD(x->data + x->capacity - (size_t)u->np * USBIP_ISO_DESC_LEN,
            (size_t)u->np * USBIP_ISO_DESC_LEN);
        return n;
    }
    if (u->dir != USBIP_DIR_IN || u->done == 0)
        return n;
    if (u->type == XFER_CONTROL) {
        uhp_xfer_t *x = pool_block(pool, u->blk_head, 0);
        ADD(x->data + 8, u->done);
        return n;
    }
    size_t left = u->done;
    for (int i = 0; left > 0; i++) {
        uhp_xfer_t *x = pool_block(pool, u->blk_head, i);
        size_t l = left < u->chunk ? left : u->chunk;
        ADD(x->data, l);
        left -= l;
    }
    return n;
#undef ADD
}

static bool net_result_dead(usbip_server_t *srv, session_t *s, long n, const char *op)
{
    if (n == USBIP_NET_WOULD_BLOCK)
        return false;
    if (n == 0 && strcmp(op, "recv") == 0) {
        srv_log(srv, USBIP_LOG_INFO, "client %s disconnected", s->peer);
        sess_close(srv, s, NULL);
        return true;
    }
    if (n < 0) {
        srv_log(srv, USBIP_LOG_INFO, "client %s: connection lost (%s failed)", s->peer, op);
        sess_close(srv, s, NULL);
        return true;
    }
    return false;
}

void sess_flush(usbip_server_t *srv, session_t *s)
{
    usbip_iovec_t iov[USBIP_MAX_IOV];
    while (s->used && s->sock_open) {
        if (s->mgmt_len > s->mgmt_off) {
            iov[0].base = s->mgmt_buf + s->mgmt_off;
            iov[0].len = s->mgmt_len - s->mgmt_off;
            long n = srv->p.net->sendv(srv->p.net_ctx, s->sock, iov, 1);
            if (n <= 0) {
                if (n != USBIP_NET_WOULD_BLOCK)
                    net_result_dead(srv, s, n < 0 ? n : USBIP_NET_ERROR, "send");
                break;
            }
            s->mgmt_off += (size_t)n;
            if (s->mgmt_off == s->mgmt_len) {
                if (s->mgmt_buf != s->mgmt_small)
                    free(s->mgmt_buf);
                s->mgmt_buf = NULL;
                s->mgmt_len = s->mgmt_off = 0;
            }
            continue;
        }
        if (!s->tx_head)
            break;
        /* Gather as many queued replies as fit into one send. */
        int niov = 0;
        size_t skip = s->tx_off;
        for (urb_t *u = s->tx_head; u; u = u->next) {
            size_t total;
            int k = reply_iov(srv, u, iov + niov, USBIP_MAX_IOV - niov, &total);
            if (k == 0)
                break;
            if (u == s->tx_head) {
                /* drop what was sent already */
                int j = niov;
                while (skip > 0) {
                    size_t l = iov[j].len < skip ? iov[j].len : skip;
                    iov[j].base = (const uint8_t *)iov[j].base + l;
                    iov[j].len -= l;
                    skip -= l;
                    if (iov[j].len == 0)
                        j++;
                }
                for (int m = j; m < niov + k; m++)
                    iov[niov + (m - j)] = iov[m];
                k -= j - niov;
            }
            niov += k;
        }
        long n = srv->p.net->sendv(srv->p.net_ctx, s->sock, iov, niov);
        if (n <= 0) {
            if (n != USBIP_NET_WOULD_BLOCK)
                net_result_dead(srv, s, n < 0 ? n : USBIP_NET_ERROR, "send");
            break;
        }
        size_t sent = (size_t)n;
        while (sent > 0 && s->tx_head) {
            urb_t *u = s->tx_head;
            size_t total;
            usbip_iovec_t tmp[USBIP_MAX_IOV];
            reply_iov(srv, u, tmp, USBIP_MAX_IOV, &total);
            size_t left = total - s->tx_off;
            if (sent < left) {
                s->tx_off += sent;
                sent = 0;
                break;
            }
            sent -= left;
            s->tx_off = 0;
            s->tx_head = u->next;
            if (!s->tx_head)
                s->tx_tail = NULL;
            sess_release_urb(srv, u);
            if (!s->used)
                return;
        }
    }
    if (s->used && s->sock_open)
        s->tx_blocked = s->tx_head != NULL || s->mgmt_len > s->mgmt_off;
    if (s->used && s->sock_open && s->close_after_tx && !s->tx_head) {
        srv_log(srv, USBIP_LOG_INFO, "client %s: device gone, session closed", s->peer);
        sess_close(srv, s, NULL);
        return;
    }
    if (s->used)
        sess_update_interest(srv, s);
}

void sess_flush_all(usbip_server_t *srv)
{
    for (int i = 0; i < srv->cfg.max_sessions; i++) {
        session_t *s = &srv->sessions[i];
        if (s->used && s->sock_open && (s->tx_head || s->close_after_tx || s->mgmt_len > s->mgmt_off))
            sess_flush(srv, s);
    }
}

void sess_close(usbip_server_t *srv, session_t *s, const char *why)
{
    if (!s->used || s->phase == PHASE_CLOSING)
        return;
    if (why)
        srv_log(srv, USBIP_LOG_INFO, "client %s: session closed (%s)", s->peer, why);
    if (s->phase == PHASE_URB && s->dev)
        srv_event(srv, USBIP_EV_DETACHED, s->dev->busid, s, USBIP_ST_OK, NULL);
    if (s->sock_open) {
        s->sock_open = false;
        srv->p.net->close(srv->p.net_ctx, s->sock);
    }
    s->phase = PHASE_CLOSING;
    if (s->mgmt_buf && s->mgmt_buf != s->mgmt_small)
        free(s->mgmt_buf);
    s->mgmt_buf = NULL;
    s->mgmt_len = s->mgmt_off = 0;
    s->rx_urb = NULL;
    s->rx_stalled = false;
    s->rx_hdr_pending = false;
    /* Replies can no longer be sent: give their slots and blocks back. */
    urb_t *t = s->tx_head;
    s->tx_head = s->tx_tail = NULL;
    while (t) {
        urb_t *nx = t->next;
        sess_release_urb(srv, t);
        t = nx;
    }
    urb_cancel_session(srv, s);
    sess_check_teardown(srv, s);
}

/* ---- management phase --------------------------------------------------- */

static void mgmt_reply(usbip_server_t *srv, session_t *s, uint8_t *buf, size_t len)
{
    s->mgmt_buf = buf;
    s->mgmt_len = len;
    s->mgmt_off = 0;
    sess_update_interest(srv, s);
}

static bool dev_visible(usbip_server_t *srv, session_t *s, device_t *d)
{
    if (!srv->cfg.enforce_grants || !srv->cfg.hide_granted)
        return true;
    grant_t *g = grant_find(srv, d->busid);
    return !g || grant_allows(srv, d->busid, s->peer);
}

static void handle_devlist(usbip_server_t *srv, session_t *s)
{
    device_t *order[256];
    int total = dev_in_order(srv, order);
    size_t len = USBIP_OP_HDR_LEN + 4;
    uint32_t n = 0;
    for (int i = 0; i < total; i++) {
        if (dev_visible(srv, s, order[i])) {
            len += USBIP_DEV_RECORD_LEN + (size_t)order[i]->num_intf * USBIP_INTF_RECORD_LEN;
            n++;
        }
    }
    uint8_t *buf = malloc(len);
    if (!buf) {
        srv_log(srv, USBIP_LOG_ERROR, "client %s: no memory for the device list", s->peer);
        sess_close(srv, s, NULL);
        return;
    }
    usbip_pack_op_hdr(buf, USBIP_OP_REP_DEVLIST, USBIP_ST_OK);
    usbip_put_be32(buf + 8, n);
    size_t off = 12;
    /* export order = order of appearance, stable for clients that index */
    for (int i = 0; i < total; i++) {
        device_t *d = order[i];
        if (!dev_visible(srv, s, d))
            continue;
        usbip_dev_record_t rec;
        dev_record(srv, d, &rec);
        usbip_pack_dev_record(buf + off, &rec);
        off += USBIP_DEV_RECORD_LEN;
        for (int j = 0; j < d->num_intf; j++) {
            buf[off++] = d->intf[j].cls;
            buf[off++] = d->intf[j].sub;
            buf[off++] = d->intf[j].proto;
            buf[off++] = 0;
        }
    }
    mgmt_reply(srv, s, buf, len);
}

static void import_refuse(usbip_server_t *srv, session_t *s, uint32_t st, const char *busid,
                          const char *why)
{
    srv_log(srv, USBIP_LOG_WARN, "client %s: import of %s refused: %s", s->peer, busid, why);
    srv_event(srv, USBIP_EV_IMPORT_REFUSED, busid, s, st, why);
    usbip_pack_op_hdr(s->mgmt_small, USBIP_OP_REP_IMPORT, st);
    mgmt_reply(srv, s, s->mgmt_small, USBIP_OP_HDR_LEN);
}

static void handle_import(usbip_server_t *srv, session_t *s, const char *busid)
{
    device_t *d = dev_by_busid(srv, busid);
    if (!d) {
        import_refuse(srv, s, USBIP_ST_NODEV, busid, "no such busid");
        return;
    }
    if (srv->cfg.enforce_grants && !grant_allows(srv, busid, s->peer)) {
        import_refuse(srv, s, USBIP_ST_NA, busid, "not granted to this address");
        return;
    }
    if (d->owner) {
        import_refuse(srv, s, USBIP_ST_DEV_BUSY, busid,
                      d->owner->phase == PHASE_URB ? "imported by another client" : "still releasing");
        return;
    }
    int rc = dev_claim_all(srv, d);
    if (rc != UHP_OK) {
        import_refuse(srv, s, USBIP_ST_DEV_ERR, busid,
                      rc == UHP_ERR_NO_CHANNEL ? "USB host channels exhausted"
                                               : "claiming its interfaces failed");
        return;
    }
    d->owner = s;
    s->dev = d;
    s->devid = (srv->cfg.busnum << 16) | d->addr;
    s->phase = PHASE_URB;
    usbip_dev_record_t rec;
    dev_record(srv, d, &rec);
    usbip_pack_op_hdr(s->mgmt_small, USBIP_OP_REP_IMPORT, USBIP_ST_OK);
    usbip_pack_dev_record(s->mgmt_small + USBIP_OP_HDR_LEN, &rec);
    srv_log(srv, USBIP_LOG_INFO, "client %s imported %s", s->peer, busid);
    srv_event(srv, USBIP_EV_ATTACHED, busid, s, USBIP_ST_OK, NULL);
    mgmt_reply(srv, s, s->mgmt_small, USBIP_OP_HDR_LEN + USBIP_DEV_RECORD_LEN);
    urb_start_import_reset(srv, s, d);
}

static void handle_op(usbip_server_t *srv, session_t *s)
{
    usbip_op_hdr_t h;
    usbip_unpack_op_hdr(s->rx_hdr, USBIP_OP_HDR_LEN, &h);
    usbip_proto_err_t e = usbip_check_op_request(&h);
    if (e != USBIP_PROTO_OK) {
        protocol_error(srv, s, usbip_proto_strerror(e),
                       e == USBIP_PROTO_BAD_VERSION ? h.version : e == USBIP_PROTO_BAD_CODE ? h.code : h.status);
        return;
    }
    if (h.code == USBIP_OP_REQ_DEVLIST) {
        handle_devlist(srv, s);
    } else {
        s->rx = RX_BUSID;
        s->rx_have = 0;
    }
}

/* ---- URB phase: headers ------------------------------------------------- */

static bool seq_in_flight(session_t *s, uint32_t seq, int max)
{
    for (int i = 0; i < max; i++) {
        urb_t *u = &s->urbs[i];
        if (u->state != URB_FREE && u->state != URB_ORPHAN && u->kind == URB_KIND_SUBMIT && !u->internal &&
            u->state != URB_TX && u->seqnum == seq)
            return true;
    }
    return false;
}

/* Answer a SUBMIT the server cannot run; its OUT payload is read and
 * discarded so the stream stays in sync. */
static void reject_submit(usbip_server_t *srv, session_t *s, urb_t *u, int32_t status, size_t drain)
{
    usbip_pack_ret_submit(u->hdr, u->seqnum, status, 0, 0, u->raw_np, u->np > 0 ? u->np : 0);
    if (u->d) {
        u->d->st.urbs++;
        if (status == USBIP_ENOMEM || status == USBIP_EINVAL || status == USBIP_ENOENT)
            u->d->st.errors.other++;
    }
    sess_queue_reply(srv, s, u);
    if (drain > 0) {
        s->rx = RX_DRAIN;
        s->rx_drain_left = drain;
    }
}

static uint32_t allowed_flags(const urb_t *u)
{
    uint32_t m = USBIP_URB_NO_TRANSFER_DMA_MAP | USBIP_URB_NO_INTERRUPT | USBIP_URB_DIR_IN |
                 USBIP_URB_FREE_BUFFER;
    if (u->type == XFER_BULK && u->dir == USBIP_DIR_OUT)
        m |= USBIP_URB_ZERO_PACKET;
    if (u->type != XFER_ISO && u->dir == USBIP_DIR_IN)
        m |= USBIP_URB_SHORT_NOT_OK;
    if (u->type == XFER_ISO)
        m |= USBIP_URB_ISO_ASAP;
    return m;
}

/* Starts receiving the payload of u into its blocks, or queues it. */
static void begin_payload(usbip_server_t *srv, session_t *s, urb_t *u)
{
    size_t payload = u->dir == USBIP_DIR_OUT ? (size_t)u->tbl : 0;
    if (payload == 0 && u->np == 0) {
        s->rx = RX_HDR;
        urb_submit(srv, u);
        return;
    }
    s->rx_urb = u;
    s->rx_off = 0;
    u->state = URB_RX;
    s->rx = payload > 0 ? RX_PAYLOAD : RX_ISO_DESC;
}

/* Process the SUBMIT header in s->rx_hdr. Returns false when it has to wait
 * (no URB slot or no blocks): the header stays and is retried. */
static bool handle_submit(usbip_server_t *srv, session_t *s, const usbip_urb_hdr_t *h)
{
    if (h->devid != s->devid) {
        protocol_error(srv, s, "devid does not match the imported device", h->devid);
        return true;
    }
    if (seq_in_flight(s, h->seqnum, srv->cfg.max_urbs_per_session)) {
        protocol_error(srv, s, "seqnum already in flight", h->seqnum);
        return true;
    }
    urb_t *u = sess_slot_get(srv, s);
    if (!u)
        return false;
    device_t *d = s->dev;
    u->d = d;
    u->seqnum = h->seqnum;
    u->epnum = (uint8_t)h->ep;
    u->dir = (uint8_t)h->direction;
    u->tbl = h->u.submit.transfer_buffer_length;
    u->np = h->u.submit.number_of_packets;
    u->raw_np = h->u.submit.raw_number_of_packets;
    u->start_frame = h->u.submit.start_frame;
    memcpy(u->setup, h->u.submit.setup, 8);
    u->qidx = (uint8_t)dev_epq_index(u->epnum, u->dir);
    u->t_submit_us = srv_now(srv);
    size_t out_payload = u->dir == USBIP_DIR_OUT ? (size_t)u->tbl : 0;
    size_t drain = out_payload + (size_t)u->np * USBIP_ISO_DESC_LEN;
    if (!d) {
        reject_submit(srv, s, u, USBIP_ENODEV, drain);
        return true;
    }
    const ep_info_t *ep = &d->ep[u->qidx];
    if (!ep->valid) {
        srv_log(srv, USBIP_LOG_DEBUG, "%s: URB %u for endpoint %u %s which the device does not have",
                d->busid, (unsigned)u->seqnum, u->epnum, u->dir ? "IN" : "OUT");
        reject_submit(srv, s, u, USBIP_ENOENT, drain);
        return true;
    }
    u->type = ep->type;
    u->mps = ep->mps;
    u->flags = h->u.submit.transfer_flags & allowed_flags(u);
    if ((u->np > 0) != (u->type == XFER_ISO)) {
        reject_submit(srv, s, u, USBIP_EINVAL, drain);
        return true;
    }
    if (u->type == XFER_CONTROL) {
        uint16_t wlen = (uint16_t)(u->setup[6] | (u->setup[7] << 8));
        bool setup_in = (u->setup[0] & 0x80) != 0;
        if ((wlen > 0 && setup_in != (u->dir == USBIP_DIR_IN)) ||
            (u->dir == USBIP_DIR_OUT && (uint32_t)u->tbl != wlen)) {
            reject_submit(srv, s, u, USBIP_EINVAL, drain);
            return true;
        }
    }
    int need = urb_blocks_needed(srv, u, &u->chunk);
    if (need < 0) {
        srv->pool.too_big++;
        srv_log(srv, USBIP_LOG_WARN, "%s: URB %u of %d bytes exceeds the transfer buffer budget",
                d->busid, (unsigned)u->seqnum, (int)u->tbl);
        reject_submit(srv, s, u, USBIP_ENOMEM, drain);
        return true;
    }
    u->nblocks = need;
    /* Blocks are needed now when the payload (or ISO descriptors) must be
     * received into them; IN URBs take them at the head of their queue. */
    if (out_payload > 0 || u->np > 0) {
        u->blk_head = pool_alloc(&srv->pool, need);
        if (u->blk_head < 0) {
            u->state = URB_WAIT_BLOCKS;
            s->rx_urb = u;
            srv->pool.waits++;
            return false;
        }
    }
    begin_payload(srv, s, u);
    return true;
}

static bool handle_urb_hdr(usbip_server_t *srv, session_t *s)
{
    usbip_urb_hdr_t h;
    usbip_proto_err_t e = usbip_unpack_urb_hdr(s->rx_hdr, USBIP_URB_HDR_LEN, &h);
    if (e == USBIP_PROTO_OK && h.command != USBIP_CMD_SUBMIT && h.command != USBIP_CMD_UNLINK)
        e = USBIP_PROTO_BAD_COMMAND;
    if (e != USBIP_PROTO_OK) {
        protocol_error(srv, s, usbip_proto_strerror(e), h.command);
        return true;
    }
    if (h.command == USBIP_CMD_SUBMIT)
        return handle_submit(srv, s, &h);
    if (h.devid != s->devid && h.devid != 0) {
        protocol_error(srv, s, "devid does not match the imported device", h.devid);
        return true;
    }
    if (s->dev)
        s->dev->st.unlinks++;
    return urb_unlink(srv, s, h.seqnum, h.u.unlink.unlink_seqnum);
}

/* Retry the parsed header or the block allocation a stalled session waits
 * for. Returns true when the session can read again. */
bool sess_retry_stalled(usbip_server_t *srv, session_t *s)
{
    if (!s->rx_stalled)
        return true;
    if (s->rx_urb && s->rx_urb->state == URB_WAIT_BLOCKS) {
        urb_t *u = s->rx_urb;
        u->blk_head = pool_alloc(&srv->pool, u->nblocks);
        if (u->blk_head < 0)
            return false;
        s->rx_stalled = false;
        begin_payload(srv, s, u);
    } else if (s->rx_hdr_pending) {
        s->rx_hdr_pending = false;
        s->rx_stalled = false;
        if (!handle_urb_hdr(srv, s)) {
            if (s->rx_urb && s->rx_urb->state == URB_WAIT_BLOCKS)
                s->rx_have = 0;
            else if (s->phase == PHASE_URB)
                s->rx_hdr_pending = true;
            s->rx_stalled = true;
            return false;
        }
        s->rx_have = 0;
    } else {
        s->rx_stalled = false;
    }
    sess_update_interest(srv, s);
    return true;
}

void sess_resume_waiters(usbip_server_t *srv)
{
    for (int i = 0; i < srv->cfg.max_sessions; i++) {
        session_t *s = &srv->sessions[i];
        if (s->used && s->phase == PHASE_URB && s->rx_stalled)
            sess_retry_stalled(srv, s);
    }
}

/* ---- reading ------------------------------------------------------------ */

/* Where the next payload byte of u goes: OUT data is scattered over the
 * blocks chunk by chunk, control data follows the 8 setup bytes, ISO
 * descriptors sit at the end of the block. */
static uint8_t *payload_dst(usbip_server_t *srv, urb_t *u, size_t off, bool desc, size_t *room)
{
    uhp_xfer_t *x;
    if (desc) {
        x = pool_block(&srv->pool, u->blk_head, 0);
        size_t base = x->capacity - (size_t)u->np * USBIP_ISO_DESC_LEN;
        *room = (size_t)u->np * USBIP_ISO_DESC_LEN - off;
        return x->data + base + off;
    }
    if (u->type == XFER_CONTROL || u->np > 0) {
        x = pool_block(&srv->pool, u->blk_head, 0);
        size_t base = u->type == XFER_CONTROL ? 8 : 0;
        *room = (size_t)u->tbl - off;
        return x->data + base + off;
    }
    int i = (int)(off / u->chunk);
    size_t in_chunk = off % u->chunk;
    x = pool_block(&srv->pool, u->blk_head, i);
    size_t clen = urb_chunk_len(u, i);
    *room = clen - in_chunk;
    return x->data + in_chunk;
}

static void iso_descs_received(usbip_server_t *srv, session_t *s, urb_t *u)
{
    uhp_xfer_t *x = pool_block(&srv->pool, u->blk_head, 0);
    const uint8_t *dp = x->data + x->capacity - (size_t)u->np * USBIP_ISO_DESC_LEN;
    uint32_t expect = 0;
    size_t host_bytes = 0;
    for (int k = 0; k < u->np; k++) {
        usbip_iso_desc_t dsc;
        if (usbip_unpack_iso_desc(dp + (size_t)k * USBIP_ISO_DESC_LEN, USBIP_ISO_DESC_LEN, u->tbl, &dsc) !=
                USBIP_PROTO_OK ||
            dsc.offset != expect) {
            /* Only the contiguous layout every Linux class driver uses is
             * supported: the reply is compacted by the client anyway. */
            s->rx = RX_HDR;
            s->rx_urb = NULL;
            urb_free_blocks(srv, u);
            reject_submit(srv, s, u, USBIP_EINVAL, 0);
            return;
        }
        expect += dsc.length;
        size_t nb = dsc.length;
        if (u->dir == USBIP_DIR_IN && u->mps)
            nb = (nb + u->mps - 1) / u->mps * u->mps;
        x->iso[k].num_bytes = (int)nb;
        x->iso[k].actual_num_bytes = 0;
        x->iso[k].status = UHP_STATUS_COMPLETED;
        host_bytes += nb;
    }
    if (host_bytes + (size_t)u->np * USBIP_ISO_DESC_LEN > x->capacity) {
        s->rx = RX_HDR;
        s->rx_urb = NULL;
        urb_free_blocks(srv, u);
        srv->pool.too_big++;
        reject_submit(srv, s, u, USBIP_ENOMEM, 0);
        return;
    }
    s->rx = RX_HDR;
    s->rx_urb = NULL;
    urb_submit(srv, u);
}

void sess_read(usbip_server_t *srv, session_t *s)
{
    int pdus = PDUS_PER_READ;
    uint8_t sink[512];
    while (s->used && s->sock_open && s->phase != PHASE_CLOSING && !s->rx_stalled &&
           !s->close_after_tx && pdus > 0 && !(s->phase == PHASE_MGMT && s->mgmt_len > s->mgmt_off)) {
        long n;
        switch (s->rx) {
        case RX_HDR: {
            size_t need = s->phase == PHASE_MGMT ? USBIP_OP_HDR_LEN : USBIP_URB_HDR_LEN;
            n = srv->p.net->recv(srv->p.net_ctx, s->sock, s->rx_hdr + s->rx_have, need - s->rx_have);
            if (n <= 0) {
                net_result_dead(srv, s, n, "recv");
                return;
            }
            s->rx_have += (size_t)n;
            if (s->rx_have < need)
                continue;
            pdus--;
            if (s->phase == PHASE_MGMT) {
                s->rx_have = 0;
                handle_op(srv, s);
            } else if (!handle_urb_hdr(srv, s)) {
                if (s->phase == PHASE_URB) {
                    s->rx_stalled = true;
                    if (s->rx_urb && s->rx_urb->state == URB_WAIT_BLOCKS)
                        s->rx_have = 0; /* header consumed; the URB waits for blocks */
                    else
                        s->rx_hdr_pending = true;
                    sess_update_interest(srv, s);
                }
                return;
            } else {
                s->rx_have = 0;
            }
            break;
        }
        case RX_BUSID: {
            n = srv->p.net->recv(srv->p.net_ctx, s->sock, s->rx_hdr + USBIP_OP_HDR_LEN + s->rx_have,
                                 USBIP_BUSID_LEN - s->rx_have);
            if (n <= 0) {
                net_result_dead(srv, s, n, "recv");
                return;
            }
            s->rx_have += (size_t)n;
            if (s->rx_have < USBIP_BUSID_LEN)
                continue;
            s->rx_have = 0;
            s->rx = RX_HDR;
            char busid[USBIP_BUSID_LEN];
            if (usbip_unpack_import_busid(s->rx_hdr + USBIP_OP_HDR_LEN, USBIP_BUSID_LEN, busid) !=
                USBIP_PROTO_OK) {
                protocol_error(srv, s, "busid not NUL-terminated", 0);
                return;
            }
            handle_import(srv, s, busid);
            break;
        }
        case RX_PAYLOAD:
        case RX_ISO_DESC: {
            urb_t *u = s->rx_urb;
            bool desc = s->rx == RX_ISO_DESC;
            size_t room;
            uint8_t *dst = payload_dst(srv, u, s->rx_off, desc, &room);
            n = srv->p.net->recv(srv->p.net_ctx, s->sock, dst, room);
            if (n <= 0) {
                net_result_dead(srv, s, n, "recv");
                return;
            }
            s->rx_off += (size_t)n;
            size_t total = desc ? (size_t)u->np * USBIP_ISO_DESC_LEN : (size_t)u->tbl;
            if (s->rx_off < total)
                continue;
            s->rx_off = 0;
            if (!desc && u->np > 0) {
                s->rx = RX_ISO_DESC;
            } else if (desc) {
                iso_descs_received(srv, s, u);
            } else {
                s->rx = RX_HDR;
                s->rx_urb = NULL;
                urb_submit(srv, u);
            }
            break;
        }
        case RX_DRAIN: {
            size_t want = s->rx_drain_left < sizeof(sink) ? s->rx_drain_left : sizeof(sink);
            n = srv->p.net->recv(srv->p.net_ctx, s->sock, sink, want);
            if (n <= 0) {
                net_result_dead(srv, s, n, "recv");
                return;
            }
            s->rx_drain_left -= (size_t)n;
            if (s->rx_drain_left == 0)
                s->rx = RX_HDR;
            break;
        }
        }
    }
}
