/* config.c - parse, validate, version and persist the config document. */
#include "fleet_agent/config.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "fleet_agent/err.h"
#include "jfield.h"
#include "reason.h"

#define DOC_MAX 4096

static const char *const level_names[] = {"error", "warn", "info", "debug"};

const char *fleet_log_level_name(fleet_log_level_t l)
{
    return (unsigned)l < 4 ? level_names[l] : "info";
}

static int parse_filter(const cJSON *e, const char *path, fleet_filter_t *f, char *r, size_t rl)
{
    char p[64];
    int64_t n;
    if (!cJSON_IsObject(e)) {
        fleet_reason(r, rl, "%s: must be an object {\"vid\",\"pid\"} or {\"class\"}", path);
        return -1;
    }
    bool has_class = cJSON_HasObjectItem(e, "class");
    bool has_id = cJSON_HasObjectItem(e, "vid") || cJSON_HasObjectItem(e, "pid");
    if (has_class == has_id) {
        fleet_reason(r, rl, "%s: must have either vid and pid, or class", path);
        return -1;
    }
    memset(f, 0, sizeof *f);
    if (has_class) {
        snprintf(p, sizeof p, "%s.class", path);
        if (jf_int(e, "class", p, 0, 255, true, &n, r, rl) < 0) return -1;
        f->by_class = true;
        f->cls = (uint8_t)n;
        return 0;
    }
    snprintf(p, sizeof p, "%s.vid", path);
    if (jf_int(e, "vid", p, 0, 0xFFFF, true, &n, r, rl) < 0) return -1;
    f->vid = (uint16_t)n;
    snprintf(p, sizeof p, "%s.pid", path);
    if (jf_int(e, "pid", p, 0, 0xFFFF, true, &n, r, rl) < 0) return -1;
    f->pid = (uint16_t)n;
    return 0;
}

static int parse_list(const cJSON *filters, const char *name, fleet_filter_t *out, size_t *count,
                      char *r, size_t rl)
{
    *count = 0;
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(filters, name);
    if (!a) return 0;
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) > FLEET_CFG_FILTERS_MAX) {
        fleet_reason(r, rl, "filters.%s: must be an array of at most %d filters", name,
                     FLEET_CFG_FILTERS_MAX);
        return -1;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, a)
    {
        char path[40];
        snprintf(path, sizeof path, "filters.%s[%zu]", name, *count);
        if (parse_filter(e, path, &out[*count], r, rl)) return -1;
        (*count)++;
    }
    return 0;
}

static int parse_doc(const cJSON *o, fleet_config_t *c, char *r, size_t rl)
{
    int64_t n;
    if (jf_int(o, "v", "v", 1, 1, true, &n, r, rl) < 0) return -1;
    if (jf_int(o, "version", "version", 1, INT64_C(1) << 53, true, &c->version, r, rl) < 0) return -1;

    const cJSON *mqtt = cJSON_GetObjectItemCaseSensitive(o, "mqtt");
    if (!mqtt) {
        fleet_reason(r, rl, "mqtt: is required");
        return -1;
    }
    if (!cJSON_IsObject(mqtt)) {
        fleet_reason(r, rl, "mqtt: must be an object {\"url\",\"username\",\"password\"}");
        return -1;
    }
    if (jf_str(mqtt, "url", "mqtt.url", 1, true, c->mqtt_url, sizeof c->mqtt_url, r, rl) < 0) return -1;
    if (strncmp(c->mqtt_url, "mqtt://", 7) != 0 && strncmp(c->mqtt_url, "mqtts://", 8) != 0) {
        fleet_reason(r, rl, "mqtt.url: must start with mqtt:// or mqtts://");
        return -1;
    }
    if (jf_str(mqtt, "username", "mqtt.username", 0, false, c->mqtt_username,
               sizeof c->mqtt_username, r, rl) < 0 ||
        jf_str(mqtt, "password", "mqtt.password", 0, false, c->mqtt_password,
               sizeof c->mqtt_password, r, rl) < 0)
        return -1;
    if (c->mqtt_password[0] && !c->mqtt_username[0]) {
        fleet_reason(r, rl, "mqtt.password: needs mqtt.username");
        return -1;
    }
    if (jf_int(o, "telemetry_interval_s", "telemetry_interval_s", 1, 3600, true, &n, r, rl) < 0)
        return -1;
    c->telemetry_interval_s = (uint32_t)n;
    if (jf_bool(o, "enforce_grants", "enforce_grants", true, &c->enforce_grants, r, rl) < 0) return -1;

    const cJSON *filters = cJSON_GetObjectItemCaseSensitive(o, "filters");
    if (filters) {
        if (!cJSON_IsObject(filters)) {
            fleet_reason(r, rl, "filters: must be an object {\"allow\":[...],\"deny\":[...]}");
            return -1;
        }
        if (parse_list(filters, "allow", c->allow, &c->n_allow, r, rl) ||
            parse_list(filters, "deny", c->deny, &c->n_deny, r, rl))
            return -1;
    }
    const cJSON *lvl = cJSON_GetObjectItemCaseSensitive(o, "log_level");
    if (!lvl) {
        fleet_reason(r, rl, "log_level: is required");
        return -1;
    }
    for (int i = 0; i < 4 && cJSON_IsString(lvl); i++) {
        if (strcmp(lvl->valuestring, level_names[i]) == 0) {
            c->log_level = (fleet_log_level_t)i;
            return 0;
        }
    }
    fleet_reason(r, rl, "log_level: must be one of error, warn, info, debug");
    return -1;
}

int fleet_config_parse(const char *json, size_t len, fleet_config_t *out, char *reason,
                       size_t reason_len)
{
    memset(out, 0, sizeof *out);
    if (len > DOC_MAX) {
        fleet_reason(reason, reason_len, "document: larger than %d bytes", DOC_MAX);
        return FLEET_ERR_INVALID;
    }
    cJSON *root = jf_parse_object(json, len, reason, reason_len);
    if (!root) return FLEET_ERR_INVALID;
    int rc = parse_doc(root, out, reason, reason_len);
    cJSON_Delete(root);
    if (rc) memset(out, 0, sizeof *out);
    return rc ? FLEET_ERR_INVALID : FLEET_OK;
}

static bool same_filters(const fleet_filter_t *a, size_t na, const fleet_filter_t *b, size_t nb)
{
    if (na != nb) return false;
    for (size_t i = 0; i < na; i++)
        if (a[i].by_class != b[i].by_class || a[i].vid != b[i].vid || a[i].pid != b[i].pid ||
            a[i].cls != b[i].cls)
            return false;
    return true;
}

unsigned fleet_config_diff(const fleet_config_t *a, const fleet_config_t *b)
{
    unsigned d = 0;
    if (strcmp(a->mqtt_url, b->mqtt_url) || strcmp(a->mqtt_username, b->mqtt_username) ||
        strcmp(a->mqtt_password, b->mqtt_password))
        d |= FLEET_CFG_CHANGED_MQTT;
    if (a->telemetry_interval_s != b->telemetry_interval_s) d |= FLEET_CFG_CHANGED_TELEMETRY;
    if (a->enforce_grants != b->enforce_grants) d |= FLEET_CFG_CHANGED_GRANTS;
    if (!same_filters(a->allow, a->n_allow, b->allow, b->n_allow) ||
        !same_filters(a->deny, a->n_deny, b->deny, b->n_deny))
        d |= FLEET_CFG_CHANGED_FILTERS;
    if (a->log_level != b->log_level) d |= FLEET_CFG_CHANGED_LOG;
    return d;
}

#define ALL_SECTIONS                                                                       \
    (FLEET_CFG_CHANGED_MQTT | FLEET_CFG_CHANGED_TELEMETRY | FLEET_CFG_CHANGED_GRANTS |      \
     FLEET_CFG_CHANGED_FILTERS | FLEET_CFG_CHANGED_LOG)

int fleet_config_store_init(fleet_config_store_t *st, const fleet_kv_ops_t *kv, void *kv_ctx,
                            char *reason, size_t reason_len)
{
    memset(st, 0, sizeof *st);
    st->kv = kv;
    st->kv_ctx = kv_ctx;
    char buf[DOC_MAX];
    size_t len = 0;
    int rc = kv->load(kv_ctx, FLEET_CFG_KEY, buf, sizeof buf, &len);
    if (rc == FLEET_ERR_NOT_FOUND) return FLEET_OK;
    if (rc) {
        fleet_reason(reason, reason_len, "config: stored document unreadable (%s)", fleet_err_name(rc));
        return rc == FLEET_ERR_NO_MEM ? FLEET_ERR_INVALID : rc;
    }
    char why[FLEET_REASON_MAX];
    if (fleet_config_parse(buf, len, &st->cur, why, sizeof why)) {
        fleet_reason(reason, reason_len, "config: stored document invalid: %s", why);
        return FLEET_ERR_INVALID;
    }
    st->have = true;
    return FLEET_OK;
}

int fleet_config_apply(fleet_config_store_t *st, const char *json, size_t len, unsigned *changed,
                       char *reason, size_t reason_len)
{
    fleet_config_t next;
    *changed = 0;
    int rc = fleet_config_parse(json, len, &next, reason, reason_len);
    if (rc) return rc;
    if (st->have) {
        if (next.version < st->cur.version) {
            fleet_reason(reason, reason_len, "version: %" PRId64 " is older than the applied version %" PRId64,
                         next.version, st->cur.version);
            return FLEET_ERR_REFUSED;
        }
        if (next.version == st->cur.version) {
            if (fleet_config_diff(&next, &st->cur) == 0) return FLEET_OK; /* redelivery */
            fleet_reason(reason, reason_len,
                         "version: %" PRId64 " is already applied with different content", next.version);
            return FLEET_ERR_REFUSED;
        }
    }
    /* Persist before switching over, so a reset never runs a config it lost. */
    if (st->kv->save(st->kv_ctx, FLEET_CFG_KEY, json, len) != FLEET_OK) {
        fleet_reason(reason, reason_len, "config: could not be saved");
        return FLEET_ERR_IO;
    }
    *changed = st->have ? fleet_config_diff(&next, &st->cur) : ALL_SECTIONS;
    st->cur = next;
    st->have = true;
    return FLEET_OK;
}

static bool matches(const fleet_filter_t *f, size_t n, uint16_t vid, uint16_t pid, uint8_t cls)
{
    for (size_t i = 0; i < n; i++) {
        if (f[i].by_class ? f[i].cls == cls : (f[i].vid == vid && f[i].pid == pid)) return true;
    }
    return false;
}

bool fleet_config_device_allowed(const fleet_config_t *cfg, uint16_t vid, uint16_t pid, uint8_t cls)
{
    if (matches(cfg->deny, cfg->n_deny, vid, pid, cls)) return false;
    return cfg->n_allow == 0 || matches(cfg->allow, cfg->n_allow, vid, pid, cls);
}
