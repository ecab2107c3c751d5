/*
 * agent.h - the dongle's agent: reports the dongle over MQTT and obeys the
 * service's commands, on top of one USB/IP core instance.
 *
 *   fleet/v1/<id>/status     retained, online; the Last Will says offline/lwt
 *   fleet/v1/<id>/state      retained snapshot, republished on every change
 *   fleet/v1/<id>/events     hot-plug, attach/detach, grants, OTA, self-test
 *   fleet/v1/<id>/telemetry  the core's counters every telemetry_interval_s
 *   fleet/v1/<id>/cmd/<name> grant, revoke, config, ota, reboot, port-power;
 *                            each answered once on cmd-result
 *
 * No thread and no global: the owner's loop calls fleet_agent_tick() (every
 * ~100 ms) and forwards MQTT traffic; one process may run many agents. With
 * a worker port, an OTA download runs as a job on the worker while the owner
 * keeps calling in; the port keeps the two from touching the agent at once.
 * Hot-plug and attach/detach are found by comparing the core's device list
 * with the last one seen (the core has no event hook); the owner may call
 * fleet_agent_devices_changed() to have that done at the next tick instead
 * of within the poll period.
 */
#ifndef FLEET_AGENT_AGENT_H
#define FLEET_AGENT_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleet_agent/config.h"
#include "fleet_agent/ota.h"
#include "fleet_agent/port/clock.h"
#include "fleet_agent/port/kv.h"
#include "fleet_agent/port/log.h"
#include "fleet_agent/port/mdns.h"
#include "fleet_agent/port/mqtt.h"
#include "fleet_agent/port/ota_store.h"
#include "fleet_agent/port/sysinfo.h"
#include "fleet_agent/port/worker.h"
#include "usbip/usbip_server.h"

#define FLEET_AGENT_ID_LEN 17       /* "esp-" + 12 hex + NUL */
#define FLEET_AGENT_MAX_PAYLOAD 65536 /* the service refuses larger messages */
#define FLEET_AGENT_MAX_IFACES 32

/* Descriptor summary of one exported device (the owner reads descriptors). */
typedef struct {
    uint16_t bcd_device;
    uint8_t cls, subclass, protocol;
    char serial[64], manufacturer[64], product[64]; /* "" = none (null); longer ones truncated */
    int n_ifaces;
    struct { uint8_t cls, subclass, protocol; } ifaces[FLEET_AGENT_MAX_IFACES];
} fleet_agent_dev_desc_t;

/* Fill the summary from raw descriptors (device: 18 bytes; cfg: one whole
 * configuration, interfaces counted at alternate setting 0). Strings are
 * left to fleet_agent_desc_string. FLEET_OK or FLEET_ERR_INVALID. */
int fleet_agent_desc_parse(const uint8_t *dev18, const uint8_t *cfg, size_t cfg_len, fleet_agent_dev_desc_t *out);
/* A USB string descriptor (UTF-16LE; len = bytes available at desc) as
 * UTF-8 text; "" if malformed. */
void fleet_agent_desc_string(const uint8_t *desc, size_t len, char *out, size_t cap);

/* What only the owner can do. Every member may be NULL (not supported). */
typedef struct {
    int (*describe)(void *ctx, const char *busid, fleet_agent_dev_desc_t *out);
    /* action "on" | "off" | "cycle". FLEET_OK or an error + reason. */
    int (*port_power)(void *ctx, const char *busid, const char *action, char *reason, size_t reason_len);
    /* Restart this dongle after the current call returns (the agent has
     * already answered and said goodbye); the owner destroys the agent. */
    void (*reboot)(void *ctx, const char *reason);
    /* A config document was applied (log level, filters: owner business). */
    void (*config_applied)(void *ctx, const fleet_config_t *cfg, unsigned changed);
    /* Whether the USB/IP listener is accepting connections (the self-test's
     * usbip_listener check). NULL: it is, since the core exists. */
    bool (*usbip_listening)(void *ctx);
} fleet_agent_host_ops_t;

typedef struct {
    const char *mqtt_url;           /* overridden by an applied config document */
    const char *firmware_version;
    const char *idf_version;        /* NULL: omitted */
    const char *chip;               /* "esp32s3" | "esp32p4" | "posix-sim" */
    uint16_t chip_revision;
    uint16_t usbip_port;            /* 3240 */
    uint32_t telemetry_interval_s;  /* default 10; a config document overrides */
    uint16_t keepalive_s;           /* default 30 */
    uint32_t poll_ms;               /* device-list poll period; default 250 */
    const char *boot_reason;        /* detail.reason of the `rebooted` event; default "power_on" */
} fleet_agent_config_t;

typedef struct {
    const fleet_mqtt_ops_t *mqtt;      void *mqtt_ctx;   /* required */
    const fleet_sysinfo_ops_t *sys;    void *sys_ctx;    /* required */
    const fleet_clock_ops_t *clock;    void *clock_ctx;  /* required */
    const fleet_log_ops_t *log;        void *log_ctx;    /* optional */
    const fleet_kv_ops_t *kv;          void *kv_ctx;     /* optional: config persistence */
    const fleet_mdns_ops_t *mdns;      void *mdns_ctx;   /* optional */
    const fleet_ota_store_ops_t *store; void *store_ctx; /* optional: boot slot in state */
    fleet_ota_t *ota;                  /* optional, owner-initialised; its on_event should
                                          call fleet_agent_on_ota_event */
    const fleet_agent_host_ops_t *host; void *host_ctx;
    /* optional: `ota` downloads on the worker (one job per agent; a second
     * ota meanwhile is refused with "state: ..."). Without it the ota
     * handler blocks for the whole download. */
    const fleet_worker_ops_t *worker;  void *worker_ctx;
} fleet_agent_ports_t;

typedef struct fleet_agent fleet_agent_t;

/* core is not owned. FLEET_OK, FLEET_ERR_INVALID (+ reason) or FLEET_ERR_NO_MEM. */
int fleet_agent_create(const fleet_agent_config_t *cfg, const fleet_agent_ports_t *ports,
                       usbip_server_t *core, fleet_agent_t **out, char *reason, size_t reason_len);
/* Stops a running OTA job first (cancel, then join: its cmd-result says
 * cancelled), then publishes status offline (reason) when connected:
 * "shutdown" or "reboot". */
void fleet_agent_destroy(fleet_agent_t *a, const char *reason);

/* Telemetry timer, reconnect backoff, device-list diff, state republish,
 * self-test polling. */
void fleet_agent_tick(fleet_agent_t *a);
/* The device list moved (plug, unplug, attach): diff at the next tick. */
void fleet_agent_devices_changed(fleet_agent_t *a);
/* The core refused an import: client is the address without the port. */
void fleet_agent_import_refused(fleet_agent_t *a, const char *busid, const char *client, uint16_t port,
                                const char *reason);
/* Feed the USB/IP core's observer (usbip_server_ports_t.observer) here:
 * refusals become import_refused events at once, attach and detach are
 * reported by the next tick's device diff, with the device's new state. */
void fleet_agent_on_usbip_event(fleet_agent_t *a, const usbip_event_t *ev);
/* Feed an OTA event (the fleet_ota_t's on_event). */
void fleet_agent_on_ota_event(fleet_agent_t *a, const fleet_ota_event_t *ev);
/* Callbacks for the owner's fleet_ota_config_t, created before the agent:
 * their argument is the address of the owner's fleet_agent_t pointer (NULL
 * while no agent runs). The self-test checks network, MQTT, the USB/IP core
 * and the exported devices against the list saved before the update; it
 * stays PENDING until network and MQTT are up (the OTA deadline turns a
 * dongle that never gets there into a failure) and gives devices 10 s to
 * enumerate. */
fleet_selftest_verdict_t fleet_agent_selftest(void *agent_slot, const char *saved_devices, char *checks,
                                              size_t checks_len, char *reason, size_t reason_len);
void fleet_agent_ota_event(void *agent_slot, const fleet_ota_event_t *ev);
/* An incoming MQTT message (normally through the port's upcall). */
void fleet_agent_on_mqtt_message(fleet_agent_t *a, const char *topic, const void *payload, size_t len);

const char *fleet_agent_id(const fleet_agent_t *a);
bool fleet_agent_connected(const fleet_agent_t *a);
uint32_t fleet_agent_telemetry_interval(const fleet_agent_t *a);
/* Bytes this agent allocated (for the per-dongle memory report). */
size_t fleet_agent_footprint(const fleet_agent_t *a);

/* "esp-" + 12 lowercase hex digits of the base MAC. */
void fleet_agent_id_from_mac(const uint8_t mac[6], char out[FLEET_AGENT_ID_LEN]);

/* ---- payloads and commands (agent_json.c, agent_cmd.c) ---------------- */

/* Build a payload (malloc'ed NUL-terminated JSON; the caller frees) - used by
 * the runtime and by the contract tests. NULL on allocation failure. */
char *fleet_agent_build_status(fleet_agent_t *a, bool online, const char *reason);
char *fleet_agent_build_state(fleet_agent_t *a);
char *fleet_agent_build_telemetry(fleet_agent_t *a);

typedef enum {
    FLEET_CMD_GRANT = 0,
    FLEET_CMD_REVOKE,
    FLEET_CMD_CONFIG,
    FLEET_CMD_OTA,
    FLEET_CMD_REBOOT,
    FLEET_CMD_PORT_POWER,
    FLEET_CMD_COUNT
} fleet_cmd_kind_t;

#define FLEET_CMD_MAX_CLIENTS 16
#define FLEET_LEASE_MAX 65

typedef struct {
    fleet_cmd_kind_t kind;
    char request_id[37];
    double issued_at;
    char busid[32];
    char clients[FLEET_CMD_MAX_CLIENTS][48];
    int n_clients;
    char lease_id[FLEET_LEASE_MAX]; /* integer leases as decimal text */
    bool lease_is_int;
    int64_t expires_at;
    char reason[129 * 4];           /* revoke / reboot; UTF-8 */
    char action[8];                 /* port-power: on | off | cycle */
} fleet_cmd_t;

/* "grant" -> FLEET_CMD_GRANT; -1 for an unknown name. */
int fleet_cmd_kind_from_name(const char *name);
const char *fleet_cmd_name(fleet_cmd_kind_t k);
/* Validate a cmd/<name> payload as its schema does. FLEET_OK, or
 * FLEET_ERR_INVALID with a reason naming the field. request_id is copied into
 * out whenever it is valid, even if another field is not, so the refusal can
 * still be answered. config and ota bodies are checked by their own parsers
 * (only the envelope here). */
int fleet_cmd_parse(fleet_cmd_kind_t kind, const char *json, size_t len, fleet_cmd_t *out, char *reason,
                    size_t reason_len);

/* Text checks shared with the builders. */
bool fleet_txt_is_uuid(const char *s);
bool fleet_txt_is_busid(const char *s);
bool fleet_txt_is_ipv4(const char *s);
bool fleet_txt_is_ipv6(const char *s);

#endif /* FLEET_AGENT_AGENT_H */
