/*
 * agent_posix.h - the Linux implementations of the agent's ports.
 *
 *   files store   OTA slots + otadata as files: <dir>/slot0.bin, slot1.bin,
 *                 otadata.json; fleet_files_store_boot() plays ESP-IDF's
 *                 bootloader on each simulated reset
 *   files kv      one file per key in a directory (<dir>/<key>.kv)
 *   curl http     GET with Range via libcurl (http and https)
 *   clock, log    CLOCK_MONOTONIC; stderr with a level threshold
 *
 * Every record is written to a temporary file, fsync'ed, renamed over the
 * old one and the directory fsync'ed, so a kill -9 at any instant leaves
 * the old or the new content. Handles are independent: one process may host
 * many simulated dongles, each with its own directory.
 */
#ifndef FLEET_AGENT_POSIX_H
#define FLEET_AGENT_POSIX_H

#include <stdint.h>

#include "fleet_agent/boot.h"
#include "fleet_agent/port/clock.h"
#include "fleet_agent/port/http.h"
#include "fleet_agent/port/kv.h"
#include "fleet_agent/port/log.h"
#include "fleet_agent/port/ota_store.h"
#include "fleet_agent/port/worker.h"

/* Crash-test hook: called at named points inside writes ("otadata:tmp-partial",
 * "otadata:tmp-written", "otadata:renamed", "kv:tmp-partial", ...); returning
 * non-zero makes the write stop right there and fail, as if the process died. */
typedef int (*fleet_fault_fn)(void *arg, const char *point);

/* --- OTA store --- */
typedef struct fleet_files_store fleet_files_store_t;
extern const fleet_ota_store_ops_t fleet_files_store_ops; /* ctx = fleet_files_store_t * */

/* Open (creating dir and a factory otadata if absent: slot 0 UNDEFINED running
 * factory_version, slot 1 EMPTY). The running slot is otadata's boot slot
 * until fleet_files_store_boot() is called. FLEET_OK, FLEET_ERR_INVALID or
 * FLEET_ERR_IO (unreadable otadata is an error, not a silent reset). */
int fleet_files_store_open(fleet_files_store_t **out, const char *dir, uint64_t slot_capacity,
                           const char *factory_version);
void fleet_files_store_close(fleet_files_store_t *st);
/* A (simulated) reset: choose the slot as the bootloader would, persist the
 * state change, and make it the running slot. */
int fleet_files_store_boot(fleet_files_store_t *st, fleet_boot_t *out);
void fleet_files_store_set_fault(fleet_files_store_t *st, fleet_fault_fn fn, void *arg);
/* The fault directive of the posix-sim image in slot (docs/ota.md): a
 * payload starting with the line "fleet-sim-fault: <name>\n" makes the
 * simulated firmware booted from it misbehave. 1 and the name in out; 0 when
 * the slot has no image file or its payload no directive; -1 when the
 * directive line is malformed (no newline, empty, longer than cap - 1 or
 * characters other than a-z 0-9 -). */
#define FLEET_SIM_FAULT_PREFIX "fleet-sim-fault: "
#define FLEET_SIM_FAULT_MAX 64
int fleet_files_store_sim_fault(const fleet_files_store_t *st, int slot, char *out, size_t cap);

/* --- kv --- */
typedef struct fleet_files_kv fleet_files_kv_t;
extern const fleet_kv_ops_t fleet_files_kv_ops; /* ctx = fleet_files_kv_t * */
int fleet_files_kv_open(fleet_files_kv_t **out, const char *dir);
void fleet_files_kv_close(fleet_files_kv_t *kv);
void fleet_files_kv_set_fault(fleet_files_kv_t *kv, fleet_fault_fn fn, void *arg);

/* The process's big lock (see fleet_thread_worker below) as hooks; a NULL
 * lock means single-threaded: nothing to do. */
typedef struct {
    void (*lock)(void *arg);
    void (*unlock)(void *arg);
    void *arg;
} fleet_lock_hooks_t;

/* --- HTTP --- */
typedef struct {
    long connect_timeout_s; /* 0 = 10 */
    long stall_timeout_s;   /* abort if no byte arrives for this long; 0 = 30 */
    const char *ca_file;    /* PEM bundle to trust for https (NULL = system store) */
    int64_t max_recv_bytes_per_s; /* download speed cap (a simulated link); 0 = none */
    /* Held by the caller of get(): released while libcurl waits for the
     * network and while the pacing sleeps, retaken around each call into
     * the sink (which runs agent code). */
    fleet_lock_hooks_t lock;
} fleet_curl_http_t;        /* ctx of fleet_curl_http_ops; no other state */
extern const fleet_http_ops_t fleet_curl_http_ops;

/* --- worker: the OTA task of a simulated dongle --- */
/* Each job runs on a thread of its own holding the big lock, which the
 * owner's loop holds too except while it waits for events: agent, OTA
 * machine, store, MQTT client and USB/IP core are then only ever touched by
 * one thread at a time. join() releases the lock while it waits, so the job
 * can finish its callbacks. */
typedef struct fleet_thread_worker fleet_thread_worker_t;
extern const fleet_worker_ops_t fleet_thread_worker_ops; /* ctx = fleet_thread_worker_t * */
int fleet_thread_worker_create(fleet_thread_worker_t **out, const fleet_lock_hooks_t *big_lock);
/* Joins a job still unjoined (the caller holds the big lock), then frees. */
void fleet_thread_worker_destroy(fleet_thread_worker_t *w);

/* --- clock, log --- */
extern const fleet_clock_ops_t fleet_posix_clock_ops; /* ctx unused (NULL) */
typedef struct {
    fleet_log_level_t level; /* lines above this level are dropped */
    const char *prefix;      /* e.g. the dongle id; may be NULL */
} fleet_stderr_log_t;
extern const fleet_log_ops_t fleet_stderr_log_ops; /* ctx = fleet_stderr_log_t * */

#endif /* FLEET_AGENT_POSIX_H */
