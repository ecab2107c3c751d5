/* clock_log.c - monotonic clock and stderr log for the agent on Linux. */
#include <stdio.h>
#include <time.h>

#include "agent_posix.h"

static uint64_t now_ms(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

const fleet_clock_ops_t fleet_posix_clock_ops = {.now_ms = now_ms};

static void log_write(void *ctx, fleet_log_level_t level, const char *msg)
{
    static const char *const tags[] = {"E", "W", "I", "D"};
    const fleet_stderr_log_t *lg = ctx;
    if (lg && level > lg->level) return;
    fprintf(stderr, "%s %s%s%s\n", (unsigned)level < 4 ? tags[level] : "?",
            lg && lg->prefix ? lg->prefix : "", lg && lg->prefix ? ": " : "", msg);
}

const fleet_log_ops_t fleet_stderr_log_ops = {.write = log_write};
