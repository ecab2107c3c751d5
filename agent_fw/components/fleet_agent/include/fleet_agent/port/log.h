/*
 * port/log.h - where agent log lines go (ops table + context).
 *
 * Optional everywhere: a NULL ops pointer silences the module. The message
 * is already formatted and has no trailing newline. esp32: ESP_LOGx with tag
 * "fleet"; posix: stderr.
 */
#ifndef FLEET_AGENT_PORT_LOG_H
#define FLEET_AGENT_PORT_LOG_H

typedef enum {
    FLEET_LOG_ERROR = 0,
    FLEET_LOG_WARN = 1,
    FLEET_LOG_INFO = 2,
    FLEET_LOG_DEBUG = 3,
} fleet_log_level_t;

typedef struct {
    void (*write)(void *ctx, fleet_log_level_t level, const char *msg);
} fleet_log_ops_t;

#endif /* FLEET_AGENT_PORT_LOG_H */
