/*
 * manifest.h - the `ota` command's manifest: parse, then decide whether this
 * dongle may install it. Nothing is downloaded before this passes.
 *
 * The signature covers the canonical signed string (docs/ota.md):
 *   "fleet-ota-v1\n" version "\n" size "\n" sha256 "\n" chip "\n" chip_id "\n"
 *   min_rev "\n" max_rev "\n" secure_version "\n" allow_downgrade "\n"
 * with integers in decimal, sha256 in lowercase hex and allow_downgrade 0|1;
 * it is ECDSA P-256 over SHA-256 of those bytes, DER-encoded, base64 in JSON.
 * The URL is not signed: the signed SHA-256 pins the bytes wherever they
 * come from.
 */
#ifndef FLEET_AGENT_MANIFEST_H
#define FLEET_AGENT_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleet_agent/port/ota_store.h"

#define FLEET_URL_MAX 256
#define FLEET_REQUEST_ID_MAX 64
#define FLEET_CHIP_NAME_MAX 16
#define FLEET_SIG_MAX 80 /* DER ECDSA P-256 is at most 72 bytes */

/* chip ids of the image header (esp_chip_id_t); posix-sim is our own. */
#define FLEET_CHIP_ID_ESP32S3 0x0009
#define FLEET_CHIP_ID_ESP32P4 0x0012
#define FLEET_CHIP_ID_POSIX_SIM 0x7E57

typedef struct {
    char request_id[FLEET_REQUEST_ID_MAX];
    char version[FLEET_VERSION_MAX];
    char url[FLEET_URL_MAX];
    uint64_t size;
    uint8_t sha256[32];
    char chip[FLEET_CHIP_NAME_MAX];
    uint16_t chip_id;
    uint16_t min_rev, max_rev;
    uint32_t secure_version;
    bool allow_downgrade;
    uint8_t signature[FLEET_SIG_MAX];
    size_t signature_len;
} fleet_manifest_t;

/* What the dongle is and what it accepts. */
typedef struct {
    const char *chip;            /* "esp32s3" | "esp32p4" | "posix-sim" */
    uint16_t chip_revision;      /* major*100 + minor */
    const char *running_version; /* SemVer of the running firmware */
    uint32_t min_secure_version; /* anti-rollback floor (eFuse on the chip) */
    const uint8_t *pubkey;       /* PEM (NUL included in pubkey_len) or DER */
    size_t pubkey_len;
    uint64_t slot_capacity;
} fleet_ota_policy_t;

/* Parse and validate every field's type and range. Unknown properties are
 * ignored (forward compatibility). FLEET_OK or FLEET_ERR_INVALID + reason. */
int fleet_manifest_parse(const char *json, size_t len, fleet_manifest_t *out,
                         char *reason, size_t reason_len);

/* Canonical signed string of m into buf; returns its length, or 0 if cap is
 * too small (256 bytes always suffice). */
size_t fleet_manifest_signed_string(const fleet_manifest_t *m, char *buf, size_t cap);

/* The chip id a chip name implies; 0xFFFF for an unknown name. */
uint16_t fleet_chip_id_for(const char *chip);

/* Signature first (nothing else of an unsigned manifest is trusted), then
 * chip, revision, version, secure_version and size. FLEET_OK, or
 * FLEET_ERR_REFUSED + reason. */
int fleet_manifest_check(const fleet_manifest_t *m, const fleet_ota_policy_t *p,
                         char *reason, size_t reason_len);

/* ECDSA P-256 / SHA-256 signature check of msg with a PEM or DER public key.
 * FLEET_OK, FLEET_ERR_REFUSED (does not verify) or FLEET_ERR_INVALID (the key
 * is unusable or not P-256). */
int fleet_sig_verify(const uint8_t *pubkey, size_t pubkey_len, const uint8_t *msg, size_t msg_len,
                     const uint8_t *sig, size_t sig_len);

#endif /* FLEET_AGENT_MANIFEST_H */
