/*
 * test_cdc_acm.c - serial loopback: descriptors Linux's cdc_acm binds to,
 * bytes out = bytes back, FIFO-full NAK (flow control), ZLP after a full
 * packet, line coding, control line state and SERIAL_STATE.
 */
#include <string.h>

#include "test_host.h"
#include "testlib.h"

#define FS 64

static void test_descriptors(void)
{
    vdev_t *d = th_create("cdc-acm:speed=high");
    th_config_t c;
    TL_CHECK(th_check_config(d->config_desc, VDEV_SPEED_HIGH, 2, &c) == NULL);
    TL_EQ_INT(d->device_desc[4], 0xef);
    TL_EQ_INT(c.num_iads, 1);
    TL_EQ_INT(c.num_interfaces, 2);
    TL_EQ_MEM(c.intf_class[0], ((uint8_t[]){0x02, 0x02, 0x01}), 3);
    TL_EQ_MEM(c.intf_class[1], ((uint8_t[]){0x0a, 0x00, 0x00}), 3);
    TL_EQ_INT(c.class_descs, 4); /* header, call management, ACM, union */
    TL_EQ_INT(c.num_endpoints, 3);
    TL_EQ_INT(c.ep[0].address, 0x82);
    TL_EQ_INT(c.ep[0].attributes, 3);
    TL_EQ_INT(c.ep[1].mps, 512);
    TL_EQ_INT(c.ep[2].mps, 512);
    /* union descriptor: control 0, data 1 */
    const uint8_t *p = d->config_desc;
    size_t total = (size_t)(p[2] | p[3] << 8), off = 0;
    bool found_union = false;
    while (off < total) {
        if (p[off + 1] == 0x24 && p[off + 2] == 0x06) {
            found_union = p[off + 3] == 0 && p[off + 4] == 1;
        }
        off += p[off];
    }
    TL_CHECK(found_union);
    th_destroy(d);
}

static void test_loopback(void)
{
    vdev_t *d = th_create("cdc-acm");
    th_host_t h;
    th_attach(&h, d);
    uint8_t out[300], back[512];
    th_fill(out, sizeof out, 5);
    TL_EQ_INT(th_in(d, 0x81, FS, back, sizeof back).status, VDEV_NAK); /* nothing yet */
    th_xfer_t x = th_out(d, 0x01, FS, out, sizeof out, false);
    TL_CHECK(x.status == TH_OK && x.actual == 300);
    TL_EQ_INT(h.last_wake_ep, 0x81);
    x = th_in(d, 0x81, FS, back, sizeof back);
    TL_EQ_INT(x.status, TH_OK);      /* 4 full packets + a 44-byte short one */
    TL_EQ_INT(x.actual, 300);
    TL_EQ_MEM(back, out, 300);

    /* an exact multiple of MPS: the read ends with a ZLP, not a hang */
    x = th_out(d, 0x01, FS, out, 128, false);
    TL_EQ_INT(x.actual, 128);
    x = th_in(d, 0x81, FS, back, sizeof back);
    TL_EQ_INT(x.status, TH_OK);
    TL_EQ_INT(x.actual, 128);
    TL_EQ_INT(x.packets, 3);
    TL_EQ_INT(th_in(d, 0x81, FS, back, sizeof back).status, VDEV_NAK);
    th_destroy(d);
}

static void test_fifo_full_naks(void)
{
    vdev_t *d = th_create("cdc-acm");
    static uint8_t out[5000], back[5000];
    th_fill(out, sizeof out, 11);
    th_xfer_t x = th_out(d, 0x01, FS, out, sizeof out, false);
    TL_EQ_INT(x.status, VDEV_NAK);
    TL_EQ_INT(x.actual, 4096);       /* 64 packets fit, the 65th is NAKed */
    uint8_t pkt[64];
    TL_EQ_INT(d->ops->out_packet(d, 0x01, out + 4096, 1), VDEV_NAK); /* even one byte */
    TL_EQ_INT(d->ops->in_packet(d, 0x81, pkt, FS), 64);
    TL_EQ_MEM(pkt, out, 64);
    /* room for exactly one packet again: the host's retry goes through */
    x = th_out(d, 0x01, FS, out + 4096, 904, false);
    TL_EQ_INT(x.status, VDEV_NAK);
    TL_EQ_INT(x.actual, 64);
    size_t got = 64, sent = 4096 + 64;
    memcpy(back, pkt, 64);
    for (int i = 0; i < 1000 && got < sizeof out; i++) {
        got += th_in(d, 0x81, FS, back + got, 1024).actual;
        if (sent < sizeof out)
            sent += th_out(d, 0x01, FS, out + sent, sizeof out - sent, false).actual;
    }
    TL_EQ_INT(got, sizeof out);
    TL_EQ_MEM(back, out, sizeof out);
    char reply[256];
    TL_EQ_INT(d->ops->command(d, "stats", reply, sizeof reply), 0);
    TL_CHECK(strstr(reply, "\"bytes_looped\":5000") != NULL);
    TL_CHECK(strstr(reply, "\"out_naks\":0") == NULL);
    th_destroy(d);
}

static void test_line_coding_and_state(void)
{
    vdev_t *d = th_create("cdc-acm");
    th_host_t h;
    th_attach(&h, d);
    uint8_t lc[7];
    TL_EQ_INT(th_control(d, 0xa1, 0x21, 0, 0, 7, lc), 7);
    TL_EQ_MEM(lc, ((uint8_t[]){0x00, 0xc2, 0x01, 0x00, 0, 0, 8}), 7); /* 115200 8N1 */
    uint8_t set[7] = {0x80, 0x25, 0, 0, 2, 2, 7};                      /* 9600 7E2 */
    TL_EQ_INT(th_control(d, 0x21, 0x20, 0, 0, 7, set), 0);
    TL_EQ_INT(th_control(d, 0xa1, 0x21, 0, 0, 7, lc), 7);
    TL_EQ_MEM(lc, set, 7);
    uint8_t bad_bits[7] = {0x80, 0x25, 0, 0, 0, 0, 9};
    TL_EQ_INT(th_control(d, 0x21, 0x20, 0, 0, 7, bad_bits), VDEV_STALL);
    uint8_t bad_rate[7] = {0, 0, 0, 0, 0, 0, 8};
    TL_EQ_INT(th_control(d, 0x21, 0x20, 0, 0, 7, bad_rate), VDEV_STALL);
    uint8_t bad_stop[7] = {0x80, 0x25, 0, 0, 3, 0, 8};
    TL_EQ_INT(th_control(d, 0x21, 0x20, 0, 0, 7, bad_stop), VDEV_STALL);
    TL_EQ_INT(th_control(d, 0x21, 0x20, 0, 0, 6, set), VDEV_STALL);
    TL_EQ_INT(th_control(d, 0xa1, 0x21, 0, 0, 7, lc), 7);
    TL_EQ_MEM(lc, set, 7);           /* rejected codings changed nothing */
    TL_EQ_INT(th_control(d, 0x21, 0x20, 0, 1, 7, set), VDEV_STALL); /* data interface */

    uint8_t note[16];
    TL_EQ_INT(d->ops->in_packet(d, 0x82, note, 16), VDEV_NAK);
    TL_EQ_INT(th_control(d, 0x21, 0x22, 0x0003, 0, 0, NULL), 0);       /* DTR | RTS */
    TL_EQ_INT(h.last_wake_ep, 0x82);
    TL_EQ_INT(d->ops->in_packet(d, 0x82, note, 16), 10);
    TL_EQ_MEM(note, ((uint8_t[]){0xa1, 0x20, 0, 0, 0, 0, 2, 0, 0x03, 0x00}), 10);
    TL_EQ_INT(d->ops->in_packet(d, 0x82, note, 16), VDEV_NAK);
    TL_EQ_INT(th_control(d, 0x21, 0x22, 0x0002, 0, 0, NULL), 0);       /* DTR drops */
    TL_EQ_INT(d->ops->in_packet(d, 0x82, note, 16), 10);
    TL_EQ_INT(note[8], 0x00);
    TL_EQ_INT(th_control(d, 0x21, 0x22, 0x0004, 0, 0, NULL), VDEV_STALL);
    TL_EQ_INT(th_control(d, 0x21, 0x23, 100, 0, 0, NULL), 0);          /* SEND_BREAK */
    TL_EQ_INT(th_control(d, 0x21, 0x42, 0, 0, 0, NULL), VDEV_STALL);
    char reply[256];
    d->ops->command(d, "stats", reply, sizeof reply);
    TL_CHECK(strstr(reply, "\"baud\":9600") != NULL);
    TL_CHECK(strstr(reply, "\"rts\":1") != NULL);
    th_destroy(d);
}

int main(void)
{
    TL_RUN(test_descriptors);
    TL_RUN(test_loopback);
    TL_RUN(test_fifo_full_naks);
    TL_RUN(test_line_coding_and_state);
    return TL_RESULT();
}
