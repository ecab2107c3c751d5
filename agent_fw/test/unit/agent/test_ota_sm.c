/* test_ota_sm.c - the OTA state machine against the in-memory store and a
 * scripted HTTP server: happy path, resume with Range, servers that ignore
 * Range or answer 416, corrupt images, self-test pass/fail/timeout, reset
 * while pending verify, and the refusals. */
#include <stdio.h>
#include <string.h>

#include "fakes.h"
#include "fleet_agent/err.h"
#include "fleet_agent/ota.h"
#include "fleet_agent/text.h"
#include "testlib.h"
#include "testutil.h"

#define DEVICES "[{\"busid\":\"1-1\",\"vid\":4617,\"pid\":8}]"
#define PAYLOAD 100000

typedef struct {
    mem_store_t store;
    mem_kv_t kv;
    script_http_t http;
    fake_clock_t clock;
    ev_log_t ev;
    fleet_ota_t ota;
    fleet_selftest_verdict_t verdict;
    char seen_devices[256];
    int selftest_calls;
    bool cancel_on_progress;
    bool halt_on_progress;
} fx_t;

static fx_t fx;
static tu_key_t key;
static uint8_t image[PAYLOAD + 64], bad_image[PAYLOAD + 64 + 16];
static size_t image_len;
static fleet_manifest_t manifest;

static fleet_selftest_verdict_t selftest(void *arg, const char *saved, char *checks, size_t cl,
                                         char *reason, size_t rl)
{
    fx_t *f = arg;
    f->selftest_calls++;
    snprintf(f->seen_devices, sizeof f->seen_devices, "%s", saved);
    snprintf(checks, cl, "{\"net\":true,\"mqtt\":true,\"usbip\":true,\"devices\":%s}",
             f->verdict == FLEET_SELFTEST_FAIL ? "false" : "true");
    if (f->verdict == FLEET_SELFTEST_FAIL) snprintf(reason, rl, "device 1-1 missing");
    return f->verdict;
}

static void on_event(void *arg, const fleet_ota_event_t *ev)
{
    fx_t *f = arg;
    ev_record(&f->ev, ev);
    if (f->cancel_on_progress && ev->kind == FLEET_OTA_EV_PROGRESS) fleet_ota_cancel(&f->ota);
    if (f->halt_on_progress && ev->kind == FLEET_OTA_EV_PROGRESS) fleet_ota_halt(&f->ota);
}

/* (Re)start the agent on top of whatever the store and kv hold. */
static int start_machine(const char *running_version)
{
    fleet_ota_config_t cfg = {
        .store = &mem_store_ops, .store_ctx = &fx.store,
        .http = &script_http_ops, .http_ctx = &fx.http,
        .kv = &mem_kv_ops, .kv_ctx = &fx.kv,
        .clock = &fake_clock_ops, .clock_ctx = &fx.clock,
        .on_event = on_event, .event_arg = &fx,
        .selftest = selftest, .selftest_arg = &fx,
        .chip = "posix-sim", .chip_revision = 1,
        .running_version = running_version,
        .pubkey = key.pub, .pubkey_len = key.pub_len,
        .selftest_timeout_ms = 5000, .max_attempts = 1, .journal_every = 16384,
    };
    memset(&fx.ev, 0, sizeof fx.ev);
    return fleet_ota_init(&fx.ota, &cfg);
}

static void fresh(void)
{
    mem_store_init(&fx.store, "0.3.0");
    mem_kv_init(&fx.kv);
    memset(&fx.http, 0, sizeof fx.http);
    fx.http.file = image;
    fx.http.file_len = image_len;
    fx.clock.now = 1000;
    fx.verdict = FLEET_SELFTEST_PASS;
    fx.selftest_calls = 0;
    fx.cancel_on_progress = false;
    fx.halt_on_progress = false;
    fx.seen_devices[0] = '\0';
    TL_EQ_INT(start_machine("0.3.0"), FLEET_OK);
}

static int handle(const fleet_manifest_t *m)
{
    char json[1024], why[FLEET_REASON_MAX];
    tu_manifest_json(m, json, sizeof json);
    return fleet_ota_handle(&fx.ota, json, strlen(json), DEVICES, why, sizeof why);
}

static bool slot_holds_image(int slot)
{
    return fx.store.len[slot] == image_len && memcmp(fx.store.slot[slot], image, image_len) == 0;
}

/* Reset the simulated dongle and start the agent on the slot the bootloader picks. */
static fleet_boot_t reboot(void)
{
    fleet_boot_t b;
    TL_EQ_INT(mem_store_reboot(&fx.store, &b), FLEET_OK);
    TL_EQ_INT(start_machine(fx.store.od.slot[b.slot].version), FLEET_OK);
    return b;
}

static void test_happy_path(void)
{
    fresh();
    TL_EQ_INT(handle(&manifest), FLEET_OK);
    TL_EQ_INT(fleet_ota_state(&fx.ota), FLEET_OTA_PENDING_REBOOT);
    /* every step reported, in order */
    static const fleet_ota_state_t steps[] = {FLEET_OTA_VERIFYING_MANIFEST, FLEET_OTA_DOWNLOADING,
                                              FLEET_OTA_VERIFYING_IMAGE, FLEET_OTA_PENDING_REBOOT};
    int k = 0;
    for (int i = 0; i < fx.ev.n; i++)
        if (fx.ev.kind[i] == FLEET_OTA_EV_STEP && k < 4) TL_EQ_INT(fx.ev.state[i], steps[k++]);
    TL_EQ_INT(k, 4);
    TL_CHECK(ev_count(&fx.ev, FLEET_OTA_EV_PROGRESS) >= 10);
    TL_EQ_INT(ev_count(&fx.ev, FLEET_OTA_EV_STAGED), 1);
    TL_EQ_INT(fx.http.requests, 1);
    TL_EQ_INT(fx.http.range[0], 0);
    TL_CHECK(slot_holds_image(1));
    TL_EQ_INT(fx.store.od.boot_slot, 1);
    TL_EQ_INT(fx.store.od.slot[1].state, FLEET_IMG_NEW);
    TL_EQ_STR(fx.store.od.slot[1].version, "0.4.0");
    TL_CHECK(!mem_kv_has(&fx.kv, "ota_journal"));

    fleet_boot_t b = reboot();
    TL_EQ_INT(b.slot, 1);
    TL_EQ_INT(fx.store.od.slot[1].state, FLEET_IMG_PENDING_VERIFY);
    TL_EQ_INT(fleet_ota_state(&fx.ota), FLEET_OTA_SELF_TEST);
    TL_EQ_INT(fleet_ota_selftest_poll(&fx.ota), FLEET_SELFTEST_PASS);
    TL_EQ_STR(fx.seen_devices, DEVICES); /* the list saved before the update */
    TL_EQ_INT(fx.store.od.slot[1].state, FLEET_IMG_VALID);
    TL_EQ_INT(fleet_ota_state(&fx.ota), FLEET_OTA_IDLE);
    TL_EQ_INT(ev_count(&fx.ev, FLEET_OTA_EV_CONFIRMED), 1);
    int c = ev_last(&fx.ev, FLEET_OTA_EV_CONFIRMED);
    /* the service matches the outcome to its command by request_id */
    TL_EQ_STR(fx.ev.request_id[c], manifest.request_id);
    TL_EQ_STR(fx.ev.version[c], "0.4.0");
    int s = ev_last(&fx.ev, FLEET_OTA_EV_SELFTEST);
    TL_CHECK(s >= 0);
    TL_CHECK(!mem_kv_has(&fx.kv, "ota_staged"));
    /* decided while running: nothing was left for fleet_ota_report_boot */
    fleet_ota_report_boot(&fx.ota);
    TL_EQ_INT(ev_count(&fx.ev, FLEET_OTA_EV_CONFIRMED), 1);

    /* confirmed firmware keeps booting */
    b = reboot();
    TL_EQ_INT(b.slot, 1);
    TL_CHECK(!b.rolled_back);
    TL_EQ_INT(fleet_ota_state(&fx.ota), FLEET_OTA_IDLE);
    TL_EQ_INT(fx.ev.n, 0);
}

static void test_resume_after_crash(void)
{
    fresh();
    fx.http.script[0] = (http_step_t){HTTP_CUT, 40000};
    fx.http.n_script = 1;
    char json[1024], why[FLEET_REASON_MAX];
    tu_manifest_json(&manifest, json, sizeof json);
    TL_EQ_INT(fleet_ota_handle(&fx.ota, json, strlen(json), DEVICES, why, sizeof why), FLEET_ERR_NET);
    TL_CHECK(strstr(why, "interrupted at 40000 of 100064 bytes") != NULL);
    TL_EQ_INT(fleet_ota_state(&fx.ota), FLEET_OTA_IDLE);
    TL_EQ_INT(ev_count(&fx.ev, FLEET_OTA_EV_FAILED), 1);

    /* power cut: unsynced bytes vanish; the old firmware boots */
    fleet_boot_t b = reboot();
    TL_EQ_INT(b.slot, 0);
    TL_EQ_INT(fx.store.od.slot[1].state, FLEET_IMG_EMPTY);
    TL_EQ_INT(fleet_ota_state(&fx.ota), FLEET_OTA_IDLE);

    /* the service retries: the download continues where durable data ends */
    TL_EQ_INT(handle(&manifest), FLEET_OK);
    TL_EQ_INT(fx.http.requests, 2);
    TL_CHECK(fx.http.range[1] > 0 && fx.http.range[1] <= 40000);
    TL_EQ_INT(ev_count(&fx.ev, FLEET_OTA_EV_RESUMED), 1);
    TL_CHECK(slot_holds_image(1));
    TL_EQ_INT(fleet_ota_state(&fx.ota), FLEET_OTA_PENDING_REBOOT);
}

static void test_resume_within_one_command(void)
{
    fresh();
    fx.ota.cfg.max_attempts = 3;
    fx.http.script[0] = (http_step_t){HTTP_CUT, 50000};
    fx.http.script[1] = (http_step_t){HTTP_CUT, 30000};
    fx.http.n_script = 2;
    TL_EQ_INT(handle(&manifest), FLEET_OK);
    TL_EQ_INT(fx.http.requests, 3);
    TL_EQ_INT(fx.http.range[0], 0);
    TL_EQ_INT(fx.http.range[1], 50000);
    TL_EQ_INT(fx.http.range[2], 80000);
    TL_CHECK(slot_holds_image(1));
}

static void test_server_ignores_range(void)
{
    fresh();
    fx.ota.cfg.max_attempts = 2;
    fx.http.script[0] = (http_step_t){HTTP_CUT, 40000};
    fx.http.script[1] = (http_step_t){HTTP_IGNORE_RANGE, 0};
    fx.http.n_script = 2;
    TL_EQ_INT(handle(&manifest), FLEET_OK);
    TL_EQ_INT(fx.http.range[1], 40000);
    TL_EQ_INT(ev_count(&fx.ev, FLEET_OTA_EV_RESTARTED), 1);
    TL_CHECK(slot_holds_image(1)); /* not the first 40000 bytes twice */
}

static void test_416_restarts_from_zero(void)
{
    fresh();
    fx.ota.cfg.max_attempts = 3;
    fx.http.script[0] = (http_step_t){HTTP_CUT, 40000};
    fx.http.script[1] = (http_step_t){HTTP_STATUS, 416};
    fx.http.n_script = 2;
    TL_EQ_INT(handle(&manifest), FLEET_OK);
    TL_EQ_INT(fx.http.requests, 3);
    TL_EQ_INT(fx.http.range[1], 40000);
    TL_EQ_INT(fx.http.range[2], 0);
    TL_CHECK(slot_holds_image(1));
}

static void test_journal_beyond_slot_restarts(void)
{
    fresh();
    /* a journal that promises more than the slot holds (e.g. the slot was erased) */
    char hex[65], rec[128];
    fleet_hex_encode(manifest.sha256, 32, hex);
    int n = snprintf(rec, sizeof rec, "%s 1 80000\n", hex);
    mem_kv_ops.save(&fx.kv, "ota_journal", rec, (size_t)n);
    TL_EQ_INT(handle(&manifest), FLEET_OK);
    TL_EQ_INT(fx.http.requests, 1);
    TL_EQ_INT(fx.http.range[0], 0);
    TL_EQ_INT(ev_count(&fx.ev, FLEET_OTA_EV_RESTARTED), 1);
    TL_CHECK(slot_holds_image(1));
}

static void test_sha_mismatch_keeps_old_slot(void)
{
    fresh();
    memcpy(bad_image, image, image_len);
    bad_image[5000] ^= 0x01; /* one flipped bit in transit or on the server */
    fx.http.file = bad_image;
    char json[1024], why[FLEET_REASON_MAX];
    tu_manifest_json(&manifest, json, sizeof json);
    TL_EQ_INT(fleet_ota_handle(&fx.ota, json, strlen(json), DEVICES, why, sizeof why), FLEET_ERR_INTEGRITY);
    TL_CHECK(strncmp(why, "sha256: image hashes to ", 24) == 0);
    TL_EQ_INT(ev_count(&fx.ev, FLEET_OTA_EV_REFUSED), 1);
    TL_EQ_INT(fleet_ota_state(&fx.ota), FLEET_OTA_IDLE);
    TL_EQ_INT(fx.store.od.boot_slot, 0);
    TL_EQ_INT(fx.store.od.slot[1].state, FLEET_IMG_EMPTY);
    TL_CHECK(!mem_kv_has(&fx.kv, "ota_journal"));
    fleet_boot_t b = reboot();
    TL_EQ_INT(b.slot, 0);
    /* a retry starts from byte 0, it does not keep the bad bytes */
    fx.http.file = image;
    TL_EQ_INT(handle(&manifest), FLEET_OK);
    TL_EQ_INT(fx.http.range[1], 0);
}

static void test_image_header_must_match_manifest(void)
{
    fresh();
    uint8_t other[PAYLOAD + 64];
    size_t n = tu_sim_image(other, sizeof other, "0.5.0", 0, PAYLOAD, 7);
    fleet_manifest_t m;
    tu_manifest_init(&m, "0.4.0", "http://127.0.0.1:1/fw/x.bin", other, n); /* signed, but lies */
    tu_manifest_sign(&m, &key);
    fx.http.file = other;
    fx.http.file_len = n;
    char json[1024], why[FLEET_REASON_MAX];
    tu_manifest_json(&m, json, sizeof json);
    TL_EQ_INT(fleet_ota_handle(&fx.ota, json, strlen(json), DEVICES, why, sizeof why), FLEET_ERR_INTEGRITY);
    TL_EQ_STR(why, "image: version 0.5.0 differs from the manifest's 0.4.0");
    TL_EQ_INT(fx.store.od.boot_slot, 0);
}

static void test_selftest_failure_rolls_back(void)
{
    fresh();
    TL_EQ_INT(handle(&manifest), FLEET_OK);
    reboot();
    TL_EQ_INT(fleet_ota_state(&fx.ota), FLEET_OTA_SELF_TEST);
    fx.verdict = FLEET_SELFTEST_FAIL;
    TL_EQ_INT(fleet_ota_selftest_poll(&fx.ota), FLEET_SELFTEST_FAIL);
    TL_EQ_INT(fleet_ota_state(&fx.ota), FLEET_OTA_ROLLBACK_PENDING);
    TL_EQ_INT(fx.store.od.slot[1].state, FLEET_IMG_INVALID);
    TL_EQ_INT(fx.store.od.boot_slot, 0);
    int s = ev_last(&fx.ev, FLEET_OTA_EV_SELFTEST);
    TL_CHECK(s >= 0 && strcmp(fx.ev.reason[s], "device 1-1 missing") == 0);

    fleet_boot_t b = reboot();
    TL_EQ_INT(b.slot, 0);
    TL_EQ_STR(fx.ota.running_version, "0.3.0");
    int r = ev_last(&fx.ev, FLEET_OTA_EV_ROLLED_BACK);
    TL_CHECK(r >= 0);
    if (r >= 0) TL_EQ_STR(fx.ev.reason[r], "self-test failed: device 1-1 missing; rolled back to 0.3.0");
    TL_EQ_INT(fleet_ota_state(&fx.ota), FLEET_OTA_IDLE);
    /* init reported it before anyone could publish: the agent asks again
     * once online, and gets it with the command's request_id, once */
    memset(&fx.ev, 0, sizeof fx.ev);
    fleet_ota_report_boot(&fx.ota);
    TL_EQ_INT(fx.ev.n, 1);
    TL_EQ_INT(fx.ev.kind[0], FLEET_OTA_EV_ROLLED_BACK);
    TL_EQ_STR(fx.ev.reason[0], "self-test failed: device 1-1 missing; rolled back to 0.3.0");
    TL_EQ_STR(fx.ev.request_id[0], manifest.request_id);
    TL_EQ_STR(fx.ev.version[0], "0.4.0");
    TL_EQ_STR(fleet_ota_event_step(&(fleet_ota_event_t){.kind = fx.ev.kind[0], .state = fx.ev.state[0]}), "rollback");
    fleet_ota_report_boot(&fx.ota);
    TL_EQ_INT(fx.ev.n, 1);
    /* reported once, not on every boot */
    reboot();
    TL_EQ_INT(ev_count(&fx.ev, FLEET_OTA_EV_ROLLED_BACK), 0);
    fleet_ota_report_boot(&fx.ota);
    TL_EQ_INT(fx.ev.n, 0);
    /* the invalid slot never boots again; a new OTA may reuse it */
    TL_EQ_INT(handle(&manifest), FLEET_OK);
}

static void test_selftest_timeout(void)
{
    fresh();
    TL_EQ_INT(handle(&manifest), FLEET_OK);
    reboot();
    fx.verdict = FLEET_SELFTEST_PENDING;
    TL_EQ_INT(fleet_ota_selftest_poll(&fx.ota), FLEET_SELFTEST_PENDING);
    fx.clock.now += 4999;
    TL_EQ_INT(fleet_ota_selftest_poll(&fx.ota), FLEET_SELFTEST_PENDING);
    TL_EQ_INT(fleet_ota_state(&fx.ota), FLEET_OTA_SELF_TEST);
    fx.clock.now += 2;
    TL_EQ_INT(fleet_ota_selftest_poll(&fx.ota), FLEET_SELFTEST_FAIL);
    TL_EQ_INT(fleet_ota_state(&fx.ota), FLEET_OTA_ROLLBACK_PENDING);
    int s = ev_last(&fx.ev, FLEET_OTA_EV_SELFTEST);
    TL_CHECK(s >= 0 && strncmp(fx.ev.reason[s], "self-test timed out after 5000 ms", 33) == 0);
    fleet_boot_t b = reboot();
    TL_EQ_INT(b.slot, 0);
    TL_EQ_INT(ev_count(&fx.ev, FLEET_OTA_EV_ROLLED_BACK), 1);
}

static void test_reset_while_pending_verify_aborts(void)
{
    fresh();
    TL_EQ_INT(handle(&manifest), FLEET_OK);
    reboot();
    TL_EQ_INT(fleet_ota_state(&fx.ota), FLEET_OTA_SELF_TEST);
    /* watchdog/power loss before the self-test decided */
    fleet_boot_t b = reboot();
    TL_CHECK(b.rolled_back);
    TL_EQ_INT(b.abandoned, FLEET_IMG_ABORTED);
    TL_EQ_INT(b.slot, 0);
    TL_EQ_INT(fx.store.od.slot[1].state, FLEET_IMG_ABORTED);
    TL_EQ_INT(fx.selftest_calls, 0);
    int r = ev_last(&fx.ev, FLEET_OTA_EV_ROLLED_BACK);
    TL_CHECK(r >= 0);
    if (r >= 0) TL_EQ_STR(fx.ev.reason[r], "reset before 0.4.0 confirmed itself (aborted); rolled back to 0.3.0");
    /* aborted is sticky: another reset still boots the old slot */
    b = reboot();
    TL_EQ_INT(b.slot, 0);
}

static void test_refused_while_pending_verify(void)
{
    fresh();
    TL_EQ_INT(handle(&manifest), FLEET_OK);
    reboot();
    int before = fx.http.requests;
    fleet_manifest_t m;
    uint8_t img2[PAYLOAD + 64];
    size_t n = tu_sim_image(img2, sizeof img2, "0.5.0", 0, PAYLOAD, 9);
    tu_manifest_init(&m, "0.5.0", "http://127.0.0.1:1/fw/y.bin", img2, n);
    tu_manifest_sign(&m, &key);
    char json[1024], why[FLEET_REASON_MAX];
    tu_manifest_json(&m, json, sizeof json);
    TL_EQ_INT(fleet_ota_handle(&fx.ota, json, strlen(json), DEVICES, why, sizeof why), FLEET_ERR_STATE);
    TL_EQ_STR(why, "state: the running firmware is pending verification; no OTA until it is confirmed or rolled back");
    TL_EQ_INT(fx.http.requests, before);
    TL_EQ_INT(fleet_ota_state(&fx.ota), FLEET_OTA_SELF_TEST);
    TL_EQ_INT(fx.store.od.slot[1].state, FLEET_IMG_PENDING_VERIFY);
}

static void test_refused_manifest_downloads_nothing(void)
{
    fresh();
    fleet_manifest_t m = manifest;
    m.signature[10] ^= 1;
    char json[1024], why[FLEET_REASON_MAX];
    tu_manifest_json(&m, json, sizeof json);
    TL_EQ_INT(fleet_ota_handle(&fx.ota, json, strlen(json), DEVICES, why, sizeof why), FLEET_ERR_REFUSED);
    TL_CHECK(strncmp(why, "signature:", 10) == 0);
    TL_EQ_INT(fx.http.requests, 0);
    TL_EQ_INT(fx.store.otadata_writes, 0);
    TL_EQ_INT(ev_count(&fx.ev, FLEET_OTA_EV_REFUSED), 1);
    TL_EQ_INT(fleet_ota_state(&fx.ota), FLEET_OTA_IDLE);

    /* malformed JSON: refused before the machine moves */
    TL_EQ_INT(fleet_ota_handle(&fx.ota, "{\"v\":1", 6, DEVICES, why, sizeof why), FLEET_ERR_INVALID);
    TL_EQ_STR(why, "document: not valid JSON");
    TL_EQ_INT(fleet_ota_state(&fx.ota), FLEET_OTA_IDLE);

    /* older than running */
    fleet_ota_config_t cfg = fx.ota.cfg;
    cfg.running_version = "0.4.0";
    fleet_ota_init(&fx.ota, &cfg);
    TL_EQ_INT(handle(&manifest), FLEET_ERR_REFUSED);
    TL_EQ_STR(fleet_ota_last_reason(&fx.ota), "version: 0.4.0 is not newer than the running 0.4.0");
}

static void test_http_errors(void)
{
    fresh();
    fx.http.script[0] = (http_step_t){HTTP_STATUS, 404};
    fx.http.n_script = 1;
    TL_EQ_INT(handle(&manifest), FLEET_ERR_NET);
    TL_EQ_STR(fleet_ota_last_reason(&fx.ota), "download: server answered HTTP 404");
    TL_EQ_INT(fleet_ota_state(&fx.ota), FLEET_OTA_IDLE);

    fx.http.script[1] = (http_step_t){HTTP_REFUSED, 0};
    fx.http.n_script = 2;
    TL_EQ_INT(handle(&manifest), FLEET_ERR_NET);
    TL_CHECK(strstr(fleet_ota_last_reason(&fx.ota), "interrupted at 0 of") != NULL);

    /* more bytes than the manifest promised */
    memcpy(bad_image, image, image_len);
    fx.http.file = bad_image;
    fx.http.file_len = image_len + 16;
    TL_EQ_INT(handle(&manifest), FLEET_ERR_INTEGRITY);
    TL_EQ_STR(fleet_ota_last_reason(&fx.ota), "download: server sent more than the manifest size 100064");
    fleet_boot_t b = reboot();
    TL_EQ_INT(b.slot, 0);
}

static void test_staged_duplicate_and_cancel(void)
{
    fresh();
    TL_EQ_INT(handle(&manifest), FLEET_OK);
    int req = fx.http.requests;
    TL_EQ_INT(handle(&manifest), FLEET_OK); /* QoS 1 redelivery */
    TL_EQ_INT(fx.http.requests, req);
    TL_EQ_INT(fleet_ota_state(&fx.ota), FLEET_OTA_PENDING_REBOOT);
    /* an agent restart without a reset still knows the update is staged */
    TL_EQ_INT(start_machine("0.3.0"), FLEET_OK);
    TL_EQ_INT(fleet_ota_state(&fx.ota), FLEET_OTA_PENDING_REBOOT);
    TL_EQ_INT(handle(&manifest), FLEET_OK); /* and still recognises the redelivery */
    TL_EQ_INT(fx.http.requests, req);

    fresh();
    fx.cancel_on_progress = true;
    TL_EQ_INT(handle(&manifest), FLEET_ERR_ABORTED);
    TL_CHECK(strncmp(fleet_ota_last_reason(&fx.ota), "download: cancelled at ", 23) == 0);
    TL_EQ_INT(fx.store.od.boot_slot, 0);
}

/* A cancel keeps what is durable (the journal lets a retry resume); a power
 * cut (halt) writes nothing more: the journal and otadata stay as the cut
 * found them, and the next boot starts the old slot. */
static void test_halt_writes_nothing_more(void)
{
    fresh();
    fx.cancel_on_progress = true;
    TL_EQ_INT(handle(&manifest), FLEET_ERR_ABORTED);
    TL_CHECK(mem_kv_has(&fx.kv, "ota_journal")); /* the first progress comes before the first journal */

    fresh();
    fx.halt_on_progress = true;
    int writes = fx.store.otadata_writes;
    TL_EQ_INT(handle(&manifest), FLEET_ERR_ABORTED);
    TL_CHECK(strncmp(fleet_ota_last_reason(&fx.ota), "download: power cut at ", 23) == 0);
    TL_CHECK(!mem_kv_has(&fx.kv, "ota_journal"));
    TL_EQ_INT(fx.store.otadata_writes, writes);
    TL_EQ_INT(fx.http.requests, 1);
    TL_EQ_INT(handle(&manifest), FLEET_ERR_STATE); /* dead until the reset */
    TL_EQ_INT(fx.http.requests, 1);
    fleet_boot_t b = reboot();
    TL_EQ_INT(b.slot, 0);
    TL_EQ_INT(fleet_ota_state(&fx.ota), FLEET_OTA_IDLE);
}

static void test_transition_table(void)
{
    TL_CHECK(fleet_ota_transition_allowed(FLEET_OTA_IDLE, FLEET_OTA_VERIFYING_MANIFEST));
    TL_CHECK(!fleet_ota_transition_allowed(FLEET_OTA_IDLE, FLEET_OTA_DOWNLOADING));
    TL_CHECK(!fleet_ota_transition_allowed(FLEET_OTA_IDLE, FLEET_OTA_PENDING_REBOOT));
    TL_CHECK(!fleet_ota_transition_allowed(FLEET_OTA_VERIFYING_MANIFEST, FLEET_OTA_VERIFYING_IMAGE));
    TL_CHECK(!fleet_ota_transition_allowed(FLEET_OTA_DOWNLOADING, FLEET_OTA_PENDING_REBOOT));
    TL_CHECK(fleet_ota_transition_allowed(FLEET_OTA_VERIFYING_IMAGE, FLEET_OTA_PENDING_REBOOT));
    TL_CHECK(!fleet_ota_transition_allowed(FLEET_OTA_PENDING_REBOOT, FLEET_OTA_IDLE));
    TL_CHECK(!fleet_ota_transition_allowed(FLEET_OTA_SELF_TEST, FLEET_OTA_DOWNLOADING));
    TL_CHECK(fleet_ota_transition_allowed(FLEET_OTA_SELF_TEST, FLEET_OTA_ROLLBACK_PENDING));
    TL_CHECK(!fleet_ota_transition_allowed(FLEET_OTA_ROLLBACK_PENDING, FLEET_OTA_IDLE));
    TL_CHECK(!fleet_ota_transition_allowed(FLEET_OTA_STATE_COUNT, FLEET_OTA_IDLE));
    TL_EQ_STR(fleet_ota_state_name(FLEET_OTA_SELF_TEST), "self_test");
    /* bad configuration is refused */
    fleet_ota_t o;
    fleet_ota_config_t cfg = fx.ota.cfg;
    cfg.running_version = "latest";
    TL_EQ_INT(fleet_ota_init(&o, &cfg), FLEET_ERR_INVALID);
    cfg = fx.ota.cfg;
    cfg.chip = "esp8266";
    TL_EQ_INT(fleet_ota_init(&o, &cfg), FLEET_ERR_INVALID);
}

static const char *step(fleet_ota_event_kind_t kind, fleet_ota_state_t state)
{
    fleet_ota_event_t ev = {.kind = kind, .state = state};
    return fleet_ota_event_step(&ev);
}

static void test_event_steps_match_contract(void)
{
    TL_EQ_STR(step(FLEET_OTA_EV_STEP, FLEET_OTA_VERIFYING_MANIFEST), "verify");
    TL_EQ_STR(step(FLEET_OTA_EV_REFUSED, FLEET_OTA_VERIFYING_MANIFEST), "verify");
    TL_EQ_STR(step(FLEET_OTA_EV_STEP, FLEET_OTA_DOWNLOADING), "download");
    TL_EQ_STR(step(FLEET_OTA_EV_PROGRESS, FLEET_OTA_DOWNLOADING), "download");
    TL_EQ_STR(step(FLEET_OTA_EV_FAILED, FLEET_OTA_DOWNLOADING), "download");
    TL_EQ_STR(step(FLEET_OTA_EV_REFUSED, FLEET_OTA_VERIFYING_IMAGE), "verify");
    TL_EQ_STR(step(FLEET_OTA_EV_STAGED, FLEET_OTA_PENDING_REBOOT), "boot");
    TL_EQ_STR(step(FLEET_OTA_EV_STEP, FLEET_OTA_SELF_TEST), "selftest");
    TL_EQ_STR(step(FLEET_OTA_EV_SELFTEST, FLEET_OTA_SELF_TEST), "selftest");
    TL_EQ_STR(step(FLEET_OTA_EV_CONFIRMED, FLEET_OTA_IDLE), "confirm");
    TL_EQ_STR(step(FLEET_OTA_EV_STEP, FLEET_OTA_ROLLBACK_PENDING), "rollback");
    TL_EQ_STR(step(FLEET_OTA_EV_ROLLED_BACK, FLEET_OTA_IDLE), "rollback");
}

int main(void)
{
    tu_key_gen(&key);
    image_len = tu_sim_image(image, sizeof image, "0.4.0", 0, PAYLOAD, 3);
    tu_manifest_init(&manifest, "0.4.0", "http://127.0.0.1:1/fw/new.bin", image, image_len);
    tu_manifest_sign(&manifest, &key);
    TL_RUN(test_happy_path);
    TL_RUN(test_resume_after_crash);
    TL_RUN(test_resume_within_one_command);
    TL_RUN(test_server_ignores_range);
    TL_RUN(test_416_restarts_from_zero);
    TL_RUN(test_journal_beyond_slot_restarts);
    TL_RUN(test_sha_mismatch_keeps_old_slot);
    TL_RUN(test_image_header_must_match_manifest);
    TL_RUN(test_selftest_failure_rolls_back);
    TL_RUN(test_selftest_timeout);
    TL_RUN(test_reset_while_pending_verify_aborts);
    TL_RUN(test_refused_while_pending_verify);
    TL_RUN(test_refused_manifest_downloads_nothing);
    TL_RUN(test_http_errors);
    TL_RUN(test_staged_duplicate_and_cancel);
    TL_RUN(test_halt_writes_nothing_more);
    TL_RUN(test_transition_table);
    TL_RUN(test_event_steps_match_contract);
    tu_key_free(&key);
    return TL_RESULT();
}
