/* kv_files.c - the agent's small durable records, one file per key. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent_posix.h"
#include "atomic_file.h"
#include "fleet_agent/err.h"

struct fleet_files_kv {
    char dir[PATH_MAX - 32];
    fleet_fault_fn fault;
    void *fault_arg;
};

/* NVS's limits, so a key that works here works on the chip. */
static int key_file(const char *key, char *name, size_t cap)
{
    size_t n = key ? strlen(key) : 0;
    if (n < 1 || n > 15) return -1;
    for (size_t i = 0; i < n; i++) {
        char c = key[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return -1;
    }
    snprintf(name, cap, "%s.kv", key);
    return 0;
}

static int kv_load(void *ctx, const char *key, void *buf, size_t cap, size_t *len)
{
    fleet_files_kv_t *kv = ctx;
    char name[32];
    if (key_file(key, name, sizeof name)) return FLEET_ERR_INVALID;
    return fleet_read_file(kv->dir, name, buf, cap, len);
}

static int kv_save(void *ctx, const char *key, const void *data, size_t len)
{
    fleet_files_kv_t *kv = ctx;
    char name[32];
    if (key_file(key, name, sizeof name)) return FLEET_ERR_INVALID;
    return fleet_atomic_write(kv->dir, name, data, len, "kv", kv->fault, kv->fault_arg);
}

static int kv_erase(void *ctx, const char *key)
{
    fleet_files_kv_t *kv = ctx;
    char name[32], path[PATH_MAX];
    if (key_file(key, name, sizeof name)) return FLEET_ERR_INVALID;
    snprintf(path, sizeof path, "%s/%s", kv->dir, name);
    return unlink(path) == 0 || access(path, F_OK) != 0 ? FLEET_OK : FLEET_ERR_IO;
}

const fleet_kv_ops_t fleet_files_kv_ops = {.load = kv_load, .save = kv_save, .erase = kv_erase};

int fleet_files_kv_open(fleet_files_kv_t **out, const char *dir)
{
    *out = NULL;
    if (!dir || strlen(dir) >= sizeof((fleet_files_kv_t *)0)->dir) return FLEET_ERR_INVALID;
    if (fleet_ensure_dir(dir)) return FLEET_ERR_IO;
    fleet_files_kv_t *kv = calloc(1, sizeof *kv);
    if (!kv) return FLEET_ERR_NO_MEM;
    strcpy(kv->dir, dir);
    *out = kv;
    return FLEET_OK;
}

void fleet_files_kv_close(fleet_files_kv_t *kv) { free(kv); }

void fleet_files_kv_set_fault(fleet_files_kv_t *kv, fleet_fault_fn fn, void *arg)
{
    kv->fault = fn;
    kv->fault_arg = arg;
}
