/*
 * port/mdns.h - DNS-SD advertisement of a dongle (_usbip._tcp).
 *
 * The agent describes its service; the port announces it, answers queries
 * and, when the TXT changes (ndev after a hot-plug), announces again. One
 * port instance may serve many dongles (the posix responder serves every
 * simulated dongle of the process), so every call names the instance.
 * esp32: the espressif/mdns component; posix: mdns_responder.c.
 */
#ifndef FLEET_AGENT_PORT_MDNS_H
#define FLEET_AGENT_PORT_MDNS_H

#include <stdint.h>

typedef struct {
    const char *instance;    /* the dongle id: "esp-a1b2c3d4e5f6" */
    const char *ip;          /* IPv4 the service listens on */
    uint16_t port;           /* 3240 */
    const char *fw, *chip;
    unsigned rev, ndev;
} fleet_mdns_service_t;

typedef struct {
    /* Add or update (same instance); announces. FLEET_OK or an error. */
    int (*publish)(void *ctx, const fleet_mdns_service_t *svc);
    /* Goodbye (TTL 0) and forget the instance. */
    void (*withdraw)(void *ctx, const char *instance);
} fleet_mdns_ops_t;

#endif /* FLEET_AGENT_PORT_MDNS_H */
