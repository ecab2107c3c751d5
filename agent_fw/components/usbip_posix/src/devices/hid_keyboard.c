/*
 * hid_keyboard.c - HID boot keyboard (interface 03/01/01).
 *
 * Interrupt IN 0x81, MPS 8, every 10 ms; 8-byte input report (modifiers,
 * reserved, six key usages); 1-byte output report (LEDs) via SET_REPORT on
 * EP0. The interrupt endpoint NAKs while there is nothing new (idle rate 0
 * = report only on change); with SET_IDLE(n) the current report repeats
 * every n x 4 ms as HID 1.11 7.2.4 requires.
 *
 * Commands: "type <text>" queues a press and a release report per
 * character (letters, digits, space, punctuation of a US layout, shifted
 * ones with Left Shift; escapes \n = Enter, \t = Tab, \\ = backslash),
 * "press <usage-hex>..." presses up to six keys (E0-E7 = modifiers),
 * "release" releases all, "stats" reports counters. Queued reports wake
 * the host on EP 0x81.
 *
 * Options: speed=low|full (default full), serial=.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

#define EP_IN 0x81
#define REPORT_LEN 8
#define QUEUE_LEN 1024
#define MOD_LSHIFT 0x02

/* HID 1.11 appendix B.1: the boot keyboard report descriptor. */
static const uint8_t report_desc[] = {
    0x05, 0x01,       /* Usage Page (Generic Desktop) */
    0x09, 0x06,       /* Usage (Keyboard) */
    0xa1, 0x01,       /* Collection (Application) */
    0x05, 0x07,       /*   Usage Page (Key Codes) */
    0x19, 0xe0,       /*   Usage Minimum (224) */
    0x29, 0xe7,       /*   Usage Maximum (231) */
    0x15, 0x00,       /*   Logical Minimum (0) */
    0x25, 0x01,       /*   Logical Maximum (1) */
    0x75, 0x01,       /*   Report Size (1) */
    0x95, 0x08,       /*   Report Count (8) */
    0x81, 0x02,       /*   Input (Data, Variable, Absolute): modifiers */
    0x95, 0x01,       /*   Report Count (1) */
    0x75, 0x08,       /*   Report Size (8) */
    0x81, 0x01,       /*   Input (Constant): reserved byte */
    0x95, 0x05,       /*   Report Count (5) */
    0x75, 0x01,       /*   Report Size (1) */
    0x05, 0x08,       /*   Usage Page (LEDs) */
    0x19, 0x01,       /*   Usage Minimum (1) */
    0x29, 0x05,       /*   Usage Maximum (5) */
    0x91, 0x02,       /*   Output (Data, Variable, Absolute): LEDs */
    0x95, 0x01,       /*   Report Count (1) */
    0x75, 0x03,       /*   Report Size (3) */
    0x91, 0x01,       /*   Output (Constant): padding */
    0x95, 0x06,       /*   Report Count (6) */
    0x75, 0x08,       /*   Report Size (8) */
    0x15, 0x00,       /*   Logical Minimum (0) */
    0x25, 0x65,       /*   Logical Maximum (101) */
    0x05, 0x07,       /*   Usage Page (Key Codes) */
    0x19, 0x00,       /*   Usage Minimum (0) */
    0x29, 0x65,       /*   Usage Maximum (101) */
    0x81, 0x00,       /*   Input (Data, Array): key codes */
    0xc0,             /* End Collection */
};

typedef struct {
    vdev_base_t base;
    uint8_t hid_desc[9];
    uint8_t queue[QUEUE_LEN][REPORT_LEN];
    unsigned head, count;
    uint8_t current[REPORT_LEN]; /* last report the host received */
    uint8_t leds;
    uint8_t idle;                /* 4 ms units, 0 = only on change */
    uint8_t protocol;            /* 0 boot, 1 report */
    uint64_t last_sent_ns;
    uint64_t reports_sent, naks, set_reports;
} kbd_t;

static void fill_hid_desc(uint8_t d[9])
{
    d[0] = 9;
    d[1] = DESC_HID;
    desc_put16(d + 2, 0x0111); /* HID 1.11 */
    d[4] = 0;                  /* not localized */
    d[5] = 1;
    d[6] = DESC_HID_REPORT;
    desc_put16(d + 7, sizeof report_desc);
}

static void build_config(desc_builder_t *b, vdev_speed_t speed, const void *model)
{
    (void)model;
    uint8_t hid[9];
    fill_hid_desc(hid);
    desc_interface(b, 0, 0, 1, 0x03, 0x01, 0x01, 0);
    desc_class(b, DESC_HID, hid + 2, sizeof hid - 2);
    desc_endpoint(b, EP_IN, EP_INTERRUPT, REPORT_LEN, vdev_interval_ms(speed, 10));
}

static const vdev_identity_t identity = {
    .model = "hid-keyboard",
    .pid = VDEV_PID_HID_KEYBOARD,
    .product = "fleet Virtual Keyboard",
    .attributes = 0x20, /* remote wakeup, as keyboards announce */
    .max_power_ma = 100,
    .build_config = build_config,
};

/* US layout: ASCII -> (usage, shift). 0 usage = not typeable. */
static bool ascii_to_key(char c, uint8_t *usage, bool *shift)
{
    static const char unshifted[] = "-=[]\\;'`,./";
    static const uint8_t unshifted_usage[] = {0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x33,
                                              0x34, 0x35, 0x36, 0x37, 0x38};
    static const char shifted[] = "_+{}|:\"~<>?";
    static const char shifted_digits[] = "!@#$%^&*()";
    *shift = false;
    if (c >= 'a' && c <= 'z') {
        *usage = (uint8_t)(0x04 + (c - 'a'));
    } else if (c >= 'A' && c <= 'Z') {
        *usage = (uint8_t)(0x04 + (c - 'A'));
        *shift = true;
    } else if (c >= '1' && c <= '9') {
        *usage = (uint8_t)(0x1e + (c - '1'));
    } else if (c == '0') {
        *usage = 0x27;
    } else if (c == '\n') {
        *usage = 0x28;
    } else if (c == '\t') {
        *usage = 0x2b;
    } else if (c == ' ') {
        *usage = 0x2c;
    } else if (c != '\0' && strchr(unshifted, c)) {
        *usage = unshifted_usage[strchr(unshifted, c) - unshifted];
    } else if (c != '\0' && strchr(shifted, c)) {
        *usage = unshifted_usage[strchr(shifted, c) - shifted];
        *shift = true;
    } else if (c != '\0' && strchr(shifted_digits, c)) {
        *usage = (uint8_t)(0x1e + (strchr(shifted_digits, c) - shifted_digits));
        *shift = true;
    } else {
        return false;
    }
    return true;
}

static void push(kbd_t *k, const uint8_t report[REPORT_LEN])
{
    memcpy(k->queue[(k->head + k->count) % QUEUE_LEN], report, REPORT_LEN);
    k->count++;
}

static int cmd_type(kbd_t *k, const char *text, char *reply, size_t len)
{
    char chars[QUEUE_LEN];
    size_t n = 0;
    for (const char *p = text; *p; p++) {
        char c = *p;
        if (c == '\\') {
            p++;
            if (*p == 'n')
                c = '\n';
            else if (*p == 't')
                c = '\t';
            else if (*p == '\\')
                c = '\\';
            else {
                vdev_set_err(reply, len, "type: unknown escape '\\%c' (expected \\n, \\t or \\\\)",
                             *p ? *p : ' ');
                return -1;
            }
        }
        uint8_t usage;
        bool shift;
        if (!ascii_to_key(c, &usage, &shift)) {
            vdev_set_err(reply, len, "type: character 0x%02x at offset %zu has no key",
                         (unsigned char)c, (size_t)(p - text));
            return -1;
        }
        if (n == sizeof chars) {
            vdev_set_err(reply, len, "type: text too long (max %zu keys)", sizeof chars);
            return -1;
        }
        chars[n++] = c;
    }
    if (n == 0) {
        vdev_set_err(reply, len, "type: nothing to type (expected: type <text>)");
        return -1;
    }
    if (2 * n > QUEUE_LEN - k->count) {
        vdev_set_err(reply, len, "type: queue full (%u reports pending, room for %u)", k->count,
                     QUEUE_LEN - k->count);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        /* chars[] were all checked above, so ascii_to_key always sets both;
         * initialised anyway because -O3 cannot see that. */
        uint8_t usage = 0, press[REPORT_LEN] = {0}, release[REPORT_LEN] = {0};
        bool shift = false;
        ascii_to_key(chars[i], &usage, &shift);
        press[0] = shift ? MOD_LSHIFT : 0;
        press[2] = usage;
        push(k, press);
        push(k, release);
    }
    vdev_wake(&k->base.dev, EP_IN, 0);
    vdev_set_err(reply, len, "queued %zu reports", 2 * n);
    return 0;
}

static int cmd_press(kbd_t *k, const char *args, char *reply, size_t len)
{
    uint8_t report[REPORT_LEN] = {0};
    int keys = 0;
    const char *p = args;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        char *end;
        unsigned long u = strtoul(p, &end, 16);
        if (end == p || (*end && *end != ' ') || u > 0xe7 || !isxdigit((unsigned char)*p)) {
            vdev_set_err(reply, len, "press: '%.*s' is not a key usage (expected hex 00-e7)",
                         (int)strcspn(p, " "), p);
            return -1;
        }
        if (u >= 0xe0) {
            report[0] |= (uint8_t)(1u << (u - 0xe0));
        } else {
            if (keys == 6) {
                vdev_set_err(reply, len, "press: at most 6 keys at once");
                return -1;
            }
            report[2 + keys++] = (uint8_t)u;
        }
        p = end;
    }
    if (report[0] == 0 && keys == 0) {
        vdev_set_err(reply, len, "press: no key given (expected: press <usage-hex>...)");
        return -1;
    }
    if (k->count == QUEUE_LEN) {
        vdev_set_err(reply, len, "press: queue full");
        return -1;
    }
    push(k, report);
    vdev_wake(&k->base.dev, EP_IN, 0);
    vdev_set_err(reply, len, "queued 1 report");
    return 0;
}

static int kbd_command(vdev_t *dev, const char *cmd, char *reply, size_t len)
{
    kbd_t *k = (kbd_t *)dev;
    if (strncmp(cmd, "type ", 5) == 0)
        return cmd_type(k, cmd + 5, reply, len);
    if (strncmp(cmd, "press ", 6) == 0)
        return cmd_press(k, cmd + 6, reply, len);
    if (strcmp(cmd, "release") == 0) {
        static const uint8_t none[REPORT_LEN];
        if (k->count == QUEUE_LEN) {
            vdev_set_err(reply, len, "release: queue full");
            return -1;
        }
        push(k, none);
        vdev_wake(dev, EP_IN, 0);
        vdev_set_err(reply, len, "queued 1 report");
        return 0;
    }
    if (strcmp(cmd, "stats") == 0) {
        vdev_set_err(reply, len,
                     "{\"reports_sent\":%" PRIu64 ",\"pending\":%u,\"naks\":%" PRIu64
                     ",\"leds\":%u,\"set_reports\":%" PRIu64 ",\"idle\":%u,\"protocol\":%u}",
                     k->reports_sent, k->count, k->naks, k->leds, k->set_reports, k->idle,
                     k->protocol);
        return 0;
    }
    vdev_set_err(reply, len,
                 "unknown command '%s' for hid-keyboard (expected: type <text>, press <usage-hex>..., "
                 "release, stats)",
                 cmd);
    return -1;
}

static int kbd_in(vdev_t *dev, uint8_t ep, uint8_t *buf, size_t mps)
{
    kbd_t *k = (kbd_t *)dev;
    if (ep != EP_IN || mps < REPORT_LEN)
        return VDEV_STALL;
    if (vdev_is_halted(&k->base, EP_IN))
        return VDEV_STALL;
    uint64_t now = vdev_now_ns(dev);
    if (k->count > 0) {
        memcpy(k->current, k->queue[k->head], REPORT_LEN);
        k->head = (k->head + 1) % QUEUE_LEN;
        k->count--;
    } else if (k->idle == 0 || now - k->last_sent_ns < (uint64_t)k->idle * 4000000u) {
        k->naks++;
        if (k->idle != 0) /* repeat the report when the idle period ends */
            vdev_wake(dev, EP_IN, (uint64_t)k->idle * 4000000u - (now - k->last_sent_ns));
        return VDEV_NAK;
    }
    k->last_sent_ns = now;
    k->reports_sent++;
    memcpy(buf, k->current, REPORT_LEN);
    return REPORT_LEN;
}

static int kbd_out(vdev_t *dev, uint8_t ep, const uint8_t *data, size_t len)
{
    (void)dev, (void)ep, (void)data, (void)len;
    return VDEV_STALL; /* no OUT endpoint */
}

enum { HID_GET_REPORT = 1, HID_GET_IDLE = 2, HID_GET_PROTOCOL = 3, HID_SET_REPORT = 9,
       HID_SET_IDLE = 10, HID_SET_PROTOCOL = 11 };
enum { REPORT_INPUT = 1, REPORT_OUTPUT = 2 };

static int kbd_control(vdev_t *dev, const vdev_setup_t *s, uint8_t *data)
{
    kbd_t *k = (kbd_t *)dev;
    int r;
    if (vdev_base_get_descriptor(&k->base, s, data, &r))
        return r;
    if (s->wIndex != 0) /* interface 0 is all there is */
        return VDEV_STALL;
    uint8_t hi = (uint8_t)(s->wValue >> 8), lo = (uint8_t)(s->wValue & 0xff);
    if (s->bmRequestType == 0x81 && s->bRequest == 0x06) { /* GET_DESCRIPTOR, interface */
        if (hi == DESC_HID_REPORT && lo == 0)
            return vdev_reply(s, data, report_desc, sizeof report_desc);
        if (hi == DESC_HID && lo == 0)
            return vdev_reply(s, data, k->hid_desc, sizeof k->hid_desc);
        return VDEV_STALL;
    }
    if (s->bmRequestType == 0xa1) {
        switch (s->bRequest) {
        case HID_GET_REPORT:
            if (lo != 0)
                return VDEV_STALL;
            if (hi == REPORT_INPUT)
                return vdev_reply(s, data, k->current, REPORT_LEN);
            if (hi == REPORT_OUTPUT)
                return vdev_reply(s, data, &k->leds, 1);
            return VDEV_STALL;
        case HID_GET_IDLE:
            return s->wLength >= 1 ? vdev_reply(s, data, &k->idle, 1) : VDEV_STALL;
        case HID_GET_PROTOCOL:
            return s->wLength >= 1 ? vdev_reply(s, data, &k->protocol, 1) : VDEV_STALL;
        default:
            return VDEV_STALL;
        }
    }
    if (s->bmRequestType == 0x21) {
        switch (s->bRequest) {
        case HID_SET_REPORT:
            if (hi != REPORT_OUTPUT || lo != 0 || s->wLength != 1)
                return VDEV_STALL;
            k->leds = data[0] & 0x1f;
            k->set_reports++;
            return 0;
        case HID_SET_IDLE:
            if (lo != 0 || s->wLength != 0)
                return VDEV_STALL;
            k->idle = hi;
            k->last_sent_ns = vdev_now_ns(dev);
            return 0;
        case HID_SET_PROTOCOL:
            if (s->wValue > 1 || s->wLength != 0)
                return VDEV_STALL;
            k->protocol = (uint8_t)s->wValue;
            return 0;
        default:
            return VDEV_STALL;
        }
    }
    return VDEV_STALL;
}

static void kbd_reset_endpoint(vdev_t *dev, uint8_t ep)
{
    kbd_t *k = (kbd_t *)dev;
    vdev_unhalt(&k->base, ep);
    if (ep == 0xff) { /* SET_CONFIGURATION / bus reset: HID 7.2.6 says report protocol again */
        k->protocol = 1;
        /* HID 7.2.4 suggests 500 ms for keyboards, but Linux sends SET_IDLE(0)
         * at once anyway: start quiet so an idle keyboard makes no traffic */
        k->idle = 0;
    }
}

static void kbd_destroy(vdev_t *dev)
{
    kbd_t *k = (kbd_t *)dev;
    vdev_base_release(&k->base);
    free(k);
}

static const vdev_ops_t kbd_ops = {
    .control = kbd_control,
    .out_packet = kbd_out,
    .in_packet = kbd_in,
    .reset_endpoint = kbd_reset_endpoint,
    .command = kbd_command,
    .destroy = kbd_destroy,
};

vdev_t *vdev_hid_keyboard_create(const vdev_spec_t *spec, char *err, size_t err_len)
{
    static const char *const allowed[] = {"speed", "serial", NULL};
    vdev_speed_t speed;
    if (vdev_opts_check(spec, allowed, err, err_len) != 0 ||
        vdev_opt_speed(spec, VDEV_SPEED_FULL, true, false, &speed, err, err_len) != 0)
        return NULL;
    kbd_t *k = calloc(1, sizeof *k);
    if (!k) {
        vdev_set_err(err, err_len, "hid-keyboard: out of memory");
        return NULL;
    }
    if (vdev_opt_serial(spec, "KBD", k->base.serial, err, err_len) != 0 ||
        vdev_base_init(&k->base, &kbd_ops, &identity, speed, k->base.serial, k, err, err_len) != 0) {
        free(k);
        return NULL;
    }
    fill_hid_desc(k->hid_desc);
    k->protocol = 1;
    return &k->base.dev;
}
