/*
 * model.h - what every device model shares (private to src/devices).
 *
 *  - option helpers (spec.c): each value is validated, and every rejection
 *    names the option and the accepted form, because these messages travel
 *    back to a person typing "plug msc:size=..." on the control channel;
 *  - vdev_base_t (base.c): identity, descriptors at the chosen speed, the
 *    device_qualifier / other_speed answers, string table, halt bookkeeping.
 */
#ifndef VDEV_MODEL_H
#define VDEV_MODEL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "desc.h"
#include "vdev/vdev.h"

#if defined(__GNUC__)
#define VDEV_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define VDEV_PRINTF(f, a)
#endif

/* ---- errors --------------------------------------------------------------- */

void vdev_set_err(char *err, size_t err_len, const char *fmt, ...) VDEV_PRINTF(3, 4);

/* ---- options (spec.c) ----------------------------------------------------- */

/* Value of `key`, or NULL when absent. */
const char *vdev_opt(const vdev_spec_t *spec, const char *key);
/* Every key must be in `allowed` (NULL-terminated) or be "port" (consumed by
 * fleet-dongle / the vhc, accepted and ignored here). */
int vdev_opts_check(const vdev_spec_t *spec, const char *const *allowed, char *err, size_t err_len);
/* Sizes: digits with an optional K, M, G or T suffix (binary multiples). */
int vdev_opt_size(const vdev_spec_t *spec, const char *key, uint64_t def, uint64_t min,
                  uint64_t max, uint64_t multiple_of, uint64_t *out, char *err, size_t err_len);
int vdev_opt_bool(const vdev_spec_t *spec, const char *key, bool def, bool *out, char *err,
                  size_t err_len);
int vdev_opt_uint(const vdev_spec_t *spec, const char *key, uint32_t def, uint32_t min,
                  uint32_t max, uint32_t *out, char *err, size_t err_len);
/* speed=low|full|high restricted to the speeds the model can run at. */
int vdev_opt_speed(const vdev_spec_t *spec, vdev_speed_t def, bool allow_low, bool allow_high,
                   vdev_speed_t *out, char *err, size_t err_len);
/* serial=, or the documented default (see spec.c). out holds 33 bytes. */
int vdev_opt_serial(const vdev_spec_t *spec, const char *prefix, char out[33], char *err,
                    size_t err_len);

/* ---- identity ------------------------------------------------------------- */

#define VDEV_VID 0x1209 /* pid.codes */
enum {
    VDEV_PID_MSC = 0x0001,
    VDEV_PID_HID_KEYBOARD = 0x0002,
    VDEV_PID_CDC_ACM = 0x0003,
    VDEV_PID_PROBE = 0x0004,
    VDEV_PID_HUB = 0x0005,
};

/* String indices every model uses. */
enum { STR_LANGIDS = 0, STR_MANUFACTURER = 1, STR_PRODUCT = 2, STR_SERIAL = 3, STR_INTERFACE = 4 };

/* Builds the configuration descriptor at `speed` into `b` (already begun
 * by the base with `type` = configuration or other-speed configuration). */
typedef void (*vdev_config_builder_t)(desc_builder_t *b, vdev_speed_t speed, const void *model);

typedef struct {
    const char *model;       /* "msc", ... */
    uint16_t pid;
    const char *product;
    const char *interface;   /* optional interface string (index 4) */
    uint8_t device_class, device_subclass, device_protocol;
    uint8_t attributes;      /* bmAttributes besides bit 7 */
    uint8_t max_power_ma;
    vdev_config_builder_t build_config;
} vdev_identity_t;

#define VDEV_MAX_STRINGS 5
#define VDEV_MAX_EP 4

/* First member of every model: a vdev_t that the vhc sees, plus the
 * descriptor storage it points to. */
typedef struct {
    vdev_t dev;
    uint8_t device_desc[18];
    uint8_t qualifier[10];
    uint8_t *config;
    size_t config_len;
    uint8_t *other_speed;    /* High-Speed devices only: the Full-Speed configuration */
    size_t other_speed_len;
    uint8_t *string_store[VDEV_MAX_STRINGS];
    const uint8_t *string_ptrs[VDEV_MAX_STRINGS];
    char serial[33];
    /* Endpoint halt: a real device keeps STALLing until CLEAR_FEATURE(HALT)
     * (reset_endpoint), so the flag lives with the device, not the host. */
    uint8_t halt_eps[VDEV_MAX_EP];
    int num_halted;
} vdev_base_t;

int vdev_base_init(vdev_base_t *base, const vdev_ops_t *ops, const vdev_identity_t *id,
                   vdev_speed_t speed, const char *serial, const void *model, char *err,
                   size_t err_len);
void vdev_base_release(vdev_base_t *base);

/* Standard GET_DESCRIPTOR requests, including device_qualifier and
 * other_speed_configuration which the vhc forwards (STALL on Full/Low-Speed
 * devices, as USB 2.0 9.6.2 requires). Returns true if the request was a
 * standard GET_DESCRIPTOR; *result is the byte count or VDEV_STALL. */
bool vdev_base_get_descriptor(vdev_base_t *base, const vdev_setup_t *s, uint8_t *data,
                              int *result);
/* Copy min(len, wLength) bytes of a descriptor/response into data. */
int vdev_reply(const vdev_setup_t *s, uint8_t *data, const void *src, size_t len);

/* Bulk MPS at a speed: 64 at Full-Speed, 512 at High-Speed. */
uint16_t vdev_bulk_mps(vdev_speed_t speed);
/* Interrupt bInterval meaning `ms` milliseconds at `speed`
 * (frames at FS/LS, 2^(n-1) micro-frames at HS). */
uint8_t vdev_interval_ms(vdev_speed_t speed, unsigned ms);

void vdev_halt(vdev_base_t *base, uint8_t ep);
bool vdev_is_halted(const vdev_base_t *base, uint8_t ep);
/* Clears the halt on one endpoint (0xff = all). */
void vdev_unhalt(vdev_base_t *base, uint8_t ep);

/* Ask the host to poll `ep` again after delay_ns (no-op while unplugged). */
void vdev_wake(vdev_t *dev, uint8_t ep, uint64_t delay_ns);
uint64_t vdev_now_ns(const vdev_t *dev);

#endif /* VDEV_MODEL_H */
