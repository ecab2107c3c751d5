/*
 * grants.c - lease enforcement. USB/IP has no authentication; the fleet
 * service grants a busid to client addresses for the time of a lease, and
 * the core refuses imports from anyone else while enforcement is on.
 */
#include <string.h>

#include "server_priv.h"

grant_t *grant_find(usbip_server_t *srv, const char *busid)
{
    for (int i = 0; i < srv->cfg.max_devices; i++)
        if (srv->grants[i].used && strcmp(srv->grants[i].busid, busid) == 0)
            return &srv->grants[i];
    return NULL;
}

static bool grant_lists(const grant_t *g, const char *peer)
{
    for (int i = 0; i < g->n; i++)
        if (strcmp(g->addrs[i], peer) == 0)
            return true;
    return false;
}

bool grant_allows(usbip_server_t *srv, const char *busid, const char *peer)
{
    grant_t *g = grant_find(srv, busid);
    return g && grant_lists(g, peer);
}

/* Close the session on busid if its peer is not (or no longer) granted. */
static void enforce_on(usbip_server_t *srv, const char *busid, const char *why)
{
    device_t *d = dev_by_busid(srv, busid);
    if (!d || !d->owner || d->owner->phase != PHASE_URB)
        return;
    if (!srv->cfg.enforce_grants && strcmp(why, "revoked") != 0)
        return;
    grant_t *g = grant_find(srv, busid);
    if (g && grant_lists(g, d->owner->peer) && strcmp(why, "revoked") != 0)
        return;
    sess_close(srv, d->owner, why);
}

usbip_err_t usbip_grant(usbip_server_t *srv, const char *busid, const char *const *addrs, int n,
                        const char *lease_id, int64_t expires_unix)
{
    if (!srv || !busid || !busid[0] || strlen(busid) >= USBIP_BUSID_LEN || n < 1 ||
        n > USBIP_MAX_GRANT_ADDRS || !addrs)
        return USBIP_ERR_INVALID_ARG;
    for (int i = 0; i < n; i++)
        if (!addrs[i] || !addrs[i][0] || strlen(addrs[i]) >= sizeof(((grant_t *)0)->addrs[0]))
            return USBIP_ERR_INVALID_ARG;
    if (lease_id && strlen(lease_id) >= sizeof(((grant_t *)0)->lease_id))
        return USBIP_ERR_INVALID_ARG;
    srv_lock(srv);
    grant_t *g = grant_find(srv, busid);
    for (int i = 0; i < srv->cfg.max_devices && !g; i++)
        if (!srv->grants[i].used)
            g = &srv->grants[i];
    if (!g) {
        srv_unlock(srv);
        return USBIP_ERR_FULL;
    }
    memset(g, 0, sizeof(*g));
    g->used = true;
    strcpy(g->busid, busid);
    for (int i = 0; i < n; i++)
        strcpy(g->addrs[i], addrs[i]);
    g->n = n;
    if (lease_id)
        strcpy(g->lease_id, lease_id);
    g->expires_unix = expires_unix;
    srv_log(srv, USBIP_LOG_INFO, "grant %s to %s%s (lease %s)", busid, addrs[0], n > 1 ? ",..." : "",
            g->lease_id[0] ? g->lease_id : "-");
    enforce_on(srv, busid, "grant changed");
    srv_unlock(srv);
    return USBIP_OK;
}

static void revoke_locked(usbip_server_t *srv, const char *busid, const char *why)
{
    grant_t *g = grant_find(srv, busid);
    if (g)
        g->used = false;
    enforce_on(srv, busid, why);
}

usbip_err_t usbip_revoke(usbip_server_t *srv, const char *busid)
{
    if (!srv || !busid || strlen(busid) >= USBIP_BUSID_LEN)
        return USBIP_ERR_INVALID_ARG;
    srv_lock(srv);
    bool known = grant_find(srv, busid) || dev_by_busid(srv, busid);
    if (known) {
        srv_log(srv, USBIP_LOG_INFO, "revoke %s", busid);
        revoke_locked(srv, busid, "revoked");
    }
    srv_unlock(srv);
    return known ? USBIP_OK : USBIP_ERR_NOT_FOUND;
}

void grants_expire(usbip_server_t *srv)
{
    int64_t now = srv->p.clock.unix_time ? srv->p.clock.unix_time(srv->p.clock.ctx) : 0;
    if (now <= 0)
        return;
    for (int i = 0; i < srv->cfg.max_devices; i++) {
        grant_t *g = &srv->grants[i];
        if (g->used && g->expires_unix > 0 && now >= g->expires_unix) {
            char busid[USBIP_BUSID_LEN];
            memcpy(busid, g->busid, sizeof(busid));
            srv_log(srv, USBIP_LOG_INFO, "grant of %s (lease %s) expired", busid,
                    g->lease_id[0] ? g->lease_id : "-");
            revoke_locked(srv, busid, "revoked");
        }
    }
}

void usbip_set_enforce(usbip_server_t *srv, bool on)
{
    srv_lock(srv);
    srv->cfg.enforce_grants = on;
    if (on)
        for (int i = 0; i < srv->cfg.max_devices; i++)
            if (srv->devs[i].used && srv->devs[i].owner)
                enforce_on(srv, srv->devs[i].busid, "not granted");
    srv_unlock(srv);
}

bool usbip_get_enforce(const usbip_server_t *srv)
{
    return srv->cfg.enforce_grants;
}
