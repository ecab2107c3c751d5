/* agent_priv.h - the agent's state, shared by agent.c and agent_json.c. Private. */
#ifndef FLEET_AGENT_PRIV_H
#define FLEET_AGENT_PRIV_H

#include "cJSON.h"
#include "fleet_agent/agent.h"

struct fleet_agent {
    fleet_agent_ports_t p;
    usbip_server_t *core;
    char id[FLEET_AGENT_ID_LEN];
    uint8_t mac[6];
    char root[48];                 /* "fleet/v1/<id>/" */
    char fw[FLEET_VERSION_MAX], idf[32], chip[16], url[FLEET_CFG_URL_MAX], boot_reason[64];
    uint16_t chip_rev, usbip_port, keepalive_s;
    uint32_t poll_ms;

    uint64_t t0_ms;
    uint64_t seq;                  /* per boot, every payload that carries one */

    /* MQTT session */
    bool connected, connecting, said_boot;
    uint64_t connect_started_ms, next_connect_ms;
    uint32_t backoff_ms;
    bool reconnect_now;            /* config changed the broker */
    char will[160];

    /* config */
    fleet_config_store_t cfg;
    bool have_cfg;
    uint32_t telemetry_s;
    uint64_t next_telemetry_ms;

    /* last device list seen (diffed for events) */
    usbip_device_info_t *devs;     /* as of the last diff */
    int ndev, devcap;
    usbip_device_info_t *cur;      /* scratch: listed just now */
    int ncur, curcap;
    bool poll_now, state_dirty, state_published;
    uint64_t next_poll_ms;
    int mdns_ndev;                 /* -1: not published yet */

    /* port-power cycle: power comes back after CYCLE_OFF_MS, as VBUS needs
     * to discharge and the host must see the device leave */
    char cycle_busid[32];
    uint64_t cycle_on_ms;

    bool reboot_requested;
    char reboot_reason[129 * 4];   /* UTF-8, up to 128 characters */
    char ota_request_id[37];
    /* OTA on the worker: ota_job_running from the start until the job's
     * last act; ota_job_unjoined until the owner joined it */
    bool ota_job_running, ota_job_unjoined;
    bool ota_job_cancelled;        /* by destroy, maybe before the job began */
};

static inline uint64_t agent_now_ms(const fleet_agent_t *a)
{
    return a->p.clock->now_ms(a->p.clock_ctx);
}

/* agent_json.c */
cJSON *agent_device_json(fleet_agent_t *a, const usbip_device_info_t *d);
cJSON *agent_envelope(fleet_agent_t *a, bool with_seq);
const char *agent_speed_name(uint8_t linux_speed);
/* "ip:port", "[v6]:port": the contracts' client address */
void agent_client_text(const char *peer, uint16_t port, char *out, size_t len);
cJSON *agent_lease_json(const char *lease_id);

/* agent.c */
void agent_publish_json(fleet_agent_t *a, const char *leaf, cJSON *doc, int qos, bool retain);
void agent_event(fleet_agent_t *a, const char *type, const char *busid, const char *client, cJSON *detail);
int agent_refresh_devices(fleet_agent_t *a); /* list into a->cur; returns count or -1 */

#endif
