/*
 * devices.c - the devices the USB host port reports: identity (busid = port
 * path, stable across re-plug), descriptors treated as hostile input, the
 * endpoint map of the current alternate settings, interface claims.
 */
#include <string.h>

#include "server_priv.h"

int dev_epq_index(uint8_t epnum, uint8_t dir)
{
    return epnum == 0 ? 0 : (int)(epnum | (dir ? 16 : 0));
}

device_t *dev_by_busid(usbip_server_t *srv, const char *busid)
{
    for (int i = 0; i < srv->cfg.max_devices; i++)
        if (srv->devs[i].used && !srv->devs[i].gone && strcmp(srv->devs[i].busid, busid) == 0)
            return &srv->devs[i];
    return NULL;
}

device_t *dev_by_handle(usbip_server_t *srv, uhp_dev_handle_t h)
{
    for (int i = 0; i < srv->cfg.max_devices; i++)
        if (srv->devs[i].used && srv->devs[i].h == h)
            return &srv->devs[i];
    return NULL;
}

int dev_in_order(usbip_server_t *srv, device_t **out)
{
    int n = 0;
    for (int i = 0; i < srv->cfg.max_devices; i++) {
        device_t *d = &srv->devs[i];
        if (!d->used || d->gone)
            continue;
        /* insertion sort: at most max_devices (<= 255) entries */
        int j = n++;
        while (j > 0 && out[j - 1]->order > d->order) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = d;
    }
    return n;
}

static int intf_slot(device_t *d, uint8_t num)
{
    for (int i = 0; i < d->num_intf; i++)
        if (d->intf[i].num == num)
            return i;
    return -1;
}

/* Walk the configuration descriptor. Lengths are checked at every step: a
 * malicious device must not make us read outside what the port cached. */
int dev_parse_config(device_t *d)
{
    const uint8_t *c = d->cdesc;
    size_t len = d->cdesc_len;
    memset(d->ep, 0, sizeof(d->ep));
    d->ep[0] = (ep_info_t){.type = XFER_CONTROL, .valid = true, .mps = d->mps0 ? d->mps0 : 8};
    if (!c || len < 9 || c[1] != 2)
        return -1;
    size_t total = (size_t)c[2] | ((size_t)c[3] << 8);
    if (total < len)
        len = total;
    bool first_parse = d->num_intf == 0;
    int cur = -1;
    uint8_t cur_alt = 0;
    for (size_t off = 0; off + 2 <= len;) {
        uint8_t bl = c[off], type = c[off + 1];
        if (bl < 2 || off + bl > len)
            break;
        if (type == 4 && bl >= 9) {
            uint8_t num = c[off + 2], alt = c[off + 3];
            cur = intf_slot(d, num);
            if (cur < 0 && first_parse && d->num_intf < USBIP_MAX_INTF) {
                cur = d->num_intf++;
                d->intf[cur].num = num;
                d->intf[cur].alt = 0;
                d->intf[cur].claimed = false;
                d->intf[cur].cls = c[off + 5];
                d->intf[cur].sub = c[off + 6];
                d->intf[cur].proto = c[off + 7];
            }
            cur_alt = alt;
        } else if (type == 5 && bl >= 7 && cur >= 0 && cur_alt == d->intf[cur].alt) {
            uint8_t addr = c[off + 2];
            uint8_t num = addr & 0x0f;
            if (num != 0) {
                int qi = dev_epq_index(num, (addr & 0x80) ? 1 : 0);
                d->ep[qi].type = c[off + 3] & 3;
                d->ep[qi].mps = (uint16_t)(((unsigned)c[off + 4] | ((unsigned)c[off + 5] << 8)) & 0x7ff);
                d->ep[qi].interval = c[off + 6];
                d->ep[qi].intf = (uint8_t)cur;
                d->ep[qi].valid = d->ep[qi].mps > 0;
            }
        }
        off += bl;
    }
    return 0;
}

void dev_record(usbip_server_t *srv, const device_t *d, usbip_dev_record_t *rec)
{
    memset(rec, 0, sizeof(*rec));
    /* The path is informational for clients; keep it unique per dongle. */
    size_t tl = usbip_strnlen(srv->tag, sizeof(srv->tag));
    memcpy(rec->path, "/fleet/", 7);
    memcpy(rec->path + 7, srv->tag, tl);
    rec->path[7 + tl] = '/';
    memcpy(rec->path + 8 + tl, d->busid, usbip_strnlen(d->busid, USBIP_BUSID_LEN - 1));
    memcpy(rec->busid, d->busid, sizeof(rec->busid));
    rec->busid[USBIP_BUSID_LEN - 1] = 0;
    rec->busnum = srv->cfg.busnum;
    rec->devnum = d->addr;
    rec->speed = d->speed;
    rec->idVendor = (uint16_t)(d->ddesc[8] | (d->ddesc[9] << 8));
    rec->idProduct = (uint16_t)(d->ddesc[10] | (d->ddesc[11] << 8));
    rec->bcdDevice = (uint16_t)(d->ddesc[12] | (d->ddesc[13] << 8));
    rec->bDeviceClass = d->ddesc[4];
    rec->bDeviceSubClass = d->ddesc[5];
    rec->bDeviceProtocol = d->ddesc[6];
    rec->bConfigurationValue = d->cfg_value;
    rec->bNumConfigurations = d->ddesc[17];
    rec->bNumInterfaces = d->num_intf;
}

int dev_claim_all(usbip_server_t *srv, device_t *d)
{
    for (int i = 0; i < d->num_intf; i++) {
        int rc = srv->p.usb->interface_claim(srv->p.usb_ctx, d->h, d->intf[i].num, d->intf[i].alt);
        if (rc != UHP_OK) {
            srv_log(srv, USBIP_LOG_WARN, "%s: claiming interface %u alt %u failed (%d%s)", d->busid,
                    d->intf[i].num, d->intf[i].alt, rc,
                    rc == UHP_ERR_NO_CHANNEL ? ": host channels exhausted" : "");
            dev_release_all(srv, d);
            return rc;
        }
        d->intf[i].claimed = true;
    }
    return UHP_OK;
}

void dev_release_all(usbip_server_t *srv, device_t *d)
{
    for (int i = 0; i < d->num_intf; i++) {
        if (!d->intf[i].claimed)
            continue;
        int rc = srv->p.usb->interface_release(srv->p.usb_ctx, d->h, d->intf[i].num);
        if (rc != UHP_OK && !d->gone)
            srv_log(srv, USBIP_LOG_WARN, "%s: releasing interface %u failed (%d)", d->busid,
                    d->intf[i].num, rc);
        d->intf[i].claimed = false;
    }
}

/* The importing session is gone: once nothing of it is left in the host,
 * give the channels back and make the device importable again. */
void dev_try_release(usbip_server_t *srv, device_t *d)
{
    if (d->in_host > 0 || d->queued > 0)
        return;
    dev_release_all(srv, d);
    /* Fresh pipes come back at alt 0 on the next import, as after a reset. */
    for (int i = 0; i < d->num_intf; i++)
        d->intf[i].alt = 0;
    dev_parse_config(d);
    d->resetting = false;
    for (int qi = 0; qi < USBIP_NUM_EPQ; qi++)
        d->q[qi].resync = false;
    d->owner = NULL;
}

void dev_added_cb(void *ctx, const uhp_dev_info_t *info)
{
    usbip_server_t *srv = ctx;
    srv_lock(srv);
    device_t *d = NULL;
    for (int i = 0; i < srv->cfg.max_devices && !d; i++)
        if (!srv->devs[i].used)
            d = &srv->devs[i];
    if (!d) {
        srv_log(srv, USBIP_LOG_WARN, "device at %s not exported: all %d device slots in use",
                info->port_path, srv->cfg.max_devices);
        srv->p.usb->dev_close(srv->p.usb_ctx, info->handle);
        srv_unlock(srv);
        return;
    }
    memset(d, 0, sizeof(*d));
    d->h = info->handle;
    size_t pl = usbip_strnlen(info->port_path, sizeof(info->port_path));
    if (pl >= USBIP_BUSID_LEN)
        pl = USBIP_BUSID_LEN - 1;
    memcpy(d->busid, info->port_path, pl);
    d->speed = (uint8_t)info->speed;
    d->addr = info->dev_addr;
    d->mps0 = info->bMaxPacketSize0;
    d->cfg_value = info->bConfigurationValue;
    const uint8_t *dd = NULL;
    if (srv->p.usb->get_device_desc(srv->p.usb_ctx, d->h, &dd) != UHP_OK || !dd || dd[0] < 18 ||
        dd[1] != 1 ||
        srv->p.usb->get_config_desc(srv->p.usb_ctx, d->h, &d->cdesc, &d->cdesc_len) != UHP_OK ||
        dev_parse_config(d) != 0) {
        srv_log(srv, USBIP_LOG_WARN, "device at %s not exported: unreadable descriptors", d->busid);
        srv->p.usb->dev_close(srv->p.usb_ctx, info->handle);
        srv_unlock(srv);
        return;
    }
    memcpy(d->ddesc, dd, 18);
    if (d->mps0 == 0)
        d->mps0 = dd[7];
    d->ep[0].mps = d->mps0 ? d->mps0 : 8;
    d->used = true;
    d->order = srv->dev_order++;
    srv_log(srv, USBIP_LOG_INFO, "device %04x:%04x at busid %s (speed %u, %u interfaces)",
            dd[8] | (dd[9] << 8), dd[10] | (dd[11] << 8), d->busid, d->speed, d->num_intf);
    srv_unlock(srv);
}

void dev_gone_cb(void *ctx, uhp_dev_handle_t h)
{
    usbip_server_t *srv = ctx;
    srv_lock(srv);
    device_t *d = dev_by_handle(srv, h);
    if (!d) {
        srv_unlock(srv);
        return;
    }
    srv_log(srv, USBIP_LOG_INFO, "device at busid %s removed", d->busid);
    d->gone = true;
    /* Every in-flight transfer has been called back already (port contract):
     * what is left is queued in software. */
    urb_fail_device(srv, d, USBIP_ENODEV);
    session_t *s = d->owner;
    if (s && s->phase == PHASE_URB && s->dev == d)
        srv_event(srv, USBIP_EV_DETACHED, d->busid, s, USBIP_ST_OK, NULL);
    if (s) {
        for (int i = 0; i < srv->cfg.max_urbs_per_session; i++)
            if (s->urbs[i].d == d)
                s->urbs[i].d = NULL;
        s->dev = NULL;
        if (s->phase == PHASE_URB) {
            /* Clean end: the client gets every RET_SUBMIT(-ENODEV), then EOF. */
            s->close_after_tx = true;
            sess_update_interest(srv, s);
        }
    }
    dev_release_all(srv, d);
    srv->p.usb->dev_close(srv->p.usb_ctx, d->h);
    d->used = false;
    d->owner = NULL;
    sess_flush_all(srv);
    srv_unlock(srv);
}
