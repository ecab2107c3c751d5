/*
 * probe.c - debug probe in the style of CMSIS-DAP v2 (vendor interface
 * FF/00/00 whose string contains "CMSIS-DAP", which is how pyOCD and
 * OpenOCD find v2 probes), bulk OUT 0x01 for commands, bulk IN 0x81 for
 * responses.
 *
 * Framing. Standard DAP commands (0x00-0x7f) and the vendor echo 0x80 are
 * one packet each, as on real probes: the first packet is the whole
 * command, even when it fills the packet; a ZLP that directly follows a
 * full-packet command (a host using URB_ZERO_PACKET) is absorbed. The
 * vendor "bulk echo" 0x81 is a message of any length up to 1 + 64 KiB that
 * ends with a short packet or a ZLP, exactly the rule split transfers and
 * ZLP policies must respect; its reply is the same bytes, also ended by a
 * short packet or a ZLP.
 *
 * Timing. The IN endpoint NAKs until the response is ready: delay_ms=
 * after the command arrived (plus any DAP_Delay time), then the host is
 * woken. One command is processed at a time: OUT packets are NAKed until
 * the previous response has been read (DAP_Info packet count = 1).
 *
 * Supported: DAP_Info (0x00), DAP_HostStatus (0x01), DAP_Connect (0x02,
 * SWD only), DAP_Disconnect (0x03), DAP_TransferConfigure (0x04),
 * DAP_Delay (0x09), DAP_ResetTarget (0x0A), echo (0x80), bulk echo
 * (0x81); anything else gets DAP_Invalid (0xFF).
 *
 * Options: delay_ms= (0..10000), speed=full|high, serial=. Command "stats"
 * ("naks" counts IN polls answered with NAK).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

#define EP_OUT 0x01
#define EP_IN 0x81
#define MSG_MAX (1u + 65536u)

enum {
    DAP_INFO = 0x00,
    DAP_HOST_STATUS = 0x01,
    DAP_CONNECT = 0x02,
    DAP_DISCONNECT = 0x03,
    DAP_TRANSFER_CONFIGURE = 0x04,
    DAP_DELAY = 0x09,
    DAP_RESET_TARGET = 0x0a,
    DAP_VENDOR_ECHO = 0x80,
    DAP_VENDOR_BULK_ECHO = 0x81,
    DAP_INVALID = 0xff,
};
enum { DAP_OK = 0x00, DAP_ERROR = 0xff };

typedef enum { PROBE_RX, PROBE_BUSY, PROBE_TX } probe_state_t;

typedef struct {
    vdev_base_t base;
    uint16_t mps;
    uint32_t delay_ms;
    probe_state_t state;
    uint8_t *msg;          /* MSG_MAX bytes: the command being received */
    uint32_t msg_len;
    bool absorb_zlp;       /* previous command filled its packet */
    uint8_t *resp;         /* MSG_MAX bytes */
    uint32_t resp_len, resp_pos;
    bool resp_framed;      /* bulk echo: end with short packet or ZLP */
    uint64_t ready_ns;
    bool connected;
    uint64_t commands, naks, invalid, bytes_echoed;
} probe_t;

static void build_config(desc_builder_t *b, vdev_speed_t speed, const void *model)
{
    (void)model;
    uint16_t mps = vdev_bulk_mps(speed);
    desc_interface(b, 0, 0, 2, 0xff, 0x00, 0x00, STR_INTERFACE);
    desc_endpoint(b, EP_OUT, EP_BULK, mps, 0);
    desc_endpoint(b, EP_IN, EP_BULK, mps, 0);
}

static const vdev_identity_t identity = {
    .model = "probe",
    .pid = VDEV_PID_PROBE,
    .product = "fleet Virtual Probe (CMSIS-DAP)",
    .interface = "fleet CMSIS-DAP v2",
    .max_power_ma = 100,
    .build_config = build_config,
};

static uint32_t info_string(uint8_t *r, const char *s)
{
    size_t n = strlen(s) + 1; /* DAP strings include the NUL */
    r[1] = (uint8_t)n;
    memcpy(r + 2, s, n);
    return (uint32_t)(2 + n);
}

static uint32_t dap_info(probe_t *p, const uint8_t *cmd, uint32_t len, uint8_t *r)
{
    if (len < 2) {
        r[0] = DAP_INVALID;
        return 1;
    }
    r[1] = 0;
    switch (cmd[1]) {
    case 0x01: return info_string(r, "fleet");
    case 0x02: return info_string(r, "fleet Virtual Probe");
    case 0x03: return info_string(r, p->base.serial);
    case 0x04: return info_string(r, "2.1.1"); /* CMSIS-DAP protocol version */
    case 0x09: return info_string(r, "1.0.0"); /* product firmware version */
    case 0xf0: /* capabilities: SWD */
        r[1] = 1;
        r[2] = 0x01;
        return 3;
    case 0xfe: /* packet count */
        r[1] = 1;
        r[2] = 1;
        return 3;
    case 0xff: /* packet size */
        r[1] = 2;
        desc_put16(r + 2, p->mps);
        return 4;
    default: /* 0x05-0x08 target/board strings: none; unknown ids: empty */
        return 2;
    }
}

/* Executes the command in p->msg into p->resp; returns extra delay in ns. */
static uint64_t execute(probe_t *p)
{
    const uint8_t *c = p->msg;
    uint32_t len = p->msg_len;
    uint8_t *r = p->resp;
    uint64_t extra_ns = 0;
    p->commands++;
    p->resp_framed = false;
    r[0] = c[0];
    switch (c[0]) {
    case DAP_INFO:
        p->resp_len = dap_info(p, c, len, r);
        break;
    case DAP_HOST_STATUS:
        r[1] = len >= 3 && c[1] <= 1 ? DAP_OK : DAP_ERROR;
        p->resp_len = 2;
        break;
    case DAP_CONNECT: {
        uint8_t port = len >= 2 ? c[1] : 0xff;
        /* 0 = default (SWD), 1 = SWD; JTAG (2) is not implemented: 0 = failed */
        r[1] = port == 0 || port == 1 ? 1 : 0;
        p->connected = r[1] != 0;
        p->resp_len = 2;
        break;
    }
    case DAP_DISCONNECT:
        p->connected = false;
        r[1] = DAP_OK;
        p->resp_len = 2;
        break;
    case DAP_TRANSFER_CONFIGURE:
        r[1] = len >= 6 ? DAP_OK : DAP_ERROR;
        p->resp_len = 2;
        break;
    case DAP_DELAY:
        if (len >= 3) {
            extra_ns = (uint64_t)desc_get16(c + 1) * 1000u;
            r[1] = DAP_OK;
        } else {
            r[1] = DAP_ERROR;
        }
        p->resp_len = 2;
        break;
    case DAP_RESET_TARGET:
        r[1] = DAP_OK;
        r[2] = 0; /* no device-specific reset sequence */
        p->resp_len = 3;
        break;
    case DAP_VENDOR_ECHO:
    case DAP_VENDOR_BULK_ECHO:
        memcpy(r, c, len);
        p->resp_len = len;
        p->resp_framed = c[0] == DAP_VENDOR_BULK_ECHO;
        p->bytes_echoed += len;
        break;
    default:
        r[0] = DAP_INVALID;
        p->resp_len = 1;
        p->invalid++;
        break;
    }
    return extra_ns;
}

static void command_received(probe_t *p)
{
    uint64_t delay = (uint64_t)p->delay_ms * 1000000u + execute(p);
    p->resp_pos = 0;
    p->msg_len = 0;
    if (!p->base.dev.host) { /* not on a bus: nothing to wait for */
        p->state = PROBE_TX;
        return;
    }
    p->ready_ns = vdev_now_ns(&p->base.dev) + delay;
    p->state = PROBE_BUSY;
    vdev_wake(&p->base.dev, EP_IN, delay);
}

static int probe_out(vdev_t *dev, uint8_t ep, const uint8_t *data, size_t len)
{
    probe_t *p = (probe_t *)dev;
    if (ep != EP_OUT || vdev_is_halted(&p->base, ep))
        return VDEV_STALL;
    if (len == 0 && p->msg_len == 0 && p->absorb_zlp) {
        p->absorb_zlp = false; /* terminator of the previous full-packet command */
        return 0;
    }
    if (p->state != PROBE_RX)
        return VDEV_NAK; /* one command at a time */
    p->absorb_zlp = false;
    if (len == 0 && p->msg_len == 0)
        return 0; /* a stray ZLP carries no command */
    bool framed = p->msg_len > 0 ? p->msg[0] == DAP_VENDOR_BULK_ECHO
                                 : data[0] == DAP_VENDOR_BULK_ECHO;
    if (len > MSG_MAX - p->msg_len) {
        /* longer than any command we know: refuse loudly instead of truncating */
        p->msg_len = 0;
        p->invalid++;
        vdev_halt(&p->base, EP_OUT);
        return VDEV_STALL;
    }
    if (len)
        memcpy(p->msg + p->msg_len, data, len);
    p->msg_len += (uint32_t)len;
    if (framed && len == p->mps)
        return 0; /* more to come: the message ends with a short packet or ZLP */
    p->absorb_zlp = !framed && len == p->mps;
    command_received(p);
    return 0;
}

static int probe_in(vdev_t *dev, uint8_t ep, uint8_t *buf, size_t mps)
{
    probe_t *p = (probe_t *)dev;
    if (ep != EP_IN || vdev_is_halted(&p->base, ep))
        return VDEV_STALL;
    if (mps > p->mps)
        mps = p->mps;
    if (p->state == PROBE_BUSY && vdev_now_ns(dev) >= p->ready_ns)
        p->state = PROBE_TX;
    if (p->state != PROBE_TX) {
        p->naks++;
        return VDEV_NAK;
    }
    uint32_t n = p->resp_len - p->resp_pos;
    if (n > mps)
        n = (uint32_t)mps;
    memcpy(buf, p->resp + p->resp_pos, n);
    p->resp_pos += n;
    bool done = p->resp_pos == p->resp_len;
    /* a framed reply that ended on a full packet still owes its ZLP */
    if (done && !(p->resp_framed && n == mps)) {
        p->state = PROBE_RX;
        vdev_wake(dev, EP_OUT, 0);
    }
    return (int)n;
}

static int probe_control(vdev_t *dev, const vdev_setup_t *s, uint8_t *data)
{
    probe_t *p = (probe_t *)dev;
    int r;
    if (vdev_base_get_descriptor(&p->base, s, data, &r))
        return r;
    return VDEV_STALL;
}

static void probe_reset_endpoint(vdev_t *dev, uint8_t ep)
{
    probe_t *p = (probe_t *)dev;
    vdev_unhalt(&p->base, ep);
    if (ep == 0xff || ep == EP_OUT) { /* drop a half-received message */
        p->msg_len = 0;
        p->absorb_zlp = false;
    }
    if (ep == 0xff) {
        p->state = PROBE_RX;
        p->resp_len = p->resp_pos = 0;
    }
}

static int probe_command(vdev_t *dev, const char *cmd, char *reply, size_t len)
{
    probe_t *p = (probe_t *)dev;
    if (strcmp(cmd, "stats") != 0) {
        vdev_set_err(reply, len, "unknown command '%s' for probe (expected: stats)", cmd);
        return -1;
    }
    vdev_set_err(reply, len,
                 "{\"commands\":%" PRIu64 ",\"naks\":%" PRIu64 ",\"invalid\":%" PRIu64
                 ",\"bytes_echoed\":%" PRIu64 ",\"connected\":%s,\"delay_ms\":%" PRIu32 "}",
                 p->commands, p->naks, p->invalid, p->bytes_echoed,
                 p->connected ? "true" : "false", p->delay_ms);
    return 0;
}

static void probe_destroy(vdev_t *dev)
{
    probe_t *p = (probe_t *)dev;
    vdev_base_release(&p->base);
    free(p->msg);
    free(p->resp);
    free(p);
}

static const vdev_ops_t probe_ops = {
    .control = probe_control,
    .out_packet = probe_out,
    .in_packet = probe_in,
    .reset_endpoint = probe_reset_endpoint,
    .command = probe_command,
    .destroy = probe_destroy,
};

vdev_t *vdev_probe_create(const vdev_spec_t *spec, char *err, size_t err_len)
{
    static const char *const allowed[] = {"delay_ms", "speed", "serial", NULL};
    vdev_speed_t speed;
    uint32_t delay_ms;
    if (vdev_opts_check(spec, allowed, err, err_len) != 0 ||
        vdev_opt_uint(spec, "delay_ms", 0, 0, 10000, &delay_ms, err, err_len) != 0 ||
        vdev_opt_speed(spec, VDEV_SPEED_FULL, false, true, &speed, err, err_len) != 0)
        return NULL;
    probe_t *p = calloc(1, sizeof *p);
    if (p) {
        p->msg = malloc(MSG_MAX);
        p->resp = malloc(MSG_MAX);
    }
    if (!p || !p->msg || !p->resp) {
        if (p) {
            free(p->msg);
            free(p->resp);
        }
        free(p);
        vdev_set_err(err, err_len, "probe: out of memory");
        return NULL;
    }
    if (vdev_opt_serial(spec, "DAP", p->base.serial, err, err_len) != 0 ||
        vdev_base_init(&p->base, &probe_ops, &identity, speed, p->base.serial, p, err, err_len) != 0) {
        free(p->msg);
        free(p->resp);
        free(p);
        return NULL;
    }
    p->mps = vdev_bulk_mps(speed);
    p->delay_ms = delay_ms;
    p->state = PROBE_RX;
    return &p->base.dev;
}
