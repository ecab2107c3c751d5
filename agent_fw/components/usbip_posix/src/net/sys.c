#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4, TCP_USER_TIMEOUT, clock_gettime */
#endif
/* sys.c - clock and log for the posix port. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "usbip_posix/posix_port.h"

static uint64_t now_us(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int64_t unix_time(void *ctx)
{
    (void)ctx;
    return (int64_t)time(NULL);
}

usbip_clock_t posix_clock(void)
{
    return (usbip_clock_t){.now_us = now_us, .unix_time = unix_time, .ctx = NULL};
}

static const char *const k_names[] = {"error", "warn", "info", "debug"};

__attribute__((format(printf, 4, 0)))
static void vlog(void *ctx, usbip_log_level_t level, const char *tag, const char *fmt, va_list ap)
{
    const posix_log_t *cfg = ctx;
    if (cfg && level > cfg->max_level)
        return;
    char line[512];
    int n = snprintf(line, sizeof(line), "%s %s: ", k_names[level <= USBIP_LOG_DEBUG ? level : 3], tag);
    if (n < 0 || (size_t)n >= sizeof(line))
        n = 0;
    vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    /* one write per line so lines of several instances do not interleave */
    fprintf(stderr, "%s\n", line);
}

usbip_log_t posix_log(posix_log_t *cfg)
{
    return (usbip_log_t){.vlog = vlog, .ctx = cfg};
}

int posix_log_level_parse(const char *name, usbip_log_level_t *out)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, k_names[i]) == 0) {
            *out = (usbip_log_level_t)i;
            return 0;
        }
    return -1;
}
