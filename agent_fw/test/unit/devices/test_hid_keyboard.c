/*
 * test_hid_keyboard.c - boot keyboard: descriptors, HID class requests,
 * scripted typing into exact reports, NAK while idle, idle-rate repeats.
 */
#include <string.h>

#include "test_host.h"
#include "testlib.h"

static int report(vdev_t *d, uint8_t out[8])
{
    uint8_t buf[64];
    int r = d->ops->in_packet(d, 0x81, buf, 8);
    if (r == 8)
        memcpy(out, buf, 8);
    return r;
}

static void test_descriptors(void)
{
    vdev_t *d = th_create("hid-keyboard");
    th_config_t c;
    TL_CHECK(th_check_config(d->config_desc, VDEV_SPEED_FULL, 2, &c) == NULL);
    TL_EQ_INT(c.num_interfaces, 1);
    TL_EQ_MEM(c.intf_class[0], ((uint8_t[]){0x03, 0x01, 0x01}), 3);
    TL_EQ_INT(c.num_endpoints, 1);
    TL_EQ_INT(c.ep[0].address, 0x81);
    TL_EQ_INT(c.ep[0].attributes, 0x03);
    TL_EQ_INT(c.ep[0].mps, 8);
    TL_EQ_INT(c.ep[0].interval, 10);
    TL_EQ_INT(c.class_descs, 1);
    /* the HID descriptor sits between interface and endpoint */
    const uint8_t *hid = d->config_desc + 9 + 9;
    TL_EQ_INT(hid[0], 9);
    TL_EQ_INT(hid[1], 0x21);
    TL_EQ_INT(hid[6], 0x22);
    uint16_t report_len = (uint16_t)(hid[7] | hid[8] << 8);
    TL_EQ_INT(report_len, 63);

    uint8_t buf[256];
    TL_EQ_INT(th_control(d, 0x81, 6, 0x2200, 0, 255, buf), 63);
    TL_EQ_MEM(buf, ((uint8_t[]){0x05, 0x01, 0x09, 0x06, 0xa1, 0x01}), 6);
    TL_EQ_INT(buf[62], 0xc0);
    TL_EQ_INT(th_control(d, 0x81, 6, 0x2200, 0, 16, buf), 16); /* wLength truncates */
    TL_EQ_INT(th_control(d, 0x81, 6, 0x2100, 0, 9, buf), 9);
    TL_EQ_MEM(buf, hid, 9);
    TL_EQ_INT(th_control(d, 0x81, 6, 0x2200, 1, 255, buf), VDEV_STALL); /* no interface 1 */
    TL_EQ_INT(th_control(d, 0x81, 6, 0x2300, 0, 255, buf), VDEV_STALL);
    th_destroy(d);

    d = th_create("hid-keyboard:speed=low");
    TL_EQ_INT(d->device_desc[7], 8);
    TL_CHECK(th_check_config(d->config_desc, VDEV_SPEED_LOW, 2, &c) == NULL);
    th_destroy(d);
}

static void test_type_usbip(void)
{
    vdev_t *d = th_create("hid-keyboard");
    th_host_t h;
    th_attach(&h, d);
    uint8_t r[8];
    TL_EQ_INT(report(d, r), VDEV_NAK); /* nothing to say */
    char reply[128];
    TL_EQ_INT(d->ops->command(d, "type usbip", reply, sizeof reply), 0);
    TL_EQ_STR(reply, "queued 10 reports");
    TL_CHECK(h.wakes >= 1);
    TL_EQ_INT(h.last_wake_ep, 0x81);
    TL_EQ_INT(h.last_wake_delay_ns, 0);
    static const uint8_t usages[5] = {0x18, 0x16, 0x05, 0x0c, 0x13}; /* u s b i p */
    static const uint8_t zero[8];
    for (int i = 0; i < 5; i++) {
        uint8_t press[8] = {0, 0, usages[i], 0, 0, 0, 0, 0};
        TL_EQ_INT(report(d, r), 8);
        TL_EQ_MEM(r, press, 8);
        TL_EQ_INT(report(d, r), 8);
        TL_EQ_MEM(r, zero, 8);
    }
    TL_EQ_INT(report(d, r), VDEV_NAK);
    TL_EQ_INT(report(d, r), VDEV_NAK);
    /* GET_REPORT returns the current (released) state */
    uint8_t buf[8] = {0xff};
    TL_EQ_INT(th_control(d, 0xa1, 0x01, 0x0100, 0, 8, buf), 8);
    TL_EQ_MEM(buf, zero, 8);
    TL_EQ_INT(d->ops->command(d, "stats", reply, sizeof reply), 0);
    TL_CHECK(strstr(reply, "\"reports_sent\":10") != NULL);
    TL_CHECK(strstr(reply, "\"naks\":3") != NULL);
    th_destroy(d);
}

static void test_shift_and_escapes(void)
{
    vdev_t *d = th_create("hid-keyboard");
    char reply[128];
    TL_EQ_INT(d->ops->command(d, "type A!\\n ~", reply, sizeof reply), 0);
    TL_EQ_STR(reply, "queued 10 reports");
    static const uint8_t expect[5][3] = {
        {0x02, 0, 0x04}, {0x02, 0, 0x1e}, {0x00, 0, 0x28}, {0x00, 0, 0x2c}, {0x02, 0, 0x35}};
    uint8_t r[8];
    for (int i = 0; i < 5; i++) {
        TL_EQ_INT(report(d, r), 8);
        TL_EQ_MEM(r, expect[i], 3);
        TL_EQ_INT(report(d, r), 8);
        TL_EQ_INT(r[0] | r[2], 0);
    }
    TL_EQ_INT(d->ops->command(d, "press e1 04 05", reply, sizeof reply), 0);
    TL_EQ_INT(report(d, r), 8);
    TL_EQ_MEM(r, ((uint8_t[]){0x02, 0, 0x04, 0x05, 0, 0, 0, 0}), 8);
    TL_EQ_INT(d->ops->command(d, "release", reply, sizeof reply), 0);
    TL_EQ_INT(report(d, r), 8);
    TL_EQ_MEM(r, ((uint8_t[8]){0}), 8);

    /* bad commands change nothing */
    TL_EQ_INT(d->ops->command(d, "type caf\xc3\xa9", reply, sizeof reply), -1);
    TL_EQ_STR(reply, "type: character 0xc3 at offset 3 has no key");
    TL_EQ_INT(d->ops->command(d, "type a\\q", reply, sizeof reply), -1);
    TL_EQ_STR(reply, "type: unknown escape '\\q' (expected \\n, \\t or \\\\)");
    TL_EQ_INT(d->ops->command(d, "type ", reply, sizeof reply), -1);
    TL_EQ_STR(reply, "type: nothing to type (expected: type <text>)");
    TL_EQ_INT(d->ops->command(d, "press zz", reply, sizeof reply), -1);
    TL_EQ_STR(reply, "press: 'zz' is not a key usage (expected hex 00-e7)");
    TL_EQ_INT(d->ops->command(d, "press e8", reply, sizeof reply), -1);
    TL_EQ_STR(reply, "press: 'e8' is not a key usage (expected hex 00-e7)");
    TL_EQ_INT(d->ops->command(d, "press 04 05 06 07 08 09 0a", reply, sizeof reply), -1);
    TL_EQ_STR(reply, "press: at most 6 keys at once");
    TL_EQ_INT(d->ops->command(d, "dance", reply, sizeof reply), -1);
    TL_EQ_STR(reply, "unknown command 'dance' for hid-keyboard (expected: type <text>, press "
                     "<usage-hex>..., release, stats)");
    TL_EQ_INT(report(d, r), VDEV_NAK);

    /* a text that does not fit the queue is refused whole */
    char big[1100] = "type ";
    memset(big + 5, 'x', 600);
    big[605] = '\0';
    TL_EQ_INT(d->ops->command(d, big, reply, sizeof reply), -1);
    TL_EQ_STR(reply, "type: queue full (0 reports pending, room for 1024)");
    TL_EQ_INT(report(d, r), VDEV_NAK);
    th_destroy(d);
}

static void test_class_requests(void)
{
    vdev_t *d = th_create("hid-keyboard");
    th_host_t h;
    th_attach(&h, d);
    uint8_t b[8];
    /* LEDs */
    b[0] = 0x03; /* num lock + caps lock */
    TL_EQ_INT(th_control(d, 0x21, 0x09, 0x0200, 0, 1, b), 0);
    b[0] = 0;
    TL_EQ_INT(th_control(d, 0xa1, 0x01, 0x0200, 0, 1, b), 1);
    TL_EQ_INT(b[0], 0x03);
    TL_EQ_INT(th_control(d, 0x21, 0x09, 0x0100, 0, 8, b), VDEV_STALL); /* input reports are ours */
    TL_EQ_INT(th_control(d, 0x21, 0x09, 0x0200, 0, 2, b), VDEV_STALL);
    /* protocol */
    TL_EQ_INT(th_control(d, 0xa1, 0x03, 0, 0, 1, b), 1);
    TL_EQ_INT(b[0], 1);
    TL_EQ_INT(th_control(d, 0x21, 0x0b, 0, 0, 0, b), 0);
    TL_EQ_INT(th_control(d, 0xa1, 0x03, 0, 0, 1, b), 1);
    TL_EQ_INT(b[0], 0);
    TL_EQ_INT(th_control(d, 0x21, 0x0b, 2, 0, 0, b), VDEV_STALL);
    /* idle: 2 x 4 ms -> the current report repeats every 8 ms */
    TL_EQ_INT(th_control(d, 0x21, 0x0a, 0x0200, 0, 0, b), 0);
    TL_EQ_INT(th_control(d, 0xa1, 0x02, 0, 0, 1, b), 1);
    TL_EQ_INT(b[0], 2);
    h.now_ns = 1000000;
    TL_EQ_INT(report(d, b), VDEV_NAK);
    TL_EQ_INT(h.last_wake_delay_ns, 7000000); /* asks to be polled when the period ends */
    h.now_ns = 8000000;
    TL_EQ_INT(report(d, b), 8);
    TL_EQ_INT(report(d, b), VDEV_NAK);
    h.now_ns = 16000000;
    TL_EQ_INT(report(d, b), 8);
    TL_EQ_INT(th_control(d, 0x21, 0x0a, 0x0001, 0, 0, b), VDEV_STALL); /* report id 1 */
    TL_EQ_INT(th_control(d, 0x21, 0x0a, 0x0000, 0, 0, b), 0);
    h.now_ns = 1000000000;
    TL_EQ_INT(report(d, b), VDEV_NAK);
    /* SET_CONFIGURATION (reset all endpoints) brings back report protocol */
    d->ops->reset_endpoint(d, 0xff);
    TL_EQ_INT(th_control(d, 0xa1, 0x03, 0, 0, 1, b), 1);
    TL_EQ_INT(b[0], 1);
    TL_EQ_INT(d->ops->out_packet(d, 0x01, b, 1), VDEV_STALL);
    th_destroy(d);
}

int main(void)
{
    TL_RUN(test_descriptors);
    TL_RUN(test_type_usbip);
    TL_RUN(test_shift_and_escapes);
    TL_RUN(test_class_requests);
    return TL_RESULT();
}
