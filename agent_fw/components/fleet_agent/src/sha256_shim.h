/*
 * sha256_shim.h - one SHA-256 API over mbedTLS 2.28 (Debian 12, host build)
 * and 3.x (ESP-IDF): 2.28 spells the checked variants *_ret, 3.x dropped the
 * suffix. This is the only library-version #if in the agent.
 */
#ifndef FLEET_SHA256_SHIM_H
#define FLEET_SHA256_SHIM_H

#include <mbedtls/sha256.h>
#include <mbedtls/version.h>

#if MBEDTLS_VERSION_NUMBER < 0x03000000
#define fleet_sha256_starts(ctx) mbedtls_sha256_starts_ret((ctx), 0)
#define fleet_sha256_update(ctx, d, n) mbedtls_sha256_update_ret((ctx), (d), (n))
#define fleet_sha256_finish(ctx, out) mbedtls_sha256_finish_ret((ctx), (out))
#else
#define fleet_sha256_starts(ctx) mbedtls_sha256_starts((ctx), 0)
#define fleet_sha256_update(ctx, d, n) mbedtls_sha256_update((ctx), (d), (n))
#define fleet_sha256_finish(ctx, out) mbedtls_sha256_finish((ctx), (out))
#endif

#endif /* FLEET_SHA256_SHIM_H */
