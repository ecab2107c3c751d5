/*
 * fakes.h - in-memory ports for the OTA state-machine tests.
 *
 * They keep the real ports' rules so the machine cannot cheat: the store
 * refuses to write the running slot, has one writer at a time, a capacity,
 * and loses every byte not sync()ed when mem_store_crash() simulates a
 * reset; the scripted HTTP server answers Range like a real one unless the
 * script tells it to misbehave.
 */
#ifndef AGENT_FAKES_H
#define AGENT_FAKES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleet_agent/boot.h"
#include "fleet_agent/ota.h"

#define MEM_SLOT_CAP (256 * 1024)

typedef struct {
    fleet_otadata_t od;
    int running;
    uint8_t slot[FLEET_SLOT_COUNT][MEM_SLOT_CAP];
    uint64_t len[FLEET_SLOT_COUNT], durable[FLEET_SLOT_COUNT];
    int wslot; /* -1 = none open */
    int otadata_writes;
    bool fail_otadata_write;
} mem_store_t;
extern const fleet_ota_store_ops_t mem_store_ops;
/* Factory state: slot 0 UNDEFINED with version, slot 1 EMPTY, running 0. */
void mem_store_init(mem_store_t *s, const char *factory_version);
/* A reset: unsynced bytes vanish, the writer is closed, the bootloader runs. */
int mem_store_reboot(mem_store_t *s, fleet_boot_t *boot);

#define MEM_KV_KEYS 8
typedef struct {
    char key[MEM_KV_KEYS][16];
    char val[MEM_KV_KEYS][8192];
    size_t len[MEM_KV_KEYS];
    bool used[MEM_KV_KEYS];
} mem_kv_t;
extern const fleet_kv_ops_t mem_kv_ops;
void mem_kv_init(mem_kv_t *kv);
bool mem_kv_has(const mem_kv_t *kv, const char *key);

typedef enum {
    HTTP_NORMAL,       /* honours Range */
    HTTP_IGNORE_RANGE, /* 200 + whole file whatever was asked */
    HTTP_CUT,          /* honours Range, stops after arg bytes (connection lost) */
    HTTP_STATUS,       /* answers status arg with no body */
    HTTP_REFUSED,      /* connection refused: no response at all */
} http_step_kind_t;

typedef struct {
    http_step_kind_t kind;
    uint64_t arg;
} http_step_t;

typedef struct {
    const uint8_t *file;
    size_t file_len;
    http_step_t script[8]; /* one per request; past the end: HTTP_NORMAL */
    int n_script;
    int requests;
    uint64_t range[16]; /* range_start of each request */
    size_t chunk;       /* body delivered in chunks of this size (default 1000) */
} script_http_t;
extern const fleet_http_ops_t script_http_ops;

typedef struct {
    uint64_t now;
} fake_clock_t;
extern const fleet_clock_ops_t fake_clock_ops;

/* Records every OTA event. */
typedef struct {
    fleet_ota_event_kind_t kind[64];
    fleet_ota_state_t state[64];
    char reason[64][FLEET_REASON_MAX];
    char request_id[64][FLEET_REQUEST_ID_MAX];
    char version[64][FLEET_VERSION_MAX];
    int n;
} ev_log_t;
void ev_record(void *arg, const fleet_ota_event_t *ev);
int ev_count(const ev_log_t *l, fleet_ota_event_kind_t kind);
/* Index of the last event of kind, or -1. */
int ev_last(const ev_log_t *l, fleet_ota_event_kind_t kind);

#endif
