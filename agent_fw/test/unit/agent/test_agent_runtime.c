/*
 * test_agent_runtime.c - the agent over a real USB/IP core: coming online,
 * grant/revoke enforced by the core, hot-plug and attach events, telemetry
 * timing, config applied live, reboot and port-power handed to the owner,
 * bad commands answered with a reason.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_agent_runtime_world.h"
#include "testlib.h"
#include "usbip/usbip_proto.h"

#define RID1 "11111111-2222-4333-8444-555555555501"
#define RID2 "11111111-2222-4333-8444-555555555502"
#define RID3 "11111111-2222-4333-8444-555555555503"
#define RID4 "11111111-2222-4333-8444-555555555504"

static const char *str(const cJSON *o, const char *path)
{
    /* "a.b" lookups */
    char buf[64];
    snprintf(buf, sizeof(buf), "%s", path);
    const cJSON *cur = o;
    for (char *tok = strtok(buf, "."); tok && cur; tok = strtok(NULL, "."))
        cur = cJSON_GetObjectItem(cur, tok);
    return cJSON_IsString(cur) ? cur->valuestring : NULL;
}

static double num(const cJSON *o, const char *name)
{
    const cJSON *n = cJSON_GetObjectItem(o, name);
    return cJSON_IsNumber(n) ? n->valuedouble : -1;
}

static bool ok_of(const cJSON *o)
{
    return cJSON_IsTrue(cJSON_GetObjectItem(o, "ok"));
}

static void test_identity_and_online(void)
{
    rt_t *rt = calloc(1, sizeof(*rt));
    rt_init(rt, false, false);
    TL_EQ_STR(fleet_agent_id(rt->agent), "esp-a1b2c3d4e5f6");
    TL_EQ_INT(rt->npub, 0);
    fleet_agent_tick(rt->agent);
    TL_EQ_INT(rt->connects, 1);
    TL_EQ_STR(rt->client_id, "esp-a1b2c3d4e5f6");
    TL_EQ_STR(rt->will_topic, "fleet/v1/esp-a1b2c3d4e5f6/status");
    TL_CHECK(rt->will_retain);
    TL_EQ_INT(rt->will_qos, 1);
    cJSON *will = cJSON_Parse(rt->will);
    TL_EQ_STR(str(will, "status"), "offline");
    TL_EQ_STR(str(will, "reason"), "lwt");
    cJSON_Delete(will);

    rt->up->on_connect(rt->up_arg, true, NULL);
    TL_EQ_STR(rt->subs[0], "fleet/v1/esp-a1b2c3d4e5f6/cmd/+");
    rt_pub_t *p = NULL;
    cJSON *st = rt_last(rt, "status", 0, &p);
    TL_EQ_STR(str(st, "status"), "online");
    TL_CHECK(p && p->retain && p->qos == 1);
    cJSON_Delete(st);
    cJSON *state = rt_last(rt, "state", 0, &p);
    TL_CHECK(state != NULL);
    TL_CHECK(p && p->retain);
    TL_EQ_STR(str(state, "chip.model"), "posix-sim");
    TL_EQ_STR(str(state, "net.mac"), "a1:b2:c3:d4:e5:f6");
    TL_EQ_STR(str(state, "boot.slot"), "sim");
    const cJSON *devs = cJSON_GetObjectItem(state, "devices");
    TL_EQ_INT(cJSON_GetArraySize(devs), 1);
    TL_EQ_STR(str(cJSON_GetArrayItem(devs, 0), "busid"), "1-1");
    TL_EQ_INT(num(cJSON_GetArrayItem(devs, 0), "vid"), 0x1209);
    TL_EQ_STR(str(cJSON_GetArrayItem(devs, 0), "serial"), "FAKE0001");
    cJSON_Delete(state);
    TL_EQ_INT(rt_count_events(rt, "rebooted", NULL, 0), 1);

    /* a lost connection is retried with backoff, and the boot event is not repeated */
    rt->up->on_disconnect(rt->up_arg, "test");
    TL_CHECK(!fleet_agent_connected(rt->agent));
    rt_advance(rt, 100);
    TL_EQ_INT(rt->connects, 1); /* not at once: backoff */
    rt_advance(rt, 3000);
    TL_EQ_INT(rt->connects, 2);
    rt->up->on_connect(rt->up_arg, true, NULL);
    TL_EQ_INT(rt_count_events(rt, "rebooted", NULL, 0), 1);
    rt_fini(rt);
    /* shutdown says offline with its reason */
    free(rt);
}

static void test_grant_revoke_enforced_by_core(void)
{
    rt_t *rt = calloc(1, sizeof(*rt));
    rt_init(rt, true, false);
    rt_online(rt);
    int s1 = world_connect(&rt->w, "127.0.0.9");
    int before = rt->npub;
    TL_EQ_INT(cli_import(&rt->w, s1, "1-1"), USBIP_ST_NA); /* refused before the grant */
    /* reported at once, from the core's observer, with the client's port */
    TL_EQ_INT(rt_count_events(rt, "import_refused", "1-1", before), 1);
    cJSON *refused = rt_last(rt, "events", before, NULL);
    char want[64];
    snprintf(want, sizeof(want), "127.0.0.9:%d", 40000 + s1);
    TL_EQ_STR(str(refused, "client"), want);
    TL_EQ_STR(str(cJSON_GetObjectItem(refused, "detail"), "reason"), "not granted to this address");
    cJSON_Delete(refused);

    int from = rt->npub;
    rt_cmd(rt, "grant",
           "{\"v\":1,\"request_id\":\"" RID1 "\",\"issued_at\":1,\"busid\":\"1-1\","
           "\"clients\":[\"127.0.0.9\"],\"lease_id\":42,\"expires_at\":0}");
    cJSON *r = rt_result(rt, RID1);
    TL_CHECK(r && ok_of(r));
    TL_EQ_STR(str(r, "command"), "grant");
    cJSON_Delete(r);
    TL_EQ_INT(rt_count_events(rt, "grant_applied", "1-1", from), 1);

    int s2 = world_connect(&rt->w, "127.0.0.9");
    TL_EQ_INT(cli_import(&rt->w, s2, "1-1"), USBIP_ST_OK); /* accepted after */
    from = rt->npub;
    rt_advance(rt, 300);
    TL_EQ_INT(rt_count_events(rt, "attached", "1-1", from), 1);
    cJSON *state = rt_last(rt, "state", from, NULL);
    const cJSON *d0 = cJSON_GetArrayItem(cJSON_GetObjectItem(state, "devices"), 0);
    snprintf(want, sizeof(want), "127.0.0.9:%d", 40000 + s2);
    TL_EQ_STR(str(d0, "attached_to"), want);
    TL_EQ_STR(cJSON_GetArrayItem(cJSON_GetObjectItem(d0, "granted_to"), 0)->valuestring, "127.0.0.9");
    cJSON_Delete(state);

    /* a revoke naming an older lease leaves the current one alone */
    rt_cmd(rt, "revoke",
           "{\"v\":1,\"request_id\":\"" RID2 "\",\"issued_at\":1,\"busid\":\"1-1\",\"lease_id\":41,"
           "\"reason\":\"expired\"}");
    r = rt_result(rt, RID2);
    TL_CHECK(r && ok_of(r));
    TL_CHECK(cJSON_IsFalse(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "detail"), "revoked")));
    cJSON_Delete(r);
    TL_CHECK(rt->w.net.s[s2].open);

    /* the real revoke closes the session at once (well within 1 s) */
    from = rt->npub;
    rt_cmd(rt, "revoke",
           "{\"v\":1,\"request_id\":\"" RID3 "\",\"issued_at\":1,\"busid\":\"1-1\",\"lease_id\":42,"
           "\"reason\":\"released\"}");
    r = rt_result(rt, RID3);
    TL_CHECK(r && ok_of(r));
    cJSON_Delete(r);
    TL_CHECK(!rt->w.net.s[s2].open);
    TL_EQ_INT(rt_count_events(rt, "grant_revoked", "1-1", from), 1);
    rt_advance(rt, 300);
    TL_EQ_INT(rt_count_events(rt, "detached", "1-1", from), 1);
    int s3 = world_connect(&rt->w, "127.0.0.9");
    TL_EQ_INT(cli_import(&rt->w, s3, "1-1"), USBIP_ST_NA); /* cut after */

    /* more addresses than the core holds: refused with the limit */
    rt_cmd(rt, "grant",
           "{\"v\":1,\"request_id\":\"" RID4 "\",\"issued_at\":1,\"busid\":\"1-1\",\"clients\":[\"127.0.0.1\","
           "\"127.0.0.2\",\"127.0.0.3\",\"127.0.0.4\",\"127.0.0.5\"],\"lease_id\":43,\"expires_at\":0}");
    r = rt_result(rt, RID4);
    TL_CHECK(r && !ok_of(r));
    TL_CHECK(str(r, "error") && strstr(str(r, "error"), "at most 4"));
    cJSON_Delete(r);
    rt_fini(rt);
    free(rt);
}

static void test_hotplug_events(void)
{
    rt_t *rt = calloc(1, sizeof(*rt));
    rt_init(rt, false, false);
    rt_online(rt);
    int from = rt->npub;
    int dev = fake_usb_add_test_device(&rt->w.usb, "1-2.3", 0x1234, 0x5678);
    rt_advance(rt, 300);
    TL_EQ_INT(rt_count_events(rt, "device_added", "1-2.3", from), 1);
    cJSON *state = rt_last(rt, "state", from, NULL);
    TL_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(state, "devices")), 2);
    cJSON_Delete(state);
    from = rt->npub;
    fake_usb_unplug(&rt->w.usb, dev);
    rt_advance(rt, 300);
    TL_EQ_INT(rt_count_events(rt, "device_removed", "1-2.3", from), 1);
    state = rt_last(rt, "state", from, NULL);
    TL_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(state, "devices")), 1);
    cJSON_Delete(state);
    /* nothing changed: no state republish */
    from = rt->npub;
    rt_advance(rt, 1000);
    cJSON *none = rt_last(rt, "state", from, NULL);
    TL_CHECK(none == NULL);
    rt_fini(rt);
    free(rt);
}

static void test_telemetry_and_config(void)
{
    rt_t *rt = calloc(1, sizeof(*rt));
    rt_init(rt, false, true);
    rt_online(rt);
    int from = rt->npub;
    rt_advance(rt, 9000);
    TL_CHECK(rt_last(rt, "telemetry", from, NULL) == NULL);
    rt_advance(rt, 1100);
    cJSON *t = rt_last(rt, "telemetry", from, NULL);
    TL_CHECK(t != NULL);
    TL_EQ_INT(num(t, "interval_s"), 10);
    TL_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(t, "devices")), 1);
    cJSON_Delete(t);

    /* telemetry interval and enforcement change live */
    rt_cmd(rt, "config",
           "{\"v\":1,\"request_id\":\"" RID1 "\",\"issued_at\":1,\"version\":3,"
           "\"mqtt\":{\"url\":\"mqtt://127.0.0.1:1883\"},\"telemetry_interval_s\":2,"
           "\"enforce_grants\":true,\"log_level\":\"info\"}");
    cJSON *r = rt_result(rt, RID1);
    TL_CHECK(r && ok_of(r));
    TL_EQ_INT(num(cJSON_GetObjectItem(r, "detail"), "version"), 3);
    cJSON_Delete(r);
    TL_EQ_INT(fleet_agent_telemetry_interval(rt->agent), 2);
    TL_CHECK(usbip_get_enforce(rt->w.srv));
    from = rt->npub;
    rt_advance(rt, 2100);
    t = rt_last(rt, "telemetry", from, NULL);
    TL_CHECK(t != NULL);
    TL_EQ_INT(num(t, "interval_s"), 2);
    cJSON_Delete(t);
    cJSON *state = rt_last(rt, "state", 0, NULL);
    TL_CHECK(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(state, "usbip"), "enforce_grants")));
    cJSON_Delete(state);

    /* an older version is refused with the config parser's reason */
    rt_cmd(rt, "config",
           "{\"v\":1,\"request_id\":\"" RID2 "\",\"issued_at\":1,\"version\":2,"
           "\"mqtt\":{\"url\":\"mqtt://127.0.0.1:1883\"},\"telemetry_interval_s\":5,"
           "\"enforce_grants\":false,\"log_level\":\"info\"}");
    r = rt_result(rt, RID2);
    TL_CHECK(r && !ok_of(r));
    TL_CHECK(str(r, "error") && strstr(str(r, "error"), "version"));
    cJSON_Delete(r);
    TL_EQ_INT(fleet_agent_telemetry_interval(rt->agent), 2);
    /* a bad one names the field */
    rt_cmd(rt, "config",
           "{\"v\":1,\"request_id\":\"" RID3 "\",\"issued_at\":1,\"version\":9,"
           "\"mqtt\":{\"url\":\"mqtt://127.0.0.1:1883\"},\"telemetry_interval_s\":0,"
           "\"enforce_grants\":false,\"log_level\":\"info\"}");
    r = rt_result(rt, RID3);
    TL_CHECK(r && !ok_of(r));
    TL_CHECK(str(r, "error") && strncmp(str(r, "error"), "telemetry_interval_s", 20) == 0);
    cJSON_Delete(r);

    /* a broker the dongle could never reach is refused, not applied */
    rt_cmd(rt, "config",
           "{\"v\":1,\"request_id\":\"" RID4 "\",\"issued_at\":1,\"version\":10,"
           "\"mqtt\":{\"url\":\"mqtts://127.0.0.1:8883\"},\"telemetry_interval_s\":5,"
           "\"enforce_grants\":true,\"log_level\":\"info\"}");
    r = rt_result(rt, RID4);
    TL_CHECK(r && !ok_of(r));
    TL_CHECK(str(r, "error") && strncmp(str(r, "error"), "mqtt.url", 8) == 0);
    cJSON_Delete(r);
    TL_EQ_INT(fleet_agent_telemetry_interval(rt->agent), 2);

    /* the applied document survives a restart of the agent (kv) */
    usbip_set_enforce(rt->w.srv, false);
    rt_recreate(rt, "reboot");
    cJSON *off = rt_last(rt, "status", 0, NULL);
    TL_EQ_STR(str(off, "status"), "offline");
    TL_EQ_STR(str(off, "reason"), "reboot");
    cJSON_Delete(off);
    TL_EQ_INT(fleet_agent_telemetry_interval(rt->agent), 2);
    TL_CHECK(usbip_get_enforce(rt->w.srv));
    rt_fini(rt);
    free(rt);
}

static void test_reboot_port_power_and_bad_commands(void)
{
    rt_t *rt = calloc(1, sizeof(*rt));
    rt_init(rt, false, false);
    rt_online(rt);
    rt_cmd(rt, "port-power", "{\"v\":1,\"request_id\":\"" RID1 "\",\"issued_at\":1,\"busid\":\"1-1\"}");
    cJSON *r = rt_result(rt, RID1);
    TL_CHECK(r && ok_of(r));
    cJSON_Delete(r);
    TL_EQ_INT(rt->pp_calls, 1);
    TL_EQ_STR(rt->pp_action, "off"); /* a cycle is off, then on after a pause */
    rt_advance(rt, 200);
    TL_EQ_INT(rt->pp_calls, 1);
    rt_advance(rt, 400);
    TL_EQ_INT(rt->pp_calls, 2);
    TL_EQ_STR(rt->pp_action, "on");
    rt_cmd(rt, "port-power",
           "{\"v\":1,\"request_id\":\"" RID2 "\",\"issued_at\":1,\"busid\":\"9-9\",\"action\":\"off\"}");
    r = rt_result(rt, RID2);
    TL_CHECK(r && !ok_of(r));
    TL_EQ_STR(str(r, "error"), "busid: no device on port 9-9");
    cJSON_Delete(r);

    /* a bad payload with a usable request_id is answered with the reason */
    rt_cmd(rt, "grant", "{\"v\":1,\"request_id\":\"" RID3 "\",\"issued_at\":1,\"busid\":\"1-0\"}");
    r = rt_result(rt, RID3);
    TL_CHECK(r && !ok_of(r));
    TL_CHECK(str(r, "error") && strncmp(str(r, "error"), "busid:", 6) == 0);
    cJSON_Delete(r);
    /* garbage without one cannot be answered, and breaks nothing */
    int before = rt->npub;
    rt_cmd(rt, "grant", "\xff\xfe not json");
    rt_cmd(rt, "no-such-command", "{}");
    TL_EQ_INT(rt->npub, before);
    /* a message on a foreign topic is ignored */
    rt->up->on_message(rt->up_arg, "fleet/v1/esp-000000000000/cmd/reboot", "{}", 2);
    TL_EQ_INT(rt->reboots, 0);

    rt_cmd(rt, "reboot", "{\"v\":1,\"request_id\":\"" RID4 "\",\"issued_at\":1,\"reason\":\"maintenance\"}");
    r = rt_result(rt, RID4);
    TL_CHECK(r && ok_of(r));
    cJSON_Delete(r);
    TL_EQ_INT(rt->reboots, 0); /* deferred: the answer goes out first */
    fleet_agent_tick(rt->agent);
    TL_EQ_INT(rt->reboots, 1);
    TL_EQ_STR(rt->reboot_reason, "maintenance");

    /* config without storage and ota without slots say so */
    rt_cmd(rt, "ota", "{\"v\":1,\"request_id\":\"" RID1 "\",\"issued_at\":1}");
    r = rt_result(rt, RID1);
    TL_CHECK(r && !ok_of(r) && strstr(str(r, "error"), "ota"));
    cJSON_Delete(r);
    rt_fini(rt);
    free(rt);
}

static void test_selftest_checks_the_usbip_listener(void)
{
    rt_t *rt = calloc(1, sizeof(*rt));
    rt_init(rt, false, false);
    rt->usbip_down = true;
    char checks[256], why[FLEET_REASON_MAX] = "";
    /* offline, the verdict could not be reported: wait */
    TL_EQ_INT(fleet_agent_selftest(&rt->agent, "", checks, sizeof checks, why, sizeof why), FLEET_SELFTEST_PENDING);
    rt_online(rt);
    TL_EQ_INT(fleet_agent_selftest(&rt->agent, "", checks, sizeof checks, why, sizeof why), FLEET_SELFTEST_FAIL);
    TL_EQ_STR(why, "usbip_listener: USB/IP listener not up");
    cJSON *c = cJSON_Parse(checks);
    TL_CHECK(cJSON_IsFalse(cJSON_GetObjectItem(c, "usbip_listener")));
    TL_CHECK(cJSON_IsTrue(cJSON_GetObjectItem(c, "mqtt")));
    cJSON_Delete(c);
    /* listening, the same call waits for the devices instead */
    rt->usbip_down = false;
    why[0] = 0;
    TL_EQ_INT(fleet_agent_selftest(&rt->agent, "", checks, sizeof checks, why, sizeof why), FLEET_SELFTEST_PENDING);
    TL_CHECK(strstr(checks, "\"usbip_listener\":true") != NULL);
    TL_EQ_STR(why, "");
    rt_fini(rt);
    free(rt);
}

int main(void)
{
    TL_RUN(test_identity_and_online);
    TL_RUN(test_grant_revoke_enforced_by_core);
    TL_RUN(test_hotplug_events);
    TL_RUN(test_telemetry_and_config);
    TL_RUN(test_reboot_port_power_and_bad_commands);
    TL_RUN(test_selftest_checks_the_usbip_listener);
    return TL_RESULT();
}
