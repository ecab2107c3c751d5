/*
 * sys_port.h - clock, log and lock contracts the USB/IP core calls.
 *
 * Small ops structs with a context pointer so several server instances (one
 * per simulated dongle) can share a process.
 */
#ifndef USBIP_PORT_SYS_PORT_H
#define USBIP_PORT_SYS_PORT_H

#include <stdarg.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint64_t (*now_us)(void *ctx);    /* monotonic */
    int64_t (*unix_time)(void *ctx);  /* wall clock seconds, for grant expiry; 0 if unknown */
    void *ctx;
} usbip_clock_t;

typedef enum {
    USBIP_LOG_ERROR = 0,
    USBIP_LOG_WARN = 1,
    USBIP_LOG_INFO = 2,
    USBIP_LOG_DEBUG = 3,
} usbip_log_level_t;

typedef struct {
    /* tag names the server instance (usbip_server_config_t.tag). */
    void (*vlog)(void *ctx, usbip_log_level_t level, const char *tag, const char *fmt, va_list ap);
    void *ctx;
} usbip_log_t;

/* Optional. The core is single-threaded by contract (see usb_host_port.h):
 * every entry point and every port upcall on one thread. A port that must
 * call the server from several threads supplies a lock; the core takes it
 * around every public entry point and every upcall (non-recursively). */
typedef struct {
    void (*lock)(void *ctx);
    void (*unlock)(void *ctx);
    void *ctx;
} usbip_lock_t;

#ifdef __cplusplus
}
#endif
#endif /* USBIP_PORT_SYS_PORT_H */
