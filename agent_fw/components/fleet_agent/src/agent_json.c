/*
 * agent_json.c - the payloads the dongle publishes, in exactly the shapes of
 * fleet/contracts/mqtt/v1 (the contract tests validate what these build).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_priv.h"
#include "fleet_agent/err.h"

const char *agent_speed_name(uint8_t linux_speed)
{
    /* Linux enum usb_device_speed: 1 low, 2 full, 3 high. The chips stop at
     * high speed; anything else cannot be exported by them. */
    switch (linux_speed) {
    case 1: return "low";
    case 2: return "full";
    default: return "high";
    }
}

/* The core knows only the peer's IP; the contract wants "ip:port" (IPv6 in
 * brackets). Port 0 stands for "not known" until the core reports it. */
void agent_client_text(const char *peer, uint16_t port, char *out, size_t len)
{
    if (strchr(peer, ':'))
        snprintf(out, len, "[%s]:%u", peer, (unsigned)port);
    else
        snprintf(out, len, "%s:%u", peer, (unsigned)port);
}

/* Integer leases travel as JSON numbers, tokens as strings. */
cJSON *agent_lease_json(const char *lease_id)
{
    bool digits = lease_id[0] >= '1' && lease_id[0] <= '9' && strlen(lease_id) <= 15;
    for (const char *p = lease_id; digits && *p; p++)
        digits = *p >= '0' && *p <= '9';
    return digits ? cJSON_CreateNumber(strtod(lease_id, NULL)) : cJSON_CreateString(lease_id);
}

cJSON *agent_envelope(fleet_agent_t *a, bool with_seq)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddNumberToObject(o, "v", 1);
    cJSON_AddStringToObject(o, "dongle_id", a->id);
    if (with_seq) {
        cJSON_AddNumberToObject(o, "seq", (double)a->seq++);
        cJSON_AddNumberToObject(o, "uptime_s", (double)((agent_now_ms(a) - a->t0_ms) / 1000u));
    }
    return o;
}

static cJSON *text_or_null(const char *s)
{
    return s[0] ? cJSON_CreateString(s) : cJSON_CreateNull();
}

cJSON *agent_device_json(fleet_agent_t *a, const usbip_device_info_t *d)
{
    fleet_agent_dev_desc_t desc;
    memset(&desc, 0, sizeof(desc));
    bool have = a->p.host && a->p.host->describe && a->p.host->describe(a->p.host_ctx, d->busid, &desc) == FLEET_OK;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "busid", d->busid);
    cJSON_AddNumberToObject(o, "vid", d->vid);
    cJSON_AddNumberToObject(o, "pid", d->pid);
    if (have)
        cJSON_AddNumberToObject(o, "bcd_device", desc.bcd_device);
    cJSON_AddItemToObject(o, "serial", text_or_null(desc.serial));
    cJSON_AddItemToObject(o, "manufacturer", text_or_null(desc.manufacturer));
    cJSON_AddItemToObject(o, "product", text_or_null(desc.product));
    cJSON_AddNumberToObject(o, "class", desc.cls);
    cJSON_AddNumberToObject(o, "subclass", desc.subclass);
    cJSON_AddNumberToObject(o, "protocol", desc.protocol);
    cJSON_AddStringToObject(o, "speed", agent_speed_name(d->speed));
    cJSON *ifs = cJSON_AddArrayToObject(o, "interfaces");
    int n = desc.n_ifaces < 0 ? 0 : desc.n_ifaces > FLEET_AGENT_MAX_IFACES ? FLEET_AGENT_MAX_IFACES : desc.n_ifaces;
    for (int i = 0; i < n; i++) {
        cJSON *it = cJSON_CreateObject();
        cJSON_AddNumberToObject(it, "class", desc.ifaces[i].cls);
        cJSON_AddNumberToObject(it, "subclass", desc.ifaces[i].subclass);
        cJSON_AddNumberToObject(it, "protocol", desc.ifaces[i].protocol);
        cJSON_AddItemToArray(ifs, it);
    }
    if (d->attached_to[0]) {
        char client[64];
        agent_client_text(d->attached_to, d->attached_port, client, sizeof(client));
        cJSON_AddStringToObject(o, "attached_to", client);
    } else {
        cJSON_AddNullToObject(o, "attached_to");
    }
    cJSON *g = cJSON_AddArrayToObject(o, "granted_to");
    for (int i = 0; i < d->num_granted && i < USBIP_MAX_GRANT_ADDRS; i++)
        cJSON_AddItemToArray(g, cJSON_CreateString(d->granted_to[i]));
    return o;
}

static char *print_and_free(cJSON *o)
{
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return s;
}

char *fleet_agent_build_status(fleet_agent_t *a, bool online, const char *reason)
{
    cJSON *o = agent_envelope(a, false);
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "status", online ? "online" : "offline");
    if (!online && reason)
        cJSON_AddStringToObject(o, "reason", reason);
    return print_and_free(o);
}

static void boot_json(fleet_agent_t *a, cJSON *o)
{
    cJSON *b = cJSON_AddObjectToObject(o, "boot");
    fleet_otadata_t od;
    if (a->p.store && a->p.store->read_otadata(a->p.store_ctx, &od) == FLEET_OK) {
        int slot = a->p.store->running_slot(a->p.store_ctx);
        if (slot < 0 || slot >= FLEET_SLOT_COUNT)
            slot = od.boot_slot;
        char name[12];
        snprintf(name, sizeof(name), "ota_%d", slot & 1);
        cJSON_AddStringToObject(b, "slot", name);
        cJSON_AddStringToObject(b, "ota_state", fleet_img_state_name(od.slot[slot & 1].state));
    } else {
        /* no OTA storage: a simulated dongle without slots */
        cJSON_AddStringToObject(b, "slot", "sim");
        cJSON_AddStringToObject(b, "ota_state", "undefined");
    }
}

char *fleet_agent_build_state(fleet_agent_t *a)
{
    if (agent_refresh_devices(a) < 0)
        return NULL;
    cJSON *o = agent_envelope(a, true);
    if (!o)
        return NULL;
    cJSON *fw = cJSON_AddObjectToObject(o, "firmware");
    cJSON_AddStringToObject(fw, "version", a->fw);
    if (a->idf[0])
        cJSON_AddStringToObject(fw, "idf", a->idf);
    cJSON *chip = cJSON_AddObjectToObject(o, "chip");
    cJSON_AddStringToObject(chip, "model", a->chip);
    cJSON_AddNumberToObject(chip, "revision", a->chip_rev);
    boot_json(a, o);

    cJSON *net = cJSON_AddObjectToObject(o, "net");
    char ip[64];
    if (a->p.sys->ip(a->p.sys_ctx, ip, sizeof(ip)) != FLEET_OK)
        snprintf(ip, sizeof(ip), "0.0.0.0");
    cJSON_AddStringToObject(net, "ip", ip);
    char mac[18];
    snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", a->mac[0], a->mac[1], a->mac[2], a->mac[3],
             a->mac[4], a->mac[5]);
    cJSON_AddStringToObject(net, "mac", mac);
    int rssi;
    if (a->p.sys->rssi && a->p.sys->rssi(a->p.sys_ctx, &rssi))
        cJSON_AddNumberToObject(net, "rssi", rssi);
    else
        cJSON_AddNullToObject(net, "rssi");

    fleet_heap_info_t h;
    memset(&h, 0, sizeof(h));
    a->p.sys->heap(a->p.sys_ctx, &h);
    cJSON *heap = cJSON_AddObjectToObject(o, "heap");
    cJSON_AddNumberToObject(heap, "free", (double)h.free);
    cJSON_AddNumberToObject(heap, "min_free", (double)h.min_free);
    if (h.have_dma)
        cJSON_AddNumberToObject(heap, "dma_free", (double)h.dma_free);

    usbip_buffer_stats_t bs;
    usbip_server_buffer_stats(a->core, &bs);
    cJSON *buf = cJSON_AddObjectToObject(o, "buffers");
    cJSON_AddNumberToObject(buf, "budget", (double)bs.budget);
    cJSON_AddNumberToObject(buf, "used", (double)bs.used);
    cJSON_AddNumberToObject(buf, "peak", (double)bs.peak);

    cJSON *u = cJSON_AddObjectToObject(o, "usbip");
    cJSON_AddNumberToObject(u, "port", a->usbip_port);
    cJSON_AddBoolToObject(u, "enforce_grants", usbip_get_enforce(a->core));

    cJSON *devs = cJSON_AddArrayToObject(o, "devices");
    for (int i = 0; i < a->ncur && i < 64; i++)
        cJSON_AddItemToArray(devs, agent_device_json(a, &a->cur[i]));
    return print_and_free(o);
}

char *fleet_agent_build_telemetry(fleet_agent_t *a)
{
    if (agent_refresh_devices(a) < 0)
        return NULL;
    cJSON *o = agent_envelope(a, true);
    if (!o)
        return NULL;
    cJSON_AddNumberToObject(o, "interval_s", a->telemetry_s);
    fleet_heap_info_t h;
    memset(&h, 0, sizeof(h));
    a->p.sys->heap(a->p.sys_ctx, &h);
    cJSON_AddNumberToObject(o, "heap_free", (double)h.free);
    int rssi;
    if (a->p.sys->rssi && a->p.sys->rssi(a->p.sys_ctx, &rssi))
        cJSON_AddNumberToObject(o, "rssi", rssi);
    else
        cJSON_AddNullToObject(o, "rssi");
    usbip_buffer_stats_t bs;
    usbip_server_buffer_stats(a->core, &bs);
    cJSON *buf = cJSON_AddObjectToObject(o, "buffers");
    cJSON_AddNumberToObject(buf, "budget", (double)bs.budget);
    cJSON_AddNumberToObject(buf, "used", (double)bs.used);
    cJSON_AddNumberToObject(buf, "peak", (double)bs.peak);
    cJSON_AddNumberToObject(buf, "waits", (double)bs.waits);
    cJSON *devs = cJSON_AddArrayToObject(o, "devices");
    for (int i = 0; i < a->ncur; i++) {
        const usbip_device_info_t *d = &a->cur[i];
        const usbip_dev_stats_t *s = &d->stats;
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "busid", d->busid);
        cJSON_AddNumberToObject(j, "urbs", (double)s->urbs);
        cJSON_AddNumberToObject(j, "bytes_in", (double)s->bytes_in);
        cJSON_AddNumberToObject(j, "bytes_out", (double)s->bytes_out);
        cJSON_AddNumberToObject(j, "unlinks", (double)s->unlinks);
        cJSON_AddNumberToObject(j, "queue_depth", s->queue_depth);
        cJSON *e = cJSON_AddObjectToObject(j, "errors");
        cJSON_AddNumberToObject(e, "stall", (double)s->errors.stall);
        cJSON_AddNumberToObject(e, "proto", (double)s->errors.proto);
        cJSON_AddNumberToObject(e, "overflow", (double)s->errors.overflow);
        cJSON_AddNumberToObject(e, "nodev", (double)s->errors.nodev);
        cJSON_AddNumberToObject(e, "timeout", (double)s->errors.timeout);
        cJSON_AddNumberToObject(e, "other", (double)s->errors.other);
        cJSON *l = cJSON_AddObjectToObject(j, "latency_us");
        cJSON_AddNumberToObject(l, "p50", s->latency_p50_us);
        cJSON_AddNumberToObject(l, "p99", s->latency_p99_us);
        cJSON_AddNumberToObject(l, "max", s->latency_max_us);
        cJSON_AddItemToArray(devs, j);
    }
    return print_and_free(o);
}
