/*
 * port/clock.h - time as the agent needs it (ops table + context).
 *
 * Monotonic milliseconds drive timeouts (self-test deadline); the port must
 * never step it backwards. esp32: esp_timer_get_time()/1000; posix:
 * CLOCK_MONOTONIC.
 */
#ifndef FLEET_AGENT_PORT_CLOCK_H
#define FLEET_AGENT_PORT_CLOCK_H

#include <stdint.h>

typedef struct {
    uint64_t (*now_ms)(void *ctx);
} fleet_clock_ops_t;

#endif /* FLEET_AGENT_PORT_CLOCK_H */
