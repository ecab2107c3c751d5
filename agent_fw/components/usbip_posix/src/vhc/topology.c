/*
 * topology.c - root ports, hubs and the lifetime of device records.
 *
 * A record lives from plug until the core closes it (or, for devices never
 * reported - hubs, refused or not yet enumerated ones - until unplug). The
 * port it sat on is free the moment the cable is pulled, so a device can be
 * re-plugged while the core still holds the old handle: it gets a new record,
 * a new address and the same port path, exactly as on ESP-IDF.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vhc_internal.h"

void vhc_seterr(char *err, size_t len, const char *fmt, ...)
{
    if (!err || len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

void vhc_log(vhc_t *v, const char *fmt, ...)
{
    char line[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (v->log_fn)
        v->log_fn(v->log_ctx, line);
    else
        fprintf(stderr, "vhc: %s\n", line);
}

void vhc_set_log(vhc_t *vhc, vhc_log_fn fn, void *ctx)
{
    vhc->log_fn = fn;
    vhc->log_ctx = ctx;
}

int vhc_create(const vhc_config_t *cfg, vhc_t **out)
{
    if (!cfg || !out)
        return -1;
    if (cfg->num_channels < 1 || cfg->num_channels > 64 || cfg->root_ports < 0 ||
        cfg->root_ports > VHC_MAX_ROOT_PORTS)
        return -1;
    if (cfg->chip == VHC_CHIP_ESP32S3 && cfg->high_speed)
        return -1; /* the S3 PHY is Full-Speed only */
    vhc_t *v = calloc(1, sizeof *v);
    if (!v)
        return -1;
    v->cfg = *cfg;
    v->root_ports = cfg->root_ports ? cfg->root_ports : 4;
    v->next_addr = 1;
    v->host.wake = vhc_host_wake;
    v->host.now_ns = vhc_host_now;
    v->host.host_ctx = v;
    if (vhc_timing_init(v) != 0) {
        free(v);
        return -1;
    }
    *out = v;
    return 0;
}

void vhc_dev_free(vhc_dev_t *d)
{
    vhc_t *v = d->vhc;
    for (vhc_dev_t **pp = &v->devs; *pp; pp = &(*pp)->next_all) {
        if (*pp == d) {
            *pp = d->next_all;
            break;
        }
    }
    if (d->vdev) {
        d->vdev->host = NULL;
        if (d->vdev->ops && d->vdev->ops->destroy)
            d->vdev->ops->destroy(d->vdev);
    }
    free(d->config);
    for (int i = 0; i < 3; i++)
        free(d->str[i]);
    free(d);
}

void vhc_destroy(vhc_t *vhc)
{
    if (!vhc)
        return;
    while (vhc->devs)
        vhc_dev_free(vhc->devs);
    vhc_timing_fini(vhc);
    free(vhc);
}

int vhc_fd(const vhc_t *vhc)
{
    return vhc->tfd;
}

/* "1-2.3.1" -> ports {2,3,1}. Returns the count or -1. */
static int parse_path(const char *path, uint8_t *ports, int max, char *err, size_t len)
{
    if (!path || strncmp(path, "1-", 2) != 0) {
        vhc_seterr(err, len, "port path '%s' must look like 1-N or 1-N.M (bus 1)", path ? path : "");
        return -1;
    }
    const char *s = path + 2;
    int n = 0;
    for (;;) {
        if (*s < '1' || *s > '9') {
            vhc_seterr(err, len, "port path '%s': port numbers are 1..15 without leading zeros",
                       path);
            return -1;
        }
        unsigned val = 0;
        while (*s >= '0' && *s <= '9') {
            val = val * 10 + (unsigned)(*s - '0');
            if (val > VHC_MAX_HUB_PORTS) {
                vhc_seterr(err, len, "port path '%s': port number above %d", path,
                           VHC_MAX_HUB_PORTS);
                return -1;
            }
            s++;
        }
        if (n == max) {
            vhc_seterr(err, len, "port path '%s': more than %d hubs in a chain (USB allows %d)",
                       path, max - 1, VHC_MAX_HUB_TIERS);
            return -1;
        }
        ports[n++] = (uint8_t)val;
        if (*s == '\0')
            return n;
        if (*s != '.') {
            vhc_seterr(err, len, "port path '%s': unexpected '%c'", path, *s);
            return -1;
        }
        s++;
    }
}

/* Slot that `path` names, its parent record (NULL for root) or NULL + err. */
static vhc_dev_t **resolve_slot(vhc_t *v, const char *path, vhc_dev_t **parent, char *err,
                                size_t len)
{
    uint8_t ports[VHC_MAX_HUB_TIERS + 1];
    int n = parse_path(path, ports, VHC_MAX_HUB_TIERS + 1, err, len);
    if (n < 0)
        return NULL;
    if (ports[0] > v->root_ports) {
        vhc_seterr(err, len, "port path '%s': the root hub has ports 1-1..1-%d", path,
                   v->root_ports);
        return NULL;
    }
    vhc_dev_t **slot = &v->root[ports[0] - 1];
    vhc_dev_t *up = NULL;
    for (int i = 1; i < n; i++) {
        vhc_dev_t *hub = *slot;
        if (!hub) {
            vhc_seterr(err, len, "port path '%s': nothing is plugged at the parent port", path);
            return NULL;
        }
        if (!hub->is_hub) {
            vhc_seterr(err, len, "port path '%s': the device at %s is a %s, not a hub", path,
                       hub->path, hub->vdev ? hub->vdev->model : "device");
            return NULL;
        }
        if (ports[i] > hub->vdev->hub_ports) {
            vhc_seterr(err, len, "port path '%s': hub %s has only %u ports", path, hub->path,
                       hub->vdev->hub_ports);
            return NULL;
        }
        up = hub;
        slot = &hub->children[ports[i] - 1];
    }
    *parent = up;
    return slot;
}

vhc_dev_t *vhc_find_path(vhc_t *v, const char *path)
{
    vhc_dev_t *parent;
    char err[8];
    vhc_dev_t **slot = resolve_slot(v, path, &parent, err, sizeof err);
    return slot ? *slot : NULL;
}

vhc_dev_t *vhc_dev_from_handle(vhc_t *v, uhp_dev_handle_t h)
{
    for (vhc_dev_t *d = v->devs; d; d = d->next_all)
        if ((uhp_dev_handle_t)d == h)
            return d;
    return NULL;
}

static const char *check_vdev(const vhc_t *v, const vdev_t *dev)
{
    if (!dev->ops || !dev->ops->control || !dev->ops->in_packet || !dev->ops->out_packet ||
        !dev->ops->destroy)
        return "device model lacks control/in_packet/out_packet/destroy";
    if (!dev->device_desc || !dev->config_desc)
        return "device model has no device or configuration descriptor";
    if (dev->speed != VDEV_SPEED_LOW && dev->speed != VDEV_SPEED_FULL &&
        dev->speed != VDEV_SPEED_HIGH)
        return "device speed is not low, full or high";
    if (dev->speed == VDEV_SPEED_HIGH && !v->cfg.high_speed)
        return "High-Speed device on a Full-Speed-only root port (ESP32-S3): plug it as speed=full";
    if (dev->is_hub && (dev->hub_ports < 1 || dev->hub_ports > VHC_MAX_HUB_PORTS))
        return "hub must have 1..15 ports";
    return NULL;
}

static vhc_dev_t *new_record(vhc_t *v, vdev_t *dev, const char *path, vhc_dev_t *parent,
                             uint8_t port_num)
{
    vhc_dev_t *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->vhc = v;
    d->vdev = dev;
    snprintf(d->path, sizeof d->path, "%s", path);
    d->parent = parent;
    d->depth = parent ? parent->depth + 1 : 0;
    d->port_num = port_num;
    d->is_hub = dev->is_hub;
    d->state = VHC_DEV_PENDING;
    d->enum_due_ns = vhc_clock_ns() + v->cfg.enum_delay_ns;
    dev->host = &v->host;
    /* Append: process order follows plug order, which keeps logs readable. */
    vhc_dev_t **pp = &v->devs;
    while (*pp)
        pp = &(*pp)->next_all;
    *pp = d;
    return d;
}

int vhc_plug(vhc_t *vhc, const char *port_path, vdev_t *dev, char *err, size_t err_len)
{
    if (!dev) {
        vhc_seterr(err, err_len, "no device to plug");
        return -1;
    }
    const char *why = check_vdev(vhc, dev);
    vhc_dev_t *parent = NULL;
    vhc_dev_t **slot = NULL;
    if (why)
        vhc_seterr(err, err_len, "%s", why);
    else
        slot = resolve_slot(vhc, port_path, &parent, err, err_len);
    if (slot && *slot) {
        vhc_seterr(err, err_len, "port %s is occupied by a %s", port_path,
                   (*slot)->vdev ? (*slot)->vdev->model : "device");
        slot = NULL;
    }
    if (!slot) {
        if (dev->ops && dev->ops->destroy)
            dev->ops->destroy(dev);
        return -1;
    }
    uint8_t port_num = 0;
    const char *last = strrchr(port_path, parent ? '.' : '-');
    port_num = (uint8_t)atoi(last + 1);
    vhc_dev_t *d = new_record(vhc, dev, port_path, parent, port_num);
    if (!d) {
        vhc_seterr(err, err_len, "out of memory");
        dev->host = NULL;
        dev->ops->destroy(dev);
        return -1;
    }
    *slot = d;
    vhc_kick(vhc);
    return 0;
}

int vhc_take_channels(vhc_t *v, vhc_dev_t *d, int n, const char *what)
{
    if (v->channels_in_use + n > v->cfg.num_channels) {
        v->stats.channel_refusals++;
        vhc_log(v, "%s: %s needs %d host channel(s), %d of %d in use: refused (channels exhausted)",
                d->path, what, n, v->channels_in_use, v->cfg.num_channels);
        return -1;
    }
    v->channels_in_use += n;
    d->channels += n;
    return 0;
}

void vhc_return_channels(vhc_t *v, vhc_dev_t *d, int n)
{
    if (n > d->channels)
        n = d->channels;
    d->channels -= n;
    v->channels_in_use -= n;
}

void vhc_dev_gone(vhc_dev_t *d)
{
    vhc_t *v = d->vhc;
    bool was_configured = d->state == VHC_DEV_CONFIGURED;
    /* Every transfer of the device ends NO_DEVICE before dev_gone (the
     * completion queue is delivered before device events). */
    vhc_pipe_fail_all(v, &d->ep0, UHP_STATUS_NO_DEVICE);
    for (int k = 0; k < VHC_EP_KEYS; k++)
        vhc_pipe_fail_all(v, &d->pipes[k], UHP_STATUS_NO_DEVICE);
    vhc_return_channels(v, d, d->channels);
    d->state = VHC_DEV_GONE;
    d->parent = NULL;
    if (d->vdev)
        d->vdev->host = NULL; /* its wake calls are no-ops from now on */
    if (was_configured && (d->reported || d->report_pending) && !d->is_hub) {
        if (d->reported)
            d->gone_pending = true;
        else
            d->reap = true; /* the core never heard of it */
        d->report_pending = false;
    } else {
        d->reap = true;
    }
}

/* Children first, so the core sees leaves disappear before their hub. */
static void unplug_subtree(vhc_dev_t *d)
{
    if (d->is_hub)
        for (int i = 0; i < VHC_MAX_HUB_PORTS; i++)
            if (d->children[i]) {
                unplug_subtree(d->children[i]);
                d->children[i] = NULL;
            }
    vhc_dev_gone(d);
}

int vhc_unplug(vhc_t *vhc, const char *port_path, char *err, size_t err_len)
{
    vhc_dev_t *parent;
    vhc_dev_t **slot = resolve_slot(vhc, port_path, &parent, err, err_len);
    if (!slot)
        return -1;
    if (!*slot) {
        vhc_seterr(err, err_len, "nothing is plugged at %s", port_path);
        return -1;
    }
    vhc_dev_t *d = *slot;
    *slot = NULL;
    unplug_subtree(d);
    vhc_kick(vhc);
    return 0;
}

int vhc_next_free_port(vhc_t *vhc, char *path, size_t len)
{
    for (int i = 0; i < vhc->root_ports; i++) {
        if (!vhc->root[i]) {
            snprintf(path, len, "1-%d", i + 1);
            return 0;
        }
    }
    return -1;
}

int vhc_device_command(vhc_t *vhc, const char *port_path, const char *cmd, char *reply,
                       size_t len)
{
    vhc_dev_t *parent;
    vhc_dev_t **slot = resolve_slot(vhc, port_path, &parent, reply, len);
    if (!slot)
        return -1;
    vhc_dev_t *d = *slot;
    if (!d) {
        vhc_seterr(reply, len, "nothing is plugged at %s", port_path);
        return -1;
    }
    if (!d->vdev->ops->command) {
        vhc_seterr(reply, len, "the %s at %s takes no commands", d->vdev->model, port_path);
        return -1;
    }
    int rc = d->vdev->ops->command(d->vdev, cmd, reply, len);
    vhc_kick(vhc); /* the command may have made data ready */
    return rc;
}

/* Re-enumerate the device on the same port: the old record goes away like
 * an unplug, the vdev moves to a fresh record. */
int vhc_reset_port(vhc_t *v, vhc_dev_t *d)
{
    vhc_dev_t **slot = d->parent ? &d->parent->children[d->port_num - 1] : NULL;
    if (!d->parent) {
        for (int i = 0; i < v->root_ports; i++)
            if (v->root[i] == d)
                slot = &v->root[i];
    }
    if (!slot || *slot != d)
        return -1;
    vdev_t *dev = d->vdev;
    vhc_dev_t *parent = d->parent;
    vhc_dev_gone(d);
    d->vdev = NULL;
    if (dev->ops->reset_endpoint)
        dev->ops->reset_endpoint(dev, 0xff);
    vhc_dev_t *fresh = new_record(v, dev, d->path, parent, d->port_num);
    if (!fresh) {
        *slot = NULL;
        dev->host = NULL;
        dev->ops->destroy(dev);
        return -1;
    }
    *slot = fresh;
    vhc_kick(v);
    return 0;
}

void vhc_reap(vhc_t *v)
{
    vhc_dev_t *d = v->devs;
    while (d) {
        vhc_dev_t *next = d->next_all;
        if (d->reap)
            vhc_dev_free(d);
        d = next;
    }
}
