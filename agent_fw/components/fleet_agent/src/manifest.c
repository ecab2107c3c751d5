/* manifest.c - parse the ota manifest, build its signed string, check policy. */
#include "fleet_agent/manifest.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "fleet_agent/err.h"
#include "fleet_agent/text.h"
#include "jfield.h"
#include "reason.h"

static const struct {
    const char *name;
    uint16_t id;
} chips[] = {
    {"esp32s3", FLEET_CHIP_ID_ESP32S3},
    {"esp32p4", FLEET_CHIP_ID_ESP32P4},
    {"posix-sim", FLEET_CHIP_ID_POSIX_SIM},
};

uint16_t fleet_chip_id_for(const char *chip)
{
    for (size_t i = 0; chip && i < sizeof chips / sizeof chips[0]; i++)
        if (strcmp(chips[i].name, chip) == 0) return chips[i].id;
    return 0xFFFF;
}

/* The contracts' request_id: a lowercase UUID string. */
static bool is_uuid(const char *s)
{
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        char c = s[i];
        if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return s[36] == '\0';
}

static int parse_fields(const cJSON *o, fleet_manifest_t *m, char *r, size_t rl)
{
    int64_t n;
    if (jf_int(o, "v", "v", 1, 1, true, &n, r, rl) < 0) return -1;
    if (jf_str(o, "request_id", "request_id", 1, true, m->request_id, sizeof m->request_id, r, rl) < 0)
        return -1;
    if (!is_uuid(m->request_id)) {
        fleet_reason(r, rl, "request_id: must be a lowercase UUID");
        return -1;
    }
    const cJSON *issued = cJSON_GetObjectItemCaseSensitive(o, "issued_at");
    if (!cJSON_IsNumber(issued) || issued->valuedouble < 0) {
        fleet_reason(r, rl, "issued_at: must be a non-negative number (unix seconds)");
        return -1;
    }
    if (jf_str(o, "version", "version", 1, true, m->version, sizeof m->version, r, rl) < 0) return -1;
    if (!fleet_semver_valid(m->version)) {
        fleet_reason(r, rl, "version: must be a semantic version like 1.2.3");
        return -1;
    }
    if (jf_str(o, "url", "url", 8, true, m->url, sizeof m->url, r, rl) < 0) return -1;
    if (strncmp(m->url, "http://", 7) != 0 && strncmp(m->url, "https://", 8) != 0) {
        fleet_reason(r, rl, "url: must start with http:// or https://");
        return -1;
    }
    if (jf_int(o, "size", "size", 1, INT64_C(1) << 53, true, &n, r, rl) < 0) return -1;
    m->size = (uint64_t)n;
    char hex[65];
    if (jf_str(o, "sha256", "sha256", 64, true, hex, sizeof hex, r, rl) < 0 ||
        !fleet_hex_decode(hex, m->sha256, 32)) {
        fleet_reason(r, rl, "sha256: must be 64 hexadecimal digits");
        return -1;
    }
    if (jf_str(o, "chip", "chip", 1, true, m->chip, sizeof m->chip, r, rl) < 0 ||
        fleet_chip_id_for(m->chip) == 0xFFFF) {
        fleet_reason(r, rl, "chip: must be one of esp32s3, esp32p4, posix-sim");
        return -1;
    }
    if (jf_int(o, "chip_id", "chip_id", 0, 0xFFFF, true, &n, r, rl) < 0) return -1;
    m->chip_id = (uint16_t)n;
    if (m->chip_id != fleet_chip_id_for(m->chip)) {
        fleet_reason(r, rl, "chip_id: %u does not match chip %s (%u)", (unsigned)m->chip_id,
                     m->chip, (unsigned)fleet_chip_id_for(m->chip));
        return -1;
    }
    if (jf_int(o, "min_rev", "min_rev", 0, 0xFFFF, true, &n, r, rl) < 0) return -1;
    m->min_rev = (uint16_t)n;
    if (jf_int(o, "max_rev", "max_rev", 0, 0xFFFF, true, &n, r, rl) < 0) return -1;
    m->max_rev = (uint16_t)n;
    if (m->min_rev > m->max_rev) {
        fleet_reason(r, rl, "max_rev: must not be below min_rev");
        return -1;
    }
    if (jf_int(o, "secure_version", "secure_version", 0, UINT32_MAX, true, &n, r, rl) < 0) return -1;
    m->secure_version = (uint32_t)n;
    m->allow_downgrade = false;
    if (jf_bool(o, "allow_downgrade", "allow_downgrade", false, &m->allow_downgrade, r, rl) < 0)
        return -1;
    char b64[(FLEET_SIG_MAX / 3 + 1) * 4 + 1];
    int sl;
    if (jf_str(o, "signature", "signature", 4, true, b64, sizeof b64, r, rl) < 0 ||
        (sl = fleet_base64_decode(b64, m->signature, sizeof m->signature)) <= 0) {
        fleet_reason(r, rl, "signature: must be base64 of a DER ECDSA signature (at most %d bytes)",
                     FLEET_SIG_MAX);
        return -1;
    }
    m->signature_len = (size_t)sl;
    return 0;
}

int fleet_manifest_parse(const char *json, size_t len, fleet_manifest_t *out, char *reason,
                         size_t reason_len)
{
    memset(out, 0, sizeof *out);
    cJSON *root = jf_parse_object(json, len, reason, reason_len);
    if (!root) return FLEET_ERR_INVALID;
    int rc = parse_fields(root, out, reason, reason_len);
    cJSON_Delete(root);
    return rc ? FLEET_ERR_INVALID : FLEET_OK;
}

size_t fleet_manifest_signed_string(const fleet_manifest_t *m, char *buf, size_t cap)
{
    char hex[65];
    fleet_hex_encode(m->sha256, 32, hex);
    int n = snprintf(buf, cap, "fleet-ota-v1\n%s\n%" PRIu64 "\n%s\n%s\n%u\n%u\n%u\n%" PRIu32 "\n%d\n",
                     m->version, m->size, hex, m->chip, (unsigned)m->chip_id, (unsigned)m->min_rev,
                     (unsigned)m->max_rev, m->secure_version, m->allow_downgrade ? 1 : 0);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

int fleet_manifest_check(const fleet_manifest_t *m, const fleet_ota_policy_t *p, char *r,
                         size_t rl)
{
    char signed_str[256];
    size_t n = fleet_manifest_signed_string(m, signed_str, sizeof signed_str);
    int rc = n ? fleet_sig_verify(p->pubkey, p->pubkey_len, (const uint8_t *)signed_str, n,
                                  m->signature, m->signature_len)
               : FLEET_ERR_INVALID;
    if (rc == FLEET_ERR_INVALID) {
        fleet_reason(r, rl, "signature: the dongle has no usable P-256 public key");
        return FLEET_ERR_REFUSED;
    }
    if (rc != FLEET_OK) {
        fleet_reason(r, rl, "signature: does not verify with the dongle's public key");
        return FLEET_ERR_REFUSED;
    }
    if (strcmp(m->chip, p->chip) != 0) {
        fleet_reason(r, rl, "chip: image is for %s, this dongle is %s", m->chip, p->chip);
        return FLEET_ERR_REFUSED;
    }
    if (p->chip_revision < m->min_rev || p->chip_revision > m->max_rev) {
        fleet_reason(r, rl, "chip revision %u is outside the image's range %u..%u",
                     (unsigned)p->chip_revision, (unsigned)m->min_rev, (unsigned)m->max_rev);
        return FLEET_ERR_REFUSED;
    }
    int cmp = fleet_semver_cmp(m->version, p->running_version);
    if (!m->allow_downgrade && cmp <= 0) {
        fleet_reason(r, rl, "version: %s is not newer than the running %s", m->version,
                     p->running_version);
        return FLEET_ERR_REFUSED;
    }
    if (m->secure_version < p->min_secure_version) {
        fleet_reason(r, rl, "secure_version: %" PRIu32 " is below the dongle's minimum %" PRIu32,
                     m->secure_version, p->min_secure_version);
        return FLEET_ERR_REFUSED;
    }
    if (m->size > p->slot_capacity) {
        fleet_reason(r, rl, "size: %" PRIu64 " bytes exceed the slot capacity %" PRIu64, m->size,
                     p->slot_capacity);
        return FLEET_ERR_REFUSED;
    }
    return FLEET_OK;
}
