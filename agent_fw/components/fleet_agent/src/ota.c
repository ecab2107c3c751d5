/* ota.c - the OTA state machine (see fleet_agent/ota.h). */
#include "fleet_agent/ota.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cJSON.h"
#include "fleet_agent/image.h"
#include "fleet_agent/text.h"
#include "reason.h"
#include "sha256_shim.h"

#define KEY_JOURNAL "ota_journal"
#define KEY_STAGED "ota_staged"
#define STAGED_MAX (FLEET_OTA_DEVICES_MAX + 1024)

static const char *const state_names[FLEET_OTA_STATE_COUNT] = {
    "idle", "verifying_manifest", "downloading", "verifying_image",
    "pending_reboot", "self_test", "rollback_pending",
};

const char *fleet_ota_state_name(fleet_ota_state_t s)
{
    return (unsigned)s < FLEET_OTA_STATE_COUNT ? state_names[s] : "unknown";
}

const char *fleet_ota_event_step(const fleet_ota_event_t *ev)
{
    switch (ev->kind) {
    case FLEET_OTA_EV_PROGRESS:
    case FLEET_OTA_EV_RESUMED:
    case FLEET_OTA_EV_RESTARTED: return "download";
    case FLEET_OTA_EV_STAGED: return "boot";
    case FLEET_OTA_EV_SELFTEST: return "selftest";
    case FLEET_OTA_EV_CONFIRMED: return "confirm";
    case FLEET_OTA_EV_ROLLED_BACK: return "rollback";
    default: break;
    }
    switch (ev->state) {
    case FLEET_OTA_DOWNLOADING: return "download";
    case FLEET_OTA_PENDING_REBOOT: return "boot";
    case FLEET_OTA_SELF_TEST: return "selftest";
    case FLEET_OTA_ROLLBACK_PENDING: return "rollback";
    default: return "verify"; /* manifest or image verification */
    }
}

fleet_ota_state_t fleet_ota_state(const fleet_ota_t *ota) { return ota->state; }
const char *fleet_ota_last_reason(const fleet_ota_t *ota) { return ota->reason; }
/* cancel bits: any stops the download; HALTED also forbids further writes */
#define CANCELLED 1
#define HALTED 2
void fleet_ota_cancel(fleet_ota_t *ota) { atomic_fetch_or(&ota->cancel, CANCELLED); }
void fleet_ota_halt(fleet_ota_t *ota) { atomic_fetch_or(&ota->cancel, CANCELLED | HALTED); }

static int sink_stop(void *arg)
{
    return atomic_load(&((fleet_ota_t *)arg)->cancel) != 0;
}

bool fleet_ota_transition_allowed(fleet_ota_state_t from, fleet_ota_state_t to)
{
    switch (from) {
    case FLEET_OTA_IDLE: return to == FLEET_OTA_VERIFYING_MANIFEST;
    case FLEET_OTA_VERIFYING_MANIFEST: return to == FLEET_OTA_DOWNLOADING || to == FLEET_OTA_IDLE;
    case FLEET_OTA_DOWNLOADING: return to == FLEET_OTA_VERIFYING_IMAGE || to == FLEET_OTA_IDLE;
    case FLEET_OTA_VERIFYING_IMAGE: return to == FLEET_OTA_PENDING_REBOOT || to == FLEET_OTA_IDLE;
    case FLEET_OTA_SELF_TEST: return to == FLEET_OTA_IDLE || to == FLEET_OTA_ROLLBACK_PENDING;
    /* Only a reset leaves these: the next boot builds a new machine. */
    case FLEET_OTA_PENDING_REBOOT:
    case FLEET_OTA_ROLLBACK_PENDING:
    default: return false;
    }
}

static void emit(fleet_ota_t *ota, fleet_ota_event_kind_t kind)
{
    if (!ota->cfg.on_event) return;
    fleet_ota_event_t ev = {
        .kind = kind,
        .state = ota->state,
        .request_id = ota->m.request_id,
        .version = ota->m.version,
        .bytes = ota->written,
        .total = ota->m.size,
        .reason = ota->reason,
        .checks = "",
    };
    ota->cfg.on_event(ota->cfg.event_arg, &ev);
}

/* Report what init found across the reset, now and for fleet_ota_report_boot. */
static void boot_outcome(fleet_ota_t *ota, fleet_ota_event_kind_t kind)
{
    ota->boot_outcome = true;
    ota->boot_kind = kind;
    snprintf(ota->boot_request_id, sizeof ota->boot_request_id, "%s", ota->m.request_id);
    snprintf(ota->boot_version, sizeof ota->boot_version, "%s", ota->m.version);
    snprintf(ota->boot_reason, sizeof ota->boot_reason, "%s", kind == FLEET_OTA_EV_ROLLED_BACK ? ota->reason : "");
    emit(ota, kind);
}

void fleet_ota_report_boot(fleet_ota_t *ota)
{
    if (!ota->boot_outcome || !ota->cfg.on_event) return;
    ota->boot_outcome = false;
    fleet_ota_event_t ev = {
        .kind = ota->boot_kind,
        .state = ota->state,
        .request_id = ota->boot_request_id,
        .version = ota->boot_version,
        .reason = ota->boot_reason,
        .checks = "",
    };
    ota->cfg.on_event(ota->cfg.event_arg, &ev);
}

static int go(fleet_ota_t *ota, fleet_ota_state_t to)
{
    if (!fleet_ota_transition_allowed(ota->state, to)) {
        fleet_logf(ota->cfg.log, ota->cfg.log_ctx, FLEET_LOG_ERROR, "ota: illegal transition %s -> %s",
                   fleet_ota_state_name(ota->state), fleet_ota_state_name(to));
        return FLEET_ERR_STATE;
    }
    ota->state = to;
    fleet_logf(ota->cfg.log, ota->cfg.log_ctx, FLEET_LOG_INFO, "ota: %s", fleet_ota_state_name(to));
    /* IDLE is never a step of its own: the event that led there (REFUSED,
     * FAILED, CONFIRMED) already told how the update ended. */
    if (to != FLEET_OTA_IDLE)
        emit(ota, FLEET_OTA_EV_STEP);
    return FLEET_OK;
}

/* End an attempt in IDLE with a reported reason; returns err. */
static int give_up(fleet_ota_t *ota, fleet_ota_event_kind_t kind, int err)
{
    fleet_logf(ota->cfg.log, ota->cfg.log_ctx, FLEET_LOG_WARN, "ota: %s", ota->reason);
    emit(ota, kind);
    go(ota, FLEET_OTA_IDLE);
    return err;
}

/* --- durable records --- */

static int save_journal(fleet_ota_t *ota)
{
    char hex[65], buf[128];
    fleet_hex_encode(ota->m.sha256, 32, hex);
    int n = snprintf(buf, sizeof buf, "%s %d %" PRIu64 "\n", hex, ota->target_slot, ota->written);
    return ota->cfg.kv->save(ota->cfg.kv_ctx, KEY_JOURNAL, buf, (size_t)n);
}

/* Bytes of this manifest's image already durable in the target slot, or 0. */
static uint64_t load_journal(fleet_ota_t *ota)
{
    char buf[128], hex[65], want[65];
    size_t len = 0;
    if (ota->cfg.kv->load(ota->cfg.kv_ctx, KEY_JOURNAL, buf, sizeof buf - 1, &len) != FLEET_OK)
        return 0;
    buf[len] = '\0';
    int slot;
    unsigned long long bytes;
    if (sscanf(buf, "%64s %d %llu", hex, &slot, &bytes) != 3) return 0;
    fleet_hex_encode(ota->m.sha256, 32, want);
    if (strcmp(hex, want) != 0 || slot != ota->target_slot || bytes > ota->m.size) return 0;
    return (uint64_t)bytes;
}

static int save_staged(fleet_ota_t *ota, int from_slot, const char *failure)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return FLEET_ERR_NO_MEM;
    cJSON_AddStringToObject(o, "request_id", ota->m.request_id);
    cJSON_AddStringToObject(o, "version", ota->m.version);
    char hex[65];
    fleet_hex_encode(ota->m.sha256, 32, hex);
    cJSON_AddStringToObject(o, "sha256", hex);
    cJSON_AddNumberToObject(o, "target_slot", ota->target_slot);
    cJSON_AddNumberToObject(o, "from_slot", from_slot);
    cJSON_AddStringToObject(o, "devices", ota->saved_devices);
    if (failure) cJSON_AddStringToObject(o, "failure", failure);
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!txt) return FLEET_ERR_NO_MEM;
    int rc = ota->cfg.kv->save(ota->cfg.kv_ctx, KEY_STAGED, txt, strlen(txt));
    cJSON_free(txt);
    return rc;
}

typedef struct {
    int target_slot, from_slot;
    char failure[FLEET_REASON_MAX];
} staged_t;

/* Load the staged-update record into ota->m / saved_devices. */
static bool load_staged(fleet_ota_t *ota, staged_t *st)
{
    char buf[STAGED_MAX];
    size_t len = 0;
    if (ota->cfg.kv->load(ota->cfg.kv_ctx, KEY_STAGED, buf, sizeof buf, &len) != FLEET_OK) return false;
    cJSON *o = cJSON_ParseWithLength(buf, len);
    const cJSON *rid = cJSON_GetObjectItemCaseSensitive(o, "request_id");
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(o, "version");
    const cJSON *tgt = cJSON_GetObjectItemCaseSensitive(o, "target_slot");
    const cJSON *from = cJSON_GetObjectItemCaseSensitive(o, "from_slot");
    const cJSON *dev = cJSON_GetObjectItemCaseSensitive(o, "devices");
    const cJSON *fail = cJSON_GetObjectItemCaseSensitive(o, "failure");
    const cJSON *sha = cJSON_GetObjectItemCaseSensitive(o, "sha256");
    bool ok = cJSON_IsString(rid) && cJSON_IsString(ver) && cJSON_IsNumber(tgt) &&
              cJSON_IsNumber(from) && cJSON_IsString(dev) &&
              strlen(rid->valuestring) < sizeof ota->m.request_id &&
              strlen(ver->valuestring) < sizeof ota->m.version &&
              strlen(dev->valuestring) < sizeof ota->saved_devices && cJSON_IsString(sha) &&
              fleet_hex_decode(sha->valuestring, ota->m.sha256, 32);
    if (ok) {
        strcpy(ota->m.request_id, rid->valuestring);
        strcpy(ota->m.version, ver->valuestring);
        strcpy(ota->saved_devices, dev->valuestring);
        st->target_slot = tgt->valueint;
        st->from_slot = from->valueint;
        st->failure[0] = '\0';
        if (cJSON_IsString(fail))
            snprintf(st->failure, sizeof st->failure, "%s", fail->valuestring);
    }
    cJSON_Delete(o);
    if (!ok) /* a record we cannot read can only mislead later boots */
        ota->cfg.kv->erase(ota->cfg.kv_ctx, KEY_STAGED);
    return ok;
}

/* --- init: what happened across the last reset --- */

int fleet_ota_init(fleet_ota_t *ota, const fleet_ota_config_t *cfg)
{
    memset(ota, 0, sizeof *ota);
    if (!cfg || !cfg->store || !cfg->http || !cfg->kv || !cfg->clock || !cfg->selftest ||
        fleet_chip_id_for(cfg->chip) == 0xFFFF || !fleet_semver_valid(cfg->running_version) ||
        strlen(cfg->running_version) >= FLEET_VERSION_MAX || !cfg->pubkey || !cfg->pubkey_len)
        return FLEET_ERR_INVALID;
    ota->cfg = *cfg;
    if (!ota->cfg.selftest_timeout_ms) ota->cfg.selftest_timeout_ms = 60000;
    if (ota->cfg.max_attempts <= 0) ota->cfg.max_attempts = 3;
    if (!ota->cfg.journal_every) ota->cfg.journal_every = 256 * 1024;
    strcpy(ota->running_version, cfg->running_version);
    atomic_init(&ota->cancel, 0);
    ota->state = FLEET_OTA_IDLE;

    fleet_otadata_t od;
    if (cfg->store->read_otadata(cfg->store_ctx, &od) != FLEET_OK) return FLEET_ERR_IO;
    int running = cfg->store->running_slot(cfg->store_ctx);
    if (running < 0 || running >= FLEET_SLOT_COUNT) return FLEET_ERR_IO;
    staged_t st;
    bool have = load_staged(ota, &st);
    ota->target_slot = have ? st.target_slot : 1 - running;

    if (od.slot[running].state == FLEET_IMG_PENDING_VERIFY) {
        /* First boot of a new image: nothing else may happen until it proves itself. */
        ota->state = FLEET_OTA_SELF_TEST;
        ota->target_slot = running;
        ota->selftest_started_ms = cfg->clock->now_ms(cfg->clock_ctx);
        emit(ota, FLEET_OTA_EV_STEP);
        return FLEET_OK;
    }
    if (!have) return FLEET_OK;
    if (st.target_slot == running && od.slot[running].state == FLEET_IMG_VALID) {
        /* Confirmed, but the reset came before the record was dropped. */
        boot_outcome(ota, FLEET_OTA_EV_CONFIRMED);
        cfg->kv->erase(cfg->kv_ctx, KEY_STAGED);
        return FLEET_OK;
    }
    if (st.target_slot >= 0 && st.target_slot < FLEET_SLOT_COUNT && od.boot_slot == st.target_slot &&
        od.slot[st.target_slot].state == FLEET_IMG_NEW) {
        ota->state = FLEET_OTA_PENDING_REBOOT; /* staged, the owner has not reset yet */
        return FLEET_OK;
    }
    fleet_img_state_t ts = st.target_slot >= 0 && st.target_slot < FLEET_SLOT_COUNT
                               ? od.slot[st.target_slot].state
                               : FLEET_IMG_EMPTY;
    if (ts == FLEET_IMG_INVALID || ts == FLEET_IMG_ABORTED) {
        if (ts == FLEET_IMG_ABORTED)
            fleet_reason(ota->reason, sizeof ota->reason,
                         "reset before %s confirmed itself (aborted); rolled back to %s",
                         ota->m.version, ota->running_version);
        else
            fleet_reason(ota->reason, sizeof ota->reason, "%s; rolled back to %s",
                         st.failure[0] ? st.failure : "self-test failed", ota->running_version);
        boot_outcome(ota, FLEET_OTA_EV_ROLLED_BACK);
    }
    cfg->kv->erase(cfg->kv_ctx, KEY_STAGED);
    return FLEET_OK;
}

/* --- download --- */

static int sink_response(void *arg, const fleet_http_response_t *rsp)
{
    fleet_ota_t *ota = arg;
    const fleet_ota_store_ops_t *s = ota->cfg.store;
    ota->http_status = rsp->status;
    if (sink_stop(ota)) return 1; /* a Range restart below would write */
    if (rsp->status == 206 && rsp->body_offset == ota->written) return 0;
    if (rsp->status == 200 || (rsp->status == 206 && rsp->body_offset == 0)) {
        if (ota->written > 0) {
            /* The server ignored Range: the body starts at byte 0 again. */
            ota->written = ota->last_journal = ota->last_progress = 0;
            ota->restarted = true;
            /* Forget the old progress first: a reset mid-restart must not resume
             * past bytes that are no longer in the slot. */
            ota->cfg.kv->erase(ota->cfg.kv_ctx, KEY_JOURNAL);
            if (s->write_end(ota->cfg.store_ctx) || s->write_begin(ota->cfg.store_ctx, ota->target_slot, 0)) {
                ota->io_error = FLEET_ERR_IO;
                return 1;
            }
            emit(ota, FLEET_OTA_EV_RESTARTED);
        }
        return 0;
    }
    return 1; /* anything else is judged after get() returns */
}

static int sink_data(void *arg, const uint8_t *data, size_t len)
{
    fleet_ota_t *ota = arg;
    const fleet_ota_store_ops_t *s = ota->cfg.store;
    if (sink_stop(ota)) return 1;
    if (len > ota->m.size - ota->written) {
        fleet_reason(ota->reason, sizeof ota->reason,
                     "download: server sent more than the manifest size %" PRIu64, ota->m.size);
        ota->io_error = FLEET_ERR_INTEGRITY;
        return 1;
    }
    if (s->write(ota->cfg.store_ctx, data, len)) {
        fleet_reason(ota->reason, sizeof ota->reason, "storage: writing the slot failed");
        ota->io_error = FLEET_ERR_IO;
        return 1;
    }
    ota->written += len;
    if (ota->written - ota->last_journal >= ota->cfg.journal_every) {
        /* Journal only what is durable, so a resume never trusts lost bytes. */
        if (s->sync(ota->cfg.store_ctx) || save_journal(ota)) {
            fleet_reason(ota->reason, sizeof ota->reason, "storage: saving download progress failed");
            ota->io_error = FLEET_ERR_IO;
            return 1;
        }
        ota->last_journal = ota->written;
    }
    if (ota->written == ota->m.size || ota->written - ota->last_progress >= ota->m.size / 10 + 1) {
        ota->last_progress = ota->written;
        emit(ota, FLEET_OTA_EV_PROGRESS);
    }
    return 0;
}

/* Hide the target slot from the bootloader while it is being rewritten. */
static int retire_target(fleet_ota_t *ota, int running)
{
    fleet_otadata_t od;
    if (ota->cfg.store->read_otadata(ota->cfg.store_ctx, &od)) return FLEET_ERR_IO;
    if (od.slot[ota->target_slot].state == FLEET_IMG_EMPTY && od.boot_slot == running) return FLEET_OK;
    od.slot[ota->target_slot].state = FLEET_IMG_EMPTY;
    od.slot[ota->target_slot].version[0] = '\0';
    od.boot_slot = running;
    od.seq++;
    return ota->cfg.store->write_otadata(ota->cfg.store_ctx, &od);
}

static int download(fleet_ota_t *ota)
{
    const fleet_ota_store_ops_t *s = ota->cfg.store;
    fleet_http_sink_t sink = {.on_response = sink_response, .on_data = sink_data, .arg = ota,
                              .stop_requested = sink_stop};
    ota->written = ota->last_progress = load_journal(ota);
    ota->last_journal = ota->written;
    if (ota->written) emit(ota, FLEET_OTA_EV_RESUMED);
    for (int attempt = 0; attempt < ota->cfg.max_attempts; attempt++) {
        if (ota->written == ota->m.size) return FLEET_OK; /* journal says complete */
        ota->io_error = 0;
        ota->http_status = 0;
        ota->restarted = false;
        if (ota->written && s->write_begin(ota->cfg.store_ctx, ota->target_slot, ota->written)) {
            /* The slot no longer holds what the journal claims: start over. */
            ota->written = ota->last_journal = ota->last_progress = 0;
            ota->cfg.kv->erase(ota->cfg.kv_ctx, KEY_JOURNAL);
            emit(ota, FLEET_OTA_EV_RESTARTED);
        }
        if (!ota->written && s->write_begin(ota->cfg.store_ctx, ota->target_slot, 0)) {
            fleet_reason(ota->reason, sizeof ota->reason, "storage: cannot open slot %d", ota->target_slot);
            return FLEET_ERR_IO;
        }
        uint64_t asked = ota->written;
        int rc = ota->cfg.http->get(ota->cfg.http_ctx, ota->m.url, asked, &sink);
        if (atomic_load(&ota->cancel) & HALTED) {
            fleet_reason(ota->reason, sizeof ota->reason, "download: power cut at %" PRIu64 " of %" PRIu64 " bytes",
                         ota->written, ota->m.size);
            return FLEET_ERR_ABORTED; /* the slot stays open: only a reset closes it */
        }
        int end = s->write_end(ota->cfg.store_ctx);
        if (ota->io_error) {
            if (ota->io_error == FLEET_ERR_INTEGRITY) ota->cfg.kv->erase(ota->cfg.kv_ctx, KEY_JOURNAL);
            return ota->io_error;
        }
        if (end == FLEET_OK && ota->written > ota->last_journal && save_journal(ota) == FLEET_OK)
            ota->last_journal = ota->written;
        if (atomic_load(&ota->cancel)) {
            fleet_reason(ota->reason, sizeof ota->reason, "download: cancelled at %" PRIu64 " of %" PRIu64 " bytes",
                         ota->written, ota->m.size);
            return FLEET_ERR_ABORTED;
        }
        if (ota->http_status == 416) {
            /* Nothing at or after our offset: either we already have it all
             * (checked at the loop top) or the journal is wrong - start over. */
            ota->written = ota->last_journal = ota->last_progress = 0;
            ota->cfg.kv->erase(ota->cfg.kv_ctx, KEY_JOURNAL);
            emit(ota, FLEET_OTA_EV_RESTARTED);
            continue;
        }
        if (ota->http_status && ota->http_status != 200 && ota->http_status != 206) {
            fleet_reason(ota->reason, sizeof ota->reason, "download: server answered HTTP %d", ota->http_status);
            return FLEET_ERR_NET;
        }
        if (ota->http_status == 206 && ota->written == asked && rc == FLEET_ERR_ABORTED) {
            fleet_reason(ota->reason, sizeof ota->reason, "download: Content-Range does not start at %" PRIu64, asked);
            return FLEET_ERR_NET;
        }
        if (ota->written == ota->m.size) return FLEET_OK;
        fleet_reason(ota->reason, sizeof ota->reason,
                     "download: interrupted at %" PRIu64 " of %" PRIu64 " bytes (%s); a retry resumes",
                     ota->written, ota->m.size, rc ? fleet_err_name(rc) : "connection closed early");
        if (ota->written > asked) emit(ota, FLEET_OTA_EV_RESUMED); /* next attempt: Range from here */
    }
    return FLEET_ERR_NET;
}

/* --- image verification --- */

static int verify_image(fleet_ota_t *ota)
{
    const fleet_ota_store_ops_t *s = ota->cfg.store;
    uint8_t buf[4096], head[FLEET_IMAGE_PROBE_LEN], digest[32];
    size_t head_len = 0;
    mbedtls_sha256_context sh;
    mbedtls_sha256_init(&sh);
    int rc = fleet_sha256_starts(&sh) ? FLEET_ERR_IO : FLEET_OK;
    for (uint64_t off = 0; rc == FLEET_OK && off < ota->m.size;) {
        size_t n = ota->m.size - off < sizeof buf ? (size_t)(ota->m.size - off) : sizeof buf;
        if (s->read(ota->cfg.store_ctx, ota->target_slot, off, buf, n) || fleet_sha256_update(&sh, buf, n)) {
            rc = FLEET_ERR_IO;
            break;
        }
        if (head_len < sizeof head) {
            size_t k = sizeof head - head_len < n ? sizeof head - head_len : n;
            memcpy(head + head_len, buf, k);
            head_len += k;
        }
        off += n;
    }
    if (rc == FLEET_OK && fleet_sha256_finish(&sh, digest)) rc = FLEET_ERR_IO;
    mbedtls_sha256_free(&sh);
    if (rc) {
        fleet_reason(ota->reason, sizeof ota->reason, "storage: reading slot %d back failed", ota->target_slot);
        return rc;
    }
    if (memcmp(digest, ota->m.sha256, 32) != 0) {
        char got[65];
        fleet_hex_encode(digest, 32, got);
        fleet_reason(ota->reason, sizeof ota->reason, "sha256: image hashes to %.16s..., not the manifest's", got);
        return FLEET_ERR_INTEGRITY;
    }
    fleet_image_info_t info;
    rc = fleet_image_parse(ota->m.chip, head, head_len, &info, ota->reason, sizeof ota->reason);
    if (rc) return FLEET_ERR_INTEGRITY;
    if (strcmp(info.version, ota->m.version) != 0) {
        fleet_reason(ota->reason, sizeof ota->reason, "image: version %s differs from the manifest's %s",
                     info.version, ota->m.version);
        return FLEET_ERR_INTEGRITY;
    }
    if (info.secure_version != ota->m.secure_version) {
        fleet_reason(ota->reason, sizeof ota->reason, "image: secure_version %" PRIu32 " differs from the manifest's %" PRIu32,
                     info.secure_version, ota->m.secure_version);
        return FLEET_ERR_INTEGRITY;
    }
    if (ota->cfg.chip_revision < info.min_rev || ota->cfg.chip_revision > info.max_rev) {
        fleet_reason(ota->reason, sizeof ota->reason, "image: chip revision %u outside the header's range %u..%u",
                     (unsigned)ota->cfg.chip_revision, (unsigned)info.min_rev, (unsigned)info.max_rev);
        return FLEET_ERR_INTEGRITY;
    }
    return FLEET_OK;
}

static int stage(fleet_ota_t *ota, int running)
{
    fleet_otadata_t od;
    if (save_staged(ota, running, NULL) || ota->cfg.store->read_otadata(ota->cfg.store_ctx, &od)) {
        fleet_reason(ota->reason, sizeof ota->reason, "storage: recording the staged update failed");
        return FLEET_ERR_IO;
    }
    fleet_slot_info_t *t = &od.slot[ota->target_slot];
    t->state = FLEET_IMG_NEW;
    snprintf(t->version, sizeof t->version, "%s", ota->m.version);
    t->secure_version = ota->m.secure_version;
    od.boot_slot = ota->target_slot;
    od.seq++;
    if (ota->cfg.store->write_otadata(ota->cfg.store_ctx, &od)) {
        fleet_reason(ota->reason, sizeof ota->reason, "storage: setting the boot slot failed");
        return FLEET_ERR_IO;
    }
    ota->cfg.kv->erase(ota->cfg.kv_ctx, KEY_JOURNAL);
    return FLEET_OK;
}

static void copy_reason(const fleet_ota_t *ota, char *reason, size_t reason_len)
{
    fleet_reason(reason, reason_len, "%s", ota->reason);
}

int fleet_ota_start(fleet_ota_t *ota, const fleet_manifest_t *m, const char *saved_devices,
                    char *reason, size_t reason_len)
{
    ota->reason[0] = '\0';
    if (atomic_load(&ota->cancel) & HALTED) { /* the clearing below must not undo a power cut */
        fleet_reason(ota->reason, sizeof ota->reason, "state: powered off");
        copy_reason(ota, reason, reason_len);
        return FLEET_ERR_STATE;
    }
    if (ota->state == FLEET_OTA_PENDING_REBOOT && memcmp(m->sha256, ota->m.sha256, 32) == 0)
        return FLEET_OK; /* duplicate delivery of the staged update */
    if (ota->state != FLEET_OTA_IDLE) {
        if (ota->state == FLEET_OTA_SELF_TEST || ota->state == FLEET_OTA_ROLLBACK_PENDING)
            fleet_reason(ota->reason, sizeof ota->reason,
                         "state: the running firmware is pending verification; "
                         "no OTA until it is confirmed or rolled back");
        else
            fleet_reason(ota->reason, sizeof ota->reason, "state: another OTA is %s",
                         fleet_ota_state_name(ota->state));
        copy_reason(ota, reason, reason_len);
        return FLEET_ERR_STATE;
    }
    size_t dl = saved_devices ? strlen(saved_devices) : 0;
    if (dl >= sizeof ota->saved_devices) {
        fleet_reason(ota->reason, sizeof ota->reason, "devices: saved device list is longer than %d bytes",
                     FLEET_OTA_DEVICES_MAX - 1);
        copy_reason(ota, reason, reason_len);
        return FLEET_ERR_INVALID;
    }
    memcpy(ota->saved_devices, saved_devices ? saved_devices : "", dl + 1);
    ota->m = *m;
    atomic_store(&ota->cancel, 0);
    ota->written = 0;
    int running = ota->cfg.store->running_slot(ota->cfg.store_ctx);
    ota->target_slot = 1 - running;
    go(ota, FLEET_OTA_VERIFYING_MANIFEST);

    fleet_ota_policy_t pol = {
        .chip = ota->cfg.chip,
        .chip_revision = ota->cfg.chip_revision,
        .running_version = ota->running_version,
        .min_secure_version = ota->cfg.min_secure_version,
        .pubkey = ota->cfg.pubkey,
        .pubkey_len = ota->cfg.pubkey_len,
        .slot_capacity = ota->cfg.store->capacity(ota->cfg.store_ctx),
    };
    int rc = fleet_manifest_check(m, &pol, ota->reason, sizeof ota->reason);
    if (rc) {
        copy_reason(ota, reason, reason_len);
        return give_up(ota, FLEET_OTA_EV_REFUSED, rc);
    }
    go(ota, FLEET_OTA_DOWNLOADING);
    if (retire_target(ota, running)) {
        fleet_reason(ota->reason, sizeof ota->reason, "storage: cannot update otadata");
        copy_reason(ota, reason, reason_len);
        return give_up(ota, FLEET_OTA_EV_FAILED, FLEET_ERR_IO);
    }
    rc = download(ota);
    if (rc) {
        copy_reason(ota, reason, reason_len);
        return give_up(ota, FLEET_OTA_EV_FAILED, rc);
    }
    go(ota, FLEET_OTA_VERIFYING_IMAGE);
    rc = verify_image(ota);
    if (rc) {
        /* A wrong image must be fetched again from scratch, not resumed. */
        ota->cfg.kv->erase(ota->cfg.kv_ctx, KEY_JOURNAL);
        copy_reason(ota, reason, reason_len);
        return give_up(ota, rc == FLEET_ERR_INTEGRITY ? FLEET_OTA_EV_REFUSED : FLEET_OTA_EV_FAILED, rc);
    }
    rc = stage(ota, running);
    if (rc) {
        copy_reason(ota, reason, reason_len);
        return give_up(ota, FLEET_OTA_EV_FAILED, rc);
    }
    go(ota, FLEET_OTA_PENDING_REBOOT);
    emit(ota, FLEET_OTA_EV_STAGED);
    return FLEET_OK;
}

int fleet_ota_handle(fleet_ota_t *ota, const char *manifest_json, size_t len,
                     const char *saved_devices, char *reason, size_t reason_len)
{
    fleet_manifest_t m;
    int rc = fleet_manifest_parse(manifest_json, len, &m, ota->reason, sizeof ota->reason);
    if (rc) {
        fleet_reason(reason, reason_len, "%s", ota->reason);
        return rc;
    }
    return fleet_ota_start(ota, &m, saved_devices, reason, reason_len);
}

/* --- self-test after the first boot of a new image --- */

fleet_selftest_verdict_t fleet_ota_selftest_poll(fleet_ota_t *ota)
{
    if (ota->state != FLEET_OTA_SELF_TEST) return FLEET_SELFTEST_FAIL;
    char checks[256] = "", why[FLEET_REASON_MAX] = "";
    fleet_selftest_verdict_t v = ota->cfg.selftest(ota->cfg.selftest_arg, ota->saved_devices, checks,
                                                   sizeof checks, why, sizeof why);
    uint64_t now = ota->cfg.clock->now_ms(ota->cfg.clock_ctx);
    if (v == FLEET_SELFTEST_PENDING) {
        if (now - ota->selftest_started_ms < ota->cfg.selftest_timeout_ms) return v;
        fleet_reason(why, sizeof why, "self-test timed out after %" PRIu32 " ms%s%s", ota->cfg.selftest_timeout_ms,
                     checks[0] ? ": " : "", checks);
        v = FLEET_SELFTEST_FAIL;
    }
    fleet_ota_event_t ev = {
        .kind = FLEET_OTA_EV_SELFTEST, .state = ota->state, .request_id = ota->m.request_id,
        .version = ota->m.version, .ok = v == FLEET_SELFTEST_PASS, .checks = checks,
        .reason = v == FLEET_SELFTEST_PASS ? "" : (why[0] ? why : "self-test failed"),
    };
    if (ota->cfg.on_event) ota->cfg.on_event(ota->cfg.event_arg, &ev);

    fleet_otadata_t od;
    int running = ota->cfg.store->running_slot(ota->cfg.store_ctx);
    if (ota->cfg.store->read_otadata(ota->cfg.store_ctx, &od)) {
        /* Cannot record a verdict: stay pending; a reset then aborts and rolls back. */
        fleet_reason(ota->reason, sizeof ota->reason, "storage: cannot read otadata");
        return FLEET_SELFTEST_PENDING;
    }
    od.seq++;
    if (v == FLEET_SELFTEST_PASS) {
        od.slot[running].state = FLEET_IMG_VALID;
        if (ota->cfg.store->write_otadata(ota->cfg.store_ctx, &od)) return FLEET_SELFTEST_PENDING;
        ota->cfg.kv->erase(ota->cfg.kv_ctx, KEY_STAGED);
        go(ota, FLEET_OTA_IDLE);
        emit(ota, FLEET_OTA_EV_CONFIRMED);
        return v;
    }
    fleet_reason(ota->reason, sizeof ota->reason, "self-test failed: %s", ev.reason);
    ota->target_slot = running;
    save_staged(ota, 1 - running, ota->reason); /* the next boot reports why */
    od.slot[running].state = FLEET_IMG_INVALID;
    od.boot_slot = 1 - running;
    if (ota->cfg.store->write_otadata(ota->cfg.store_ctx, &od)) return FLEET_SELFTEST_PENDING;
    go(ota, FLEET_OTA_ROLLBACK_PENDING);
    return FLEET_SELFTEST_FAIL;
}
