/*
 * desc.c - descriptor builder (see desc.h).
 */
#include "desc.h"

#include <stdlib.h>
#include <string.h>

void desc_device_encode(const desc_device_t *d, uint8_t out[18])
{
    out[0] = 18;
    out[1] = DESC_DEVICE;
    desc_put16(out + 2, d->bcd_usb);
    out[4] = d->device_class;
    out[5] = d->device_subclass;
    out[6] = d->device_protocol;
    out[7] = d->mps0;
    desc_put16(out + 8, d->vid);
    desc_put16(out + 10, d->pid);
    desc_put16(out + 12, d->bcd_device);
    out[14] = d->i_manufacturer;
    out[15] = d->i_product;
    out[16] = d->i_serial;
    out[17] = 1; /* one configuration: ESP-IDF cannot switch configurations anyway */
}

void desc_qualifier_encode(const desc_device_t *d, uint8_t mps0_other, uint8_t out[10])
{
    out[0] = 10;
    out[1] = DESC_DEVICE_QUALIFIER;
    desc_put16(out + 2, d->bcd_usb);
    out[4] = d->device_class;
    out[5] = d->device_subclass;
    out[6] = d->device_protocol;
    out[7] = mps0_other;
    out[8] = 1;
    out[9] = 0;
}

static uint8_t *reserve(desc_builder_t *b, size_t n)
{
    if (b->overflow || b->len + n > sizeof b->buf) {
        b->overflow = true;
        return NULL;
    }
    uint8_t *p = b->buf + b->len;
    b->len += n;
    return p;
}

void desc_config_begin(desc_builder_t *b, uint8_t type, uint8_t attributes, uint8_t max_power_ma)
{
    memset(b, 0, sizeof *b);
    uint8_t *p = reserve(b, 9);
    p[0] = 9;
    p[1] = type;
    /* wTotalLength and bNumInterfaces are patched by desc_config_finish */
    p[5] = 1; /* bConfigurationValue */
    p[6] = 0;
    p[7] = (uint8_t)(0x80 | attributes); /* bit 7 is reserved-set in USB 2.0 */
    p[8] = (uint8_t)(max_power_ma / 2);
}

void desc_iad(desc_builder_t *b, uint8_t first_intf, uint8_t count, uint8_t cls, uint8_t sub,
              uint8_t proto, uint8_t i_function)
{
    uint8_t *p = reserve(b, 8);
    if (!p)
        return;
    p[0] = 8;
    p[1] = DESC_INTERFACE_ASSOCIATION;
    p[2] = first_intf;
    p[3] = count;
    p[4] = cls;
    p[5] = sub;
    p[6] = proto;
    p[7] = i_function;
}

void desc_interface(desc_builder_t *b, uint8_t number, uint8_t alt, uint8_t num_endpoints,
                    uint8_t cls, uint8_t sub, uint8_t proto, uint8_t i_interface)
{
    uint8_t *p = reserve(b, 9);
    if (!p)
        return;
    p[0] = 9;
    p[1] = DESC_INTERFACE;
    p[2] = number;
    p[3] = alt;
    p[4] = num_endpoints;
    p[5] = cls;
    p[6] = sub;
    p[7] = proto;
    p[8] = i_interface;
    if (number + 1 > b->max_intf)
        b->max_intf = (uint8_t)(number + 1);
}

void desc_endpoint(desc_builder_t *b, uint8_t address, uint8_t type, uint16_t mps, uint8_t interval)
{
    uint8_t *p = reserve(b, 7);
    if (!p)
        return;
    p[0] = 7;
    p[1] = DESC_ENDPOINT;
    p[2] = address;
    p[3] = type;
    desc_put16(p + 4, mps);
    p[6] = interval;
}

void desc_class(desc_builder_t *b, uint8_t type, const uint8_t *body, size_t body_len)
{
    if (body_len > 253) {
        b->overflow = true;
        return;
    }
    uint8_t *p = reserve(b, body_len + 2);
    if (!p)
        return;
    p[0] = (uint8_t)(body_len + 2);
    p[1] = type;
    memcpy(p + 2, body, body_len);
}

uint8_t *desc_config_finish(desc_builder_t *b, size_t *len)
{
    if (b->overflow || b->len < 9)
        return NULL;
    desc_put16(b->buf + 2, (uint16_t)b->len);
    b->buf[4] = b->max_intf;
    uint8_t *copy = malloc(b->len);
    if (!copy)
        return NULL;
    memcpy(copy, b->buf, b->len);
    *len = b->len;
    return copy;
}

uint8_t *desc_string_new(const char *ascii)
{
    size_t n = strlen(ascii);
    if (n > 126)
        n = 126; /* bLength is one byte: 2 + 2 * 126 = 254 */
    uint8_t *d = malloc(2 + 2 * n);
    if (!d)
        return NULL;
    d[0] = (uint8_t)(2 + 2 * n);
    d[1] = DESC_STRING;
    for (size_t i = 0; i < n; i++) {
        d[2 + 2 * i] = (uint8_t)ascii[i];
        d[3 + 2 * i] = 0;
    }
    return d;
}

uint8_t *desc_langids_new(void)
{
    uint8_t *d = malloc(4);
    if (!d)
        return NULL;
    d[0] = 4;
    d[1] = DESC_STRING;
    desc_put16(d + 2, 0x0409);
    return d;
}
