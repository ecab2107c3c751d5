/*
 * agent.c - the agent runtime: MQTT session, reporting, command dispatch.
 *
 * Everything runs on the owner's thread from fleet_agent_tick() and the MQTT
 * port's upcalls, except an OTA download job on the worker port, which the
 * port serialises with the owner. QoS: 1 for everything, as the contract
 * table says; the service drops duplicates by seq, and telemetry at one
 * message per interval is cheap enough that losing it on a reconnect is not
 * worth saving.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_priv.h"
#include "fleet_agent/err.h"
#include "reason.h"

#define BACKOFF_MIN_MS 1000u
#define BACKOFF_MAX_MS 30000u
#define CONNECT_TIMEOUT_MS 15000u
#define CYCLE_OFF_MS 500u

#define LOG(a, lvl, ...) fleet_logf((a)->p.log, (a)->p.log_ctx, (lvl), __VA_ARGS__)

void fleet_agent_id_from_mac(const uint8_t mac[6], char out[FLEET_AGENT_ID_LEN])
{
    snprintf(out, FLEET_AGENT_ID_LEN, "esp-%02x%02x%02x%02x%02x%02x", mac[0], mac[1], mac[2], mac[3], mac[4],
             mac[5]);
}

const char *fleet_agent_id(const fleet_agent_t *a) { return a->id; }
bool fleet_agent_connected(const fleet_agent_t *a) { return a->connected; }
uint32_t fleet_agent_telemetry_interval(const fleet_agent_t *a) { return a->telemetry_s; }

size_t fleet_agent_footprint(const fleet_agent_t *a)
{
    return sizeof(*a) + (size_t)(a->devcap + a->curcap) * sizeof(usbip_device_info_t);
}

/* ---- publishing ------------------------------------------------------- */

static void publish_text(fleet_agent_t *a, const char *leaf, const char *text, int qos, bool retain)
{
    if (!a->connected || !text)
        return;
    char topic[96];
    snprintf(topic, sizeof(topic), "%s%s", a->root, leaf);
    if (a->p.mqtt->publish(a->p.mqtt_ctx, topic, text, strlen(text), qos, retain) != FLEET_OK)
        LOG(a, FLEET_LOG_WARN, "publish %s failed", topic);
}

void agent_publish_json(fleet_agent_t *a, const char *leaf, cJSON *doc, int qos, bool retain)
{
    char *text = doc ? cJSON_PrintUnformatted(doc) : NULL;
    cJSON_Delete(doc);
    publish_text(a, leaf, text, qos, retain);
    free(text);
}

void agent_event(fleet_agent_t *a, const char *type, const char *busid, const char *client, cJSON *detail)
{
    if (!a->connected) {
        cJSON_Delete(detail); /* events are not queued across a disconnect; state catches up */
        return;
    }
    cJSON *o = agent_envelope(a, true);
    if (!o) {
        cJSON_Delete(detail);
        return;
    }
    cJSON_AddStringToObject(o, "type", type);
    if (busid)
        cJSON_AddStringToObject(o, "busid", busid);
    if (client)
        cJSON_AddStringToObject(o, "client", client);
    if (detail)
        cJSON_AddItemToObject(o, "detail", detail);
    agent_publish_json(a, "events", o, 1, false);
}

static void publish_state(fleet_agent_t *a)
{
    char *s = fleet_agent_build_state(a);
    publish_text(a, "state", s, 1, true);
    free(s);
    a->state_dirty = false;
    a->state_published = a->connected;
}

static void publish_telemetry(fleet_agent_t *a)
{
    char *s = fleet_agent_build_telemetry(a);
    publish_text(a, "telemetry", s, 1, false);
    free(s);
}

static void result(fleet_agent_t *a, const fleet_cmd_t *c, bool ok, const char *error, cJSON *detail)
{
    cJSON *o = agent_envelope(a, false);
    if (!o) {
        cJSON_Delete(detail);
        return;
    }
    cJSON_AddStringToObject(o, "request_id", c->request_id);
    cJSON_AddStringToObject(o, "command", fleet_cmd_name(c->kind));
    cJSON_AddBoolToObject(o, "ok", ok);
    if (!ok)
        cJSON_AddStringToObject(o, "error", error && error[0] ? error : "failed");
    if (detail)
        cJSON_AddItemToObject(o, "detail", detail);
    LOG(a, ok ? FLEET_LOG_INFO : FLEET_LOG_WARN, "cmd %s %s: %s", fleet_cmd_name(c->kind), c->request_id,
        ok ? "ok" : error);
    agent_publish_json(a, "cmd-result", o, 1, false);
}

/* ---- devices ---------------------------------------------------------- */

int agent_refresh_devices(fleet_agent_t *a)
{
    for (;;) {
        int n = usbip_server_list_devices(a->core, a->cur, a->curcap);
        if (n < 0)
            return -1;
        if (n <= a->curcap) {
            a->ncur = n;
            return n;
        }
        usbip_device_info_t *bigger = realloc(a->cur, (size_t)n * sizeof(*bigger));
        if (!bigger)
            return -1;
        a->cur = bigger;
        a->curcap = n;
    }
}

static const usbip_device_info_t *find_dev(const usbip_device_info_t *list, int n, const char *busid)
{
    for (int i = 0; i < n; i++)
        if (strcmp(list[i].busid, busid) == 0)
            return &list[i];
    return NULL;
}

static bool same_grants(const usbip_device_info_t *x, const usbip_device_info_t *y)
{
    if (x->num_granted != y->num_granted || strcmp(x->lease_id, y->lease_id) != 0)
        return false;
    for (int i = 0; i < x->num_granted && i < USBIP_MAX_GRANT_ADDRS; i++)
        if (strcmp(x->granted_to[i], y->granted_to[i]) != 0)
            return false;
    return true;
}

static void error_events(fleet_agent_t *a, const usbip_device_info_t *was, const usbip_device_info_t *now)
{
    static const char *const kinds[6] = {"stall", "proto", "overflow", "nodev", "timeout", "other"};
    const uint64_t o[6] = {was->stats.errors.stall, was->stats.errors.proto, was->stats.errors.overflow,
                           was->stats.errors.nodev, was->stats.errors.timeout, was->stats.errors.other};
    const uint64_t n[6] = {now->stats.errors.stall, now->stats.errors.proto, now->stats.errors.overflow,
                           now->stats.errors.nodev, now->stats.errors.timeout, now->stats.errors.other};
    for (int k = 0; k < 6; k++) {
        if (n[k] > o[k]) {
            cJSON *d = cJSON_CreateObject();
            cJSON_AddStringToObject(d, "kind", kinds[k]);
            cJSON_AddNumberToObject(d, "count", (double)(n[k] - o[k]));
            agent_event(a, "urb_error", now->busid, NULL, d);
        }
    }
}

static void mdns_update(fleet_agent_t *a)
{
    if (!a->p.mdns || a->mdns_ndev == a->ndev)
        return;
    char ip[64];
    if (a->p.sys->ip(a->p.sys_ctx, ip, sizeof(ip)) != FLEET_OK)
        return;
    fleet_mdns_service_t svc = {.instance = a->id, .ip = ip, .port = a->usbip_port, .fw = a->fw,
                                .chip = a->chip, .rev = a->chip_rev, .ndev = (unsigned)a->ndev};
    if (a->p.mdns->publish(a->p.mdns_ctx, &svc) == FLEET_OK)
        a->mdns_ndev = a->ndev;
}

/* Compare the core's list with the last one seen and report the difference. */
static void diff_devices(fleet_agent_t *a)
{
    if (agent_refresh_devices(a) < 0)
        return;
    for (int i = 0; i < a->ndev; i++) {
        const usbip_device_info_t *was = &a->devs[i];
        const usbip_device_info_t *now = find_dev(a->cur, a->ncur, was->busid);
        char client[64];
        bool same_client = now && strcmp(was->attached_to, now->attached_to) == 0 &&
                           was->attached_port == now->attached_port;
        if (!same_client) {
            if (was->attached_to[0]) {
                agent_client_text(was->attached_to, was->attached_port, client, sizeof(client));
                agent_event(a, "detached", was->busid, client, NULL);
            }
        }
        if (!now) {
            agent_event(a, "device_removed", was->busid, NULL, NULL);
            a->state_dirty = true;
        }
    }
    for (int i = 0; i < a->ncur; i++) {
        const usbip_device_info_t *now = &a->cur[i];
        const usbip_device_info_t *was = find_dev(a->devs, a->ndev, now->busid);
        char client[64];
        if (!was) {
            agent_event(a, "device_added", now->busid, NULL, agent_device_json(a, now));
            a->state_dirty = true;
        } else {
            error_events(a, was, now);
            if (!same_grants(was, now))
                a->state_dirty = true;
        }
        bool new_client = !was || strcmp(was->attached_to, now->attached_to) != 0 ||
                          was->attached_port != now->attached_port;
        if (now->attached_to[0] && new_client) {
            agent_client_text(now->attached_to, now->attached_port, client, sizeof(client));
            agent_event(a, "attached", now->busid, client, NULL);
            a->state_dirty = true;
        } else if (was && was->attached_to[0] && !now->attached_to[0]) {
            a->state_dirty = true;
        }
    }
    /* swap: cur becomes the reference, the old reference the next scratch */
    usbip_device_info_t *t = a->devs;
    int tc = a->devcap;
    a->devs = a->cur;
    a->devcap = a->curcap;
    a->ndev = a->ncur;
    a->cur = t;
    a->curcap = tc;
    a->ncur = 0;
    mdns_update(a);
}

void fleet_agent_devices_changed(fleet_agent_t *a) { a->poll_now = true; }

void fleet_agent_on_usbip_event(fleet_agent_t *a, const usbip_event_t *ev)
{
    if (!a || !ev)
        return;
    if (ev->kind == USBIP_EV_IMPORT_REFUSED)
        fleet_agent_import_refused(a, ev->busid, ev->peer, ev->peer_port, ev->reason);
    else
        a->poll_now = true;
}

void fleet_agent_import_refused(fleet_agent_t *a, const char *busid, const char *client, uint16_t port,
                                const char *reason)
{
    if (!busid || !fleet_txt_is_busid(busid) || !client)
        return;
    char c[64];
    agent_client_text(client, port, c, sizeof(c));
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "reason", reason && reason[0] ? reason : "not granted");
    agent_event(a, "import_refused", busid, c, d);
}

/* ---- MQTT session ----------------------------------------------------- */

static void on_connect(void *arg, bool ok, const char *why)
{
    fleet_agent_t *a = arg;
    a->connecting = false;
    if (!ok) {
        LOG(a, FLEET_LOG_WARN, "mqtt %s: connect failed: %s; retry in %" PRIu32 " ms", a->url, why ? why : "?",
            a->backoff_ms);
        return;
    }
    a->connected = true;
    a->backoff_ms = BACKOFF_MIN_MS;
    char filter[80];
    snprintf(filter, sizeof(filter), "%scmd/+", a->root);
    a->p.mqtt->subscribe(a->p.mqtt_ctx, filter, 1);
    char *st = fleet_agent_build_status(a, true, NULL);
    publish_text(a, "status", st, 1, true);
    free(st);
    diff_devices(a);
    publish_state(a);
    if (!a->said_boot) {
        a->said_boot = true;
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "reason", a->boot_reason);
        agent_event(a, "rebooted", NULL, NULL, d);
        /* what the OTA machine found at boot (confirm or rollback) was
         * emitted before this agent existed */
        if (a->p.ota)
            fleet_ota_report_boot(a->p.ota);
    }
    a->next_telemetry_ms = agent_now_ms(a) + (uint64_t)a->telemetry_s * 1000u;
    LOG(a, FLEET_LOG_INFO, "mqtt %s: online", a->url);
}

static void on_disconnect(void *arg, const char *why)
{
    fleet_agent_t *a = arg;
    if (a->connected)
        LOG(a, FLEET_LOG_WARN, "mqtt: connection lost (%s)", why ? why : "?");
    a->connected = false;
    a->connecting = false;
}

static void on_message(void *arg, const char *topic, const void *payload, size_t len)
{
    fleet_agent_on_mqtt_message(arg, topic, payload, len);
}

static void start_connect(fleet_agent_t *a, uint64_t now)
{
    const fleet_config_t *c = a->have_cfg ? &a->cfg.cur : NULL;
    fleet_mqtt_connect_t cc = {
        .url = a->url,
        .client_id = a->id,
        .username = c ? c->mqtt_username : NULL,
        .password = c ? c->mqtt_password : NULL,
        .keepalive_s = a->keepalive_s,
        .will_topic = NULL,
        .will_payload = a->will,
        .will_len = strlen(a->will),
        .will_qos = 1,
        .will_retain = true,
    };
    char topic[80];
    snprintf(topic, sizeof(topic), "%sstatus", a->root);
    cc.will_topic = topic;
    a->connecting = true;
    a->connect_started_ms = now;
    /* Exponential backoff with a per-dongle offset, so a broker restart does
     * not see a thousand dongles reconnect in the same millisecond. */
    uint32_t jitter = (uint32_t)(a->mac[5] * 7u + a->mac[4] * 3u) % (a->backoff_ms / 2u + 1u);
    a->next_connect_ms = now + a->backoff_ms + jitter;
    a->backoff_ms = a->backoff_ms * 2u > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : a->backoff_ms * 2u;
    int rc = a->p.mqtt->connect(a->p.mqtt_ctx, &cc);
    if (rc != FLEET_OK) {
        a->connecting = false;
        LOG(a, FLEET_LOG_WARN, "mqtt %s: cannot connect (%s)", a->url, fleet_err_name(rc));
    }
}

/* ---- commands --------------------------------------------------------- */

static void cmd_grant(fleet_agent_t *a, const fleet_cmd_t *c)
{
    if (c->n_clients > USBIP_MAX_GRANT_ADDRS) {
        char r[FLEET_REASON_MAX];
        fleet_reason(r, sizeof(r), "clients: this dongle accepts at most %d addresses per grant",
                     USBIP_MAX_GRANT_ADDRS);
        result(a, c, false, r, NULL);
        return;
    }
    const char *addrs[USBIP_MAX_GRANT_ADDRS];
    for (int i = 0; i < c->n_clients; i++)
        addrs[i] = c->clients[i];
    usbip_err_t e = usbip_grant(a->core, c->busid, addrs, c->n_clients, c->lease_id, c->expires_at);
    if (e != USBIP_OK) {
        char r[FLEET_REASON_MAX];
        fleet_reason(r, sizeof(r), "busid: grant refused by the USB/IP core: %s", usbip_strerror(e));
        result(a, c, false, r, NULL);
        return;
    }
    result(a, c, true, NULL, NULL);
    cJSON *d = cJSON_CreateObject();
    cJSON_AddItemToObject(d, "lease_id", agent_lease_json(c->lease_id));
    agent_event(a, "grant_applied", c->busid, NULL, d);
    a->poll_now = true;
    a->state_dirty = true;
}

static void cmd_revoke(fleet_agent_t *a, const fleet_cmd_t *c)
{
    /* A revoke for an older lease must not end a newer one (QoS 1 may
     * deliver late); a revoke for a grant that is gone is done already. */
    agent_refresh_devices(a);
    const usbip_device_info_t *d = find_dev(a->cur, a->ncur, c->busid);
    if (d && d->lease_id[0] && strcmp(d->lease_id, c->lease_id) != 0) {
        cJSON *det = cJSON_CreateObject();
        cJSON_AddBoolToObject(det, "revoked", false);
        cJSON_AddItemToObject(det, "current_lease_id", agent_lease_json(d->lease_id));
        result(a, c, true, NULL, det);
        return;
    }
    usbip_err_t e = usbip_revoke(a->core, c->busid);
    cJSON *det = cJSON_CreateObject();
    cJSON_AddBoolToObject(det, "revoked", e == USBIP_OK);
    if (e != USBIP_OK && e != USBIP_ERR_NOT_FOUND) {
        cJSON_Delete(det);
        char r[FLEET_REASON_MAX];
        fleet_reason(r, sizeof(r), "busid: revoke failed in the USB/IP core: %s", usbip_strerror(e));
        result(a, c, false, r, NULL);
        return;
    }
    result(a, c, true, NULL, det);
    if (e == USBIP_OK) {
        cJSON *ev = cJSON_CreateObject();
        cJSON_AddItemToObject(ev, "lease_id", agent_lease_json(c->lease_id));
        agent_event(a, "grant_revoked", c->busid, NULL, ev);
    }
    a->poll_now = true;
    a->state_dirty = true;
}

static void apply_config(fleet_agent_t *a, unsigned changed)
{
    const fleet_config_t *c = &a->cfg.cur;
    if (changed & FLEET_CFG_CHANGED_TELEMETRY) {
        a->telemetry_s = c->telemetry_interval_s;
        a->next_telemetry_ms = agent_now_ms(a) + (uint64_t)a->telemetry_s * 1000u;
    }
    if (changed & FLEET_CFG_CHANGED_GRANTS) {
        usbip_set_enforce(a->core, c->enforce_grants);
        a->state_dirty = true;
    }
    if (FLEET_CFG_NEEDS_RECONNECT(changed) && strcmp(a->url, c->mqtt_url) != 0) {
        snprintf(a->url, sizeof(a->url), "%s", c->mqtt_url);
        a->reconnect_now = true;
    }
    if (a->p.host && a->p.host->config_applied)
        a->p.host->config_applied(a->p.host_ctx, c, changed);
}

static void cmd_config(fleet_agent_t *a, const fleet_cmd_t *c, const char *json, size_t len)
{
    if (!a->p.kv) {
        result(a, c, false, "config: this dongle has no storage for a config document", NULL);
        return;
    }
    unsigned changed = 0;
    char r[FLEET_REASON_MAX];
    r[0] = 0;
    if (a->p.mqtt->url_usable) {
        fleet_config_t *doc = malloc(sizeof(*doc));
        if (!doc) {
            result(a, c, false, "config: out of memory", NULL);
            return;
        }
        int prc = fleet_config_parse(json, len, doc, r, sizeof(r));
        char why[FLEET_REASON_MAX] = "";
        bool usable = prc != FLEET_OK || a->p.mqtt->url_usable(a->p.mqtt_ctx, doc->mqtt_url, why, sizeof(why));
        free(doc);
        if (!usable) {
            fleet_reason(r, sizeof(r), "mqtt.url: %s", why);
            result(a, c, false, r, NULL);
            return;
        }
    }
    int rc = fleet_config_apply(&a->cfg, json, len, &changed, r, sizeof(r));
    if (rc != FLEET_OK) {
        result(a, c, false, r, NULL);
        return;
    }
    a->have_cfg = true;
    static const char *const names[5] = {"mqtt", "telemetry", "grants", "filters", "log"};
    cJSON *d = cJSON_CreateObject();
    cJSON_AddNumberToObject(d, "version", (double)a->cfg.cur.version);
    cJSON *ch = cJSON_AddArrayToObject(d, "changed");
    for (int i = 0; i < 5; i++)
        if (changed & (1u << i))
            cJSON_AddItemToArray(ch, cJSON_CreateString(names[i]));
    cJSON_AddBoolToObject(d, "reboot_needed", FLEET_CFG_NEEDS_REBOOT(changed));
    apply_config(a, changed);
    cJSON_AddBoolToObject(d, "reconnect", a->reconnect_now);
    result(a, c, true, NULL, d);
}

/* The devices the self-test after an update must find again: busid and
 * VID:PID of each, one per line. */
static void saved_devices_text(fleet_agent_t *a, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = 0;
    agent_refresh_devices(a);
    for (int i = 0; i < a->ncur && n + 1 < cap; i++) {
        int w = snprintf(out + n, cap - n, "%s %04x:%04x\n", a->cur[i].busid, a->cur[i].vid, a->cur[i].pid);
        if (w < 0 || (size_t)w >= cap - n)
            break;
        n += (size_t)w;
    }
}

/* What follows fleet_ota_start, on whichever task ran it. */
static void ota_finish(fleet_agent_t *a, const fleet_cmd_t *c, int rc, const char *reason)
{
    if (rc != FLEET_OK) {
        result(a, c, false, reason, NULL);
        return;
    }
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "state", fleet_ota_state_name(fleet_ota_state(a->p.ota)));
    result(a, c, true, NULL, d);
    /* staged: restart into the new slot now (the lease drain is the service's job) */
    a->reboot_requested = true;
    snprintf(a->reboot_reason, sizeof(a->reboot_reason), "ota");
}

typedef struct {
    fleet_agent_t *a;
    fleet_cmd_t cmd;
    fleet_manifest_t m;
    char saved[FLEET_OTA_DEVICES_MAX];
} ota_job_t;

static void ota_job(void *arg)
{
    ota_job_t *j = arg;
    fleet_agent_t *a = j->a;
    char r[FLEET_REASON_MAX];
    r[0] = 0;
    int rc = FLEET_ERR_ABORTED;
    /* fleet_ota_start clears the machine's cancel flag: one set before the
     * job got going would be lost */
    if (a->ota_job_cancelled)
        fleet_reason(r, sizeof(r), "download: cancelled before it began");
    else
        rc = fleet_ota_start(a->p.ota, &j->m, j->saved, r, sizeof(r));
    ota_finish(a, &j->cmd, rc, r);
    a->ota_job_running = false;
    free(j);
}

static void ota_join(fleet_agent_t *a)
{
    if (!a->ota_job_unjoined)
        return;
    a->p.worker->join(a->p.worker_ctx);
    a->ota_job_unjoined = false;
}

static void cmd_ota(fleet_agent_t *a, const fleet_cmd_t *c, const char *json, size_t len)
{
    if (!a->p.ota) {
        result(a, c, false, "ota: this dongle has no OTA storage", NULL);
        return;
    }
    if (a->ota_job_running) {
        /* A QoS 1 redelivery of the request being served: its one answer
         * comes when the job ends. */
        if (strcmp(c->request_id, a->ota_request_id) == 0) {
            LOG(a, FLEET_LOG_INFO, "cmd ota %s: delivered again while downloading it, ignored", c->request_id);
            return;
        }
        result(a, c, false, "state: an update is already downloading", NULL);
        return;
    }
    ota_job_t *j = malloc(sizeof(*j));
    if (!j) {
        result(a, c, false, "ota: out of memory", NULL);
        return;
    }
    char r[FLEET_REASON_MAX];
    r[0] = 0;
    if (fleet_manifest_parse(json, len, &j->m, r, sizeof(r)) != FLEET_OK) {
        free(j);
        result(a, c, false, r, NULL);
        return;
    }
    saved_devices_text(a, j->saved, sizeof(j->saved));
    snprintf(a->ota_request_id, sizeof(a->ota_request_id), "%s", c->request_id);
    /* Only a download from IDLE is long; the machine answers anything else
     * (refusal, duplicate of the staged update) at once. */
    if (a->p.worker && fleet_ota_state(a->p.ota) == FLEET_OTA_IDLE) {
        ota_join(a); /* the previous job has ended; reclaim it */
        j->a = a;
        j->cmd = *c;
        a->ota_job_running = true;
        if (a->p.worker->start(a->p.worker_ctx, ota_job, j) == FLEET_OK) {
            a->ota_job_unjoined = true;
            return;
        }
        a->ota_job_running = false;
        free(j);
        result(a, c, false, "ota: cannot start the download task", NULL);
        return;
    }
    int rc = fleet_ota_start(a->p.ota, &j->m, j->saved, r, sizeof(r));
    free(j);
    ota_finish(a, c, rc, r);
}

static void cmd_port_power(fleet_agent_t *a, const fleet_cmd_t *c)
{
    if (!a->p.host || !a->p.host->port_power) {
        result(a, c, false, "port-power: this dongle cannot switch port power", NULL);
        return;
    }
    char r[FLEET_REASON_MAX];
    r[0] = 0;
    bool cycle = strcmp(c->action, "cycle") == 0;
    if (cycle && a->cycle_busid[0]) {
        fleet_reason(r, sizeof(r), "busid: port %s is being power-cycled already", a->cycle_busid);
        result(a, c, false, r, NULL);
        return;
    }
    int rc = a->p.host->port_power(a->p.host_ctx, c->busid, cycle ? "off" : c->action, r, sizeof(r));
    if (rc != FLEET_OK) {
        result(a, c, false, r[0] ? r : fleet_err_name(rc), NULL);
        return;
    }
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "action", c->action);
    result(a, c, true, NULL, d);
    a->poll_now = true;
    if (cycle) {
        snprintf(a->cycle_busid, sizeof(a->cycle_busid), "%s", c->busid);
        a->cycle_on_ms = agent_now_ms(a) + CYCLE_OFF_MS;
    }
}

static void cmd_reboot(fleet_agent_t *a, const fleet_cmd_t *c)
{
    if (!a->p.host || !a->p.host->reboot) {
        result(a, c, false, "reboot: not supported by this dongle", NULL);
        return;
    }
    result(a, c, true, NULL, NULL);
    a->reboot_requested = true;
    snprintf(a->reboot_reason, sizeof(a->reboot_reason), "%s", c->reason[0] ? c->reason : "command");
}

void fleet_agent_on_mqtt_message(fleet_agent_t *a, const char *topic, const void *payload, size_t len)
{
    size_t rl = strlen(a->root);
    if (!topic || strncmp(topic, a->root, rl) != 0 || strncmp(topic + rl, "cmd/", 4) != 0) {
        LOG(a, FLEET_LOG_WARN, "mqtt: message on unexpected topic %s ignored", topic ? topic : "(null)");
        return;
    }
    const char *name = topic + rl + 4;
    int kind = fleet_cmd_kind_from_name(name);
    fleet_cmd_t *c = calloc(1, sizeof(*c));
    if (!c) {
        LOG(a, FLEET_LOG_ERROR, "cmd/%s: out of memory", name);
        return;
    }
    char r[FLEET_REASON_MAX];
    r[0] = 0;
    if (kind < 0) {
        /* cmd-result.command can only name a known command: log it loudly */
        LOG(a, FLEET_LOG_ERROR, "cmd/%.40s: unknown command, no cmd-result possible", name);
        free(c);
        return;
    }
    if (fleet_cmd_parse((fleet_cmd_kind_t)kind, payload, len, c, r, sizeof(r)) != FLEET_OK) {
        if (c->request_id[0])
            result(a, c, false, r, NULL);
        else
            LOG(a, FLEET_LOG_ERROR, "cmd/%s refused without an answer (no valid request_id): %s", name, r);
        free(c);
        return;
    }
    switch (c->kind) {
    case FLEET_CMD_GRANT: cmd_grant(a, c); break;
    case FLEET_CMD_REVOKE: cmd_revoke(a, c); break;
    case FLEET_CMD_CONFIG: cmd_config(a, c, payload, len); break;
    case FLEET_CMD_OTA: cmd_ota(a, c, payload, len); break;
    case FLEET_CMD_REBOOT: cmd_reboot(a, c); break;
    case FLEET_CMD_PORT_POWER: cmd_port_power(a, c); break;
    default: break;
    }
    free(c);
}

/* ---- OTA -------------------------------------------------------------- */

void fleet_agent_on_ota_event(fleet_agent_t *a, const fleet_ota_event_t *ev)
{
    if (ev->kind == FLEET_OTA_EV_SELFTEST) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddBoolToObject(d, "ok", ev->ok);
        cJSON *checks = ev->checks ? cJSON_Parse(ev->checks) : NULL;
        cJSON_AddItemToObject(d, "checks", cJSON_IsObject(checks) ? checks : cJSON_CreateObject());
        if (checks && !cJSON_IsObject(checks))
            cJSON_Delete(checks);
        if (ev->reason && ev->reason[0])
            cJSON_AddStringToObject(d, "reason", ev->reason);
        agent_event(a, "selftest", NULL, NULL, d);
        return;
    }
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "step", fleet_ota_event_step(ev));
    cJSON_AddNumberToObject(d, "bytes", (double)ev->bytes);
    cJSON_AddNumberToObject(d, "total", (double)ev->total);
    if (ev->version && ev->version[0])
        cJSON_AddStringToObject(d, "version", ev->version);
    if (ev->request_id && ev->request_id[0])
        cJSON_AddStringToObject(d, "request_id", ev->request_id);
    if (ev->reason && ev->reason[0])
        cJSON_AddStringToObject(d, "reason", ev->reason);
    agent_event(a, "ota_progress", NULL, NULL, d);
}

fleet_selftest_verdict_t fleet_agent_selftest(void *agent_slot, const char *saved, char *checks, size_t cl,
                                              char *reason, size_t rl)
{
    fleet_agent_t *a = agent_slot ? *(fleet_agent_t **)agent_slot : NULL;
    if (!a)
        return FLEET_SELFTEST_PENDING;
    char ip[64];
    bool net = a->p.sys->ip(a->p.sys_ctx, ip, sizeof(ip)) == FLEET_OK;
    bool mqtt = a->connected;
    char *now = malloc(FLEET_OTA_DEVICES_MAX);
    if (!now)
        return FLEET_SELFTEST_PENDING;
    saved_devices_text(a, now, FLEET_OTA_DEVICES_MAX);
    bool devs = strcmp(now, saved ? saved : "") == 0;
    free(now);
    bool listening = !a->p.host || !a->p.host->usbip_listening || a->p.host->usbip_listening(a->p.host_ctx);
    snprintf(checks, cl, "{\"network\":%s,\"mqtt\":%s,\"usbip_listener\":%s,\"devices\":%s}",
             net ? "true" : "false", mqtt ? "true" : "false", listening ? "true" : "false", devs ? "true" : "false");
    if (!net || !mqtt)
        return FLEET_SELFTEST_PENDING; /* the verdict must reach the service */
    if (!listening) {
        /* bound at start-up or never: waiting does not bring it */
        fleet_reason(reason, rl, "usbip_listener: USB/IP listener not up");
        return FLEET_SELFTEST_FAIL;
    }
    if (!devs) {
        if (agent_now_ms(a) - a->t0_ms < 10000u)
            return FLEET_SELFTEST_PENDING;
        fleet_reason(reason, rl, "devices: the exported devices differ from those before the update");
        return FLEET_SELFTEST_FAIL;
    }
    return FLEET_SELFTEST_PASS;
}

void fleet_agent_ota_event(void *agent_slot, const fleet_ota_event_t *ev)
{
    fleet_agent_t *a = agent_slot ? *(fleet_agent_t **)agent_slot : NULL;
    if (a)
        fleet_agent_on_ota_event(a, ev);
}

/* ---- lifecycle -------------------------------------------------------- */

static bool is_chip(const char *c)
{
    return c && (!strcmp(c, "esp32s3") || !strcmp(c, "esp32p4") || !strcmp(c, "posix-sim"));
}

int fleet_agent_create(const fleet_agent_config_t *cfg, const fleet_agent_ports_t *ports, usbip_server_t *core,
                       fleet_agent_t **out, char *reason, size_t rl)
{
    *out = NULL;
    if (!cfg || !ports || !core || !ports->mqtt || !ports->sys || !ports->clock) {
        fleet_reason(reason, rl, "agent: the core, mqtt, sysinfo and clock ports are required");
        return FLEET_ERR_INVALID;
    }
    if (!cfg->firmware_version || !cfg->firmware_version[0] || strlen(cfg->firmware_version) >= FLEET_VERSION_MAX) {
        fleet_reason(reason, rl, "firmware_version: must be 1 to %d characters", FLEET_VERSION_MAX - 1);
        return FLEET_ERR_INVALID;
    }
    if (!is_chip(cfg->chip)) {
        fleet_reason(reason, rl, "chip: must be esp32s3, esp32p4 or posix-sim");
        return FLEET_ERR_INVALID;
    }
    if (!cfg->mqtt_url || strlen(cfg->mqtt_url) >= FLEET_CFG_URL_MAX) {
        fleet_reason(reason, rl, "mqtt_url: required, at most %d characters", FLEET_CFG_URL_MAX - 1);
        return FLEET_ERR_INVALID;
    }
    if (cfg->telemetry_interval_s > 3600) {
        fleet_reason(reason, rl, "telemetry_interval_s: must be from 1 to 3600");
        return FLEET_ERR_INVALID;
    }
    fleet_agent_t *a = calloc(1, sizeof(*a));
    if (!a)
        return FLEET_ERR_NO_MEM;
    a->p = *ports;
    a->core = core;
    a->p.sys->base_mac(a->p.sys_ctx, a->mac);
    fleet_agent_id_from_mac(a->mac, a->id);
    snprintf(a->root, sizeof(a->root), "fleet/v1/%s/", a->id);
    snprintf(a->fw, sizeof(a->fw), "%s", cfg->firmware_version);
    snprintf(a->idf, sizeof(a->idf), "%s", cfg->idf_version ? cfg->idf_version : "");
    snprintf(a->chip, sizeof(a->chip), "%s", cfg->chip);
    snprintf(a->url, sizeof(a->url), "%s", cfg->mqtt_url);
    snprintf(a->boot_reason, sizeof(a->boot_reason), "%s",
             cfg->boot_reason && cfg->boot_reason[0] ? cfg->boot_reason : "power_on");
    a->chip_rev = cfg->chip_revision;
    a->usbip_port = cfg->usbip_port ? cfg->usbip_port : 3240;
    a->keepalive_s = cfg->keepalive_s ? cfg->keepalive_s : 30;
    a->poll_ms = cfg->poll_ms ? cfg->poll_ms : 250;
    a->telemetry_s = cfg->telemetry_interval_s ? cfg->telemetry_interval_s : 10;
    a->backoff_ms = BACKOFF_MIN_MS;
    a->mdns_ndev = -1;
    a->t0_ms = agent_now_ms(a);
    a->devcap = a->curcap = 4;
    a->devs = calloc((size_t)a->devcap, sizeof(*a->devs));
    a->cur = calloc((size_t)a->curcap, sizeof(*a->cur));
    char *w = fleet_agent_build_status(a, false, "lwt");
    if (!a->devs || !a->cur || !w || strlen(w) >= sizeof(a->will)) {
        free(w);
        fleet_agent_destroy(a, NULL);
        return FLEET_ERR_NO_MEM;
    }
    snprintf(a->will, sizeof(a->will), "%s", w);
    free(w);

    if (a->p.kv) {
        char r[FLEET_REASON_MAX];
        r[0] = 0;
        if (fleet_config_store_init(&a->cfg, a->p.kv, a->p.kv_ctx, r, sizeof(r)) != FLEET_OK)
            LOG(a, FLEET_LOG_WARN, "persisted config unusable, keeping defaults: %s", r);
        if (a->cfg.have) {
            a->have_cfg = true;
            apply_config(a, 0xffu);
            a->reconnect_now = false; /* not connected yet: the first connect uses it */
        }
    }
    static const fleet_mqtt_upcalls_t up = {on_connect, on_disconnect, on_message};
    a->p.mqtt->set_upcalls(a->p.mqtt_ctx, &up, a);
    a->next_connect_ms = a->t0_ms; /* connect at the first tick */
    a->poll_now = true;
    *out = a;
    return FLEET_OK;
}

void fleet_agent_destroy(fleet_agent_t *a, const char *reason)
{
    if (!a)
        return;
    /* the job uses everything below; its cancelled result goes out before
     * the goodbye */
    if (a->ota_job_running) {
        a->ota_job_cancelled = true;
        fleet_ota_cancel(a->p.ota);
    }
    ota_join(a);
    if (a->connected && reason) {
        char *st = fleet_agent_build_status(a, false, reason);
        publish_text(a, "status", st, 1, true);
        free(st);
    }
    if (a->connected || a->connecting)
        a->p.mqtt->disconnect(a->p.mqtt_ctx);
    if (a->p.mdns && a->mdns_ndev >= 0)
        a->p.mdns->withdraw(a->p.mdns_ctx, a->id);
    if (a->p.mqtt)
        a->p.mqtt->set_upcalls(a->p.mqtt_ctx, NULL, NULL);
    free(a->devs);
    free(a->cur);
    free(a);
}

void fleet_agent_tick(fleet_agent_t *a)
{
    uint64_t now = agent_now_ms(a);
    if (a->reboot_requested) {
        a->reboot_requested = false;
        /* the owner destroys this agent (saying offline/reboot) and starts
         * the dongle again from the slot the bootloader picks */
        a->p.host->reboot(a->p.host_ctx, a->reboot_reason);
        return;
    }
    if (a->reconnect_now) {
        a->reconnect_now = false;
        if (a->connected || a->connecting)
            a->p.mqtt->disconnect(a->p.mqtt_ctx);
        a->connected = a->connecting = false;
        a->backoff_ms = BACKOFF_MIN_MS;
        a->next_connect_ms = now;
    }
    if (a->connecting && now - a->connect_started_ms > CONNECT_TIMEOUT_MS) {
        a->p.mqtt->disconnect(a->p.mqtt_ctx);
        a->connecting = false;
    }
    if (!a->connected && !a->connecting && now >= a->next_connect_ms)
        start_connect(a, now);

    if (a->cycle_busid[0] && now >= a->cycle_on_ms) {
        char r[FLEET_REASON_MAX];
        r[0] = 0;
        if (a->p.host->port_power(a->p.host_ctx, a->cycle_busid, "on", r, sizeof(r)) != FLEET_OK)
            LOG(a, FLEET_LOG_ERROR, "port-power cycle %s: power did not come back: %s", a->cycle_busid, r);
        a->cycle_busid[0] = 0;
        a->poll_now = true;
    }
    if (a->poll_now || now >= a->next_poll_ms) {
        a->poll_now = false;
        a->next_poll_ms = now + a->poll_ms;
        diff_devices(a);
    }
    if (a->connected && (a->state_dirty || !a->state_published))
        publish_state(a);
    if (a->connected && now >= a->next_telemetry_ms) {
        a->next_telemetry_ms = now + (uint64_t)a->telemetry_s * 1000u;
        publish_telemetry(a);
    }
    if (a->p.ota && fleet_ota_state(a->p.ota) == FLEET_OTA_SELF_TEST) {
        fleet_selftest_verdict_t v = fleet_ota_selftest_poll(a->p.ota);
        if (v == FLEET_SELFTEST_FAIL && a->p.host && a->p.host->reboot) {
            a->reboot_requested = true;
            snprintf(a->reboot_reason, sizeof(a->reboot_reason), "rollback");
        } else if (v == FLEET_SELFTEST_PASS) {
            a->state_dirty = true;
        }
    }
}
