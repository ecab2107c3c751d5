/*
 * port/kv.h - small durable records by name (ops table + context).
 *
 * Holds the applied config document, the OTA download journal and the
 * record of a staged update. Each save must be atomic: after a reset at any
 * moment a load returns either the old or the new value, never a mix.
 * esp32: one NVS blob per key in the "cfg" partition; posix: one file per
 * key, written to a temporary name, fsync'ed and renamed.
 *
 * Keys are 1..15 characters of [a-z0-9_] (NVS's key limit).
 */
#ifndef FLEET_AGENT_PORT_KV_H
#define FLEET_AGENT_PORT_KV_H

#include <stddef.h>

typedef struct {
    /* Copy the value into buf (at most cap bytes), set *len. Returns FLEET_OK,
     * FLEET_ERR_NOT_FOUND, FLEET_ERR_NO_MEM (value larger than cap; *len = its
     * size) or FLEET_ERR_IO. */
    int (*load)(void *ctx, const char *key, void *buf, size_t cap, size_t *len);
    /* Replace the value atomically. FLEET_OK or FLEET_ERR_IO. */
    int (*save)(void *ctx, const char *key, const void *data, size_t len);
    /* Remove the key; removing a missing key is FLEET_OK. */
    int (*erase)(void *ctx, const char *key);
} fleet_kv_ops_t;

#endif /* FLEET_AGENT_PORT_KV_H */
