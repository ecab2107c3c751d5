/*
 * agent_glue.c - the fleet agent inside fleet-dongle. Each dongle gets its
 * own agent, libmosquitto client (bound to the dongle's 127.x address, its
 * socket on the shared epoll loop, no thread), config store and, with an
 * OTA key, file-backed OTA slots in <state-dir>/<id>/. One mDNS responder
 * serves every dongle of the process. An OTA download runs on a thread of
 * its own (the worker port) under the process's big lock. Also the
 * simulated bootloader (which
 * reads the booted image's fault directive) and the network-cut switch that
 * reaches every port with a socket.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "agent_posix.h"
#include "agent_runtime_posix.h"
#include "dongle.h"
#include "fleet_agent/err.h"

struct dongle_agent {
    dongle_t *d;
    fleet_agent_t *agent;
    fleet_mosq_t *mosq;
    int mosq_fd;                  /* on the loop, -1 none */
    fleet_sim_sys_t sys;
    fleet_stderr_log_t log;
    fleet_files_kv_t *kv;
    fleet_ota_t *ota;
    fleet_thread_worker_t *worker; /* the OTA task, with ota */
    fleet_curl_http_t http;
    char running[FLEET_VERSION_MAX];
    bool reboot;
    char reboot_reason[160];
};

static uint64_t mono_ms(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
static const fleet_clock_ops_t k_clock = {mono_ms};

/* ---- the MQTT socket on the dongle's loop ---- */

static void mosq_cb(void *arg, int fd, unsigned ev)
{
    dongle_agent_t *g = arg;
    (void)fd;
    fleet_mosq_on_events(g->mosq, (ev & (POSIX_EV_READ | POSIX_EV_HUP)) != 0, (ev & POSIX_EV_WRITE) != 0);
}

static void mosq_watch(void *arg, int fd, bool want_write)
{
    dongle_agent_t *g = arg;
    if (g->mosq_fd == fd) {
        posix_loop_mod(g->d->loop, fd, true, want_write);
        return;
    }
    if (g->mosq_fd >= 0)
        posix_loop_del(g->d->loop, g->mosq_fd);
    g->mosq_fd = fd;
    posix_loop_add(g->d->loop, fd, true, want_write, mosq_cb, g);
}

static void mosq_unwatch(void *arg, int fd)
{
    dongle_agent_t *g = arg;
    if (g->mosq_fd == fd) {
        posix_loop_del(g->d->loop, fd);
        g->mosq_fd = -1;
    }
}

/* ---- what only the dongle can do ---- */

static dongle_plugged_t *find_plugged(dongle_t *d, const char *busid)
{
    for (int i = 0; i < d->plugged_cap; i++)
        if (d->plugged[i].used && strcmp(d->plugged[i].busid, busid) == 0)
            return &d->plugged[i];
    return NULL;
}

static int h_describe(void *ctx, const char *busid, fleet_agent_dev_desc_t *out)
{
    dongle_agent_t *g = ctx;
    dongle_plugged_t *p = find_plugged(g->d, busid);
    if (!p || !p->have_desc)
        return FLEET_ERR_NOT_FOUND;
    *out = p->desc;
    return FLEET_OK;
}

/* "off" unplugs; the slot keeps busid and spec (dongle_unplug only marks it
 * unused), which is what "on" plugs back. */
static int h_port_power(void *ctx, const char *busid, const char *action, char *reason, size_t rl)
{
    dongle_agent_t *g = ctx;
    dongle_t *d = g->d;
    char err[256] = "";
    if (strcmp(action, "off") == 0) {
        dongle_plugged_t *p = find_plugged(d, busid);
        if (!p) {
            snprintf(reason, rl, "busid: no device on port %s", busid);
            return FLEET_ERR_NOT_FOUND;
        }
        if (dongle_unplug(d, busid, err, sizeof(err)) != 0) {
            snprintf(reason, rl, "busid: %s", err);
            return FLEET_ERR_STATE;
        }
        return FLEET_OK;
    }
    /* on */
    if (find_plugged(d, busid))
        return FLEET_OK; /* powered already */
    const char *spec = NULL;
    for (int i = 0; i < d->plugged_cap && !spec; i++)
        if (!d->plugged[i].used && strcmp(d->plugged[i].busid, busid) == 0 && d->plugged[i].spec[0])
            spec = d->plugged[i].spec;
    if (!spec) {
        snprintf(reason, rl, "busid: nothing was powered off on port %s", busid);
        return FLEET_ERR_NOT_FOUND;
    }
    char copy[DONGLE_SPEC_MAX], got[32];
    snprintf(copy, sizeof(copy), "%s", spec);
    if (dongle_plug(d, copy, got, sizeof(got), err, sizeof(err)) != 0) {
        snprintf(reason, rl, "busid: %s", err);
        return FLEET_ERR_STATE;
    }
    return FLEET_OK;
}

static void h_reboot(void *ctx, const char *reason)
{
    dongle_agent_t *g = ctx;
    g->reboot = true;
    snprintf(g->reboot_reason, sizeof(g->reboot_reason), "%s", reason);
}

static void h_config_applied(void *ctx, const fleet_config_t *cfg, unsigned changed)
{
    dongle_agent_t *g = ctx;
    if (changed & FLEET_CFG_CHANGED_LOG) {
        g->log.level = cfg->log_level;
        g->d->log_cfg.max_level = (usbip_log_level_t)cfg->log_level;
    }
}

static bool h_usbip_listening(void *ctx)
{
    dongle_agent_t *g = ctx;
    return g->d->net && posix_net_listening(g->d->net);
}

static const fleet_agent_host_ops_t k_host = {h_describe, h_port_power, h_reboot, h_config_applied,
                                              h_usbip_listening};

/* ---- life ---- */

static int mkdir_p(const char *dir)
{
    char tmp[512];
    snprintf(tmp, sizeof(tmp), "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    return mkdir(tmp, 0755) == 0 || errno == EEXIST ? 0 : -1;
}

static void glue_free(dongle_agent_t *g)
{
    if (g->agent)
        fleet_agent_destroy(g->agent, NULL);
    fleet_mosq_destroy(g->mosq);
    fleet_thread_worker_destroy(g->worker); /* joined by the agent already */
    if (g->kv)
        fleet_files_kv_close(g->kv);
    free(g->ota);
    free(g);
}

int dongle_agent_start(dongle_t *d, const char *boot_reason, char *err, size_t err_len)
{
    const dongle_opts_t *o = d->opts;
    if (!o->mqtt_url)
        return 0;
    dongle_agent_t *g = calloc(1, sizeof(*g));
    if (!g) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    g->d = d;
    g->mosq_fd = -1;
    memcpy(g->sys.mac, d->mac, 6);
    snprintf(g->sys.ip, sizeof(g->sys.ip), "%s", d->ip);
    g->sys.dongles = &o->ndongles;
    usbip_log_level_t ll = USBIP_LOG_INFO;
    posix_log_level_parse(o->log_level, &ll);
    g->log = (fleet_stderr_log_t){.level = (fleet_log_level_t)ll, .prefix = d->id};
    snprintf(g->running, sizeof(g->running), "%s", DONGLE_FW_VERSION);
    fleet_fd_watch_t w = {mosq_watch, mosq_unwatch, g};
    if (fleet_mosq_create(&w, d->ip, &g->mosq) != FLEET_OK) {
        snprintf(err, err_len, "cannot create the MQTT client");
        glue_free(g);
        return -1;
    }
    if (o->state_dir) {
        char dir[512];
        snprintf(dir, sizeof(dir), "%s/%s", o->state_dir, d->id);
        if (mkdir_p(dir) != 0 || fleet_files_kv_open(&g->kv, dir) != FLEET_OK) {
            snprintf(err, err_len, "state dir %s: %s", dir, strerror(errno));
            glue_free(g);
            return -1;
        }
        if (d->store) {
            fleet_otadata_t od;
            g->ota = calloc(1, sizeof(*g->ota));
            if (!g->ota || fleet_files_store_ops.read_otadata(d->store, &od) != FLEET_OK) {
                snprintf(err, err_len, "OTA storage of %s unusable", d->id);
                glue_free(g);
                return -1;
            }
            if (d->boot.rolled_back)
                boot_reason = "rollback";
            snprintf(g->running, sizeof(g->running), "%s", od.slot[d->boot.slot].version);
            g->http = (fleet_curl_http_t){.connect_timeout_s = 10, .stall_timeout_s = 30,
                                          .max_recv_bytes_per_s = o->ota_rate, .lock = o->big_lock};
            if (fleet_thread_worker_create(&g->worker, &o->big_lock) != FLEET_OK) {
                snprintf(err, err_len, "out of memory");
                glue_free(g);
                return -1;
            }
            fleet_ota_config_t oc = {
                .store = &fleet_files_store_ops, .store_ctx = d->store,
                .http = &fleet_curl_http_ops, .http_ctx = &g->http,
                .kv = &fleet_files_kv_ops, .kv_ctx = g->kv,
                .clock = &k_clock,
                .log = &fleet_stderr_log_ops, .log_ctx = &g->log,
                .on_event = fleet_agent_ota_event, .event_arg = &g->agent,
                .selftest = fleet_agent_selftest, .selftest_arg = &g->agent,
                .chip = "posix-sim", .chip_revision = 0, .running_version = g->running,
                .pubkey = o->ota_pubkey, .pubkey_len = o->ota_pubkey_len,
            };
            if (fleet_ota_init(g->ota, &oc) != FLEET_OK) {
                snprintf(err, err_len, "OTA: cannot start (%s)", fleet_ota_last_reason(g->ota));
                glue_free(g);
                return -1;
            }
        }
    }
    fleet_agent_config_t ac = {
        .mqtt_url = o->mqtt_url,
        .firmware_version = g->running,
        .chip = "posix-sim",
        .chip_revision = 0,
        .usbip_port = (uint16_t)d->port,
        .telemetry_interval_s = o->telemetry_s,
        .keepalive_s = o->mqtt_keepalive_s,
        .boot_reason = boot_reason,
    };
    fleet_agent_ports_t p = {
        .mqtt = &fleet_mosq_ops, .mqtt_ctx = g->mosq,
        .sys = &fleet_sim_sys_ops, .sys_ctx = &g->sys,
        .clock = &k_clock,
        .log = &fleet_stderr_log_ops, .log_ctx = &g->log,
        .kv = g->kv ? &fleet_files_kv_ops : NULL, .kv_ctx = g->kv,
        .mdns = o->mdns ? &fleet_mdns_ops : NULL, .mdns_ctx = o->mdns,
        .store = d->store ? &fleet_files_store_ops : NULL, .store_ctx = d->store,
        .ota = g->ota,
        .host = &k_host, .host_ctx = g,
        .worker = g->worker ? &fleet_thread_worker_ops : NULL, .worker_ctx = g->worker,
    };
    char reason[FLEET_REASON_MAX] = "";
    if (fleet_agent_create(&ac, &p, d->srv, &g->agent, reason, sizeof(reason)) != FLEET_OK) {
        snprintf(err, err_len, "agent: %s", reason);
        glue_free(g);
        return -1;
    }
    if (strcmp(fleet_agent_id(g->agent), d->id) != 0) {
        snprintf(err, err_len, "agent id %s does not match the dongle id %s", fleet_agent_id(g->agent), d->id);
        glue_free(g);
        return -1;
    }
    if (d->link_down)
        fleet_mosq_set_link(g->mosq, false);
    d->agent = g;
    return 0;
}

void dongle_agent_stop(dongle_t *d, const char *reason)
{
    dongle_agent_t *g = d->agent;
    if (!g)
        return;
    fleet_agent_destroy(g->agent, reason);
    g->agent = NULL;
    d->agent = NULL;
    glue_free(g);
}

void dongle_agent_power_cut(dongle_t *d)
{
    dongle_agent_t *g = d->agent;
    if (!g)
        return;
    if (d->opts->mdns)
        fleet_mdns_forget(d->opts->mdns, d->id);
    fleet_mosq_power_cut(g->mosq);
    /* a download in progress dies with the power: not one more write */
    if (g->ota)
        fleet_ota_halt(g->ota);
    dongle_agent_stop(d, NULL); /* with both gone, the agent has no one to say anything to */
}

bool dongle_agent_tick(dongle_t *d, char *reboot_reason, size_t len)
{
    dongle_agent_t *g = d->agent;
    if (!g)
        return false;
    fleet_agent_tick(g->agent);
    if (!g->reboot)
        return false;
    g->reboot = false;
    snprintf(reboot_reason, len, "%s", g->reboot_reason);
    return true;
}

void dongle_agent_second(dongle_t *d)
{
    if (d->agent)
        fleet_mosq_tick(d->agent->mosq);
}

void dongle_agent_devices_changed(dongle_t *d)
{
    if (d->agent && d->agent->agent)
        fleet_agent_devices_changed(d->agent->agent);
}

void dongle_agent_usbip_event(void *arg, const usbip_event_t *ev)
{
    dongle_t *d = arg;
    if (d->agent && d->agent->agent)
        fleet_agent_on_usbip_event(d->agent->agent, ev);
}

size_t dongle_agent_footprint(const dongle_t *d)
{
    if (!d->agent)
        return 0;
    return sizeof(*d->agent) + fleet_agent_footprint(d->agent->agent) + (d->agent->ota ? sizeof(fleet_ota_t) : 0);
}

/* ---- the simulated bootloader and the link ---- */

#define FAULT_NO_LISTENER "no-usbip-listener"

int dongle_boot(dongle_t *d, char *err, size_t err_len)
{
    const dongle_opts_t *o = d->opts;
    d->no_listener = false;
    d->boot = (fleet_boot_t){0};
    if (!o->ota_pubkey || d->store)
        return 0;
    char ota_dir[600];
    snprintf(ota_dir, sizeof(ota_dir), "%s/%s/ota", o->state_dir, d->id);
    if (mkdir_p(ota_dir) != 0 ||
        fleet_files_store_open(&d->store, ota_dir, 16u << 20, DONGLE_FW_VERSION) != FLEET_OK ||
        fleet_files_store_boot(d->store, &d->boot) != FLEET_OK) {
        snprintf(err, err_len, "OTA storage %s unusable", ota_dir);
        dongle_unboot(d);
        return -1;
    }
    char fault[FLEET_SIM_FAULT_MAX];
    int f = fleet_files_store_sim_fault(d->store, d->boot.slot, fault, sizeof(fault));
    if (f == 1 && strcmp(fault, FAULT_NO_LISTENER) == 0) {
        d->no_listener = true;
        fprintf(stderr, "ERROR %s: *** simulated firmware fault '%s' in slot %d: this firmware does NOT start "
                        "its USB/IP listener ***\n", d->id, fault, d->boot.slot);
    } else if (f == 1) {
        fprintf(stderr, "WARN %s: unknown simulated firmware fault '%s' in slot %d, ignored\n", d->id, fault,
                d->boot.slot);
    } else if (f < 0) {
        fprintf(stderr, "WARN %s: unreadable fleet-sim-fault line in slot %d, ignored\n", d->id, d->boot.slot);
    }
    return 0;
}

void dongle_unboot(dongle_t *d)
{
    if (d->store)
        fleet_files_store_close(d->store);
    d->store = NULL;
}

void dongle_set_link(dongle_t *d, bool up)
{
    d->link_down = !up;
    if (d->net)
        posix_net_set_link(d->net, up);
    if (d->agent)
        fleet_mosq_set_link(d->agent->mosq, up);
    if (d->opts->mdns)
        fleet_mdns_set_link(d->opts->mdns, d->id, up);
}

/* ---- mDNS ---- */

static void mdns_cb(void *arg, int fd, unsigned ev)
{
    (void)fd;
    (void)ev;
    fleet_mdns_on_readable(arg);
}

int dongle_mdns_start(posix_loop_t *loop, fleet_mdns_t **out, char *err, size_t err_len)
{
    /* the responder's socket never wants write: it is added to the loop here */
    fleet_fd_watch_t w = {NULL, NULL, NULL};
    if (fleet_mdns_create(&w, "127.0.0.1", out, err, err_len) != FLEET_OK)
        return -1;
    posix_loop_add(loop, fleet_mdns_fd(*out), true, false, mdns_cb, *out);
    return 0;
}

void dongle_mdns_stop(posix_loop_t *loop, fleet_mdns_t *m)
{
    if (!m)
        return;
    posix_loop_del(loop, fleet_mdns_fd(m));
    fleet_mdns_destroy(m); /* goodbyes for whatever is still published */
}

void dongle_mdns_tick(fleet_mdns_t *m, uint64_t now_ms)
{
    if (m)
        fleet_mdns_tick(m, now_ms);
}
