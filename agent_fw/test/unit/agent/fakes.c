/* fakes.c - see fakes.h. */
#include "fakes.h"

#include <stdio.h>
#include <string.h>

/* --- store --- */

void mem_store_init(mem_store_t *s, const char *factory_version)
{
    memset(s, 0, sizeof *s);
    s->od.slot[0].state = FLEET_IMG_UNDEFINED;
    snprintf(s->od.slot[0].version, FLEET_VERSION_MAX, "%s", factory_version);
    s->od.slot[1].state = FLEET_IMG_EMPTY;
    s->wslot = -1;
}

int mem_store_reboot(mem_store_t *s, fleet_boot_t *boot)
{
    for (int i = 0; i < FLEET_SLOT_COUNT; i++) s->len[i] = s->durable[i];
    s->wslot = -1;
    int rc = fleet_boot_decide(&s->od, boot);
    if (rc == FLEET_OK) s->running = boot->slot;
    return rc;
}

static int ms_read_otadata(void *ctx, fleet_otadata_t *out)
{
    *out = ((mem_store_t *)ctx)->od;
    return FLEET_OK;
}

static int ms_write_otadata(void *ctx, const fleet_otadata_t *od)
{
    mem_store_t *s = ctx;
    if (s->fail_otadata_write) return FLEET_ERR_IO;
    s->od = *od;
    s->otadata_writes++;
    return FLEET_OK;
}

static int ms_running(void *ctx) { return ((mem_store_t *)ctx)->running; }
static uint64_t ms_capacity(void *ctx) { (void)ctx; return MEM_SLOT_CAP; }

static int ms_write_begin(void *ctx, int slot, uint64_t offset)
{
    mem_store_t *s = ctx;
    if (s->wslot >= 0 || slot < 0 || slot >= FLEET_SLOT_COUNT || slot == s->running ||
        offset > s->len[slot] || offset > MEM_SLOT_CAP)
        return FLEET_ERR_INVALID;
    s->wslot = slot;
    s->len[slot] = offset;
    if (s->durable[slot] > offset) s->durable[slot] = offset;
    return FLEET_OK;
}

static int ms_write(void *ctx, const uint8_t *data, size_t len)
{
    mem_store_t *s = ctx;
    if (s->wslot < 0 || len > MEM_SLOT_CAP - s->len[s->wslot]) return FLEET_ERR_INVALID;
    memcpy(s->slot[s->wslot] + s->len[s->wslot], data, len);
    s->len[s->wslot] += len;
    return FLEET_OK;
}

static int ms_sync(void *ctx)
{
    mem_store_t *s = ctx;
    if (s->wslot < 0) return FLEET_ERR_INVALID;
    s->durable[s->wslot] = s->len[s->wslot];
    return FLEET_OK;
}

static int ms_write_end(void *ctx)
{
    mem_store_t *s = ctx;
    if (s->wslot >= 0) ms_sync(ctx);
    s->wslot = -1;
    return FLEET_OK;
}

static int ms_read(void *ctx, int slot, uint64_t offset, uint8_t *buf, size_t len)
{
    mem_store_t *s = ctx;
    if (slot < 0 || slot >= FLEET_SLOT_COUNT || offset + len > s->len[slot]) return FLEET_ERR_IO;
    memcpy(buf, s->slot[slot] + offset, len);
    return FLEET_OK;
}

const fleet_ota_store_ops_t mem_store_ops = {
    .read_otadata = ms_read_otadata, .write_otadata = ms_write_otadata,
    .running_slot = ms_running,      .capacity = ms_capacity,
    .write_begin = ms_write_begin,   .write = ms_write,
    .sync = ms_sync,                 .write_end = ms_write_end,
    .read = ms_read,
};

/* --- kv --- */

void mem_kv_init(mem_kv_t *kv) { memset(kv, 0, sizeof *kv); }

static int find(const mem_kv_t *kv, const char *key)
{
    for (int i = 0; i < MEM_KV_KEYS; i++)
        if (kv->used[i] && strcmp(kv->key[i], key) == 0) return i;
    return -1;
}

bool mem_kv_has(const mem_kv_t *kv, const char *key) { return find(kv, key) >= 0; }

static int kv_load(void *ctx, const char *key, void *buf, size_t cap, size_t *len)
{
    mem_kv_t *kv = ctx;
    int i = find(kv, key);
    if (i < 0) return FLEET_ERR_NOT_FOUND;
    *len = kv->len[i];
    if (kv->len[i] > cap) return FLEET_ERR_NO_MEM;
    memcpy(buf, kv->val[i], kv->len[i]);
    return FLEET_OK;
}

static int kv_save(void *ctx, const char *key, const void *data, size_t len)
{
    mem_kv_t *kv = ctx;
    if (strlen(key) > 15 || len > sizeof kv->val[0]) return FLEET_ERR_INVALID;
    int i = find(kv, key);
    for (int k = 0; i < 0 && k < MEM_KV_KEYS; k++)
        if (!kv->used[k]) i = k;
    if (i < 0) return FLEET_ERR_NO_MEM;
    kv->used[i] = true;
    strcpy(kv->key[i], key);
    memcpy(kv->val[i], data, len);
    kv->len[i] = len;
    return FLEET_OK;
}

static int kv_erase(void *ctx, const char *key)
{
    mem_kv_t *kv = ctx;
    int i = find(kv, key);
    if (i >= 0) kv->used[i] = false;
    return FLEET_OK;
}

const fleet_kv_ops_t mem_kv_ops = {.load = kv_load, .save = kv_save, .erase = kv_erase};

/* --- scripted HTTP --- */

static int http_get(void *ctx, const char *url, uint64_t range_start, const fleet_http_sink_t *sink)
{
    script_http_t *h = ctx;
    (void)url;
    int n = h->requests++;
    if (n < 16) h->range[n] = range_start;
    http_step_t step = n < h->n_script ? h->script[n] : (http_step_t){HTTP_NORMAL, 0};
    if (step.kind == HTTP_REFUSED) return FLEET_ERR_NET;
    fleet_http_response_t rsp = {.status = 200, .body_offset = 0, .total = (int64_t)h->file_len};
    uint64_t start = 0, limit = UINT64_MAX;
    if (step.kind == HTTP_STATUS) {
        rsp.status = (int)step.arg;
        return sink->on_response(sink->arg, &rsp) ? FLEET_ERR_ABORTED : FLEET_OK;
    }
    if (range_start && step.kind != HTTP_IGNORE_RANGE) {
        if (range_start >= h->file_len) {
            rsp.status = 416;
            return sink->on_response(sink->arg, &rsp) ? FLEET_ERR_ABORTED : FLEET_OK;
        }
        rsp.status = 206;
        rsp.body_offset = start = range_start;
    }
    if (step.kind == HTTP_CUT) limit = step.arg;
    if (sink->on_response(sink->arg, &rsp)) return FLEET_ERR_ABORTED;
    size_t chunk = h->chunk ? h->chunk : 1000;
    uint64_t sent = 0;
    for (uint64_t off = start; off < h->file_len; off += chunk) {
        size_t k = h->file_len - off < chunk ? (size_t)(h->file_len - off) : chunk;
        if (sent + k > limit) k = (size_t)(limit - sent);
        if (k && sink->on_data(sink->arg, h->file + off, k)) return FLEET_ERR_ABORTED;
        sent += k;
        if (sent >= limit) return FLEET_ERR_NET; /* connection dropped */
    }
    return FLEET_OK;
}

const fleet_http_ops_t script_http_ops = {.get = http_get};

/* --- clock, events --- */

static uint64_t clock_now(void *ctx) { return ((fake_clock_t *)ctx)->now; }
const fleet_clock_ops_t fake_clock_ops = {.now_ms = clock_now};

void ev_record(void *arg, const fleet_ota_event_t *ev)
{
    ev_log_t *l = arg;
    if (l->n >= 64) return;
    l->kind[l->n] = ev->kind;
    l->state[l->n] = ev->state;
    snprintf(l->reason[l->n], FLEET_REASON_MAX, "%s", ev->reason ? ev->reason : "");
    snprintf(l->request_id[l->n], FLEET_REQUEST_ID_MAX, "%s", ev->request_id ? ev->request_id : "");
    snprintf(l->version[l->n], FLEET_VERSION_MAX, "%s", ev->version ? ev->version : "");
    l->n++;
}

int ev_count(const ev_log_t *l, fleet_ota_event_kind_t kind)
{
    int n = 0;
    for (int i = 0; i < l->n; i++) n += l->kind[i] == kind;
    return n;
}

int ev_last(const ev_log_t *l, fleet_ota_event_kind_t kind)
{
    for (int i = l->n - 1; i >= 0; i--)
        if (l->kind[i] == kind) return i;
    return -1;
}
