/* sig.c - ECDSA P-256 / SHA-256 signature check with mbedTLS. */
#include <string.h>

#include <mbedtls/pk.h>

#include "fleet_agent/err.h"
#include "fleet_agent/manifest.h"
#include "sha256_shim.h"

#define PEM_MAX 1024

int fleet_sig_verify(const uint8_t *pubkey, size_t pubkey_len, const uint8_t *msg, size_t msg_len,
                     const uint8_t *sig, size_t sig_len)
{
    if (!pubkey || pubkey_len == 0 || !sig || sig_len == 0) return FLEET_ERR_INVALID;
    uint8_t pem[PEM_MAX];
    /* mbedTLS wants PEM NUL-terminated with the NUL counted; accept it either way. */
    if (pubkey_len > 10 && memcmp(pubkey, "-----BEGIN", 10) == 0 && pubkey[pubkey_len - 1] != 0) {
        if (pubkey_len + 1 > sizeof pem) return FLEET_ERR_INVALID;
        memcpy(pem, pubkey, pubkey_len);
        pem[pubkey_len++] = 0;
        pubkey = pem;
    }
    uint8_t hash[32];
    mbedtls_sha256_context sh;
    mbedtls_sha256_init(&sh);
    int rc = fleet_sha256_starts(&sh);
    if (!rc) rc = fleet_sha256_update(&sh, msg, msg_len);
    if (!rc) rc = fleet_sha256_finish(&sh, hash);
    mbedtls_sha256_free(&sh);
    if (rc) return FLEET_ERR_INVALID;

    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    int ret = FLEET_ERR_INVALID;
    if (mbedtls_pk_parse_public_key(&pk, pubkey, pubkey_len) == 0 &&
        mbedtls_pk_can_do(&pk, MBEDTLS_PK_ECDSA) && mbedtls_pk_get_bitlen(&pk) == 256) {
        ret = mbedtls_pk_verify(&pk, MBEDTLS_MD_SHA256, hash, sizeof hash, sig, sig_len) == 0
                  ? FLEET_OK
                  : FLEET_ERR_REFUSED;
    }
    mbedtls_pk_free(&pk);
    return ret;
}
