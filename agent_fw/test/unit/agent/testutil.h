/*
 * testutil.h - helpers shared by the agent tests: temporary directories,
 * test-only signing keys (generated at run time with the openssl CLI), signed
 * manifests, posix-sim images, and the Range-capable HTTP test server.
 */
#ifndef AGENT_TESTUTIL_H
#define AGENT_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "fleet_agent/manifest.h"

/* mkdtemp under /tmp; tu_rmrf removes it again. */
void tu_tmpdir(char *out, size_t cap);
void tu_rmrf(const char *dir);

typedef struct {
    char dir[128];
    char priv_path[160];
    uint8_t pub[512]; /* PEM, NUL-terminated, pub_len counts the NUL */
    size_t pub_len;
} tu_key_t;

/* A fresh P-256 key pair (prime256v1) in its own temp dir. */
void tu_key_gen(tu_key_t *k);
void tu_key_free(tu_key_t *k);
/* DER ECDSA/SHA-256 signature of msg; returns its length. */
size_t tu_sign(const tu_key_t *k, const void *msg, size_t len, uint8_t *sig, size_t cap);

/* Fill a manifest for a posix-sim image and sign it with k. */
void tu_manifest_init(fleet_manifest_t *m, const char *version, const char *url,
                      const uint8_t *image, size_t image_len);
void tu_manifest_sign(fleet_manifest_t *m, const tu_key_t *k);
/* The manifest as the service would send it (all fields, signature base64). */
void tu_manifest_json(const fleet_manifest_t *m, char *out, size_t cap);

/* posix-sim image: 64-byte header + payload_len pseudo-random bytes (seeded). */
size_t tu_sim_image(uint8_t *out, size_t cap, const char *version, uint32_t secure_version,
                    size_t payload_len, uint32_t seed);
void tu_sha256(const void *data, size_t len, uint8_t out[32]);

/* Write bytes to dir/name. */
void tu_write_file(const char *dir, const char *name, const void *data, size_t len);

/* range_server.py serving dir on 127.0.0.1; its request log goes to log_path. */
typedef struct {
    pid_t pid;
    int port;
    char log_path[192];
} tu_server_t;
bool tu_server_start(tu_server_t *s, const char *dir);
void tu_server_stop(tu_server_t *s);
/* Number of logged requests whose line contains needle. */
int tu_server_count(const tu_server_t *s, const char *needle);

#endif
