/* test_store_files.c - the posix file-backed OTA store and kv: layout,
 * slot rules, the emulated bootloader on disk, and crash consistency (an
 * interrupted write at every point, and real kill -9 of a writer). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent_posix.h"
#include "fleet_agent/err.h"
#include "fleet_agent/image.h"
#include "testlib.h"
#include "testutil.h"

#define CAP (1 << 20)

static const fleet_ota_store_ops_t *ops = &fleet_files_store_ops;

static void test_factory_layout(void)
{
    char dir[64];
    tu_tmpdir(dir, sizeof dir);
    fleet_files_store_t *st;
    TL_EQ_INT(fleet_files_store_open(&st, dir, CAP, "0.3.0"), FLEET_OK);
    fleet_otadata_t od;
    TL_EQ_INT(ops->read_otadata(st, &od), FLEET_OK);
    TL_EQ_INT(od.boot_slot, 0);
    TL_EQ_INT(od.slot[0].state, FLEET_IMG_UNDEFINED);
    TL_EQ_STR(od.slot[0].version, "0.3.0");
    TL_EQ_INT(od.slot[1].state, FLEET_IMG_EMPTY);
    TL_EQ_INT(ops->running_slot(st), 0);
    TL_EQ_INT(ops->capacity(st), CAP);
    char path[128];
    snprintf(path, sizeof path, "%s/otadata.json", dir);
    TL_EQ_INT(access(path, R_OK), 0);
    fleet_files_store_close(st);

    TL_EQ_INT(fleet_files_store_open(&st, dir, CAP, "not-semver"), FLEET_ERR_INVALID);
    /* a corrupt otadata is an error, never a silent factory reset */
    tu_write_file(dir, "otadata.json", "{\"seq\":1", 8);
    TL_EQ_INT(fleet_files_store_open(&st, dir, CAP, "0.3.0"), FLEET_ERR_IO);
    tu_write_file(dir, "otadata.json", "{\"seq\":1,\"boot_slot\":2,\"slots\":[]}", 35);
    TL_EQ_INT(fleet_files_store_open(&st, dir, CAP, "0.3.0"), FLEET_ERR_IO);
    tu_rmrf(dir);
}

static void test_slot_rules(void)
{
    char dir[64];
    tu_tmpdir(dir, sizeof dir);
    fleet_files_store_t *st;
    TL_EQ_INT(fleet_files_store_open(&st, dir, 1000, "0.3.0"), FLEET_OK);
    uint8_t data[600], back[600];
    for (int i = 0; i < 600; i++) data[i] = (uint8_t)(i * 7);
    TL_EQ_INT(ops->write_begin(st, 0, 0), FLEET_ERR_INVALID); /* the running slot */
    TL_EQ_INT(ops->write_begin(st, 2, 0), FLEET_ERR_INVALID);
    TL_EQ_INT(ops->write_begin(st, 1, 10), FLEET_ERR_INVALID); /* past the end: no holes */
    TL_EQ_INT(ops->write_begin(st, 1, 0), FLEET_OK);
    TL_EQ_INT(ops->write_begin(st, 1, 0), FLEET_ERR_INVALID); /* one writer */
    TL_EQ_INT(ops->write(st, data, 600), FLEET_OK);
    TL_EQ_INT(ops->write(st, data, 600), FLEET_ERR_INVALID); /* capacity 1000 */
    TL_EQ_INT(ops->write_end(st), FLEET_OK);
    TL_EQ_INT(ops->read(st, 1, 0, back, 600), FLEET_OK);
    TL_EQ_MEM(back, data, 600);
    TL_EQ_INT(ops->read(st, 1, 1, back, 600), FLEET_ERR_IO); /* past the end */
    /* resume: keep the first 250 bytes, rewrite the rest */
    TL_EQ_INT(ops->write_begin(st, 1, 250), FLEET_OK);
    TL_EQ_INT(ops->write(st, data, 10), FLEET_OK);
    TL_EQ_INT(ops->write_end(st), FLEET_OK);
    TL_EQ_INT(ops->read(st, 1, 0, back, 260), FLEET_OK);
    TL_EQ_MEM(back, data, 250);
    TL_EQ_MEM(back + 250, data, 10);
    TL_EQ_INT(ops->read(st, 1, 0, back, 261), FLEET_ERR_IO); /* truncated at 260 */
    fleet_files_store_close(st);
    tu_rmrf(dir);
}

static void test_boot_emulation_on_disk(void)
{
    char dir[64];
    tu_tmpdir(dir, sizeof dir);
    fleet_files_store_t *st;
    fleet_boot_t b;
    fleet_otadata_t od;
    TL_EQ_INT(fleet_files_store_open(&st, dir, CAP, "0.3.0"), FLEET_OK);
    ops->read_otadata(st, &od);
    od.slot[1].state = FLEET_IMG_NEW;
    strcpy(od.slot[1].version, "0.4.0");
    od.boot_slot = 1;
    TL_EQ_INT(ops->write_otadata(st, &od), FLEET_OK);
    fleet_files_store_close(st);

    /* a process restart = a reset */
    TL_EQ_INT(fleet_files_store_open(&st, dir, CAP, "0.3.0"), FLEET_OK);
    TL_EQ_INT(fleet_files_store_boot(st, &b), FLEET_OK);
    TL_EQ_INT(b.slot, 1);
    TL_EQ_INT(ops->running_slot(st), 1);
    fleet_files_store_close(st);
    TL_EQ_INT(fleet_files_store_open(&st, dir, CAP, "0.3.0"), FLEET_OK);
    ops->read_otadata(st, &od);
    TL_EQ_INT(od.slot[1].state, FLEET_IMG_PENDING_VERIFY); /* persisted */
    TL_EQ_INT(fleet_files_store_boot(st, &b), FLEET_OK);   /* reset before confirmation */
    TL_CHECK(b.rolled_back);
    TL_EQ_INT(b.slot, 0);
    fleet_files_store_close(st);
    TL_EQ_INT(fleet_files_store_open(&st, dir, CAP, "0.3.0"), FLEET_OK);
    ops->read_otadata(st, &od);
    TL_EQ_INT(od.slot[1].state, FLEET_IMG_ABORTED);
    TL_EQ_INT(od.boot_slot, 0);
    TL_EQ_INT(ops->running_slot(st), 0);
    TL_EQ_INT(ops->write_begin(st, 0, 0), FLEET_ERR_INVALID);
    fleet_files_store_close(st);
    tu_rmrf(dir);
}

/* Slot 1 holds a posix-sim image whose payload starts with text. */
static void write_sim_slot(fleet_files_store_t *st, const char *text)
{
    uint8_t img[FLEET_SIM_HEADER_LEN + 256];
    size_t n = fleet_image_sim_header(img, "0.5.0", 0, 0, 99);
    memcpy(img + n, text, strlen(text));
    n += strlen(text);
    TL_EQ_INT(ops->write_begin(st, 1, 0), FLEET_OK);
    TL_EQ_INT(ops->write(st, img, n), FLEET_OK);
    TL_EQ_INT(ops->write_end(st), FLEET_OK);
}

static void test_sim_fault_directive(void)
{
    char dir[64], f[FLEET_SIM_FAULT_MAX];
    tu_tmpdir(dir, sizeof dir);
    fleet_files_store_t *st;
    TL_EQ_INT(fleet_files_store_open(&st, dir, CAP, "0.3.0"), FLEET_OK);
    /* the factory image has no file, and no directive */
    TL_EQ_INT(fleet_files_store_sim_fault(st, 0, f, sizeof f), 0);
    TL_EQ_INT(fleet_files_store_sim_fault(st, 1, f, sizeof f), 0);
    write_sim_slot(st, "fleet-sim-fault: no-usbip-listener\nrest of the payload");
    TL_EQ_INT(fleet_files_store_sim_fault(st, 1, f, sizeof f), 1);
    TL_EQ_STR(f, "no-usbip-listener");
    /* unknown names are the caller's to ignore */
    write_sim_slot(st, "fleet-sim-fault: sparks\n");
    TL_EQ_INT(fleet_files_store_sim_fault(st, 1, f, sizeof f), 1);
    TL_EQ_STR(f, "sparks");
    /* only at the very start of the payload */
    write_sim_slot(st, "x fleet-sim-fault: no-usbip-listener\n");
    TL_EQ_INT(fleet_files_store_sim_fault(st, 1, f, sizeof f), 0);
    write_sim_slot(st, "");
    TL_EQ_INT(fleet_files_store_sim_fault(st, 1, f, sizeof f), 0);
    /* a line that is not one: no newline, empty, odd characters, too long */
    write_sim_slot(st, "fleet-sim-fault: no-usbip-listener");
    TL_EQ_INT(fleet_files_store_sim_fault(st, 1, f, sizeof f), -1);
    write_sim_slot(st, "fleet-sim-fault: \n");
    TL_EQ_INT(fleet_files_store_sim_fault(st, 1, f, sizeof f), -1);
    write_sim_slot(st, "fleet-sim-fault: No Listener\n");
    TL_EQ_INT(fleet_files_store_sim_fault(st, 1, f, sizeof f), -1);
    write_sim_slot(st, "fleet-sim-fault: no-usbip-listener\n");
    TL_EQ_INT(fleet_files_store_sim_fault(st, 1, f, 8), -1);
    /* not a posix-sim image at all */
    uint8_t esp[128] = {0xE9};
    memcpy(esp + FLEET_SIM_HEADER_LEN, "fleet-sim-fault: x\n", 19);
    TL_EQ_INT(ops->write_begin(st, 1, 0), FLEET_OK);
    TL_EQ_INT(ops->write(st, esp, sizeof esp), FLEET_OK);
    TL_EQ_INT(ops->write_end(st), FLEET_OK);
    TL_EQ_INT(fleet_files_store_sim_fault(st, 1, f, sizeof f), 0);
    TL_EQ_INT(fleet_files_store_sim_fault(st, 7, f, sizeof f), 0);
    fleet_files_store_close(st);
    tu_rmrf(dir);
}

static const char *fault_point;
static int fault_at(void *arg, const char *point)
{
    (void)arg;
    return fault_point && strcmp(point, fault_point) == 0;
}

static void test_interrupted_otadata_writes(void)
{
    static const struct {
        const char *point;
        bool new_visible;
    } cases[] = {{"otadata:tmp-partial", false}, {"otadata:tmp-written", false}, {"otadata:renamed", true}};
    for (size_t i = 0; i < 3; i++) {
        char dir[64];
        tu_tmpdir(dir, sizeof dir);
        fleet_files_store_t *st;
        fleet_otadata_t od, back;
        TL_EQ_INT(fleet_files_store_open(&st, dir, CAP, "0.3.0"), FLEET_OK);
        ops->read_otadata(st, &od);
        od.seq = 7;
        od.boot_slot = 1;
        od.slot[1].state = FLEET_IMG_NEW;
        strcpy(od.slot[1].version, "0.4.0");
        fault_point = cases[i].point;
        fleet_files_store_set_fault(st, fault_at, NULL);
        TL_EQ_INT(ops->write_otadata(st, &od), FLEET_ERR_IO); /* "died" at that point */
        fleet_files_store_close(st);
        fault_point = NULL;

        TL_EQ_INT(fleet_files_store_open(&st, dir, CAP, "0.3.0"), FLEET_OK);
        TL_EQ_INT(ops->read_otadata(st, &back), FLEET_OK);
        if (cases[i].new_visible) {
            TL_EQ_INT(back.seq, 7);
            TL_EQ_INT(back.boot_slot, 1);
            TL_EQ_STR(back.slot[1].version, "0.4.0");
        } else {
            TL_EQ_INT(back.seq, 0);
            TL_EQ_INT(back.boot_slot, 0);
            TL_EQ_INT(back.slot[1].state, FLEET_IMG_EMPTY);
        }
        /* the leftover temporary file does not block the next write */
        od.seq = 8;
        TL_EQ_INT(ops->write_otadata(st, &od), FLEET_OK);
        TL_EQ_INT(ops->read_otadata(st, &back), FLEET_OK);
        TL_EQ_INT(back.seq, 8);
        fleet_files_store_close(st);
        tu_rmrf(dir);
    }
}

/* A child rewrites otadata as fast as it can; each record is self-consistent
 * (version "1.0.<seq>"). kill -9 at a random moment must leave a record that
 * parses and is consistent. */
static void test_kill9_during_otadata_writes(void)
{
    char dir[64];
    tu_tmpdir(dir, sizeof dir);
    fleet_files_store_t *st;
    TL_EQ_INT(fleet_files_store_open(&st, dir, CAP, "0.3.0"), FLEET_OK);
    fleet_files_store_close(st);
    srand((unsigned)time(NULL));
    uint32_t last_seq = 0;
    for (int round = 0; round < 6; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            fleet_files_store_t *c;
            if (fleet_files_store_open(&c, dir, CAP, "0.3.0")) _exit(3);
            fleet_otadata_t od;
            if (ops->read_otadata(c, &od)) _exit(4);
            for (;;) {
                od.seq++;
                od.boot_slot = (int)(od.seq & 1);
                od.slot[1].state = (od.seq & 1) ? FLEET_IMG_NEW : FLEET_IMG_VALID;
                snprintf(od.slot[1].version, FLEET_VERSION_MAX, "1.0.%u", (unsigned)od.seq);
                if (ops->write_otadata(c, &od)) _exit(5);
            }
        }
        /* let the writer get going (fsync pace depends on the machine), then
         * kill it at a random moment */
        fleet_files_store_t *watch;
        fleet_otadata_t seen = {0};
        TL_EQ_INT(fleet_files_store_open(&watch, dir, CAP, "0.3.0"), FLEET_OK);
        int torn_reads = 0; /* a reader racing the renames must never see a partial record */
        for (int i = 0; i < 2500 && seen.seq <= last_seq; i++) {
            usleep(2000);
            if (ops->read_otadata(watch, &seen)) torn_reads++, seen.seq = 0;
        }
        fleet_files_store_close(watch);
        TL_EQ_INT(torn_reads, 0);
        TL_CHECK(seen.seq > last_seq);
        usleep((useconds_t)(rand() % 40000));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        TL_CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL); /* it was still writing */
        fleet_otadata_t od;
        TL_EQ_INT(fleet_files_store_open(&st, dir, CAP, "0.3.0"), FLEET_OK);
        TL_EQ_INT(ops->read_otadata(st, &od), FLEET_OK);
        fleet_files_store_close(st);
        char want[FLEET_VERSION_MAX];
        snprintf(want, sizeof want, "1.0.%u", (unsigned)od.seq);
        TL_EQ_STR(od.slot[1].version, want);
        TL_EQ_INT(od.boot_slot, (int)(od.seq & 1));
        TL_CHECK(od.seq >= seen.seq); /* what was visible before the kill is kept */
        last_seq = od.seq;
    }
    tu_rmrf(dir);
}

static void test_kv(void)
{
    char dir[64];
    tu_tmpdir(dir, sizeof dir);
    fleet_files_kv_t *kv;
    const fleet_kv_ops_t *k = &fleet_files_kv_ops;
    TL_EQ_INT(fleet_files_kv_open(&kv, dir), FLEET_OK);
    char buf[64];
    size_t len = 0;
    TL_EQ_INT(k->load(kv, "config", buf, sizeof buf, &len), FLEET_ERR_NOT_FOUND);
    TL_EQ_INT(k->save(kv, "config", "hello", 5), FLEET_OK);
    TL_EQ_INT(k->load(kv, "config", buf, sizeof buf, &len), FLEET_OK);
    TL_EQ_INT(len, 5);
    TL_EQ_MEM(buf, "hello", 5);
    TL_EQ_INT(k->load(kv, "config", buf, 3, &len), FLEET_ERR_NO_MEM);
    TL_EQ_INT(len, 5);
    TL_EQ_INT(k->save(kv, "Bad-Key", "x", 1), FLEET_ERR_INVALID);
    TL_EQ_INT(k->save(kv, "../escape", "x", 1), FLEET_ERR_INVALID);
    TL_EQ_INT(k->save(kv, "a_key_of_16_chrs", "x", 1), FLEET_ERR_INVALID);
    TL_EQ_INT(k->save(kv, "", "x", 1), FLEET_ERR_INVALID);

    /* interrupted replace: the old value survives */
    fault_point = "kv:tmp-partial";
    fleet_files_kv_set_fault(kv, fault_at, NULL);
    TL_EQ_INT(k->save(kv, "config", "goodbye world", 13), FLEET_ERR_IO);
    fault_point = NULL;
    fleet_files_kv_close(kv);
    TL_EQ_INT(fleet_files_kv_open(&kv, dir), FLEET_OK);
    TL_EQ_INT(k->load(kv, "config", buf, sizeof buf, &len), FLEET_OK);
    TL_EQ_INT(len, 5);
    TL_EQ_MEM(buf, "hello", 5);
    TL_EQ_INT(k->erase(kv, "config"), FLEET_OK);
    TL_EQ_INT(k->erase(kv, "config"), FLEET_OK);
    TL_EQ_INT(k->load(kv, "config", buf, sizeof buf, &len), FLEET_ERR_NOT_FOUND);
    fleet_files_kv_close(kv);
    tu_rmrf(dir);
}

int main(void)
{
    TL_RUN(test_factory_layout);
    TL_RUN(test_slot_rules);
    TL_RUN(test_boot_emulation_on_disk);
    TL_RUN(test_sim_fault_directive);
    TL_RUN(test_interrupted_otadata_writes);
    TL_RUN(test_kill9_during_otadata_writes);
    TL_RUN(test_kv);
    return TL_RESULT();
}
