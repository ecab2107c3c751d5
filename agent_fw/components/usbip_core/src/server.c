/*
 * server.c - lifecycle, the owner loop's entry points, getters.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_priv.h"

const char *usbip_strerror(usbip_err_t err)
{
    switch (err) {
    case USBIP_OK: return "ok";
    case USBIP_ERR_INVALID_ARG: return "invalid argument";
    case USBIP_ERR_NO_MEM: return "out of memory";
    case USBIP_ERR_NOT_FOUND: return "not found";
    case USBIP_ERR_FULL: return "no free slot";
    case USBIP_ERR_PORT: return "port operation failed";
    case USBIP_ERR_STATE: return "not allowed in this state";
    }
    return "unknown error";
}

void srv_event(usbip_server_t *srv, usbip_event_kind_t kind, const char *busid, const session_t *s,
               uint32_t status, const char *reason)
{
    if (!srv->p.observer.on_event)
        return;
    usbip_event_t ev = {.kind = kind, .busid = busid, .peer = s->peer, .peer_port = s->peer_port,
                        .status = status, .reason = reason};
    srv->p.observer.on_event(srv->p.observer.arg, &ev);
}

void srv_log(usbip_server_t *srv, usbip_log_level_t lvl, const char *fmt, ...)
{
    if (!srv->p.log.vlog)
        return;
    va_list ap;
    va_start(ap, fmt);
    srv->p.log.vlog(srv->p.log.ctx, lvl, srv->tag, fmt, ap);
    va_end(ap);
}

uint64_t srv_now(usbip_server_t *srv)
{
    return srv->p.clock.now_us(srv->p.clock.ctx);
}

void srv_copy_payload(usbip_server_t *srv, void *dst, const void *src, size_t n)
{
#if defined(USBIP_COUNT_COPIES) && USBIP_COUNT_COPIES
    srv->copies += n;
#else
    (void)srv;
#endif
    memmove(dst, src, n);
}

void srv_lock(usbip_server_t *srv)
{
    if (srv->p.lock.lock)
        srv->p.lock.lock(srv->p.lock.ctx);
}

void srv_unlock(usbip_server_t *srv)
{
    if (srv->p.lock.unlock)
        srv->p.lock.unlock(srv->p.lock.ctx);
}

static bool ops_complete(const usbip_server_ports_t *p)
{
    const uhp_ops_t *u = p->usb;
    const usbip_net_ops_t *n = p->net;
    return u && n && p->clock.now_us && u->install && u->uninstall && u->xfer_alloc && u->xfer_free &&
           u->get_device_desc && u->get_config_desc && u->interface_claim && u->interface_release &&
           u->submit && u->submit_control && u->ep_halt && u->ep_flush && u->ep_clear &&
           u->max_transfer_bytes && u->dev_close && n->recv && n->sendv && n->set_options &&
           n->set_interest && n->peer_addr && n->close;
}

usbip_err_t usbip_server_create(const usbip_server_config_t *cfg, const usbip_server_ports_t *ports,
                                usbip_server_t **out)
{
    if (!cfg || !ports || !out || !ops_complete(ports))
        return USBIP_ERR_INVALID_ARG;
    *out = NULL;
    if (cfg->block_size < 64 || cfg->buffer_budget < cfg->block_size || cfg->max_sessions < 1 ||
        cfg->max_devices < 1 || cfg->max_urbs_per_session < 2 || cfg->max_iso_packets < 0 ||
        cfg->max_sessions > 1024 || cfg->max_devices > 255 || cfg->max_urbs_per_session > 4096)
        return USBIP_ERR_INVALID_ARG;
    usbip_server_t *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return USBIP_ERR_NO_MEM;
    srv->cfg = *cfg;
    srv->p = *ports;
    snprintf(srv->tag, sizeof(srv->tag), "%s", cfg->tag ? cfg->tag : "usbip");
    srv->cfg.tag = srv->tag;
    srv->devs = calloc((size_t)cfg->max_devices, sizeof(*srv->devs));
    srv->grants = calloc((size_t)cfg->max_devices, sizeof(*srv->grants));
    srv->sessions = calloc((size_t)cfg->max_sessions, sizeof(*srv->sessions));
    srv->urb_slots = calloc((size_t)cfg->max_sessions * (size_t)cfg->max_urbs_per_session,
                            sizeof(*srv->urb_slots));
    if (!srv->devs || !srv->grants || !srv->sessions || !srv->urb_slots || pool_init(srv) != 0) {
        srv_log(srv, USBIP_LOG_ERROR, "cannot allocate %zu bytes of transfer buffers in %zu-byte blocks",
                cfg->buffer_budget, cfg->block_size);
        pool_deinit(srv);
        free(srv->devs);
        free(srv->grants);
        free(srv->sessions);
        free(srv->urb_slots);
        free(srv);
        return USBIP_ERR_NO_MEM;
    }
    for (int i = 0; i < cfg->max_sessions; i++)
        srv->sessions[i].urbs = &srv->urb_slots[(size_t)i * (size_t)cfg->max_urbs_per_session];
    static const uhp_event_cbs_t cbs = {.dev_added = dev_added_cb, .dev_gone = dev_gone_cb};
    if (srv->p.usb->install(srv->p.usb_ctx, &cbs, srv) != UHP_OK) {
        pool_deinit(srv);
        free(srv->devs);
        free(srv->grants);
        free(srv->sessions);
        free(srv->urb_slots);
        free(srv);
        return USBIP_ERR_PORT;
    }
    srv_log(srv, USBIP_LOG_INFO, "USB/IP server: %d blocks of %zu bytes (%zu byte budget)", srv->pool.nblocks,
            srv->pool.block_size, srv->cfg.buffer_budget);
    *out = srv;
    return USBIP_OK;
}

static void noop_cb(uhp_xfer_t *x)
{
    (void)x;
}

void usbip_server_destroy(usbip_server_t *srv)
{
    if (!srv)
        return;
    for (int i = 0; i < srv->cfg.max_sessions; i++)
        if (srv->sessions[i].used)
            sess_close(srv, &srv->sessions[i], NULL);
    srv->destroying = true;
    /* Transfers still in the host (EP0 cannot be cancelled) keep their block:
     * it is never freed under the port, and their callback does nothing. */
    size_t total = (size_t)srv->cfg.max_sessions * (size_t)srv->cfg.max_urbs_per_session;
    for (size_t i = 0; i < total; i++) {
        urb_t *u = &srv->urb_slots[i];
        if (u->state != URB_FREE && u->cur_xfer) {
            u->cur_xfer->callback = noop_cb;
            u->cur_xfer->context = NULL;
            for (int b = 0; b < srv->pool.nblocks; b++)
                if (srv->pool.blk[b] == u->cur_xfer)
                    srv->pool.blk[b] = NULL;
        }
    }
    for (int i = 0; i < srv->cfg.max_devices; i++) {
        device_t *d = &srv->devs[i];
        if (d->used) {
            dev_release_all(srv, d);
            srv->p.usb->dev_close(srv->p.usb_ctx, d->h);
        }
    }
    srv->p.usb->uninstall(srv->p.usb_ctx);
    pool_deinit(srv);
    free(srv->devs);
    free(srv->grants);
    free(srv->sessions);
    free(srv->urb_slots);
    free(srv);
}

usbip_err_t usbip_server_on_accept(usbip_server_t *srv, usbip_sock_t sock)
{
    srv_lock(srv);
    session_t *s = NULL;
    for (int i = 0; i < srv->cfg.max_sessions && !s; i++)
        if (!srv->sessions[i].used)
            s = &srv->sessions[i];
    char peer[48] = "?";
    uint16_t peer_port = 0;
    srv->p.net->peer_addr(srv->p.net_ctx, sock, peer, sizeof(peer), &peer_port);
    peer[sizeof(peer) - 1] = 0;
    if (!s) {
        srv_log(srv, USBIP_LOG_WARN, "client %s refused: all %d sessions in use", peer, srv->cfg.max_sessions);
        srv->p.net->close(srv->p.net_ctx, sock);
        srv_unlock(srv);
        return USBIP_ERR_FULL;
    }
    urb_t *slots = s->urbs;
    memset(s, 0, sizeof(*s));
    s->urbs = slots;
    s->free_urbs = NULL;
    for (int i = srv->cfg.max_urbs_per_session - 1; i >= 0; i--) {
        memset(&slots[i], 0, sizeof(slots[i]));
        slots[i].blk_head = -1;
        slots[i].s = s;
        slots[i].next = s->free_urbs;
        s->free_urbs = &slots[i];
    }
    s->used = true;
    s->sock = sock;
    s->sock_open = true;
    memcpy(s->peer, peer, sizeof(peer));
    s->peer_port = peer_port;
    s->t_accept_us = srv_now(srv);
    usbip_sock_opts_t o = {.nodelay = true,
                           .keepalive = srv->cfg.keepalive_idle_s > 0,
                           .keepalive_idle_s = srv->cfg.keepalive_idle_s,
                           .keepalive_interval_s = srv->cfg.keepalive_interval_s,
                           .keepalive_count = srv->cfg.keepalive_count};
    if (srv->p.net->set_options(srv->p.net_ctx, sock, &o) != 0)
        srv_log(srv, USBIP_LOG_WARN, "client %s: cannot set TCP_NODELAY/keepalive", peer);
    srv_log(srv, USBIP_LOG_DEBUG, "client %s connected", peer);
    s->want_read = s->want_write = false;
    sess_update_interest(srv, s);
    srv_unlock(srv);
    return USBIP_OK;
}

void usbip_server_on_readable(usbip_server_t *srv, usbip_sock_t sock)
{
    srv_lock(srv);
    session_t *s = sess_by_sock(srv, sock);
    if (s)
        sess_read(srv, s);
    /* reading may have completed URBs of other sessions too (blocks freed) */
    sess_flush_all(srv);
    srv_unlock(srv);
}

void usbip_server_on_writable(usbip_server_t *srv, usbip_sock_t sock)
{
    srv_lock(srv);
    session_t *s = sess_by_sock(srv, sock);
    if (s)
        sess_flush(srv, s);
    sess_flush_all(srv);
    srv_unlock(srv);
}

void usbip_server_tick(usbip_server_t *srv)
{
    srv_lock(srv);
    uint64_t now = srv_now(srv);
    for (int i = 0; i < srv->cfg.max_sessions; i++) {
        session_t *s = &srv->sessions[i];
        /* A connection that never finishes DEVLIST/IMPORT holds a slot for
         * nothing; in the URB phase silence is legitimate (an idle
         * keyboard): TCP keepalive finds dead peers there. */
        if (s->used && s->sock_open && s->phase == PHASE_MGMT && srv->cfg.mgmt_timeout_ms &&
            now - s->t_accept_us > (uint64_t)srv->cfg.mgmt_timeout_ms * 1000u && !s->mgmt_len)
            sess_close(srv, s, "no request within the management timeout");
    }
    urb_watchdog(srv);
    grants_expire(srv);
    sess_flush_all(srv);
    srv_unlock(srv);
}

bool usbip_server_wants_read(const usbip_server_t *srv, usbip_sock_t sock)
{
    session_t *s = sess_by_sock((usbip_server_t *)srv, sock);
    return s && s->want_read;
}

bool usbip_server_wants_write(const usbip_server_t *srv, usbip_sock_t sock)
{
    session_t *s = sess_by_sock((usbip_server_t *)srv, sock);
    return s && s->want_write;
}

int usbip_server_list_devices(usbip_server_t *srv, usbip_device_info_t *out, int max)
{
    srv_lock(srv);
    device_t *order[256];
    int n = dev_in_order(srv, order);
    for (int k = 0; k < n && k < max && out; k++) {
        device_t *d = order[k];
        usbip_device_info_t *o = &out[k];
        memset(o, 0, sizeof(*o));
        memcpy(o->busid, d->busid, sizeof(o->busid));
        o->vid = (uint16_t)(d->ddesc[8] | (d->ddesc[9] << 8));
        o->pid = (uint16_t)(d->ddesc[10] | (d->ddesc[11] << 8));
        o->speed = d->speed;
        o->num_interfaces = d->num_intf;
        if (d->owner && d->owner->phase == PHASE_URB) {
            memcpy(o->attached_to, d->owner->peer, sizeof(o->attached_to));
            o->attached_port = d->owner->peer_port;
        }
        grant_t *g = grant_find(srv, d->busid);
        if (g) {
            for (int j = 0; j < g->n; j++)
                memcpy(o->granted_to[j], g->addrs[j], sizeof(o->granted_to[j]));
            o->num_granted = g->n;
            memcpy(o->lease_id, g->lease_id, sizeof(o->lease_id));
        }
        stats_fill(d, &o->stats);
    }
    srv_unlock(srv);
    return n;
}

void usbip_server_buffer_stats(const usbip_server_t *srv, usbip_buffer_stats_t *out)
{
    const pool_t *p = &srv->pool;
    out->budget = srv->cfg.buffer_budget;
    out->block_size = p->block_size;
    out->blocks = p->nblocks;
    out->used = (size_t)(p->nblocks - p->nfree) * p->block_size;
    out->peak = (size_t)p->peak_used * p->block_size;
    out->waits = p->waits;
    out->too_big = p->too_big;
}

uint64_t usbip_server_copies(const usbip_server_t *srv)
{
    return srv->copies;
}

int usbip_server_session_count(const usbip_server_t *srv)
{
    int n = 0;
    for (int i = 0; i < srv->cfg.max_sessions; i++)
        if (srv->sessions[i].used)
            n++;
    return n;
}
