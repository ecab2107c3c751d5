/*
 * desc.h - assemble USB descriptors from structured data (private to the
 * device models).
 *
 * Hand-counted byte arrays go stale the moment someone adds an endpoint;
 * the builder computes every bLength, wTotalLength and bNumInterfaces, so a
 * model only states what it has.
 */
#ifndef VDEV_DESC_H
#define VDEV_DESC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* USB 2.0 chapter 9 descriptor types used by the models. */
enum {
    DESC_DEVICE = 0x01,
    DESC_CONFIGURATION = 0x02,
    DESC_STRING = 0x03,
    DESC_INTERFACE = 0x04,
    DESC_ENDPOINT = 0x05,
    DESC_DEVICE_QUALIFIER = 0x06,
    DESC_OTHER_SPEED_CONFIGURATION = 0x07,
    DESC_INTERFACE_ASSOCIATION = 0x0b,
    DESC_HID = 0x21,
    DESC_HID_REPORT = 0x22,
    DESC_CS_INTERFACE = 0x24,
    DESC_HUB = 0x29,
};

enum { EP_CONTROL = 0, EP_ISOCHRONOUS = 1, EP_BULK = 2, EP_INTERRUPT = 3 };

/* Largest configuration any model builds; the builder refuses to overrun. */
#define DESC_CONFIG_MAX 256

typedef struct {
    uint16_t bcd_usb;
    uint8_t device_class, device_subclass, device_protocol;
    uint8_t mps0;
    uint16_t vid, pid, bcd_device;
    uint8_t i_manufacturer, i_product, i_serial;
} desc_device_t;

typedef struct {
    uint8_t buf[DESC_CONFIG_MAX];
    size_t len;
    bool overflow;
    uint8_t max_intf; /* highest bInterfaceNumber seen + 1 */
} desc_builder_t;

void desc_device_encode(const desc_device_t *d, uint8_t out[18]);
/* The device_qualifier describing the device at the *other* speed. */
void desc_qualifier_encode(const desc_device_t *d, uint8_t mps0_other, uint8_t out[10]);

/* type is DESC_CONFIGURATION or DESC_OTHER_SPEED_CONFIGURATION. */
void desc_config_begin(desc_builder_t *b, uint8_t type, uint8_t attributes, uint8_t max_power_ma);
void desc_iad(desc_builder_t *b, uint8_t first_intf, uint8_t count, uint8_t cls, uint8_t sub,
              uint8_t proto, uint8_t i_function);
void desc_interface(desc_builder_t *b, uint8_t number, uint8_t alt, uint8_t num_endpoints,
                    uint8_t cls, uint8_t sub, uint8_t proto, uint8_t i_interface);
void desc_endpoint(desc_builder_t *b, uint8_t address, uint8_t type, uint16_t mps,
                   uint8_t interval);
/* A class-specific descriptor: bLength and bDescriptorType are prepended. */
void desc_class(desc_builder_t *b, uint8_t type, const uint8_t *body, size_t body_len);
/* Patch wTotalLength and bNumInterfaces; returns a malloc'd copy (NULL on
 * overflow or out of memory). */
uint8_t *desc_config_finish(desc_builder_t *b, size_t *len);

/* String descriptor (UTF-16LE) from ASCII text; malloc'd. */
uint8_t *desc_string_new(const char *ascii);
/* String descriptor zero: the single language id 0x0409 (English, US). */
uint8_t *desc_langids_new(void);

static inline void desc_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xff);
    p[1] = (uint8_t)(v >> 8);
}

static inline uint16_t desc_get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

#endif /* VDEV_DESC_H */
