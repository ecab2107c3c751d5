/*
 * ota.h - the dongle's OTA state machine.
 *
 *   IDLE -> VERIFYING_MANIFEST -> DOWNLOADING -> VERIFYING_IMAGE -> PENDING_REBOOT
 *        (refusals and failures go back to IDLE; the old slot keeps booting)
 *   [reset; the bootloader turns NEW into PENDING_VERIFY]
 *   SELF_TEST -> IDLE (slot VALID, update confirmed)
 *             -> ROLLBACK_PENDING (slot INVALID, boot slot = old; owner resets)
 *
 * A reset while SELF_TEST leaves the slot PENDING_VERIFY; the bootloader then
 * marks it ABORTED and starts the old slot, and fleet_ota_init reports the
 * rollback. fleet_ota_transition_allowed() is the single table of legal
 * moves; the machine refuses (and logs) anything else.
 *
 * Every step is reported through on_event, which the agent maps onto MQTT
 * events (ota_progress, selftest) and cmd-result. The machine holds no
 * global state; each dongle owns one fleet_ota_t.
 *
 * Threading: calls for one fleet_ota_t from one task at a time (the agent's
 * worker port serialises its download job with the owner), except
 * fleet_ota_cancel() and fleet_ota_halt(), which may be called from anywhere.
 */
#ifndef FLEET_AGENT_OTA_H
#define FLEET_AGENT_OTA_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleet_agent/err.h"
#include "fleet_agent/manifest.h"
#include "fleet_agent/port/clock.h"
#include "fleet_agent/port/http.h"
#include "fleet_agent/port/kv.h"
#include "fleet_agent/port/log.h"
#include "fleet_agent/port/ota_store.h"

typedef enum {
    FLEET_OTA_IDLE = 0,
    FLEET_OTA_VERIFYING_MANIFEST,
    FLEET_OTA_DOWNLOADING,
    FLEET_OTA_VERIFYING_IMAGE,
    FLEET_OTA_PENDING_REBOOT,
    FLEET_OTA_SELF_TEST,
    FLEET_OTA_ROLLBACK_PENDING,
    FLEET_OTA_STATE_COUNT
} fleet_ota_state_t;

typedef enum {
    FLEET_OTA_EV_STEP,       /* entered ev->state */
    FLEET_OTA_EV_PROGRESS,   /* bytes of total downloaded */
    FLEET_OTA_EV_RESUMED,    /* download continues at bytes (Range) */
    FLEET_OTA_EV_RESTARTED,  /* server ignored Range or journal unusable: from 0 */
    FLEET_OTA_EV_REFUSED,    /* manifest or image refused; reason */
    FLEET_OTA_EV_FAILED,     /* download/storage failure; reason; a retry resumes */
    FLEET_OTA_EV_STAGED,     /* new slot set to boot; reboot to try it */
    FLEET_OTA_EV_SELFTEST,   /* self-test result: ok, checks, reason */
    FLEET_OTA_EV_CONFIRMED,  /* new firmware marked valid */
    FLEET_OTA_EV_ROLLED_BACK,/* old firmware runs again; reason */
} fleet_ota_event_kind_t;

typedef struct {
    fleet_ota_event_kind_t kind;
    fleet_ota_state_t state;
    const char *request_id; /* of the ota command this belongs to ("" if unknown) */
    const char *version;    /* target version */
    uint64_t bytes, total;
    bool ok;                /* SELFTEST */
    const char *checks;     /* SELFTEST: the checks string the self-test filled */
    const char *reason;     /* REFUSED / FAILED / ROLLED_BACK / failing SELFTEST */
} fleet_ota_event_t;

/* The contract's ota_progress detail.step for an event: download, verify,
 * boot, selftest, confirm or rollback (events.schema.json). */
const char *fleet_ota_event_step(const fleet_ota_event_t *ev);

typedef void (*fleet_ota_event_cb_t)(void *arg, const fleet_ota_event_t *ev);

typedef enum {
    FLEET_SELFTEST_PENDING = 0, /* not decided yet: poll again */
    FLEET_SELFTEST_PASS,
    FLEET_SELFTEST_FAIL,
} fleet_selftest_verdict_t;

/* The agent's self-test: network up, MQTT connected, USB/IP listener up, and
 * the devices exported now equal saved_devices (the text the agent passed to
 * fleet_ota_handle before the update). Writes the checks as the JSON object
 * the selftest event carries ({"network":true,"mqtt":true,
 * "usbip_listener":true,"devices":false}) and, on FAIL, a reason. */
typedef fleet_selftest_verdict_t (*fleet_selftest_cb_t)(void *arg, const char *saved_devices,
                                                         char *checks, size_t checks_len,
                                                         char *reason, size_t reason_len);

typedef struct {
    const fleet_ota_store_ops_t *store; void *store_ctx;
    const fleet_http_ops_t *http;       void *http_ctx;
    const fleet_kv_ops_t *kv;           void *kv_ctx;
    const fleet_clock_ops_t *clock;     void *clock_ctx;
    const fleet_log_ops_t *log;         void *log_ctx;   /* optional */
    fleet_ota_event_cb_t on_event;      void *event_arg; /* optional */
    fleet_selftest_cb_t selftest;       void *selftest_arg;

    const char *chip;              /* "esp32s3" | "esp32p4" | "posix-sim" */
    uint16_t chip_revision;
    const char *running_version;   /* copied */
    uint32_t min_secure_version;
    const uint8_t *pubkey; size_t pubkey_len; /* must outlive the machine */

    uint32_t selftest_timeout_ms;  /* 0 = 60000 */
    int max_attempts;              /* GETs per download, resuming each time; 0 = 3 */
    uint32_t journal_every;        /* sync + journal after this many bytes; 0 = 256 KiB (a resume
                                      re-fetches at most this much; each journal costs a sync) */
} fleet_ota_config_t;

#define FLEET_OTA_DEVICES_MAX 3072 /* saved device list text, NUL included */

typedef struct {
    fleet_ota_config_t cfg;
    fleet_ota_state_t state;
    char saved_devices[FLEET_OTA_DEVICES_MAX];
    char running_version[FLEET_VERSION_MAX];
    fleet_manifest_t m;          /* the update in progress / staged */
    int target_slot;
    uint64_t selftest_started_ms;
    atomic_int cancel;
    /* download bookkeeping */
    uint64_t written, last_journal, last_progress;
    int http_status;
    bool restarted;           /* the server ignored Range in the current attempt */
    int io_error;
    char reason[FLEET_REASON_MAX];
    /* the outcome fleet_ota_init found (CONFIRMED / ROLLED_BACK), kept for
     * fleet_ota_report_boot */
    bool boot_outcome;
    fleet_ota_event_kind_t boot_kind;
    char boot_request_id[FLEET_REQUEST_ID_MAX], boot_version[FLEET_VERSION_MAX];
    char boot_reason[FLEET_REASON_MAX];
} fleet_ota_t;

/* Read otadata and the staged-update record. If the running slot is
 * PENDING_VERIFY the machine starts in SELF_TEST; if the bootloader
 * abandoned the staged slot it reports ROLLED_BACK and starts IDLE.
 * FLEET_OK or FLEET_ERR_IO / FLEET_ERR_INVALID (bad config). */
int fleet_ota_init(fleet_ota_t *ota, const fleet_ota_config_t *cfg);

fleet_ota_state_t fleet_ota_state(const fleet_ota_t *ota);
const char *fleet_ota_state_name(fleet_ota_state_t s);
bool fleet_ota_transition_allowed(fleet_ota_state_t from, fleet_ota_state_t to);

/* Handle an `ota` command end to end: verify the manifest, download (resuming
 * a journaled download of the same SHA-256), verify the image, stage it.
 * saved_devices is what the self-test after the reboot must find again.
 * Blocks for the download. FLEET_OK means PENDING_REBOOT: the caller reboots
 * when it likes. Otherwise the error code, reason filled and reported. */
int fleet_ota_handle(fleet_ota_t *ota, const char *manifest_json, size_t len,
                     const char *saved_devices, char *reason, size_t reason_len);

/* Same, with a manifest already parsed (the caller may have inspected it). */
int fleet_ota_start(fleet_ota_t *ota, const fleet_manifest_t *m, const char *saved_devices,
                    char *reason, size_t reason_len);

/* In SELF_TEST: ask the self-test callback once. Returns the verdict after
 * applying it (PASS: confirmed, IDLE; FAIL or deadline passed: INVALID,
 * boot slot switched back, ROLLBACK_PENDING - the caller must reboot). */
fleet_selftest_verdict_t fleet_ota_selftest_poll(fleet_ota_t *ota);

/* Stop a running download at the next chunk (any thread). */
void fleet_ota_cancel(fleet_ota_t *ota);
/* A power cut during a download (the simulator's crash): stop as cancel
 * does and write nothing more - no journal, no slot, no otadata - so the
 * next boot finds what the cut left. The machine is only fit to be thrown
 * away afterwards. */
void fleet_ota_halt(fleet_ota_t *ota);

/* Emit once more the outcome fleet_ota_init found across the reset (confirm
 * or rollback, with the update's request_id, version and reason): init runs
 * before anyone can publish, so the agent calls this once it is online.
 * Only the first call emits; nothing when init found no outcome. */
void fleet_ota_report_boot(fleet_ota_t *ota);

/* The reason of the last refusal/failure ("" if none). */
const char *fleet_ota_last_reason(const fleet_ota_t *ota);

#endif /* FLEET_AGENT_OTA_H */
