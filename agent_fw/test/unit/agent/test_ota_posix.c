/* test_ota_posix.c - OTA end to end on the real posix ports: file-backed
 * slots and otadata, file kv, libcurl against range_server.py on 127.0.0.1.
 * Covers the happy path with a simulated reset, kill -9 in the middle of a
 * download (old firmware still boots, the retry resumes with Range), a
 * tampered image, and a failing self-test that rolls back. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent_posix.h"
#include "fakes.h"
#include "fleet_agent/err.h"
#include "fleet_agent/ota.h"
#include "testlib.h"
#include "testutil.h"

#define PAYLOAD (300 * 1024)
#define DEVICES "[\"1-1 1209:0008\"]"

static tu_key_t key;
static tu_server_t srv;
static char www[64];
static uint8_t image[PAYLOAD + 64];
static size_t image_len;

typedef struct {
    char dir[64];
    fleet_files_store_t *store;
    fleet_files_kv_t *kv;
    fleet_curl_http_t http;
    ev_log_t ev;
    fleet_ota_t ota;
    fleet_selftest_verdict_t verdict;
    fleet_boot_t boot;
} dongle_t;

static fleet_selftest_verdict_t selftest(void *arg, const char *saved, char *checks, size_t cl,
                                         char *reason, size_t rl)
{
    dongle_t *d = arg;
    bool same = strcmp(saved, DEVICES) == 0;
    snprintf(checks, cl, "{\"devices\":%s}", same ? "true" : "false");
    if (!same || d->verdict == FLEET_SELFTEST_FAIL) {
        snprintf(reason, rl, "USB/IP listener not up");
        return FLEET_SELFTEST_FAIL;
    }
    return d->verdict;
}

/* Power on: the emulated bootloader picks the slot, then the agent starts. */
static void power_on(dongle_t *d)
{
    TL_EQ_INT(fleet_files_store_open(&d->store, d->dir, 1 << 20, "0.3.0"), FLEET_OK);
    TL_EQ_INT(fleet_files_kv_open(&d->kv, d->dir), FLEET_OK);
    TL_EQ_INT(fleet_files_store_boot(d->store, &d->boot), FLEET_OK);
    fleet_otadata_t od;
    fleet_files_store_ops.read_otadata(d->store, &od);
    d->http = (fleet_curl_http_t){.connect_timeout_s = 5, .stall_timeout_s = 5};
    memset(&d->ev, 0, sizeof d->ev);
    fleet_ota_config_t cfg = {
        .store = &fleet_files_store_ops, .store_ctx = d->store,
        .http = &fleet_curl_http_ops, .http_ctx = &d->http,
        .kv = &fleet_files_kv_ops, .kv_ctx = d->kv,
        .clock = &fleet_posix_clock_ops,
        .on_event = ev_record, .event_arg = &d->ev,
        .selftest = selftest, .selftest_arg = d,
        .chip = "posix-sim", .chip_revision = 0,
        .running_version = od.slot[d->boot.slot].version,
        .pubkey = key.pub, .pubkey_len = key.pub_len,
        .max_attempts = 1, .journal_every = 16384,
    };
    TL_EQ_INT(fleet_ota_init(&d->ota, &cfg), FLEET_OK);
}

static void power_off(dongle_t *d)
{
    fleet_files_store_close(d->store);
    fleet_files_kv_close(d->kv);
    d->store = NULL;
    d->kv = NULL;
}

static int ota(dongle_t *d, const char *path, char *why)
{
    fleet_manifest_t m;
    char url[128], json[1024];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", srv.port, path);
    tu_manifest_init(&m, "0.4.0", url, image, image_len);
    tu_manifest_sign(&m, &key);
    tu_manifest_json(&m, json, sizeof json);
    return fleet_ota_handle(&d->ota, json, strlen(json), DEVICES, why, FLEET_REASON_MAX);
}

static bool slot_file_is_image(const dongle_t *d, int slot)
{
    char path[128];
    snprintf(path, sizeof path, "%s/slot%d.bin", d->dir, slot);
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    uint8_t *buf = malloc(image_len + 1);
    size_t n = fread(buf, 1, image_len + 1, f);
    fclose(f);
    bool same = n == image_len && memcmp(buf, image, image_len) == 0;
    free(buf);
    return same;
}

static void test_happy_path(void)
{
    dongle_t d = {.verdict = FLEET_SELFTEST_PASS};
    char why[FLEET_REASON_MAX] = "";
    tu_tmpdir(d.dir, sizeof d.dir);
    power_on(&d);
    TL_EQ_INT(d.boot.slot, 0);
    TL_EQ_INT(ota(&d, "/fw/img.bin", why), FLEET_OK);
    TL_EQ_STR(why, "");
    TL_EQ_INT(fleet_ota_state(&d.ota), FLEET_OTA_PENDING_REBOOT);
    TL_CHECK(slot_file_is_image(&d, 1));
    power_off(&d);

    power_on(&d);
    TL_EQ_INT(d.boot.slot, 1);
    TL_EQ_STR(d.ota.running_version, "0.4.0");
    TL_EQ_INT(fleet_ota_state(&d.ota), FLEET_OTA_SELF_TEST);
    TL_EQ_INT(fleet_ota_selftest_poll(&d.ota), FLEET_SELFTEST_PASS);
    power_off(&d);

    power_on(&d);
    TL_EQ_INT(d.boot.slot, 1);
    TL_CHECK(!d.boot.rolled_back);
    TL_EQ_INT(fleet_ota_state(&d.ota), FLEET_OTA_IDLE);
    power_off(&d);
    tu_rmrf(d.dir);
}

static long journal_bytes(const char *dir)
{
    char path[128], hex[80];
    int slot;
    long bytes = -1;
    snprintf(path, sizeof path, "%s/ota_journal.kv", dir);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    if (fscanf(f, "%79s %d %ld", hex, &slot, &bytes) != 3) bytes = -1;
    fclose(f);
    return bytes;
}

static void test_kill9_mid_download_then_resume(void)
{
    dongle_t d = {.verdict = FLEET_SELFTEST_PASS};
    char why[FLEET_REASON_MAX] = "";
    tu_tmpdir(d.dir, sizeof d.dir);
    /* create the factory layout before the child races with us */
    power_on(&d);
    power_off(&d);

    pid_t pid = fork();
    if (pid == 0) {
        dongle_t c = {.verdict = FLEET_SELFTEST_PASS};
        strcpy(c.dir, d.dir);
        power_on(&c);
        ota(&c, "/slow/img.bin", why); /* ~1.5 s: 4 KiB every 20 ms */
        _exit(0);
    }
    /* kill it once some progress is durable, well before the end */
    long j = -1;
    for (int i = 0; i < 500 && j < 50000; i++) {
        usleep(10000);
        j = journal_bytes(d.dir);
    }
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    TL_CHECK(WIFSIGNALED(status)); /* it died mid-download, not at the end */
    j = journal_bytes(d.dir);
    TL_CHECK(j > 0 && j < (long)image_len);

    /* the old firmware is what boots */
    power_on(&d);
    TL_EQ_INT(d.boot.slot, 0);
    TL_CHECK(!d.boot.rolled_back);
    TL_EQ_STR(d.ota.running_version, "0.3.0");

    /* retry: resumes at the journaled offset */
    char needle[64];
    snprintf(needle, sizeof needle, "/fw/img.bin range=bytes=%ld- 206", j);
    TL_EQ_INT(ota(&d, "/fw/img.bin", why), FLEET_OK);
    TL_EQ_INT(tu_server_count(&srv, needle), 1);
    TL_CHECK(slot_file_is_image(&d, 1));
    TL_EQ_INT(ev_count(&d.ev, FLEET_OTA_EV_RESUMED), 1);
    power_off(&d);

    power_on(&d);
    TL_EQ_INT(d.boot.slot, 1);
    TL_EQ_INT(fleet_ota_selftest_poll(&d.ota), FLEET_SELFTEST_PASS);
    power_off(&d);
    tu_rmrf(d.dir);
}

static void test_tampered_image_refused(void)
{
    dongle_t d = {.verdict = FLEET_SELFTEST_PASS};
    char why[FLEET_REASON_MAX] = "";
    tu_tmpdir(d.dir, sizeof d.dir);
    power_on(&d);
    TL_EQ_INT(ota(&d, "/fw/tampered.bin", why), FLEET_ERR_INTEGRITY);
    TL_CHECK(strncmp(why, "sha256: ", 8) == 0);
    power_off(&d);
    power_on(&d);
    TL_EQ_INT(d.boot.slot, 0);
    TL_EQ_INT(fleet_ota_state(&d.ota), FLEET_OTA_IDLE);
    power_off(&d);
    tu_rmrf(d.dir);
}

static void test_failed_selftest_rolls_back(void)
{
    dongle_t d = {.verdict = FLEET_SELFTEST_FAIL};
    char why[FLEET_REASON_MAX] = "";
    tu_tmpdir(d.dir, sizeof d.dir);
    power_on(&d);
    TL_EQ_INT(ota(&d, "/fw/img.bin", why), FLEET_OK);
    power_off(&d);
    power_on(&d);
    TL_EQ_INT(d.boot.slot, 1);
    TL_EQ_INT(fleet_ota_selftest_poll(&d.ota), FLEET_SELFTEST_FAIL);
    TL_EQ_INT(fleet_ota_state(&d.ota), FLEET_OTA_ROLLBACK_PENDING);
    power_off(&d);
    power_on(&d);
    TL_EQ_INT(d.boot.slot, 0);
    TL_EQ_STR(d.ota.running_version, "0.3.0");
    int r = ev_last(&d.ev, FLEET_OTA_EV_ROLLED_BACK);
    TL_CHECK(r >= 0);
    if (r >= 0) TL_EQ_STR(d.ev.reason[r], "self-test failed: USB/IP listener not up; rolled back to 0.3.0");
    power_off(&d);
    tu_rmrf(d.dir);
}

int main(void)
{
    tu_key_gen(&key);
    tu_tmpdir(www, sizeof www);
    image_len = tu_sim_image(image, sizeof image, "0.4.0", 0, PAYLOAD, 11);
    tu_write_file(www, "img.bin", image, image_len);
    image[100000] ^= 0x80;
    tu_write_file(www, "tampered.bin", image, image_len);
    image[100000] ^= 0x80;
    if (!tu_server_start(&srv, www)) {
        fprintf(stderr, "range_server.py did not start\n");
        return 1;
    }
    TL_RUN(test_happy_path);
    TL_RUN(test_kill9_mid_download_then_resume);
    TL_RUN(test_tampered_image_refused);
    TL_RUN(test_failed_selftest_rolls_back);
    tu_server_stop(&srv);
    tu_rmrf(www);
    tu_key_free(&key);
    return TL_RESULT();
}
