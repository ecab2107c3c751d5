/*
 * port/sysinfo.h - what the agent reports about the machine it runs on.
 *
 * esp32: esp_read_mac(ESP_MAC_BASE), heap_caps_get_free_size (8-bit and
 * MALLOC_CAP_DMA), the netif's IPv4 and Wi-Fi RSSI; posix: a simulated MAC,
 * the dongle's loopback address and the process's memory divided by the
 * number of simulated dongles.
 */
#ifndef FLEET_AGENT_PORT_SYSINFO_H
#define FLEET_AGENT_PORT_SYSINFO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t free, min_free;
    bool have_dma;
    uint64_t dma_free;
} fleet_heap_info_t;

typedef struct {
    void (*base_mac)(void *ctx, uint8_t mac[6]);
    /* Current IP as text; FLEET_OK or FLEET_ERR_NOT_FOUND while offline. */
    int (*ip)(void *ctx, char *buf, size_t len);
    void (*heap)(void *ctx, fleet_heap_info_t *out);
    /* false: no radio (wired or simulated dongle) -> rssi null */
    bool (*rssi)(void *ctx, int *dbm);
    /* Wall clock, unix seconds (grant expiry is in unix seconds). */
    int64_t (*unix_now)(void *ctx);
} fleet_sysinfo_ops_t;

#endif /* FLEET_AGENT_PORT_SYSINFO_H */
