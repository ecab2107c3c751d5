/* test_config.c - config document validation (exact reasons), versioning,
 * persistence, changed-section bits and the device filter. */
#include <stdio.h>
#include <string.h>

#include "fakes.h"
#include "fleet_agent/config.h"
#include "fleet_agent/err.h"
#include "testlib.h"

#define DOC(version, interval, extra)                                                          \
    "{\"v\":1,\"request_id\":\"r-1\",\"issued_at\":1764000000,\"version\":" #version            \
    ",\"mqtt\":{\"url\":\"mqtt://127.0.0.1:1883\",\"username\":\"dongle\",\"password\":\"pw\"}," \
    "\"telemetry_interval_s\":" #interval ",\"enforce_grants\":true,"                          \
    "\"filters\":{\"allow\":[{\"vid\":4617,\"pid\":8},{\"class\":3}],\"deny\":[{\"class\":9}]}," \
    "\"log_level\":\"info\"" extra "}"

static const char *base = DOC(3, 10, "");

/* Parse base with one substring replaced; expect the exact reason. */
static void bad(const char *from, const char *to, const char *want)
{
    char doc[2048], why[FLEET_REASON_MAX] = "";
    const char *p = strstr(base, from);
    TL_CHECK(p != NULL);
    if (!p) return;
    snprintf(doc, sizeof doc, "%.*s%s%s", (int)(p - base), base, to, p + strlen(from));
    fleet_config_t c;
    TL_EQ_INT(fleet_config_parse(doc, strlen(doc), &c, why, sizeof why), FLEET_ERR_INVALID);
    TL_EQ_STR(why, want);
}

static void test_valid_document(void)
{
    fleet_config_t c;
    char why[FLEET_REASON_MAX] = "";
    TL_EQ_INT(fleet_config_parse(base, strlen(base), &c, why, sizeof why), FLEET_OK);
    TL_EQ_STR(why, "");
    TL_EQ_INT(c.version, 3);
    TL_EQ_STR(c.mqtt_url, "mqtt://127.0.0.1:1883");
    TL_EQ_STR(c.mqtt_username, "dongle");
    TL_EQ_STR(c.mqtt_password, "pw");
    TL_EQ_INT(c.telemetry_interval_s, 10);
    TL_CHECK(c.enforce_grants);
    TL_EQ_INT(c.n_allow, 2);
    TL_EQ_INT(c.allow[0].vid, 4617);
    TL_EQ_INT(c.allow[1].by_class, 1);
    TL_EQ_INT(c.allow[1].cls, 3);
    TL_EQ_INT(c.n_deny, 1);
    TL_EQ_INT(c.log_level, FLEET_LOG_INFO);

    /* minimal: no credentials, no filters */
    const char *min = "{\"v\":1,\"version\":1,\"mqtt\":{\"url\":\"mqtts://127.0.0.1\"},"
                      "\"telemetry_interval_s\":3600,\"enforce_grants\":false,\"log_level\":\"debug\"}";
    TL_EQ_INT(fleet_config_parse(min, strlen(min), &c, why, sizeof why), FLEET_OK);
    TL_EQ_INT(c.n_allow + c.n_deny, 0);
    TL_EQ_STR(c.mqtt_username, "");
}

static void test_each_rule(void)
{
    bad("\"v\":1", "\"v\":2", "v: must be an integer from 1 to 1");
    bad("\"version\":3", "\"version\":0", "version: must be an integer from 1 to 9007199254740992");
    bad("\"version\":3", "\"version\":\"3\"", "version: must be an integer from 1 to 9007199254740992");
    bad("\"mqtt\":{", "\"mqtx\":{", "mqtt: is required");
    bad("\"mqtt\":{\"url\":\"mqtt://127.0.0.1:1883\",\"username\":\"dongle\",\"password\":\"pw\"}",
        "\"mqtt\":\"mqtt://127.0.0.1\"", "mqtt: must be an object {\"url\",\"username\",\"password\"}");
    bad("\"url\":\"mqtt://", "\"url\":\"http://", "mqtt.url: must start with mqtt:// or mqtts://");
    bad("\"url\":\"mqtt://127.0.0.1:1883\"", "\"url\":\"\"", "mqtt.url: must be a string of 1 to 127 characters");
    bad("\"url\":", "\"uri\":", "mqtt.url: is required");
    bad("\"username\":\"dongle\"", "\"username\":7", "mqtt.username: must be a string of 0 to 63 characters");
    bad("\"username\":\"dongle\",", "", "mqtt.password: needs mqtt.username");
    bad("\"telemetry_interval_s\":10", "\"telemetry_interval_s\":0",
        "telemetry_interval_s: must be an integer from 1 to 3600");
    bad("\"telemetry_interval_s\":10", "\"telemetry_interval_s\":3601",
        "telemetry_interval_s: must be an integer from 1 to 3600");
    bad("\"telemetry_interval_s\":10", "\"telemetry_interval_s\":2.5",
        "telemetry_interval_s: must be an integer from 1 to 3600");
    bad("\"telemetry_interval_s\":10,", "", "telemetry_interval_s: is required");
    bad("\"enforce_grants\":true", "\"enforce_grants\":1", "enforce_grants: must be true or false");
    bad("\"filters\":{\"allow\":[{\"vid\":4617,\"pid\":8},{\"class\":3}],\"deny\":[{\"class\":9}]}",
        "\"filters\":[1]", "filters: must be an object {\"allow\":[...],\"deny\":[...]}");
    bad("\"allow\":[{\"vid\":4617,\"pid\":8},{\"class\":3}]", "\"allow\":{\"x\":1}", "filters.allow: must be an array of at most 16 filters");
    bad("{\"vid\":4617,\"pid\":8}", "{\"vid\":4617}", "filters.allow[0].pid: is required");
    bad("{\"vid\":4617,\"pid\":8}", "{\"vid\":65536,\"pid\":8}", "filters.allow[0].vid: must be an integer from 0 to 65535");
    bad("{\"class\":3}", "{\"class\":256}", "filters.allow[1].class: must be an integer from 0 to 255");
    bad("{\"class\":3}", "{\"class\":3,\"vid\":1}", "filters.allow[1]: must have either vid and pid, or class");
    bad("{\"class\":3}", "{}", "filters.allow[1]: must have either vid and pid, or class");
    bad("{\"class\":9}", "\"hid\"", "filters.deny[0]: must be an object {\"vid\",\"pid\"} or {\"class\"}");
    bad("\"log_level\":\"info\"", "\"log_level\":\"verbose\"", "log_level: must be one of error, warn, info, debug");
    bad("\"log_level\":\"info\"", "\"log_level\":2", "log_level: must be one of error, warn, info, debug");
    bad(",\"log_level\":\"info\"", "", "log_level: is required");
    bad("{\"v\"", "{{\"v\"", "document: not valid JSON");

    char many[4096] = "{\"v\":1,\"version\":1,\"mqtt\":{\"url\":\"mqtt://127.0.0.1\"},\"telemetry_interval_s\":5,"
                      "\"enforce_grants\":false,\"log_level\":\"info\",\"filters\":{\"deny\":[";
    for (int i = 0; i < 17; i++) strcat(many, i ? ",{\"class\":1}" : "{\"class\":1}");
    strcat(many, "]}}");
    fleet_config_t c;
    char why[FLEET_REASON_MAX];
    TL_EQ_INT(fleet_config_parse(many, strlen(many), &c, why, sizeof why), FLEET_ERR_INVALID);
    TL_EQ_STR(why, "filters.deny: must be an array of at most 16 filters");
    char huge[5000];
    memset(huge, ' ', sizeof huge);
    TL_EQ_INT(fleet_config_parse(huge, sizeof huge, &c, why, sizeof why), FLEET_ERR_INVALID);
    TL_EQ_STR(why, "document: larger than 4096 bytes");
}

static void test_versions_and_persistence(void)
{
    mem_kv_t kv;
    mem_kv_init(&kv);
    fleet_config_store_t st;
    char why[FLEET_REASON_MAX];
    unsigned changed = 0;
    TL_EQ_INT(fleet_config_store_init(&st, &mem_kv_ops, &kv, why, sizeof why), FLEET_OK);
    TL_CHECK(!st.have);

    TL_EQ_INT(fleet_config_apply(&st, base, strlen(base), &changed, why, sizeof why), FLEET_OK);
    TL_EQ_INT(changed, FLEET_CFG_CHANGED_MQTT | FLEET_CFG_CHANGED_TELEMETRY | FLEET_CFG_CHANGED_GRANTS |
                           FLEET_CFG_CHANGED_FILTERS | FLEET_CFG_CHANGED_LOG);
    TL_CHECK(mem_kv_has(&kv, FLEET_CFG_KEY));

    /* redelivery of the same document: success, nothing to do */
    TL_EQ_INT(fleet_config_apply(&st, base, strlen(base), &changed, why, sizeof why), FLEET_OK);
    TL_EQ_INT(changed, 0);

    /* same version, different content */
    const char *same_v = DOC(3, 20, "");
    TL_EQ_INT(fleet_config_apply(&st, same_v, strlen(same_v), &changed, why, sizeof why), FLEET_ERR_REFUSED);
    TL_EQ_STR(why, "version: 3 is already applied with different content");
    TL_EQ_INT(st.cur.telemetry_interval_s, 10);

    /* older */
    const char *older = DOC(2, 20, "");
    TL_EQ_INT(fleet_config_apply(&st, older, strlen(older), &changed, why, sizeof why), FLEET_ERR_REFUSED);
    TL_EQ_STR(why, "version: 2 is older than the applied version 3");

    /* newer, only the interval differs: a live change */
    const char *newer = DOC(4, 20, "");
    TL_EQ_INT(fleet_config_apply(&st, newer, strlen(newer), &changed, why, sizeof why), FLEET_OK);
    TL_EQ_INT(changed, FLEET_CFG_CHANGED_TELEMETRY);
    TL_CHECK(!FLEET_CFG_NEEDS_RECONNECT(changed));

    /* a bad document changes nothing, persisted or live */
    const char *broken = DOC(5, 0, "");
    TL_EQ_INT(fleet_config_apply(&st, broken, strlen(broken), &changed, why, sizeof why), FLEET_ERR_INVALID);
    TL_EQ_INT(st.cur.version, 4);

    /* after a reset the store comes back with version 4 */
    fleet_config_store_t again;
    TL_EQ_INT(fleet_config_store_init(&again, &mem_kv_ops, &kv, why, sizeof why), FLEET_OK);
    TL_CHECK(again.have);
    TL_EQ_INT(again.cur.version, 4);
    TL_EQ_INT(again.cur.telemetry_interval_s, 20);

    /* a corrupt stored record is reported, not trusted */
    mem_kv_ops.save(&kv, FLEET_CFG_KEY, "{\"v\":1", 6);
    TL_EQ_INT(fleet_config_store_init(&again, &mem_kv_ops, &kv, why, sizeof why), FLEET_ERR_INVALID);
    TL_EQ_STR(why, "config: stored document invalid: document: not valid JSON");
    TL_CHECK(!again.have);
}

static void test_diff_bits(void)
{
    fleet_config_t a, b;
    char why[FLEET_REASON_MAX];
    fleet_config_parse(base, strlen(base), &a, why, sizeof why);
    b = a;
    TL_EQ_INT(fleet_config_diff(&a, &b), 0);
    strcpy(b.mqtt_password, "other");
    TL_EQ_INT(fleet_config_diff(&a, &b), FLEET_CFG_CHANGED_MQTT);
    TL_CHECK(FLEET_CFG_NEEDS_RECONNECT(fleet_config_diff(&a, &b)));
    b = a;
    b.enforce_grants = false;
    b.log_level = FLEET_LOG_DEBUG;
    TL_EQ_INT(fleet_config_diff(&a, &b), FLEET_CFG_CHANGED_GRANTS | FLEET_CFG_CHANGED_LOG);
    b = a;
    b.deny[0].cls = 8;
    TL_EQ_INT(fleet_config_diff(&a, &b), FLEET_CFG_CHANGED_FILTERS);
    b = a;
    b.n_allow = 1;
    TL_EQ_INT(fleet_config_diff(&a, &b), FLEET_CFG_CHANGED_FILTERS);
}

static void test_device_filter(void)
{
    fleet_config_t c;
    char why[FLEET_REASON_MAX];
    fleet_config_parse(base, strlen(base), &c, why, sizeof why);
    TL_CHECK(fleet_config_device_allowed(&c, 4617, 8, 0));     /* allowed by vid:pid */
    TL_CHECK(fleet_config_device_allowed(&c, 0x1234, 1, 3));   /* allowed by class (HID) */
    TL_CHECK(!fleet_config_device_allowed(&c, 0x1234, 1, 8));  /* not in the allow list */
    TL_CHECK(!fleet_config_device_allowed(&c, 4617, 8, 9));    /* deny wins over allow */
    c.n_allow = 0;                                             /* empty allow: all but denied */
    TL_CHECK(fleet_config_device_allowed(&c, 0x1234, 1, 8));
    TL_CHECK(!fleet_config_device_allowed(&c, 0x1234, 1, 9));
}

/* Random byte edits of a valid document: accepted, or refused with a reason. */
static void test_mutations_are_refused_cleanly(void)
{
    char buf[2048], why[FLEET_REASON_MAX];
    size_t n = strlen(base);
    uint32_t x = 777;
    fleet_config_t c;
    for (int i = 0; i < 3000; i++) {
        memcpy(buf, base, n);
        for (int k = 0; k < 1 + i % 4; k++) {
            x = x * 1103515245u + 12345u;
            buf[(x >> 8) % n] = (char)(x >> 20);
        }
        why[0] = '\0';
        int rc = fleet_config_parse(buf, n, &c, why, sizeof why);
        TL_CHECK(rc == FLEET_OK || (rc == FLEET_ERR_INVALID && why[0] != '\0'));
    }
}

int main(void)
{
    TL_RUN(test_valid_document);
    TL_RUN(test_each_rule);
    TL_RUN(test_versions_and_persistence);
    TL_RUN(test_diff_bits);
    TL_RUN(test_device_filter);
    TL_RUN(test_mutations_are_refused_cleanly);
    return TL_RESULT();
}
