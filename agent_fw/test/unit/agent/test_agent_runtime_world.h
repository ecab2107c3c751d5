/*
 * test_agent_runtime_world.h - an agent over a real USB/IP core (the core's
 * fake USB host and fake sockets) with a recording MQTT port, a settable
 * clock and an in-memory kv. Shared by the runtime tests and the payload
 * dumper the Python contract tests run.
 */
#ifndef TEST_AGENT_RUNTIME_WORLD_H
#define TEST_AGENT_RUNTIME_WORLD_H

#include <stdbool.h>
#include <stddef.h>

#include "cJSON.h"
#include "../core/fakes.h" /* the core's fakes, not this folder's fakes.h */
#include "fleet_agent/agent.h"

#define RT_MAX_PUBS 1024

typedef struct {
    char topic[128];
    char *payload;
    size_t len;
    int qos;
    bool retain;
} rt_pub_t;

typedef struct {
    world_t w;
    fleet_agent_t *agent;
    uint64_t now_ms;
    /* MQTT port */
    const fleet_mqtt_upcalls_t *up;
    void *up_arg;
    int connects, disconnects;
    char url[128], client_id[64], will_topic[128], will[256];
    int will_qos;
    bool will_retain;
    char subs[8][128];
    int nsub;
    rt_pub_t pubs[RT_MAX_PUBS];
    int npub;
    /* host */
    int reboots;
    char reboot_reason[130];
    int pp_calls;
    char pp_busid[32], pp_action[8];
    bool with_kv;
    bool usbip_down;         /* the host says the USB/IP listener is not up */
    /* kv */
    struct { bool used; char key[16]; char val[4096]; size_t len; } kv[8];
    /* optional ports, set before rt_recreate */
    fleet_ota_t *ota;
    const fleet_worker_ops_t *worker;
    void *worker_ctx;
} rt_t;

/* with_kv: give the agent a config store. */
void rt_init(rt_t *rt, bool enforce, bool with_kv);
void rt_fini(rt_t *rt);
/* Destroy the agent (if any, saying reason) and create it again on the same ports. */
void rt_recreate(rt_t *rt, const char *reason);
/* tick + CONNACK ok */
void rt_online(rt_t *rt);
void rt_advance(rt_t *rt, uint64_t ms); /* move the clock, tick */
/* Deliver fleet/v1/<id>/cmd/<name>. */
void rt_cmd(rt_t *rt, const char *name, const char *json);
/* Last publication on <root><leaf> at index >= from; NULL if none. The
 * returned object is the caller's to cJSON_Delete. */
cJSON *rt_last(rt_t *rt, const char *leaf, int from, rt_pub_t **pub);
/* The cmd-result answering request_id (or NULL). */
cJSON *rt_result(rt_t *rt, const char *request_id);
/* Number of events of type (and busid, if non-NULL) published at index >= from. */
int rt_count_events(rt_t *rt, const char *type, const char *busid, int from);

#endif
