/*
 * instance.c - one simulated dongle's life: the boot (slot choice), the host
 * controller, the USB/IP listener and core, the devices; a restart (the
 * "reboot" command, or the OTA reset into the new slot) that takes all of it
 * down and brings it back with the devices that were plugged, as
 * power-cycling a board would; and a power cut ("crash") that leaves it
 * down until "start".
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dongle.h"

static void vhc_cb(void *arg, int fd, unsigned ev)
{
    (void)fd;
    (void)ev;
    vhc_process(arg);
}

int dongle_start(dongle_t *d, const char *const *specs, int nspecs, char *err, size_t err_len)
{
    const dongle_opts_t *o = d->opts;
    bool p4 = strcmp(o->chip, "p4") == 0;
    vhc_config_t vcfg = p4 ? VHC_CONFIG_ESP32P4() : VHC_CONFIG_ESP32S3();
    vcfg.bus_timing = o->bus_timing;
    usbip_server_config_t scfg = USBIP_SERVER_DEFAULT_CONFIG();
    scfg.tag = d->id;
    if (p4) {
        scfg.block_size = 64u * 1024u;
        scfg.buffer_budget = 1024u * 1024u;
    }
    if (o->budget)
        scfg.buffer_budget = (size_t)o->budget;
    if (scfg.buffer_budget < scfg.block_size)
        scfg.block_size = scfg.buffer_budget;
    scfg.keepalive_idle_s = o->keepalive_s;
    scfg.enforce_grants = o->enforce;
    posix_log_level_parse(o->log_level, &d->log_cfg.max_level);

    if (dongle_boot(d, err, err_len) != 0)
        return -1;
    if (vhc_create(&vcfg, &d->vhc) != 0) {
        snprintf(err, err_len, "cannot create the host controller");
        dongle_unboot(d);
        return -1;
    }
    int rc = d->no_listener ? posix_net_create(d->loop, &d->net, err, err_len)
                            : posix_net_listen(d->loop, d->listen, &d->net, err, err_len);
    if (rc != 0) {
        vhc_destroy(d->vhc);
        d->vhc = NULL;
        dongle_unboot(d);
        return -1;
    }
    if (!d->no_listener) {
        d->port = posix_net_bound_port(d->net);
        /* the next boot listens on the same port, as the board always does on 3240 */
        const char *colon = strrchr(d->listen, ':');
        if (colon && strcmp(colon, ":0") == 0)
            snprintf(d->listen + (colon - d->listen), sizeof(d->listen) - (size_t)(colon - d->listen), ":%d",
                     d->port);
    }
    if (d->link_down)
        posix_net_set_link(d->net, false);
    usbip_server_ports_t ports = {
        .usb = vhc_uhp_ops(),
        .usb_ctx = d->vhc,
        .net = posix_net_ops(),
        .net_ctx = d->net,
        .clock = posix_clock(),
        .log = posix_log(&d->log_cfg),
        .observer = {dongle_agent_usbip_event, d},
    };
    usbip_err_t e = usbip_server_create(&scfg, &ports, &d->srv);
    if (e != USBIP_OK) {
        snprintf(err, err_len, "cannot start the USB/IP server: %s", usbip_strerror(e));
        posix_net_destroy(d->net);
        vhc_destroy(d->vhc);
        d->net = NULL;
        d->vhc = NULL;
        dongle_unboot(d);
        return -1;
    }
    posix_net_attach(d->net, d->srv);
    posix_loop_add(d->loop, vhc_fd(d->vhc), true, false, vhc_cb, d->vhc);
    memset(d->plugged, 0, (size_t)d->plugged_cap * sizeof(*d->plugged));
    for (int i = 0; i < nspecs; i++) {
        char busid[32], why[256];
        if (dongle_plug(d, specs[i], busid, sizeof(busid), why, sizeof(why)) != 0) {
            snprintf(err, err_len, "--device %s: %s", specs[i], why);
            dongle_stop(d);
            return -2;
        }
    }
    /* Let the devices enumerate before the port is announced, so a client
     * that connects right after the banner sees them. */
    for (int i = 0; i < 50 && nspecs > 0; i++) {
        posix_loop_run_once(d->loop, 0);
        if (usbip_server_list_devices(d->srv, NULL, 0) >= nspecs)
            break;
        posix_loop_run_once(d->loop, 10);
    }
    return 0;
}

void dongle_stop(dongle_t *d)
{
    if (d->srv)
        usbip_server_destroy(d->srv);
    if (d->net)
        posix_net_destroy(d->net);
    if (d->vhc) {
        posix_loop_del(d->loop, vhc_fd(d->vhc));
        vhc_destroy(d->vhc);
    }
    d->srv = NULL;
    d->net = NULL;
    d->vhc = NULL;
    dongle_unboot(d);
}

int dongle_restart(dongle_t *d, char *err, size_t err_len)
{
    /* in plugging order: a hub comes back before what was plugged into it */
    char (*specs)[DONGLE_SPEC_MAX] = calloc((size_t)d->plugged_cap, DONGLE_SPEC_MAX);
    const char **ptrs = calloc((size_t)d->plugged_cap, sizeof(*ptrs));
    if (!specs || !ptrs) {
        free(specs);
        free(ptrs);
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    int n = 0;
    for (int i = 0; i < d->plugged_cap; i++) {
        if (d->plugged[i].used && d->plugged[i].spec[0]) {
            memcpy(specs[n], d->plugged[i].spec, DONGLE_SPEC_MAX);
            ptrs[n] = specs[n];
            n++;
        }
    }
    dongle_stop(d);
    int rc = dongle_start(d, ptrs, n, err, err_len);
    free(specs);
    free(ptrs);
    return rc;
}

void dongle_crash(dongle_t *d)
{
    dongle_agent_power_cut(d);
    /* d->plugged stays: the devices are hardware, still in their ports */
    dongle_stop(d);
    d->off = true;
}

int dongle_power_on(dongle_t *d, const char *boot_reason, char *err, size_t err_len)
{
    if (dongle_restart(d, err, err_len) != 0)
        return -1;
    if (dongle_agent_start(d, boot_reason, err, err_len) != 0) {
        dongle_stop(d);
        return -1;
    }
    d->off = false;
    return 0;
}
