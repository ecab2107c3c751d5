/* ota_store_files.c - OTA slots and otadata as files (the simulated flash). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent_posix.h"
#include "atomic_file.h"
#include "cJSON.h"
#include "fleet_agent/err.h"
#include "fleet_agent/image.h"
#include "fleet_agent/text.h"

#define OTADATA "otadata.json"
#define OTADATA_MAX 2048

struct fleet_files_store {
    char dir[PATH_MAX - 32];
    uint64_t capacity;
    int running;
    int wfd;          /* slot open for writing, or -1 */
    uint64_t wpos;
    fleet_fault_fn fault;
    void *fault_arg;
};

static const char *const state_names[] = {"undefined", "new", "pending_verify", "valid",
                                          "invalid", "aborted", "empty"};

static int state_from(const char *s, fleet_img_state_t *out)
{
    for (int i = 0; i < (int)(sizeof state_names / sizeof state_names[0]); i++)
        if (strcmp(s, state_names[i]) == 0) {
            *out = (fleet_img_state_t)i;
            return 0;
        }
    return -1;
}

static int encode(const fleet_otadata_t *od, char **out)
{
    cJSON *o = cJSON_CreateObject(), *slots = cJSON_AddArrayToObject(o, "slots");
    cJSON_AddNumberToObject(o, "seq", od->seq);
    cJSON_AddNumberToObject(o, "boot_slot", od->boot_slot);
    for (int i = 0; i < FLEET_SLOT_COUNT; i++) {
        cJSON *s = cJSON_CreateObject();
        cJSON_AddStringToObject(s, "state", state_names[od->slot[i].state]);
        cJSON_AddStringToObject(s, "version", od->slot[i].version);
        cJSON_AddNumberToObject(s, "secure_version", od->slot[i].secure_version);
        cJSON_AddItemToArray(slots, s);
    }
    *out = cJSON_Print(o); /* indented: people read this file when debugging */
    cJSON_Delete(o);
    return *out ? FLEET_OK : FLEET_ERR_NO_MEM;
}

static int decode(const char *txt, size_t len, fleet_otadata_t *od)
{
    memset(od, 0, sizeof *od);
    cJSON *o = cJSON_ParseWithLength(txt, len);
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(o, "seq");
    const cJSON *boot = cJSON_GetObjectItemCaseSensitive(o, "boot_slot");
    const cJSON *slots = cJSON_GetObjectItemCaseSensitive(o, "slots");
    int rc = FLEET_ERR_IO;
    if (cJSON_IsNumber(seq) && cJSON_IsNumber(boot) && (boot->valueint == 0 || boot->valueint == 1) &&
        cJSON_IsArray(slots) && cJSON_GetArraySize(slots) == FLEET_SLOT_COUNT) {
        od->seq = (uint32_t)seq->valuedouble;
        od->boot_slot = boot->valueint;
        rc = FLEET_OK;
        for (int i = 0; i < FLEET_SLOT_COUNT && rc == FLEET_OK; i++) {
            const cJSON *s = cJSON_GetArrayItem(slots, i);
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(s, "state");
            const cJSON *ver = cJSON_GetObjectItemCaseSensitive(s, "version");
            const cJSON *sv = cJSON_GetObjectItemCaseSensitive(s, "secure_version");
            if (!cJSON_IsString(st) || state_from(st->valuestring, &od->slot[i].state) ||
                !cJSON_IsString(ver) || strlen(ver->valuestring) >= FLEET_VERSION_MAX ||
                !cJSON_IsNumber(sv) || sv->valuedouble < 0) {
                rc = FLEET_ERR_IO;
                break;
            }
            strcpy(od->slot[i].version, ver->valuestring);
            od->slot[i].secure_version = (uint32_t)sv->valuedouble;
        }
    }
    cJSON_Delete(o);
    return rc;
}

static int read_otadata(void *ctx, fleet_otadata_t *out)
{
    fleet_files_store_t *st = ctx;
    char buf[OTADATA_MAX];
    size_t len = 0;
    int rc = fleet_read_file(st->dir, OTADATA, buf, sizeof buf, &len);
    if (rc) return rc == FLEET_ERR_NOT_FOUND ? FLEET_ERR_NOT_FOUND : FLEET_ERR_IO;
    return decode(buf, len, out);
}

static int write_otadata(void *ctx, const fleet_otadata_t *od)
{
    fleet_files_store_t *st = ctx;
    if (od->boot_slot < 0 || od->boot_slot >= FLEET_SLOT_COUNT) return FLEET_ERR_INVALID;
    for (int i = 0; i < FLEET_SLOT_COUNT; i++)
        if ((unsigned)od->slot[i].state > FLEET_IMG_EMPTY) return FLEET_ERR_INVALID;
    char *txt;
    if (encode(od, &txt)) return FLEET_ERR_NO_MEM;
    int rc = fleet_atomic_write(st->dir, OTADATA, txt, strlen(txt), "otadata", st->fault, st->fault_arg);
    cJSON_free(txt);
    return rc;
}

static int running_slot(void *ctx) { return ((fleet_files_store_t *)ctx)->running; }
static uint64_t capacity(void *ctx) { return ((fleet_files_store_t *)ctx)->capacity; }

static int slot_path(const fleet_files_store_t *st, int slot, char *buf, size_t cap)
{
    if (slot < 0 || slot >= FLEET_SLOT_COUNT) return -1;
    return snprintf(buf, cap, "%s/slot%d.bin", st->dir, slot) >= (int)cap ? -1 : 0;
}

static int write_begin(void *ctx, int slot, uint64_t offset)
{
    fleet_files_store_t *st = ctx;
    char path[PATH_MAX];
    if (st->wfd >= 0 || slot == st->running || offset > st->capacity ||
        slot_path(st, slot, path, sizeof path))
        return FLEET_ERR_INVALID; /* never overwrite the running firmware */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return FLEET_ERR_IO;
    struct stat sb;
    /* Resuming past the end would leave a hole of zeros: refuse, the caller restarts. */
    if (fstat(fd, &sb) || (uint64_t)sb.st_size < offset) {
        close(fd);
        return FLEET_ERR_INVALID;
    }
    if (ftruncate(fd, (off_t)offset) || lseek(fd, (off_t)offset, SEEK_SET) < 0) {
        close(fd);
        return FLEET_ERR_IO;
    }
    st->wfd = fd;
    st->wpos = offset;
    return FLEET_OK;
}

static int write_slot(void *ctx, const uint8_t *data, size_t len)
{
    fleet_files_store_t *st = ctx;
    if (st->wfd < 0 || len > st->capacity - st->wpos) return FLEET_ERR_INVALID;
    while (len) {
        ssize_t w = write(st->wfd, data, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return FLEET_ERR_IO;
        data += w;
        len -= (size_t)w;
        st->wpos += (uint64_t)w;
    }
    return FLEET_OK;
}

static int sync_slot(void *ctx)
{
    fleet_files_store_t *st = ctx;
    if (st->wfd < 0) return FLEET_ERR_INVALID;
    return fdatasync(st->wfd) ? FLEET_ERR_IO : FLEET_OK;
}

static int write_end(void *ctx)
{
    fleet_files_store_t *st = ctx;
    if (st->wfd < 0) return FLEET_OK;
    int rc = fsync(st->wfd);
    rc |= close(st->wfd);
    st->wfd = -1;
    return rc ? FLEET_ERR_IO : FLEET_OK;
}

static int read_slot(void *ctx, int slot, uint64_t offset, uint8_t *buf, size_t len)
{
    fleet_files_store_t *st = ctx;
    char path[PATH_MAX];
    if (slot_path(st, slot, path, sizeof path)) return FLEET_ERR_INVALID;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return FLEET_ERR_IO;
    size_t got = 0;
    while (got < len) {
        ssize_t r = pread(fd, buf + got, len - got, (off_t)(offset + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    return got == len ? FLEET_OK : FLEET_ERR_IO;
}

const fleet_ota_store_ops_t fleet_files_store_ops = {
    .read_otadata = read_otadata,
    .write_otadata = write_otadata,
    .running_slot = running_slot,
    .capacity = capacity,
    .write_begin = write_begin,
    .write = write_slot,
    .sync = sync_slot,
    .write_end = write_end,
    .read = read_slot,
};

int fleet_files_store_open(fleet_files_store_t **out, const char *dir, uint64_t slot_capacity,
                           const char *factory_version)
{
    *out = NULL;
    if (!dir || strlen(dir) >= sizeof((fleet_files_store_t *)0)->dir || !slot_capacity ||
        !fleet_semver_valid(factory_version) || strlen(factory_version) >= FLEET_VERSION_MAX)
        return FLEET_ERR_INVALID;
    if (fleet_ensure_dir(dir)) return FLEET_ERR_IO;
    fleet_files_store_t *st = calloc(1, sizeof *st);
    if (!st) return FLEET_ERR_NO_MEM;
    strcpy(st->dir, dir);
    st->capacity = slot_capacity;
    st->wfd = -1;
    fleet_otadata_t od;
    int rc = read_otadata(st, &od);
    if (rc == FLEET_ERR_NOT_FOUND) {
        /* A freshly "flashed" dongle: factory image in slot 0, like esptool leaves it. */
        memset(&od, 0, sizeof od);
        od.slot[0].state = FLEET_IMG_UNDEFINED;
        strcpy(od.slot[0].version, factory_version);
        od.slot[1].state = FLEET_IMG_EMPTY;
        rc = write_otadata(st, &od);
    }
    if (rc) {
        free(st);
        return FLEET_ERR_IO;
    }
    st->running = od.boot_slot;
    *out = st;
    return FLEET_OK;
}

void fleet_files_store_close(fleet_files_store_t *st)
{
    if (!st) return;
    write_end(st);
    free(st);
}

int fleet_files_store_boot(fleet_files_store_t *st, fleet_boot_t *out)
{
    fleet_otadata_t od, before;
    if (read_otadata(st, &od)) return FLEET_ERR_IO;
    before = od;
    int rc = fleet_boot_decide(&od, out);
    if (rc) return rc;
    if (memcmp(&od, &before, sizeof od) != 0) {
        od.seq++;
        if (write_otadata(st, &od)) return FLEET_ERR_IO;
    }
    st->running = out->slot;
    return FLEET_OK;
}

int fleet_files_store_sim_fault(const fleet_files_store_t *st, int slot, char *out, size_t cap)
{
    static const char key[] = FLEET_SIM_FAULT_PREFIX;
    char path[PATH_MAX];
    uint8_t head[FLEET_SIM_HEADER_LEN + sizeof key + FLEET_SIM_FAULT_MAX];
    if (cap) out[0] = '\0';
    if (slot_path(st, slot, path, sizeof path)) return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0; /* no file: the factory image, which has no directive */
    ssize_t n = pread(fd, head, sizeof head, 0);
    close(fd);
    size_t klen = sizeof key - 1;
    if (n < (ssize_t)(FLEET_SIM_HEADER_LEN + klen) || memcmp(head, "FLEETSIM", 8) != 0 ||
        memcmp(head + FLEET_SIM_HEADER_LEN, key, klen) != 0)
        return 0;
    const char *v = (const char *)head + FLEET_SIM_HEADER_LEN + klen;
    const char *end = memchr(v, '\n', (size_t)n - FLEET_SIM_HEADER_LEN - klen);
    if (!end || end == v || (size_t)(end - v) >= cap) return -1; /* a directive line we cannot read */
    for (const char *p = v; p < end; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-')) return -1;
    memcpy(out, v, (size_t)(end - v));
    out[end - v] = '\0';
    return 1;
}

void fleet_files_store_set_fault(fleet_files_store_t *st, fleet_fault_fn fn, void *arg)
{
    st->fault = fn;
    st->fault_arg = arg;
}
