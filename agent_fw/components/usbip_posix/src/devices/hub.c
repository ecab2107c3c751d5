/*
 * hub.c - USB 2.0 hub (class 09) with 1..7 downstream ports.
 *
 * The topology itself (what is plugged where, port status changes) lives
 * in the vhc, which consumes hubs the way ESP-IDF's hub driver does; this
 * model supplies the descriptors, a status-change interrupt endpoint that
 * has nothing to report, and minimal answers to the hub class requests
 * (USB 2.0 11.24) so a host that asks is not left without a reply.
 *
 * Options: ports= (1..7, default 4), speed=full|high (High-Speed = single
 * TT, bDeviceProtocol 1), serial=.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

#define EP_STATUS 0x81

enum { HUB_GET_STATUS = 0, HUB_CLEAR_FEATURE = 1, HUB_SET_FEATURE = 3, HUB_GET_DESCRIPTOR = 6 };
enum { PORT_POWER = 8 };

typedef struct {
    vdev_base_t base;
    uint8_t ports;
    uint8_t powered;   /* bit n = port n powered */
} hub_t;

static void build_config(desc_builder_t *b, vdev_speed_t speed, const void *model)
{
    const hub_t *h = model;
    /* status-change bitmap: bit 0 = hub, bit n = port n */
    uint16_t mps = (uint16_t)(1 + h->ports / 8);
    desc_interface(b, 0, 0, 1, 0x09, 0x00, 0x00, 0);
    desc_endpoint(b, EP_STATUS, EP_INTERRUPT, mps,
                  speed == VDEV_SPEED_HIGH ? 12 : 255); /* 256 ms, the usual hub period */
}

static const vdev_identity_t identity_template = {
    .model = "hub",
    .pid = VDEV_PID_HUB,
    .product = "fleet Virtual Hub",
    .device_class = 0x09,
    .attributes = 0x40, /* self-powered */
    .max_power_ma = 0,
    .build_config = build_config,
};

static int hub_descriptor(const hub_t *h, const vdev_setup_t *s, uint8_t *data)
{
    uint8_t d[9] = {0};
    d[0] = 9;
    d[1] = DESC_HUB;
    d[2] = h->ports;
    desc_put16(d + 3, 0x0009); /* individual power switching, individual over-current */
    d[5] = 50;                 /* bPwrOn2PwrGood: 100 ms */
    d[6] = 0;                  /* bHubContrCurrent */
    d[7] = 0x00;               /* DeviceRemovable: all removable (ports 1..7 in one byte) */
    d[8] = 0xff;               /* PortPwrCtrlMask, kept for USB 1.x compatibility */
    return vdev_reply(s, data, d, sizeof d);
}

static int hub_control(vdev_t *dev, const vdev_setup_t *s, uint8_t *data)
{
    hub_t *h = (hub_t *)dev;
    int r;
    if (vdev_base_get_descriptor(&h->base, s, data, &r))
        return r;
    uint16_t port = s->wIndex;
    bool port_ok = port >= 1 && port <= h->ports;
    switch (s->bmRequestType) {
    case 0xa0: /* to the hub, IN */
        if (s->bRequest == HUB_GET_DESCRIPTOR && (s->wValue >> 8) == DESC_HUB)
            return hub_descriptor(h, s, data);
        if (s->bRequest == HUB_GET_STATUS && s->wValue == 0 && s->wIndex == 0 && s->wLength == 4) {
            memset(data, 0, 4); /* local power good, no over-current, no change */
            return 4;
        }
        return VDEV_STALL;
    case 0xa3: /* to a port, IN */
        if (s->bRequest == HUB_GET_STATUS && port_ok && s->wValue == 0 && s->wLength == 4) {
            memset(data, 0, 4);
            if (h->powered & (1u << port))
                data[1] = 0x01; /* PORT_POWER; connection state is the vhc's business */
            return 4;
        }
        return VDEV_STALL;
    case 0x20: /* to the hub, OUT: C_HUB_LOCAL_POWER (0), C_HUB_OVER_CURRENT (1) */
        return (s->bRequest == HUB_CLEAR_FEATURE || s->bRequest == HUB_SET_FEATURE) &&
                       s->wValue <= 1 && s->wLength == 0
                   ? 0
                   : VDEV_STALL;
    case 0x23: /* to a port, OUT */
        if ((s->bRequest != HUB_CLEAR_FEATURE && s->bRequest != HUB_SET_FEATURE) || !port_ok ||
            s->wLength != 0 || s->wValue > 22)
            return VDEV_STALL;
        if (s->wValue == PORT_POWER) {
            if (s->bRequest == HUB_SET_FEATURE)
                h->powered = (uint8_t)(h->powered | (1u << port));
            else
                h->powered = (uint8_t)(h->powered & ~(1u << port));
        }
        return 0;
    default:
        return VDEV_STALL;
    }
}

static int hub_in(vdev_t *dev, uint8_t ep, uint8_t *buf, size_t mps)
{
    hub_t *h = (hub_t *)dev;
    (void)buf, (void)mps;
    if (ep != EP_STATUS || vdev_is_halted(&h->base, ep))
        return VDEV_STALL;
    return VDEV_NAK; /* port changes are reported by the vhc's topology, not here */
}

static int hub_out(vdev_t *dev, uint8_t ep, const uint8_t *data, size_t len)
{
    (void)dev, (void)ep, (void)data, (void)len;
    return VDEV_STALL;
}

static void hub_reset_endpoint(vdev_t *dev, uint8_t ep)
{
    vdev_unhalt(&((hub_t *)dev)->base, ep);
}

static void hub_destroy(vdev_t *dev)
{
    hub_t *h = (hub_t *)dev;
    vdev_base_release(&h->base);
    free(h);
}

static const vdev_ops_t hub_ops = {
    .control = hub_control,
    .out_packet = hub_out,
    .in_packet = hub_in,
    .reset_endpoint = hub_reset_endpoint,
    .destroy = hub_destroy,
};

vdev_t *vdev_hub_create(const vdev_spec_t *spec, char *err, size_t err_len)
{
    static const char *const allowed[] = {"ports", "speed", "serial", NULL};
    vdev_speed_t speed;
    uint32_t ports;
    if (vdev_opts_check(spec, allowed, err, err_len) != 0 ||
        vdev_opt_uint(spec, "ports", 4, 1, 7, &ports, err, err_len) != 0 ||
        vdev_opt_speed(spec, VDEV_SPEED_FULL, false, true, &speed, err, err_len) != 0)
        return NULL;
    hub_t *h = calloc(1, sizeof *h);
    if (!h) {
        vdev_set_err(err, err_len, "hub: out of memory");
        return NULL;
    }
    h->ports = (uint8_t)ports;
    vdev_identity_t id = identity_template;
    id.device_protocol = speed == VDEV_SPEED_HIGH ? 1 : 0; /* HS: single TT */
    if (vdev_opt_serial(spec, "HUB", h->base.serial, err, err_len) != 0 ||
        vdev_base_init(&h->base, &hub_ops, &id, speed, h->base.serial, h, err, err_len) != 0) {
        free(h);
        return NULL;
    }
    h->base.dev.is_hub = true;
    h->base.dev.hub_ports = h->ports;
    return &h->base.dev;
}
