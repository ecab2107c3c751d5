/*
 * test_agent_runtime_dump.c - agent_payload_dump: drives an agent over a real
 * core through every kind of message it publishes and prints each one as a
 * JSON line {"topic","qos","retain","payload"}; the Last Will comes first.
 * tests/agent/test_contracts_c.py validates every payload against the
 * service's JSON Schemas.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_agent_runtime_world.h"

static void print_pub(const char *topic, const char *payload, int qos, bool retain)
{
    cJSON *line = cJSON_CreateObject();
    cJSON_AddStringToObject(line, "topic", topic);
    cJSON_AddNumberToObject(line, "qos", qos);
    cJSON_AddBoolToObject(line, "retain", retain);
    cJSON *p = cJSON_Parse(payload);
    cJSON_AddItemToObject(line, "payload", p ? p : cJSON_CreateString(payload)); /* unparsable shows as text */
    char *s = cJSON_PrintUnformatted(line);
    printf("%s\n", s);
    free(s);
    cJSON_Delete(line);
}

int main(void)
{
    rt_t *rt = calloc(1, sizeof(*rt));
    rt_init(rt, true, true);
    fleet_agent_tick(rt->agent);
    print_pub(rt->will_topic, rt->will, rt->will_qos, rt->will_retain);
    rt->up->on_connect(rt->up_arg, true, NULL);

    rt_cmd(rt, "grant",
           "{\"v\":1,\"request_id\":\"0b7e6d2a-1111-4c3e-9a55-000000000001\",\"issued_at\":1,\"busid\":\"1-1\","
           "\"clients\":[\"127.0.0.9\",\"::1\"],\"lease_id\":\"lease-7\",\"expires_at\":0}");
    int s = world_connect(&rt->w, "127.0.0.9");
    cli_import(&rt->w, s, "1-1");
    int dev = fake_usb_add_test_device(&rt->w.usb, "1-2.3", 0x1234, 0x5678);
    rt_advance(rt, 300);
    fleet_agent_import_refused(rt->agent, "1-2.3", "::1", 51234, "not granted");
    fake_usb_unplug(&rt->w.usb, dev);
    rt_advance(rt, 300);
    rt_cmd(rt, "revoke",
           "{\"v\":1,\"request_id\":\"0b7e6d2a-1111-4c3e-9a55-000000000002\",\"issued_at\":1,\"busid\":\"1-1\","
           "\"lease_id\":\"lease-7\",\"reason\":\"released\"}");
    rt_advance(rt, 300);
    rt_cmd(rt, "port-power",
           "{\"v\":1,\"request_id\":\"0b7e6d2a-1111-4c3e-9a55-000000000003\",\"issued_at\":1,\"busid\":\"9-9\"}");
    rt_cmd(rt, "config",
           "{\"v\":1,\"request_id\":\"0b7e6d2a-1111-4c3e-9a55-000000000004\",\"issued_at\":1,\"version\":1,"
           "\"mqtt\":{\"url\":\"mqtt://127.0.0.1:1883\"},\"telemetry_interval_s\":5,"
           "\"enforce_grants\":true,\"log_level\":\"info\"}");
    rt_cmd(rt, "grant", "{\"v\":1,\"request_id\":\"0b7e6d2a-1111-4c3e-9a55-000000000005\",\"issued_at\":-1}");
    fleet_ota_event_t ev = {.kind = FLEET_OTA_EV_PROGRESS, .state = FLEET_OTA_DOWNLOADING,
                            .request_id = "0b7e6d2a-1111-4c3e-9a55-000000000006", .version = "0.4.0",
                            .bytes = 1024, .total = 4096};
    fleet_agent_on_ota_event(rt->agent, &ev);
    fleet_ota_event_t st = {.kind = FLEET_OTA_EV_SELFTEST, .state = FLEET_OTA_SELF_TEST, .ok = true,
                            .checks = "{\"network\":true,\"mqtt\":true,\"usbip_listener\":true,\"devices\":true}"};
    fleet_agent_on_ota_event(rt->agent, &st);
    rt_advance(rt, 5100); /* telemetry */
    fleet_agent_destroy(rt->agent, "shutdown");
    rt->agent = NULL;
    for (int i = 0; i < rt->npub; i++)
        print_pub(rt->pubs[i].topic, rt->pubs[i].payload, rt->pubs[i].qos, rt->pubs[i].retain);
    rt_fini(rt);
    free(rt);
    return 0;
}
