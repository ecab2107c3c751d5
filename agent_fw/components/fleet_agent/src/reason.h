/* reason.h - printf into a caller's reason buffer (private to the agent). */
#ifndef FLEET_REASON_H
#define FLEET_REASON_H

#include <stddef.h>

/* Formats into reason (if non-NULL, len > 0), always NUL-terminated. */
void fleet_reason(char *reason, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#include "fleet_agent/port/log.h"

/* Format and hand one line to the log port (NULL ops = silent). */
void fleet_logf(const fleet_log_ops_t *ops, void *ctx, fleet_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
