/*
 * base.c - the part of every virtual device that is not model-specific:
 * descriptors at the chosen speed, strings, halt flags, host services.
 */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void vdev_set_err(char *err, size_t err_len, const char *fmt, ...)
{
    if (!err || err_len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

uint16_t vdev_bulk_mps(vdev_speed_t speed)
{
    return speed == VDEV_SPEED_HIGH ? 512 : 64;
}

uint8_t vdev_interval_ms(vdev_speed_t speed, unsigned ms)
{
    if (speed != VDEV_SPEED_HIGH)
        return (uint8_t)(ms > 255 ? 255 : ms);
    /* HS: period = 2^(bInterval-1) micro-frames of 125 us, bInterval 1..16 */
    unsigned uframes = ms * 8, n = 1;
    while (n < 16 && (1u << n) <= uframes)
        n++;
    return (uint8_t)n;
}

static uint8_t *build_config(const vdev_identity_t *id, vdev_speed_t speed, uint8_t type,
                             const void *model, size_t *len)
{
    desc_builder_t b;
    desc_config_begin(&b, type, id->attributes, id->max_power_ma);
    id->build_config(&b, speed, model);
    return desc_config_finish(&b, len);
}

int vdev_base_init(vdev_base_t *base, const vdev_ops_t *ops, const vdev_identity_t *id,
                   vdev_speed_t speed, const char *serial, const void *model, char *err,
                   size_t err_len)
{
    vdev_t *dev = &base->dev;
    dev->ops = ops;
    dev->speed = speed;
    snprintf(dev->model, sizeof dev->model, "%s", id->model);
    if (serial != base->serial)
        snprintf(base->serial, sizeof base->serial, "%s", serial);

    desc_device_t d = {
        .bcd_usb = 0x0200,
        .device_class = id->device_class,
        .device_subclass = id->device_subclass,
        .device_protocol = id->device_protocol,
        .mps0 = speed == VDEV_SPEED_LOW ? 8 : 64,
        .vid = VDEV_VID,
        .pid = id->pid,
        .bcd_device = 0x0100,
        .i_manufacturer = STR_MANUFACTURER,
        .i_product = STR_PRODUCT,
        .i_serial = STR_SERIAL,
    };
    desc_device_encode(&d, base->device_desc);
    dev->device_desc = base->device_desc;

    base->config = build_config(id, speed, DESC_CONFIGURATION, model, &base->config_len);
    if (speed == VDEV_SPEED_HIGH) {
        /* What the device would look like on a Full-Speed port. */
        desc_device_t fs = d;
        if (fs.device_class == 0x09)
            fs.device_protocol = 0; /* a hub has no TT at Full-Speed */
        desc_qualifier_encode(&fs, 64, base->qualifier);
        base->other_speed = build_config(id, VDEV_SPEED_FULL, DESC_OTHER_SPEED_CONFIGURATION,
                                         model, &base->other_speed_len);
    }
    base->string_store[STR_LANGIDS] = desc_langids_new();
    base->string_store[STR_MANUFACTURER] = desc_string_new("fleet");
    base->string_store[STR_PRODUCT] = desc_string_new(id->product);
    base->string_store[STR_SERIAL] = desc_string_new(base->serial);
    uint8_t n = 4;
    if (id->interface) {
        base->string_store[STR_INTERFACE] = desc_string_new(id->interface);
        n = 5;
    }
    bool ok = base->config && (speed != VDEV_SPEED_HIGH || base->other_speed);
    for (uint8_t i = 0; i < n; i++) {
        ok = ok && base->string_store[i];
        base->string_ptrs[i] = base->string_store[i];
    }
    if (!ok) {
        vdev_base_release(base);
        vdev_set_err(err, err_len, "%s: out of memory building descriptors", id->model);
        return -1;
    }
    dev->config_desc = base->config;
    dev->strings = base->string_ptrs;
    dev->num_strings = n;
    return 0;
}

void vdev_base_release(vdev_base_t *base)
{
    free(base->config);
    free(base->other_speed);
    base->config = base->other_speed = NULL;
    for (int i = 0; i < VDEV_MAX_STRINGS; i++) {
        free(base->string_store[i]);
        base->string_store[i] = NULL;
        base->string_ptrs[i] = NULL;
    }
}

int vdev_reply(const vdev_setup_t *s, uint8_t *data, const void *src, size_t len)
{
    if (len > s->wLength)
        len = s->wLength;
    memcpy(data, src, len);
    return (int)len;
}

bool vdev_base_get_descriptor(vdev_base_t *base, const vdev_setup_t *s, uint8_t *data, int *result)
{
    if (s->bmRequestType != 0x80 || s->bRequest != 0x06)
        return false;
    uint8_t type = (uint8_t)(s->wValue >> 8), index = (uint8_t)(s->wValue & 0xff);
    const vdev_t *dev = &base->dev;
    *result = VDEV_STALL;
    switch (type) {
    case DESC_DEVICE:
        *result = vdev_reply(s, data, base->device_desc, sizeof base->device_desc);
        break;
    case DESC_CONFIGURATION:
        if (index == 0)
            *result = vdev_reply(s, data, base->config, base->config_len);
        break;
    case DESC_STRING:
        if (index < dev->num_strings && dev->strings[index])
            *result = vdev_reply(s, data, dev->strings[index], dev->strings[index][0]);
        break;
    case DESC_DEVICE_QUALIFIER:
        if (dev->speed == VDEV_SPEED_HIGH)
            *result = vdev_reply(s, data, base->qualifier, sizeof base->qualifier);
        break;
    case DESC_OTHER_SPEED_CONFIGURATION:
        if (dev->speed == VDEV_SPEED_HIGH && index == 0)
            *result = vdev_reply(s, data, base->other_speed, base->other_speed_len);
        break;
    default:
        break;
    }
    return true;
}

void vdev_halt(vdev_base_t *base, uint8_t ep)
{
    if (vdev_is_halted(base, ep) || base->num_halted >= VDEV_MAX_EP)
        return;
    base->halt_eps[base->num_halted++] = ep;
}

bool vdev_is_halted(const vdev_base_t *base, uint8_t ep)
{
    for (int i = 0; i < base->num_halted; i++)
        if (base->halt_eps[i] == ep)
            return true;
    return false;
}

void vdev_unhalt(vdev_base_t *base, uint8_t ep)
{
    if (ep == 0xff) {
        base->num_halted = 0;
        return;
    }
    for (int i = 0; i < base->num_halted; i++) {
        if (base->halt_eps[i] == ep) {
            base->halt_eps[i] = base->halt_eps[--base->num_halted];
            return;
        }
    }
}

void vdev_wake(vdev_t *dev, uint8_t ep, uint64_t delay_ns)
{
    if (dev->host && dev->host->wake)
        dev->host->wake(dev->host->host_ctx, dev, ep, delay_ns);
}

uint64_t vdev_now_ns(const vdev_t *dev)
{
    if (dev->host && dev->host->now_ns)
        return dev->host->now_ns(dev->host->host_ctx);
    return 0;
}
