/*
 * test_probe.c - CMSIS-DAP-style probe: DAP commands, echo, NAK until the
 * processing delay elapsed (fake clock), message framing by short packet
 * versus ZLP, multi-packet replies, one command at a time.
 */
#include <string.h>

#include "test_host.h"
#include "testlib.h"

#define FS 64
#define HS 512

/* Send one command and read its reply at once (no delay configured). */
static th_xfer_t dap(vdev_t *d, uint16_t mps, const uint8_t *cmd, size_t len, uint8_t *resp,
                     size_t resp_len)
{
    th_xfer_t x = th_out(d, 0x01, mps, cmd, len, false);
    if (x.status != TH_OK)
        return x;
    return th_in(d, 0x81, mps, resp, resp_len);
}

static void test_descriptors(void)
{
    vdev_t *d = th_create("probe");
    th_config_t c;
    TL_CHECK(th_check_config(d->config_desc, VDEV_SPEED_FULL, 2, &c) == NULL);
    TL_EQ_MEM(c.intf_class[0], ((uint8_t[]){0xff, 0x00, 0x00}), 3);
    TL_EQ_INT(c.ep[0].address, 0x01);
    TL_EQ_INT(c.ep[1].address, 0x81);
    uint8_t intf_string_index = d->config_desc[9 + 8];
    char buf[64];
    TL_CHECK(strstr(th_string(d, intf_string_index, buf, sizeof buf), "CMSIS-DAP") != NULL);
    th_destroy(d);
}

static void test_dap_commands(void)
{
    vdev_t *d = th_create("probe:serial=PRB1");
    uint8_t r[64];
    th_xfer_t x = dap(d, FS, (uint8_t[]){0x00, 0x01}, 2, r, sizeof r);
    TL_EQ_INT(x.actual, 8);
    TL_EQ_MEM(r, ((uint8_t[]){0x00, 6, 'f', 'l', 'e', 'e', 't', 0}), 8);
    x = dap(d, FS, (uint8_t[]){0x00, 0x03}, 2, r, sizeof r);
    TL_EQ_INT(r[1], 5);
    TL_EQ_STR((char *)r + 2, "PRB1");
    x = dap(d, FS, (uint8_t[]){0x00, 0x04}, 2, r, sizeof r);
    TL_EQ_STR((char *)r + 2, "2.1.1");
    x = dap(d, FS, (uint8_t[]){0x00, 0xff}, 2, r, sizeof r);
    TL_EQ_MEM(r, ((uint8_t[]){0x00, 2, 64, 0}), 4);       /* packet size 64 */
    x = dap(d, FS, (uint8_t[]){0x00, 0xfe}, 2, r, sizeof r);
    TL_EQ_MEM(r, ((uint8_t[]){0x00, 1, 1}), 3);           /* packet count 1 */
    x = dap(d, FS, (uint8_t[]){0x00, 0x06}, 2, r, sizeof r);
    TL_EQ_INT(x.actual, 2);
    TL_EQ_INT(r[1], 0);                                   /* no target name */
    x = dap(d, FS, (uint8_t[]){0x01, 0x00, 0x01}, 3, r, sizeof r);
    TL_EQ_MEM(r, ((uint8_t[]){0x01, 0x00}), 2);
    x = dap(d, FS, (uint8_t[]){0x02, 0x00}, 2, r, sizeof r);
    TL_EQ_MEM(r, ((uint8_t[]){0x02, 0x01}), 2);           /* default port = SWD */
    x = dap(d, FS, (uint8_t[]){0x02, 0x02}, 2, r, sizeof r);
    TL_EQ_MEM(r, ((uint8_t[]){0x02, 0x00}), 2);           /* JTAG: not available */
    x = dap(d, FS, (uint8_t[]){0x03}, 1, r, sizeof r);
    TL_EQ_MEM(r, ((uint8_t[]){0x03, 0x00}), 2);
    x = dap(d, FS, (uint8_t[]){0x04, 0, 0x40, 0, 0, 0}, 6, r, sizeof r);
    TL_EQ_MEM(r, ((uint8_t[]){0x04, 0x00}), 2);
    x = dap(d, FS, (uint8_t[]){0x04, 0}, 2, r, sizeof r);
    TL_EQ_MEM(r, ((uint8_t[]){0x04, 0xff}), 2);           /* too short: DAP_ERROR */
    x = dap(d, FS, (uint8_t[]){0x0a}, 1, r, sizeof r);
    TL_EQ_MEM(r, ((uint8_t[]){0x0a, 0x00, 0x00}), 3);
    x = dap(d, FS, (uint8_t[]){0x7e, 1, 2}, 3, r, sizeof r);
    TL_EQ_INT(x.actual, 1);
    TL_EQ_INT(r[0], 0xff);                                /* DAP_Invalid */
    char reply[256];
    TL_EQ_INT(d->ops->command(d, "stats", reply, sizeof reply), 0);
    TL_CHECK(strstr(reply, "\"commands\":14") != NULL);
    TL_CHECK(strstr(reply, "\"invalid\":1") != NULL);
    th_destroy(d);
}

static void test_echo_full_packet(void)
{
    vdev_t *d = th_create("probe");
    uint8_t cmd[64], r[64];
    th_fill(cmd, sizeof cmd, 1);
    cmd[0] = 0x80;
    /* a 64-byte command fills the packet: still one command, no ZLP needed */
    th_xfer_t x = dap(d, FS, cmd, 64, r, 64);
    TL_EQ_INT(x.status, TH_OK);
    TL_EQ_INT(x.actual, 64);
    TL_EQ_MEM(r, cmd, 64);
    /* a host that adds URB_ZERO_PACKET: the ZLP is absorbed, even while busy */
    x = th_out(d, 0x01, FS, cmd, 64, true);
    TL_EQ_INT(x.status, TH_OK);
    TL_EQ_INT(x.packets, 2);
    TL_EQ_INT(th_in(d, 0x81, FS, r, 64).actual, 64);
    TL_EQ_INT(th_in(d, 0x81, FS, r, 64).status, VDEV_NAK); /* no stray reply */
    th_destroy(d);
}

static void test_delay_naks(void)
{
    vdev_t *d = th_create("probe:delay_ms=5");
    th_host_t h;
    th_attach(&h, d);
    h.now_ns = 1000000000;
    uint8_t r[64];
    TL_EQ_INT(th_out(d, 0x01, FS, (uint8_t[]){0x80, 7, 8}, 3, false).status, TH_OK);
    TL_EQ_INT(h.last_wake_ep, 0x81);
    TL_EQ_INT(h.last_wake_delay_ns, 5000000);
    TL_EQ_INT(d->ops->in_packet(d, 0x81, r, FS), VDEV_NAK);
    /* one command at a time: the next OUT waits */
    TL_EQ_INT(d->ops->out_packet(d, 0x01, (uint8_t[]){0x03}, 1), VDEV_NAK);
    h.now_ns += 4999999;
    TL_EQ_INT(d->ops->in_packet(d, 0x81, r, FS), VDEV_NAK);
    h.now_ns += 1;
    TL_EQ_INT(d->ops->in_packet(d, 0x81, r, FS), 3);
    TL_EQ_MEM(r, ((uint8_t[]){0x80, 7, 8}), 3);
    TL_EQ_INT(h.last_wake_ep, 0x01);                  /* OUT may go on */
    /* DAP_Delay adds its microseconds to the processing time */
    TL_EQ_INT(th_out(d, 0x01, FS, (uint8_t[]){0x09, 0xe8, 0x03}, 3, false).status, TH_OK);
    TL_EQ_INT(h.last_wake_delay_ns, 6000000);
    h.now_ns += 5999999;
    TL_EQ_INT(d->ops->in_packet(d, 0x81, r, FS), VDEV_NAK);
    h.now_ns += 1;
    TL_EQ_INT(d->ops->in_packet(d, 0x81, r, FS), 2);
    TL_EQ_MEM(r, ((uint8_t[]){0x09, 0x00}), 2);
    char reply[256];
    d->ops->command(d, "stats", reply, sizeof reply);
    TL_CHECK(strstr(reply, "\"naks\":3") != NULL);
    th_destroy(d);
}

static void test_bulk_echo_framing(void)
{
    vdev_t *d = th_create("probe");
    th_host_t h;
    th_attach(&h, d);
    static uint8_t msg[4096], back[8192];
    th_fill(msg, sizeof msg, 2);
    msg[0] = 0x81;
    /* 1000 bytes: 15 full packets + a short one end the message */
    th_xfer_t x = th_out(d, 0x01, FS, msg, 1000, false);
    TL_EQ_INT(x.packets, 16);
    x = th_in(d, 0x81, FS, back, sizeof back);
    TL_EQ_INT(x.status, TH_OK);
    TL_EQ_INT(x.actual, 1000);
    TL_EQ_MEM(back, msg, 1000);

    /* 1024 bytes without a ZLP: the message is not over, no reply */
    x = th_out(d, 0x01, FS, msg, 1024, false);
    TL_EQ_INT(x.status, TH_OK);
    TL_EQ_INT(d->ops->in_packet(d, 0x81, back, FS), VDEV_NAK);
    /* the ZLP ends it; the reply is 16 full packets and its own ZLP */
    TL_EQ_INT(d->ops->out_packet(d, 0x01, NULL, 0), 0);
    x = th_in(d, 0x81, FS, back, sizeof back);
    TL_EQ_INT(x.status, TH_OK);
    TL_EQ_INT(x.actual, 1024);
    TL_EQ_INT(x.packets, 17);
    TL_EQ_MEM(back, msg, 1024);
    TL_EQ_INT(d->ops->in_packet(d, 0x81, back, FS), VDEV_NAK);

    /* a host reading in pieces (ESP-IDF style chunks of 256) sees the same bytes */
    x = th_out(d, 0x01, FS, msg, 4096, true);
    TL_EQ_INT(x.packets, 65);
    size_t got = 0;
    for (int i = 0; i < 64 && got < 4096; i++) {
        th_xfer_t c = th_in(d, 0x81, FS, back + got, 256);
        TL_EQ_INT(c.actual, 256);
        got += c.actual;
    }
    TL_EQ_INT(got, 4096);
    TL_EQ_MEM(back, msg, 4096);
    TL_EQ_INT(th_in(d, 0x81, FS, back, 256).actual, 0); /* the closing ZLP */
    th_destroy(d);

    /* High-Speed: 512-byte packets, and a message ending exactly on one */
    d = th_create("probe:speed=high");
    x = th_out(d, 0x01, HS, msg, 2048, false);
    TL_EQ_INT(x.packets, 4);
    TL_EQ_INT(d->ops->in_packet(d, 0x81, back, HS), VDEV_NAK);
    x = th_out(d, 0x01, HS, msg + 2048, 100, false);  /* continues the same message */
    x = th_in(d, 0x81, HS, back, sizeof back);
    TL_EQ_INT(x.actual, 2148);
    TL_EQ_MEM(back, msg, 2148);
    uint8_t r[512];
    TL_EQ_INT(dap(d, HS, (uint8_t[]){0x00, 0xff}, 2, r, sizeof r).actual, 4);
    TL_EQ_MEM(r, ((uint8_t[]){0x00, 2, 0x00, 0x02}), 4); /* packet size 512 */
    th_destroy(d);
}

static void test_oversize_message_stalls(void)
{
    vdev_t *d = th_create("probe");
    static uint8_t big[65536 + 128];
    memset(big, 0x55, sizeof big);
    big[0] = 0x81;
    th_xfer_t x = th_out(d, 0x01, FS, big, sizeof big, false);
    TL_EQ_INT(x.status, VDEV_STALL);
    TL_EQ_INT(x.actual, 65536);               /* 1 + 64 KiB is the limit */
    TL_EQ_INT(d->ops->out_packet(d, 0x01, big, 3), VDEV_STALL); /* halted */
    th_clear_halt(d, 0x01);
    uint8_t r[64];
    TL_EQ_INT(dap(d, FS, (uint8_t[]){0x80, 1}, 2, r, sizeof r).actual, 2);
    /* the largest message fits */
    x = th_out(d, 0x01, FS, big, 65537, false);
    TL_EQ_INT(x.status, TH_OK);
    static uint8_t back[65536 + 64];
    x = th_in(d, 0x81, FS, back, sizeof back);
    TL_EQ_INT(x.actual, 65537);
    TL_EQ_MEM(back, big, 65537);
    th_destroy(d);
}

static void test_stray_zlp_and_reset(void)
{
    vdev_t *d = th_create("probe");
    uint8_t r[64];
    TL_EQ_INT(d->ops->out_packet(d, 0x01, NULL, 0), 0);  /* no command, no reply */
    TL_EQ_INT(d->ops->in_packet(d, 0x81, r, FS), VDEV_NAK);
    /* half a bulk echo, then CLEAR_FEATURE(HALT) on OUT: the fragment is dropped */
    uint8_t msg[64];
    memset(msg, 1, sizeof msg);
    msg[0] = 0x81;
    TL_EQ_INT(d->ops->out_packet(d, 0x01, msg, 64), 0);
    th_clear_halt(d, 0x01);
    TL_EQ_INT(dap(d, FS, (uint8_t[]){0x80, 9}, 2, r, sizeof r).actual, 2);
    TL_EQ_MEM(r, ((uint8_t[]){0x80, 9}), 2);
    TL_EQ_INT(d->ops->in_packet(d, 0x02, r, FS), VDEV_STALL);
    uint8_t setup_data[8];
    TL_EQ_INT(th_control(d, 0xc1, 0x01, 0, 0, 8, setup_data), VDEV_STALL);
    th_destroy(d);
}

int main(void)
{
    TL_RUN(test_descriptors);
    TL_RUN(test_dap_commands);
    TL_RUN(test_echo_full_packet);
    TL_RUN(test_delay_naks);
    TL_RUN(test_bulk_echo_framing);
    TL_RUN(test_oversize_message_stalls);
    TL_RUN(test_stray_zlp_and_reset);
    return TL_RESULT();
}
