/*
 * cdc_acm.c - CDC-ACM serial port that loops every byte back.
 *
 * Device class EF/02/01 with an interface association over
 *   interface 0: communication 02/02/01 (Header, Call Management, ACM,
 *                Union functional descriptors), notification interrupt IN 0x82;
 *   interface 1: data 0A/00/00, bulk OUT 0x01 and bulk IN 0x81.
 * Bytes written to 0x01 come back on 0x81 through a bounded FIFO (4 KiB).
 * When the FIFO cannot take a whole packet the OUT packet is NAKed: the
 * real flow control a USB serial adapter applies. An IN transfer that ended
 * on a full packet with the FIFO empty gets a ZLP so the host's read
 * completes instead of waiting for more.
 *
 * Class requests: SET/GET_LINE_CODING (validated), SET_CONTROL_LINE_STATE
 * (raising DTR queues a SERIAL_STATE notification with DCD and DSR set, as
 * a modem answering would), SEND_BREAK.
 *
 * Options: speed=full|high, serial=. Command "stats".
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

#define EP_OUT 0x01
#define EP_IN 0x81
#define EP_NOTIFY 0x82
#define NOTIFY_MPS 16
#define FIFO_SIZE 4096

enum { SET_LINE_CODING = 0x20, GET_LINE_CODING = 0x21, SET_CONTROL_LINE_STATE = 0x22,
       SEND_BREAK = 0x23 };
enum { SERIAL_STATE = 0x20 };

typedef struct {
    vdev_base_t base;
    uint16_t mps;
    uint8_t fifo[FIFO_SIZE];
    size_t head, count;
    bool zlp_due;            /* last IN packet was full and nothing followed */
    uint8_t line_coding[7];  /* dwDTERate, bCharFormat, bParityType, bDataBits */
    uint16_t line_state;     /* bit 0 DTR, bit 1 RTS */
    bool notify_pending;
    uint16_t serial_state;
    uint64_t bytes_looped, out_naks, notifications;
} acm_t;

static void build_config(desc_builder_t *b, vdev_speed_t speed, const void *model)
{
    (void)model;
    uint16_t mps = vdev_bulk_mps(speed);
    static const uint8_t header[] = {0x00, 0x10, 0x01};  /* subtype Header, bcdCDC 1.10 */
    static const uint8_t call_mgmt[] = {0x01, 0x00, 0x01}; /* no call management, data intf 1 */
    static const uint8_t acm[] = {0x02, 0x02};           /* line coding + serial state */
    static const uint8_t uni[] = {0x06, 0x00, 0x01};     /* Union: control 0, data 1 */
    desc_iad(b, 0, 2, 0x02, 0x02, 0x01, 0);
    desc_interface(b, 0, 0, 1, 0x02, 0x02, 0x01, 0);
    desc_class(b, DESC_CS_INTERFACE, header, sizeof header);
    desc_class(b, DESC_CS_INTERFACE, call_mgmt, sizeof call_mgmt);
    desc_class(b, DESC_CS_INTERFACE, acm, sizeof acm);
    desc_class(b, DESC_CS_INTERFACE, uni, sizeof uni);
    desc_endpoint(b, EP_NOTIFY, EP_INTERRUPT, NOTIFY_MPS, vdev_interval_ms(speed, 16));
    desc_interface(b, 1, 0, 2, 0x0a, 0x00, 0x00, 0);
    desc_endpoint(b, EP_OUT, EP_BULK, mps, 0);
    desc_endpoint(b, EP_IN, EP_BULK, mps, 0);
}

static const vdev_identity_t identity = {
    .model = "cdc-acm",
    .pid = VDEV_PID_CDC_ACM,
    .product = "fleet Virtual Serial",
    .device_class = 0xef, /* miscellaneous: interface association */
    .device_subclass = 0x02,
    .device_protocol = 0x01,
    .max_power_ma = 100,
    .build_config = build_config,
};

static int acm_out(vdev_t *dev, uint8_t ep, const uint8_t *data, size_t len)
{
    acm_t *a = (acm_t *)dev;
    if (ep != EP_OUT || vdev_is_halted(&a->base, ep))
        return VDEV_STALL;
    if (len > FIFO_SIZE - a->count) {
        a->out_naks++;
        return VDEV_NAK;
    }
    for (size_t i = 0; i < len; i++)
        a->fifo[(a->head + a->count + i) % FIFO_SIZE] = data[i];
    a->count += len;
    if (len)
        vdev_wake(dev, EP_IN, 0);
    return 0;
}

static int acm_in(vdev_t *dev, uint8_t ep, uint8_t *buf, size_t mps)
{
    acm_t *a = (acm_t *)dev;
    if (vdev_is_halted(&a->base, ep))
        return VDEV_STALL;
    if (ep == EP_NOTIFY) {
        if (!a->notify_pending || mps < 10)
            return VDEV_NAK;
        static const uint8_t hdr[8] = {0xa1, SERIAL_STATE, 0, 0, 0, 0, 2, 0};
        memcpy(buf, hdr, sizeof hdr);
        desc_put16(buf + 8, a->serial_state);
        a->notify_pending = false;
        a->notifications++;
        return 10;
    }
    if (ep != EP_IN)
        return VDEV_STALL;
    if (mps > a->mps)
        mps = a->mps;
    if (a->count == 0) {
        if (a->zlp_due) {
            a->zlp_due = false;
            return 0;
        }
        return VDEV_NAK;
    }
    size_t n = a->count < mps ? a->count : mps;
    for (size_t i = 0; i < n; i++)
        buf[i] = a->fifo[(a->head + i) % FIFO_SIZE];
    a->head = (a->head + n) % FIFO_SIZE;
    a->count -= n;
    a->bytes_looped += n;
    a->zlp_due = n == mps && a->count == 0;
    if (a->zlp_due)
        vdev_wake(dev, EP_IN, 0);
    return (int)n;
}

static bool line_coding_valid(const uint8_t *lc)
{
    uint32_t rate = (uint32_t)lc[0] | (uint32_t)lc[1] << 8 | (uint32_t)lc[2] << 16 |
                    (uint32_t)lc[3] << 24;
    return rate != 0 && lc[4] <= 2 && lc[5] <= 4 &&
           (lc[6] == 5 || lc[6] == 6 || lc[6] == 7 || lc[6] == 8 || lc[6] == 16);
}

static int acm_control(vdev_t *dev, const vdev_setup_t *s, uint8_t *data)
{
    acm_t *a = (acm_t *)dev;
    int r;
    if (vdev_base_get_descriptor(&a->base, s, data, &r))
        return r;
    if (s->wIndex != 0) /* class requests go to the communication interface */
        return VDEV_STALL;
    if (s->bmRequestType == 0xa1 && s->bRequest == GET_LINE_CODING)
        return s->wLength >= 1 ? vdev_reply(s, data, a->line_coding, sizeof a->line_coding)
                               : VDEV_STALL;
    if (s->bmRequestType != 0x21)
        return VDEV_STALL;
    switch (s->bRequest) {
    case SET_LINE_CODING:
        if (s->wLength != 7 || !line_coding_valid(data))
            return VDEV_STALL;
        memcpy(a->line_coding, data, 7);
        return 0;
    case SET_CONTROL_LINE_STATE: {
        if (s->wLength != 0 || s->wValue > 3)
            return VDEV_STALL;
        bool dtr_rose = (s->wValue & 1) && !(a->line_state & 1);
        bool dtr_fell = !(s->wValue & 1) && (a->line_state & 1);
        a->line_state = s->wValue;
        if (dtr_rose || dtr_fell) {
            a->serial_state = dtr_rose ? 0x03 : 0x00; /* bRxCarrier (DCD) | bTxCarrier (DSR) */
            a->notify_pending = true;
            vdev_wake(dev, EP_NOTIFY, 0);
        }
        return 0;
    }
    case SEND_BREAK:
        return s->wLength == 0 ? 0 : VDEV_STALL;
    default:
        return VDEV_STALL;
    }
}

static void acm_reset_endpoint(vdev_t *dev, uint8_t ep)
{
    acm_t *a = (acm_t *)dev;
    vdev_unhalt(&a->base, ep);
    if (ep == 0xff || ep == EP_IN)
        a->zlp_due = false;
}

static int acm_command(vdev_t *dev, const char *cmd, char *reply, size_t len)
{
    acm_t *a = (acm_t *)dev;
    if (strcmp(cmd, "stats") != 0) {
        vdev_set_err(reply, len, "unknown command '%s' for cdc-acm (expected: stats)", cmd);
        return -1;
    }
    uint32_t rate = (uint32_t)a->line_coding[0] | (uint32_t)a->line_coding[1] << 8 |
                    (uint32_t)a->line_coding[2] << 16 | (uint32_t)a->line_coding[3] << 24;
    vdev_set_err(reply, len,
                 "{\"bytes_looped\":%" PRIu64 ",\"fifo_used\":%zu,\"out_naks\":%" PRIu64
                 ",\"baud\":%" PRIu32 ",\"dtr\":%u,\"rts\":%u,\"notifications\":%" PRIu64 "}",
                 a->bytes_looped, a->count, a->out_naks, rate, a->line_state & 1u,
                 (a->line_state >> 1) & 1u, a->notifications);
    return 0;
}

static void acm_destroy(vdev_t *dev)
{
    acm_t *a = (acm_t *)dev;
    vdev_base_release(&a->base);
    free(a);
}

static const vdev_ops_t acm_ops = {
    .control = acm_control,
    .out_packet = acm_out,
    .in_packet = acm_in,
    .reset_endpoint = acm_reset_endpoint,
    .command = acm_command,
    .destroy = acm_destroy,
};

vdev_t *vdev_cdc_acm_create(const vdev_spec_t *spec, char *err, size_t err_len)
{
    static const char *const allowed[] = {"speed", "serial", NULL};
    vdev_speed_t speed;
    if (vdev_opts_check(spec, allowed, err, err_len) != 0 ||
        vdev_opt_speed(spec, VDEV_SPEED_FULL, false, true, &speed, err, err_len) != 0)
        return NULL;
    acm_t *a = calloc(1, sizeof *a);
    if (!a) {
        vdev_set_err(err, err_len, "cdc-acm: out of memory");
        return NULL;
    }
    if (vdev_opt_serial(spec, "ACM", a->base.serial, err, err_len) != 0 ||
        vdev_base_init(&a->base, &acm_ops, &identity, speed, a->base.serial, a, err, err_len) != 0) {
        free(a);
        return NULL;
    }
    a->mps = vdev_bulk_mps(speed);
    static const uint8_t default_coding[7] = {0x00, 0xc2, 0x01, 0x00, 0, 0, 8}; /* 115200 8N1 */
    memcpy(a->line_coding, default_coding, sizeof default_coding);
    return &a->base.dev;
}
