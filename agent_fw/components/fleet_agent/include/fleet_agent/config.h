/*
 * config.h - the dongle's versioned config document (`config` command).
 *
 *   {"v":1, "version":N, "mqtt":{"url","username"?,"password"?},
 *    "telemetry_interval_s":1..3600, "enforce_grants":bool,
 *    "filters"?:{"allow"?:[F...], "deny"?:[F...]}, "log_level":"error|warn|info|debug"}
 *   F = {"vid":0..65535,"pid":0..65535} or {"class":0..255}
 *
 * `version` only moves forward: an older one is refused, re-applying the
 * applied version with identical content is a no-op success (QoS 1 may
 * deliver twice), the same version with other content is refused. Unknown
 * properties (request_id, issued_at, future fields) are ignored.
 *
 * Reasons name the field first: "telemetry_interval_s: must be an integer
 * from 1 to 3600".
 */
#ifndef FLEET_AGENT_CONFIG_H
#define FLEET_AGENT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleet_agent/port/kv.h"
#include "fleet_agent/port/log.h"

#define FLEET_CFG_URL_MAX 128
#define FLEET_CFG_CRED_MAX 64
#define FLEET_CFG_FILTERS_MAX 16
#define FLEET_CFG_KEY "config" /* kv key of the persisted document */

typedef struct {
    bool by_class;
    uint16_t vid, pid;
    uint8_t cls;
} fleet_filter_t;

typedef struct {
    int64_t version;
    char mqtt_url[FLEET_CFG_URL_MAX];
    char mqtt_username[FLEET_CFG_CRED_MAX];
    char mqtt_password[FLEET_CFG_CRED_MAX];
    uint32_t telemetry_interval_s;
    bool enforce_grants;
    fleet_filter_t allow[FLEET_CFG_FILTERS_MAX];
    size_t n_allow;
    fleet_filter_t deny[FLEET_CFG_FILTERS_MAX];
    size_t n_deny;
    fleet_log_level_t log_level;
} fleet_config_t;

/* Sections that differ between two documents (fleet_config_apply's result). */
enum {
    FLEET_CFG_CHANGED_MQTT = 1u << 0,      /* needs an MQTT reconnect */
    FLEET_CFG_CHANGED_TELEMETRY = 1u << 1, /* live */
    FLEET_CFG_CHANGED_GRANTS = 1u << 2,    /* live (enforce on/off) */
    FLEET_CFG_CHANGED_FILTERS = 1u << 3,   /* live: re-check exported devices */
    FLEET_CFG_CHANGED_LOG = 1u << 4,       /* live */
};
#define FLEET_CFG_NEEDS_RECONNECT(changed) (((changed) & FLEET_CFG_CHANGED_MQTT) != 0)
/* Nothing in the document needs a reboot today; kept so callers test for it. */
#define FLEET_CFG_NEEDS_REBOOT(changed) (((changed) & 0u) != 0)

/* Parse + validate a document. FLEET_OK or FLEET_ERR_INVALID + reason. */
int fleet_config_parse(const char *json, size_t len, fleet_config_t *out, char *reason,
                       size_t reason_len);

/* The persisted, applied config of one dongle. */
typedef struct {
    const fleet_kv_ops_t *kv;
    void *kv_ctx;
    bool have;          /* a document has been applied */
    fleet_config_t cur;
} fleet_config_store_t;

/* Load the persisted document (if any). A missing record is FLEET_OK with
 * have = false; a corrupt one FLEET_ERR_INVALID (the caller keeps defaults). */
int fleet_config_store_init(fleet_config_store_t *st, const fleet_kv_ops_t *kv, void *kv_ctx,
                            char *reason, size_t reason_len);

/* Validate, check the version, persist atomically, then make it current.
 * *changed gets the FLEET_CFG_CHANGED_* bits (all of them for the first
 * document). FLEET_OK, FLEET_ERR_INVALID (bad document), FLEET_ERR_REFUSED
 * (version) or FLEET_ERR_IO; on error nothing changes. */
int fleet_config_apply(fleet_config_store_t *st, const char *json, size_t len, unsigned *changed,
                       char *reason, size_t reason_len);

/* Bits of the sections that differ between a and b. */
unsigned fleet_config_diff(const fleet_config_t *a, const fleet_config_t *b);

/* Deny wins; an empty allow list allows everything not denied. cls is the
 * device class, or for class-0 (per-interface) devices the first interface's
 * class. */
bool fleet_config_device_allowed(const fleet_config_t *cfg, uint16_t vid, uint16_t pid, uint8_t cls);

const char *fleet_log_level_name(fleet_log_level_t l);

#endif /* FLEET_AGENT_CONFIG_H */
