/* test_agent_runtime_world.c - see test_agent_runtime_world.h. */
#include "test_agent_runtime_world.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleet_agent/err.h"

/* ---- recording MQTT port ---- */
static void m_set_upcalls(void *ctx, const fleet_mqtt_upcalls_t *up, void *arg)
{
    rt_t *rt = ctx;
    rt->up = up;
    rt->up_arg = arg;
}

static int m_connect(void *ctx, const fleet_mqtt_connect_t *c)
{
    rt_t *rt = ctx;
    rt->connects++;
    snprintf(rt->url, sizeof(rt->url), "%s", c->url);
    snprintf(rt->client_id, sizeof(rt->client_id), "%s", c->client_id);
    snprintf(rt->will_topic, sizeof(rt->will_topic), "%s", c->will_topic ? c->will_topic : "");
    snprintf(rt->will, sizeof(rt->will), "%.*s", (int)c->will_len, (const char *)c->will_payload);
    rt->will_qos = c->will_qos;
    rt->will_retain = c->will_retain;
    return FLEET_OK;
}

static void m_disconnect(void *ctx) { ((rt_t *)ctx)->disconnects++; }

static int m_publish(void *ctx, const char *topic, const void *payload, size_t len, int qos, bool retain)
{
    rt_t *rt = ctx;
    if (rt->npub >= RT_MAX_PUBS)
        return FLEET_ERR_NO_MEM;
    rt_pub_t *p = &rt->pubs[rt->npub++];
    snprintf(p->topic, sizeof(p->topic), "%s", topic);
    p->payload = malloc(len + 1);
    memcpy(p->payload, payload, len);
    p->payload[len] = 0;
    p->len = len;
    p->qos = qos;
    p->retain = retain;
    return FLEET_OK;
}

static int m_subscribe(void *ctx, const char *filter, int qos)
{
    rt_t *rt = ctx;
    (void)qos;
    if (rt->nsub < 8)
        snprintf(rt->subs[rt->nsub++], sizeof(rt->subs[0]), "%s", filter);
    return FLEET_OK;
}

/* like the posix port: plain mqtt:// only */
static bool m_url_usable(void *ctx, const char *url, char *reason, size_t rl)
{
    (void)ctx;
    if (strncmp(url, "mqtt://", 7) == 0)
        return true;
    snprintf(reason, rl, "this dongle speaks plain mqtt:// only");
    return false;
}

static const fleet_mqtt_ops_t k_mqtt = {m_set_upcalls, m_connect, m_disconnect, m_publish, m_subscribe,
                                        m_url_usable};

/* ---- sysinfo, clock ---- */
static void s_mac(void *ctx, uint8_t mac[6])
{
    (void)ctx;
    static const uint8_t m[6] = {0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6};
    memcpy(mac, m, 6);
}
static int s_ip(void *ctx, char *buf, size_t len)
{
    (void)ctx;
    snprintf(buf, len, "127.0.0.5");
    return FLEET_OK;
}
static void s_heap(void *ctx, fleet_heap_info_t *out)
{
    (void)ctx;
    out->free = 182000;
    out->min_free = 150000;
    out->have_dma = true;
    out->dma_free = 120000;
}
static bool s_rssi(void *ctx, int *dbm)
{
    (void)ctx;
    *dbm = -61;
    return true;
}
static int64_t s_unix(void *ctx) { return ((rt_t *)ctx)->w.unix_now; }
static const fleet_sysinfo_ops_t k_sys = {s_mac, s_ip, s_heap, s_rssi, s_unix};

static uint64_t c_now(void *ctx) { return ((rt_t *)ctx)->now_ms; }
static const fleet_clock_ops_t k_clock = {c_now};

/* ---- kv ---- */
static int kv_load(void *ctx, const char *key, void *buf, size_t cap, size_t *len)
{
    rt_t *rt = ctx;
    for (int i = 0; i < 8; i++) {
        if (rt->kv[i].used && strcmp(rt->kv[i].key, key) == 0) {
            *len = rt->kv[i].len;
            if (rt->kv[i].len > cap)
                return FLEET_ERR_NO_MEM;
            memcpy(buf, rt->kv[i].val, rt->kv[i].len);
            return FLEET_OK;
        }
    }
    return FLEET_ERR_NOT_FOUND;
}
static int kv_save(void *ctx, const char *key, const void *data, size_t len)
{
    rt_t *rt = ctx;
    if (len > sizeof(rt->kv[0].val))
        return FLEET_ERR_IO;
    int slot = -1;
    for (int i = 0; i < 8; i++)
        if ((rt->kv[i].used && strcmp(rt->kv[i].key, key) == 0) || (slot < 0 && !rt->kv[i].used))
            slot = i;
    if (slot < 0)
        return FLEET_ERR_IO;
    rt->kv[slot].used = true;
    snprintf(rt->kv[slot].key, sizeof(rt->kv[slot].key), "%s", key);
    memcpy(rt->kv[slot].val, data, len);
    rt->kv[slot].len = len;
    return FLEET_OK;
}
static int kv_erase(void *ctx, const char *key)
{
    rt_t *rt = ctx;
    for (int i = 0; i < 8; i++)
        if (rt->kv[i].used && strcmp(rt->kv[i].key, key) == 0)
            rt->kv[i].used = false;
    return FLEET_OK;
}
static const fleet_kv_ops_t k_kv = {kv_load, kv_save, kv_erase};

/* ---- host ---- */
static int h_describe(void *ctx, const char *busid, fleet_agent_dev_desc_t *out)
{
    (void)ctx;
    (void)busid;
    out->bcd_device = 0x0100;
    out->cls = 0;
    snprintf(out->serial, sizeof(out->serial), "FAKE0001");
    snprintf(out->product, sizeof(out->product), "Fake Test Device");
    out->n_ifaces = 2;
    out->ifaces[0].cls = 0xff;
    out->ifaces[1].cls = 0xff;
    return FLEET_OK;
}
static int h_port_power(void *ctx, const char *busid, const char *action, char *reason, size_t rl)
{
    rt_t *rt = ctx;
    rt->pp_calls++;
    snprintf(rt->pp_busid, sizeof(rt->pp_busid), "%s", busid);
    snprintf(rt->pp_action, sizeof(rt->pp_action), "%s", action);
    if (strcmp(busid, "9-9") == 0) {
        snprintf(reason, rl, "busid: no device on port 9-9");
        return FLEET_ERR_NOT_FOUND;
    }
    return FLEET_OK;
}
static void h_reboot(void *ctx, const char *reason)
{
    rt_t *rt = ctx;
    rt->reboots++;
    snprintf(rt->reboot_reason, sizeof(rt->reboot_reason), "%s", reason);
}
static bool h_usbip_listening(void *ctx)
{
    return !((rt_t *)ctx)->usbip_down;
}
static const fleet_agent_host_ops_t k_host = {h_describe, h_port_power, h_reboot, NULL, h_usbip_listening};

/* The core's observer, wired as fleet-dongle wires it. */
static void rt_usbip_event(void *arg, const usbip_event_t *ev)
{
    rt_t *rt = arg;
    fleet_agent_on_usbip_event(rt->agent, ev);
}

void rt_init(rt_t *rt, bool enforce, bool with_kv)
{
    memset(rt, 0, sizeof(*rt));
    usbip_server_config_t cfg = USBIP_SERVER_DEFAULT_CONFIG();
    cfg.enforce_grants = enforce;
    world_init(&rt->w, &cfg);
    fake_usb_add_test_device(&rt->w.usb, "1-1", 0x1209, 0x0008);
    world_pump(&rt->w);
    rt->now_ms = 5000;
    rt->with_kv = with_kv;
    rt_recreate(rt, NULL);
}

void rt_recreate(rt_t *rt, const char *reason)
{
    if (rt->agent)
        fleet_agent_destroy(rt->agent, reason);
    rt->agent = NULL;
    fleet_agent_config_t ac = {.mqtt_url = "mqtt://127.0.0.1:1883", .firmware_version = "0.3.1",
                               .idf_version = "v5.5.1", .chip = "posix-sim", .chip_revision = 0,
                               .usbip_port = 3240, .telemetry_interval_s = 10};
    fleet_agent_ports_t p = {.mqtt = &k_mqtt, .mqtt_ctx = rt, .sys = &k_sys, .sys_ctx = rt,
                             .clock = &k_clock, .clock_ctx = rt, .host = &k_host, .host_ctx = rt};
    if (rt->with_kv) {
        p.kv = &k_kv;
        p.kv_ctx = rt;
    }
    p.ota = rt->ota;
    p.worker = rt->worker;
    p.worker_ctx = rt->worker_ctx;
    char reason_buf[FLEET_REASON_MAX];
    if (fleet_agent_create(&ac, &p, rt->w.srv, &rt->agent, reason_buf, sizeof(reason_buf)) != FLEET_OK) {
        fprintf(stderr, "fleet_agent_create: %s\n", reason_buf);
        exit(2);
    }
    rt->w.forward = (usbip_observer_t){rt_usbip_event, rt};
}

void rt_fini(rt_t *rt)
{
    if (rt->agent)
        fleet_agent_destroy(rt->agent, "shutdown");
    world_fini(&rt->w);
    for (int i = 0; i < rt->npub; i++)
        free(rt->pubs[i].payload);
}

void rt_online(rt_t *rt)
{
    fleet_agent_tick(rt->agent);
    rt->up->on_connect(rt->up_arg, true, NULL);
    fleet_agent_tick(rt->agent);
}

void rt_advance(rt_t *rt, uint64_t ms)
{
    rt->now_ms += ms;
    world_pump(&rt->w);
    fleet_agent_tick(rt->agent);
}

void rt_cmd(rt_t *rt, const char *name, const char *json)
{
    char topic[128];
    snprintf(topic, sizeof(topic), "fleet/v1/%s/cmd/%s", fleet_agent_id(rt->agent), name);
    rt->up->on_message(rt->up_arg, topic, json, strlen(json));
    world_pump(&rt->w);
}

cJSON *rt_last(rt_t *rt, const char *leaf, int from, rt_pub_t **pub)
{
    char topic[128];
    snprintf(topic, sizeof(topic), "fleet/v1/%s/%s", fleet_agent_id(rt->agent), leaf);
    for (int i = rt->npub - 1; i >= from; i--) {
        if (strcmp(rt->pubs[i].topic, topic) == 0) {
            if (pub)
                *pub = &rt->pubs[i];
            return cJSON_Parse(rt->pubs[i].payload);
        }
    }
    return NULL;
}

cJSON *rt_result(rt_t *rt, const char *request_id)
{
    char topic[128];
    snprintf(topic, sizeof(topic), "fleet/v1/%s/cmd-result", fleet_agent_id(rt->agent));
    for (int i = rt->npub - 1; i >= 0; i--) {
        if (strcmp(rt->pubs[i].topic, topic) != 0)
            continue;
        cJSON *o = cJSON_Parse(rt->pubs[i].payload);
        const cJSON *r = cJSON_GetObjectItem(o, "request_id");
        if (cJSON_IsString(r) && strcmp(r->valuestring, request_id) == 0)
            return o;
        cJSON_Delete(o);
    }
    return NULL;
}

int rt_count_events(rt_t *rt, const char *type, const char *busid, int from)
{
    char topic[128];
    snprintf(topic, sizeof(topic), "fleet/v1/%s/events", fleet_agent_id(rt->agent));
    int n = 0;
    for (int i = from; i < rt->npub; i++) {
        if (strcmp(rt->pubs[i].topic, topic) != 0)
            continue;
        cJSON *o = cJSON_Parse(rt->pubs[i].payload);
        const cJSON *t = cJSON_GetObjectItem(o, "type"), *b = cJSON_GetObjectItem(o, "busid");
        if (cJSON_IsString(t) && strcmp(t->valuestring, type) == 0 &&
            (!busid || (cJSON_IsString(b) && strcmp(b->valuestring, busid) == 0)))
            n++;
        cJSON_Delete(o);
    }
    return n;
}
