/*
 * test_engine.c - the URB engine against the scripted host port: split
 * rules, IN clamping, status mapping, EP0 requests, every unlink case of
 * usbip-protocol.md section 7, back-pressure, zero copy, counters.
 *
 * Test device (fakes.h): bulk OUT 0x01 / IN 0x82 mps 64, interrupt IN 0x83
 * mps 8. Pool blocks are 8 KiB, so a bulk chunk is 127 x 64 = 8128 bytes.
 */
#include <stdlib.h>
#include <string.h>

#include "fakes.h"
#include "testlib.h"

#define CHUNK 8128

static world_t W;
static int S; /* the client's socket */
static reply_t R;

static void setup_cfg(usbip_server_config_t cfg)
{
    world_init(&W, &cfg);
    fake_usb_add_test_device(&W.usb, "1-1", 0x1209, 0x0001);
    world_pump(&W);
    S = world_connect(&W, "127.0.0.1");
    TL_EQ_INT(cli_import(&W, S, "1-1"), USBIP_ST_OK);
}

static void setup(void)
{
    setup_cfg(USBIP_SERVER_DEFAULT_CONFIG());
}

static void teardown(void)
{
    /* every test ends with the pool whole and no host rule broken */
    usbip_buffer_stats_t b;
    usbip_server_buffer_stats(W.srv, &b);
    TL_EQ_INT(W.usb.violations, 0);
    TL_CHECK(!W.usb.cb_in_op);
    TL_EQ_INT(usbip_server_copies(W.srv), 0);
    world_fini(&W);
    TL_EQ_INT(W.usb.xfers_alive, 0);
}

static uint8_t *pattern(size_t n, uint8_t seed)
{
    uint8_t *p = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed + i * 7 + (i >> 8));
    return p;
}

static int log_count(uint8_t ep)
{
    int n = 0;
    for (int i = 0; i < W.usb.nlog; i++)
        n += W.usb.log[i].ep_addr == ep && !W.usb.log[i].control;
    return n;
}

static const fu_log_t *log_nth(uint8_t ep, int nth)
{
    for (int i = 0; i < W.usb.nlog; i++)
        if (W.usb.log[i].ep_addr == ep && !W.usb.log[i].control && nth-- == 0)
            return &W.usb.log[i];
    return NULL;
}

static const fu_log_t *last_control(void)
{
    for (int i = W.usb.nlog - 1; i >= 0; i--)
        if (W.usb.log[i].control)
            return &W.usb.log[i];
    return NULL;
}

static bool expect_submit(uint32_t seq, int32_t status, int32_t actual, bool in)
{
    if (!cli_reply(&W, S, &R, in)) {
        TL_CHECK(!"a reply was expected");
        return false;
    }
    TL_EQ_INT(R.h.command, USBIP_RET_SUBMIT);
    TL_EQ_INT(R.h.seqnum, seq);
    TL_EQ_INT(R.h.u.ret_submit.status, status);
    TL_EQ_INT(R.h.u.ret_submit.actual_length, actual);
    return R.h.command == USBIP_RET_SUBMIT && R.h.seqnum == seq;
}

static void expect_unlink(uint32_t seq, int32_t status)
{
    if (!cli_reply(&W, S, &R, false)) {
        TL_CHECK(!"a RET_UNLINK was expected");
        return;
    }
    TL_EQ_INT(R.h.command, USBIP_RET_UNLINK);
    TL_EQ_INT(R.h.seqnum, seq);
    TL_EQ_INT(R.h.u.ret_unlink.status, status);
}

static void expect_nothing(void)
{
    TL_EQ_INT(fake_net_avail(&W.net, S), 0);
}

/* ---- split rules -------------------------------------------------------- */

static void out_split(int32_t tbl, uint32_t flags, int want_transfers, int zlp_on_last)
{
    setup();
    fake_usb_auto(&W.usb, 0, 0x01);
    uint8_t *data = pattern((size_t)tbl, 3);
    cli_submit(&W, S, 1, 1, USBIP_DIR_OUT, tbl, flags, NULL, data);
    world_pump(&W);
    expect_submit(1, 0, tbl, false);
    TL_EQ_INT(log_count(0x01), want_transfers);
    size_t off = 0;
    for (int i = 0; i < want_transfers; i++) {
        const fu_log_t *l = log_nth(0x01, i);
        if (!l)
            break;
        int want = tbl - (int)off < CHUNK ? tbl - (int)off : CHUNK;
        TL_EQ_INT(l->num_bytes, want);
        /* no ZLP between chunks; on the last only when asked at a multiple of MPS */
        TL_EQ_INT(l->flags, (i == want_transfers - 1 && zlp_on_last) ? UHP_XFER_FLAG_ZERO_PACK : 0);
        if (want > 0)
            TL_EQ_MEM(l->data, data + off, (size_t)want);
        off += (size_t)want;
    }
    free(data);
    teardown();
}

static void test_out_small(void) { out_split(100, 0, 1, 0); }
static void test_out_split_multiple_no_zlp(void) { out_split(3 * CHUNK, 0, 3, 0); }
static void test_out_split_multiple_zero_packet(void) { out_split(3 * CHUNK, USBIP_URB_ZERO_PACKET, 3, 1); }
static void test_out_split_nonmultiple_zero_packet(void) { out_split(20000, USBIP_URB_ZERO_PACKET, 3, 0); }
static void test_out_single_multiple_zero_packet(void) { out_split(512, USBIP_URB_ZERO_PACKET, 1, 1); }
static void test_out_zero_length(void) { out_split(0, 0, 1, 0); }

static void test_in_split_exact(void)
{
    setup();
    fake_usb_script(&W.usb, 0, 0x82, UHP_STATUS_COMPLETED, CHUNK);
    fake_usb_script(&W.usb, 0, 0x82, UHP_STATUS_COMPLETED, CHUNK);
    fake_usb_script(&W.usb, 0, 0x82, UHP_STATUS_COMPLETED, 20000 - 2 * CHUNK);
    cli_submit(&W, S, 5, 2, USBIP_DIR_IN, 20000, 0, NULL, NULL);
    world_pump(&W);
    if (expect_submit(5, 0, 20000, true)) {
        TL_EQ_INT(R.data_len, 20000);
        /* chunk k's bytes are fill(k+1)*16 + i, in order */
        TL_EQ_INT(R.data[0], 16);
        TL_EQ_INT(R.data[CHUNK], (uint8_t)32);
        TL_EQ_INT(R.data[2 * CHUNK + 1], (uint8_t)(48 + 1));
    }
    TL_EQ_INT(log_count(0x82), 3);
    /* IN lengths rounded up to MPS for the host */
    TL_EQ_INT(log_nth(0x82, 2)->num_bytes, 3776);
    teardown();
}

static void test_short_in_chunk_ends_urb(void)
{
    setup();
    fake_usb_script(&W.usb, 0, 0x82, UHP_STATUS_COMPLETED, CHUNK);
    fake_usb_script(&W.usb, 0, 0x82, UHP_STATUS_COMPLETED, 100); /* short: end of A */
    fake_usb_script(&W.usb, 0, 0x82, UHP_STATUS_COMPLETED, 64);  /* B's data */
    cli_submit(&W, S, 1, 2, USBIP_DIR_IN, 3 * CHUNK, 0, NULL, NULL);
    cli_submit(&W, S, 2, 2, USBIP_DIR_IN, 64, 0, NULL, NULL);
    world_pump(&W);
    expect_submit(1, 0, CHUNK + 100, true);
    if (expect_submit(2, 0, 64, true))
        TL_EQ_INT(R.data[0], 48); /* the third response, not swallowed by A */
    TL_EQ_INT(log_count(0x82), 3);
    TL_EQ_INT(log_nth(0x82, 2)->num_bytes, 64);
    teardown();
}

static void test_in_babble_clamped(void)
{
    setup();
    fake_usb_script(&W.usb, 0, 0x82, UHP_STATUS_COMPLETED, 128);
    cli_submit(&W, S, 1, 2, USBIP_DIR_IN, 100, 0, NULL, NULL);
    world_pump(&W);
    TL_EQ_INT(log_nth(0x82, 0)->num_bytes, 128);
    if (expect_submit(1, USBIP_EOVERFLOW, 100, true))
        TL_EQ_INT(R.data_len, 100);
    usbip_device_info_t info;
    usbip_server_list_devices(W.srv, &info, 1);
    TL_EQ_INT(info.stats.errors.overflow, 1);
    teardown();
}

static void test_short_not_ok(void)
{
    setup();
    fake_usb_script(&W.usb, 0, 0x82, UHP_STATUS_COMPLETED, 10);
    fake_usb_script(&W.usb, 0, 0x82, UHP_STATUS_COMPLETED, 10);
    cli_submit(&W, S, 1, 2, USBIP_DIR_IN, 128, USBIP_URB_SHORT_NOT_OK, NULL, NULL);
    cli_submit(&W, S, 2, 2, USBIP_DIR_IN, 128, 0, NULL, NULL);
    world_pump(&W);
    expect_submit(1, USBIP_EREMOTEIO, 10, true);
    expect_submit(2, 0, 10, true);
    teardown();
}

static void test_stall_mid_split_keeps_order(void)
{
    setup();
    fake_usb_script(&W.usb, 0, 0x01, UHP_STATUS_COMPLETED, -1);
    fake_usb_script(&W.usb, 0, 0x01, UHP_STATUS_STALL, 0);
    fake_usb_script(&W.usb, 0, 0x01, UHP_STATUS_COMPLETED, -1);
    uint8_t *a = pattern(3 * CHUNK, 1), *b = pattern(64, 9);
    cli_submit(&W, S, 10, 1, USBIP_DIR_OUT, 3 * CHUNK, 0, NULL, a);
    cli_submit(&W, S, 11, 1, USBIP_DIR_OUT, 64, 0, NULL, b);
    world_pump(&W);
    expect_submit(10, USBIP_EPIPE, CHUNK, false);
    expect_submit(11, 0, 64, false);
    TL_EQ_INT(log_count(0x01), 3); /* chunk 3 of the stalled URB never ran */
    TL_EQ_MEM(log_nth(0x01, 2)->data, b, 64);
    usbip_device_info_t info;
    usbip_server_list_devices(W.srv, &info, 1);
    TL_EQ_INT(info.stats.errors.stall, 1);
    free(a);
    free(b);
    teardown();
}

static void test_status_mapping(void)
{
    static const struct { uhp_status_t st; int32_t want; } m[] = {
        {UHP_STATUS_ERROR, USBIP_EPROTO}, {UHP_STATUS_TIMED_OUT, USBIP_ETIMEDOUT},
        {UHP_STATUS_STALL, USBIP_EPIPE}, {UHP_STATUS_OVERFLOW, USBIP_EOVERFLOW},
        {UHP_STATUS_NO_DEVICE, USBIP_ENODEV}, {UHP_STATUS_CANCELED, USBIP_ECONNRESET},
    };
    setup();
    for (unsigned i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
        fake_usb_script(&W.usb, 0, 0x82, m[i].st, 0);
        cli_submit(&W, S, 100 + i, 2, USBIP_DIR_IN, 64, 0, NULL, NULL);
        world_pump(&W);
        expect_submit(100 + i, m[i].want, 0, true);
    }
    usbip_device_info_t info;
    usbip_server_list_devices(W.srv, &info, 1);
    TL_EQ_INT(info.stats.errors.proto, 1);
    TL_EQ_INT(info.stats.errors.timeout, 1);
    TL_EQ_INT(info.stats.errors.nodev, 1);
    teardown();
}

/* ---- isochronous --------------------------------------------------------- */

static void iso_submit(uint32_t seq, uint32_t ep, uint32_t dir, int np, int plen, const uint8_t *data)
{
    int32_t tbl = np * plen;
    usbip_urb_hdr_t h = {.command = USBIP_CMD_SUBMIT, .seqnum = seq, .devid = cli_last_devid, .direction = dir, .ep = ep};
    h.u.submit.transfer_flags = USBIP_URB_ISO_ASAP | (dir ? USBIP_URB_DIR_IN : 0);
    h.u.submit.transfer_buffer_length = tbl;
    h.u.submit.start_frame = 77;
    h.u.submit.raw_number_of_packets = np;
    h.u.submit.interval = 1;
    uint8_t b[48];
    usbip_pack_urb_hdr(b, &h);
    fake_net_write(&W.net, S, b, 48);
    if (dir == USBIP_DIR_OUT)
        fake_net_write(&W.net, S, data, (size_t)tbl);
    for (int k = 0; k < np; k++) {
        usbip_iso_desc_t d = {.offset = (uint32_t)(k * plen), .length = (uint32_t)plen};
        usbip_pack_iso_desc(b, &d);
        fake_net_write(&W.net, S, b, 16);
    }
}

static void test_iso_in(void)
{
    setup();
    fake_usb_auto(&W.usb, 0, 0x85);
    iso_submit(1, 5, USBIP_DIR_IN, 4, 192, NULL);
    world_pump(&W);
    /* odd packets half full: 192 + 96 + 192 + 96, compacted without gaps */
    if (expect_submit(1, 0, 576, true)) {
        TL_EQ_INT(R.h.u.ret_submit.number_of_packets, 4);
        TL_EQ_INT(R.h.u.ret_submit.start_frame, 77);
        TL_EQ_INT(R.h.u.ret_submit.error_count, 0);
        TL_EQ_INT(R.data[192], 16);      /* packet 1 starts right after packet 0 */
        TL_EQ_INT(R.data[288], 32);      /* packet 2 after packet 1's 96 bytes */
    }
    uint8_t d[16];
    uint32_t want_actual[4] = {192, 96, 192, 96};
    for (int k = 0; k < 4; k++) {
        TL_EQ_INT(fake_net_read(&W.net, S, d, 16), 16);
        usbip_iso_desc_t o;
        usbip_unpack_iso_desc(d, 16, 768, &o);
        TL_EQ_INT(o.offset, (uint32_t)(k * 192)); /* the request's offsets */
        TL_EQ_INT(o.length, 192);
        TL_EQ_INT(o.actual_length, want_actual[k]);
        TL_EQ_INT(o.status, 0);
    }
    expect_nothing();
    teardown();
}

static void test_iso_out_and_refusals(void)
{
    setup();
    fake_usb_auto(&W.usb, 0, 0x06);
    uint8_t *p = pattern(3 * 100, 4);
    iso_submit(1, 6, USBIP_DIR_OUT, 3, 100, p);
    world_pump(&W);
    expect_submit(1, 0, 300, false);
    uint8_t d[16];
    for (int k = 0; k < 3; k++) {
        TL_EQ_INT(fake_net_read(&W.net, S, d, 16), 16); /* descriptors follow for OUT too */
        TL_EQ_INT(usbip_get_be32(d + 8), 100);
    }
    const fu_log_t *l = log_nth(0x06, 0);
    TL_CHECK(l && l->num_bytes == 300 && memcmp(l->data, p, 300) == 0);
    /* ISO packets on a bulk endpoint: refused, the client still gets its descriptors */
    iso_submit(2, 2, USBIP_DIR_IN, 2, 64, NULL);
    fake_usb_auto(&W.usb, 0, 0x82);
    cli_submit(&W, S, 3, 2, USBIP_DIR_IN, 64, 0, NULL, NULL);
    world_pump(&W);
    expect_submit(2, USBIP_EINVAL, 0, true);
    TL_EQ_INT(fake_net_read(&W.net, S, d, 16), 16);
    TL_EQ_INT(fake_net_read(&W.net, S, d, 16), 16);
    expect_submit(3, 0, 64, true); /* stream still in sync */
    free(p);
    teardown();
}

/* ---- EP0 requests the core handles through the host ---------------------- */

static void test_clear_halt_forwarded_and_toggle_reset(void)
{
    setup();
    int base = W.usb.dev[0].toggle_resets[16 | 2];
    const uint8_t clr[8] = {0x02, 0x01, 0, 0, 0x82, 0, 0, 0};
    cli_submit(&W, S, 1, 0, USBIP_DIR_OUT, 0, 0, clr, NULL);
    world_pump(&W);
    expect_submit(1, 0, 0, false);
    TL_EQ_INT(W.usb.dev[0].toggle_resets[16 | 2], base + 1);
    const fu_log_t *l = last_control();
    TL_CHECK(l && memcmp(l->setup, clr, 8) == 0); /* the device saw it too */
    /* the device's answer is reported, not invented */
    W.usb.dev[0].ctrl_stall_req = 0x01;
    cli_submit(&W, S, 2, 0, USBIP_DIR_OUT, 0, 0, clr, NULL);
    world_pump(&W);
    expect_submit(2, USBIP_EPIPE, 0, false);
    TL_EQ_INT(W.usb.dev[0].toggle_resets[16 | 2], base + 2);
    teardown();
}

static void test_set_interface(void)
{
    setup();
    /* an interrupt URB pending on intf 0 must be drained first */
    cli_submit(&W, S, 1, 3, USBIP_DIR_IN, 8, 0, NULL, NULL);
    world_pump(&W);
    TL_EQ_INT(fake_usb_in_flight(&W.usb, 0x83), 1);
    const uint8_t setif[8] = {0x01, 0x0B, 1, 0, 0, 0, 0, 0};
    cli_submit(&W, S, 2, 0, USBIP_DIR_OUT, 0, 0, setif, NULL);
    world_pump(&W);
    expect_submit(1, USBIP_ECONNRESET, 0, true);
    expect_submit(2, 0, 0, false);
    TL_EQ_INT(W.usb.dev[0].claimed_alt[0], 1);
    const fu_log_t *l = last_control();
    TL_CHECK(l && memcmp(l->setup, setif, 8) == 0);
    /* 0x83 does not exist in alt 1 */
    cli_submit(&W, S, 3, 3, USBIP_DIR_IN, 8, 0, NULL, NULL);
    world_pump(&W);
    expect_submit(3, USBIP_ENOENT, 0, true);
    /* an alternate setting the device does not have: STALL, old alt kept */
    const uint8_t bad[8] = {0x01, 0x0B, 5, 0, 0, 0, 0, 0};
    int before = W.usb.nlog;
    cli_submit(&W, S, 4, 0, USBIP_DIR_OUT, 0, 0, bad, NULL);
    world_pump(&W);
    expect_submit(4, USBIP_EPIPE, 0, false);
    TL_EQ_INT(W.usb.dev[0].claimed_alt[0], 1);
    TL_EQ_INT(W.usb.nlog, before); /* not forwarded */
    /* bulk still works in alt 1 */
    fake_usb_auto(&W.usb, 0, 0x01);
    uint8_t d[64] = {1};
    cli_submit(&W, S, 5, 1, USBIP_DIR_OUT, 64, 0, NULL, d);
    world_pump(&W);
    expect_submit(5, 0, 64, false);
    teardown();
}

static void test_set_configuration(void)
{
    setup();
    int out0 = W.usb.dev[0].toggle_resets[1], in0 = W.usb.dev[0].toggle_resets[16 | 2];
    const uint8_t same[8] = {0x00, 0x09, 1, 0, 0, 0, 0, 0};
    cli_submit(&W, S, 1, 0, USBIP_DIR_OUT, 0, 0, same, NULL);
    world_pump(&W);
    expect_submit(1, 0, 0, false);
    TL_EQ_INT(W.usb.dev[0].toggle_resets[1], out0 + 1);       /* bulk OUT */
    TL_EQ_INT(W.usb.dev[0].toggle_resets[16 | 2], in0 + 1);   /* bulk IN */
    int before = W.usb.nlog;
    const uint8_t other[8] = {0x00, 0x09, 2, 0, 0, 0, 0, 0};
    cli_submit(&W, S, 2, 0, USBIP_DIR_OUT, 0, 0, other, NULL);
    world_pump(&W);
    expect_submit(2, USBIP_EPIPE, 0, false);
    TL_EQ_INT(W.usb.nlog, before);
    teardown();
}

static void test_control_in_clamped(void)
{
    setup();
    const uint8_t gd[8] = {0x80, 0x06, 0, 1, 0, 0, 18, 0};
    cli_submit(&W, S, 1, 0, USBIP_DIR_IN, 18, 0, gd, NULL);
    world_pump(&W);
    if (expect_submit(1, 0, 18, true)) /* setup bytes excluded */
        TL_EQ_INT(R.data[0], 18);
    /* wLength > the block: refused with a status, not a crash */
    const uint8_t big[8] = {0x80, 0x06, 0, 2, 0, 0, 0xff, 0xff};
    cli_submit(&W, S, 2, 0, USBIP_DIR_IN, 65535, 0, big, NULL);
    world_pump(&W);
    expect_submit(2, USBIP_ENOMEM, 0, true);
    teardown();
}

static void test_import_resets_device_toggles_first(void)
{
    usbip_server_config_t cfg = USBIP_SERVER_DEFAULT_CONFIG();
    world_init(&W, &cfg);
    fake_usb_add_test_device(&W.usb, "1-1", 0x1209, 0x0001);
    world_pump(&W);
    W.usb.dev[0].ctrl_hold = true;
    S = world_connect(&W, "127.0.0.1");
    TL_EQ_INT(cli_import(&W, S, "1-1"), USBIP_ST_OK);
    const fu_log_t *l = last_control();
    const uint8_t setcfg[8] = {0x00, 0x09, 1, 0, 0, 0, 0, 0};
    TL_CHECK(l && memcmp(l->setup, setcfg, 8) == 0);
    /* a client that skips SET_CONFIGURATION: its bulk URB waits for the reset */
    fake_usb_auto(&W.usb, 0, 0x01);
    uint8_t d[8] = {1, 2, 3};
    cli_submit(&W, S, 1, 1, USBIP_DIR_OUT, 8, 0, NULL, d);
    world_pump(&W);
    TL_EQ_INT(log_count(0x01), 0);
    W.usb.dev[0].ctrl_hold = false;
    world_pump(&W);
    TL_EQ_INT(log_count(0x01), 1);
    expect_submit(1, 0, 8, false);
    expect_nothing(); /* the core's own request is never answered to the client */
    usbip_device_info_t info;
    usbip_server_list_devices(W.srv, &info, 1);
    TL_EQ_INT(info.stats.urbs, 1);
    teardown();
}

/* ---- unlink: every case of usbip-protocol.md section 7 ------------------- */

static void test_unlink_queued(void)
{
    setup();
    cli_submit(&W, S, 1, 2, USBIP_DIR_IN, 64, 0, NULL, NULL); /* in the host, no data yet */
    cli_submit(&W, S, 2, 2, USBIP_DIR_IN, 64, 0, NULL, NULL); /* queued behind it */
    cli_unlink(&W, S, 3, 2);
    world_pump(&W);
    expect_unlink(3, USBIP_ECONNRESET);
    expect_nothing();
    TL_EQ_INT(log_count(0x82), 1);
    fake_usb_script(&W.usb, 0, 0x82, UHP_STATUS_COMPLETED, 5);
    world_pump(&W);
    expect_submit(1, 0, 5, true);
    expect_nothing(); /* never a RET_SUBMIT for 2 */
    TL_EQ_INT(log_count(0x82), 1);
    teardown();
}

static void test_unlink_in_flight_first_chunk(void)
{
    setup();
    cli_submit(&W, S, 1, 2, USBIP_DIR_IN, 3 * CHUNK, 0, NULL, NULL);
    world_pump(&W);
    TL_EQ_INT(fake_usb_in_flight(&W.usb, 0x82), 1);
    cli_unlink(&W, S, 2, 1);
    world_pump(&W);
    expect_unlink(2, USBIP_ECONNRESET);
    expect_nothing();
    TL_EQ_INT(fake_usb_in_flight(&W.usb, 0x82), 0);
    TL_EQ_INT(log_count(0x82), 1);
    /* the host pipe restarted at DATA0: the device is reset to DATA0 too */
    const uint8_t clr[8] = {0x02, 0x01, 0, 0, 0x82, 0, 0, 0};
    const fu_log_t *l = last_control();
    TL_CHECK(l && memcmp(l->setup, clr, 8) == 0);
    int ctrl_at = (int)(l - W.usb.log);
    /* the endpoint works afterwards, after the resync */
    fake_usb_script(&W.usb, 0, 0x82, UHP_STATUS_COMPLETED, 64);
    cli_submit(&W, S, 3, 2, USBIP_DIR_IN, 64, 0, NULL, NULL);
    world_pump(&W);
    expect_submit(3, 0, 64, true);
    const fu_log_t *b = log_nth(0x82, 1);
    TL_CHECK(b && (int)(b - W.usb.log) > ctrl_at);
    teardown();
}

static void test_unlink_in_flight_later_chunk(void)
{
    setup();
    fake_usb_script(&W.usb, 0, 0x01, UHP_STATUS_COMPLETED, -1); /* chunk 1 goes, chunk 2 NAKs */
    uint8_t *a = pattern(3 * CHUNK, 5);
    cli_submit(&W, S, 1, 1, USBIP_DIR_OUT, 3 * CHUNK, 0, NULL, a);
    world_pump(&W);
    TL_EQ_INT(log_count(0x01), 2);
    cli_unlink(&W, S, 2, 1);
    world_pump(&W);
    expect_unlink(2, USBIP_ECONNRESET);
    expect_nothing();
    TL_EQ_INT(log_count(0x01), 2); /* the rest was dropped */
    TL_EQ_INT(fake_usb_in_flight(&W.usb, 0x01), 0);
    free(a);
    teardown();
}

static void test_unlink_raced_with_completion(void)
{
    setup();
    cli_submit(&W, S, 1, 2, USBIP_DIR_IN, 64, 0, NULL, NULL);
    world_pump(&W);
    fake_usb_script(&W.usb, 0, 0x82, UHP_STATUS_COMPLETED, 64);
    fake_usb_run_bus(&W.usb); /* done in the host, callback not delivered yet */
    cli_unlink(&W, S, 2, 1);
    usbip_server_on_readable(W.srv, S); /* the unlink is processed first */
    world_pump(&W);
    expect_unlink(2, 0); /* kernel stub semantics: status 0, data dropped */
    expect_nothing();
    teardown();
}

static void test_unlink_after_completion_goes_after_ret_submit(void)
{
    setup();
    W.net.s[S].send_blocked = true;
    fake_usb_script(&W.usb, 0, 0x82, UHP_STATUS_COMPLETED, 7);
    cli_submit(&W, S, 1, 2, USBIP_DIR_IN, 64, 0, NULL, NULL);
    world_pump(&W); /* completed, RET_SUBMIT waiting for the socket */
    cli_unlink(&W, S, 2, 1);
    world_pump(&W);
    W.net.s[S].send_blocked = false;
    world_pump(&W);
    expect_submit(1, 0, 7, true);
    expect_unlink(2, 0);
    teardown();
}

static void test_unlink_unknown_seqnum(void)
{
    setup();
    cli_unlink(&W, S, 9, 12345);
    world_pump(&W);
    expect_unlink(9, 0);
    teardown();
}

static void test_unlink_ep0_in_flight(void)
{
    setup();
    W.usb.dev[0].ctrl_hold = true;
    const uint8_t gd[8] = {0x80, 0x06, 0, 1, 0, 0, 18, 0};
    cli_submit(&W, S, 1, 0, USBIP_DIR_IN, 18, 0, gd, NULL);
    world_pump(&W);
    cli_unlink(&W, S, 2, 1);
    world_pump(&W);
    expect_nothing(); /* EP0 cannot be cancelled: wait for the transfer */
    W.usb.dev[0].ctrl_hold = false;
    world_pump(&W);
    expect_unlink(2, USBIP_ECONNRESET);
    expect_nothing();
    teardown();
}

static void test_control_watchdog(void)
{
    setup();
    W.usb.dev[0].ctrl_hold = true;
    const uint8_t vendor[8] = {0xC0, 0x42, 0, 0, 0, 0, 4, 0};
    cli_submit(&W, S, 1, 0, USBIP_DIR_IN, 4, 0, vendor, NULL);
    world_pump(&W);
    W.now_us += 4 * 1000000ull;
    usbip_server_tick(W.srv);
    TL_EQ_INT(W.usb.port_resets, 0);
    W.now_us += 2 * 1000000ull;
    usbip_server_tick(W.srv);
    TL_EQ_INT(W.usb.port_resets, 1);
    world_pump(&W);
    expect_submit(1, USBIP_ETIMEDOUT, 0, true);
    /* the reset device is gone: its session ends cleanly */
    TL_CHECK(!W.net.s[S].open);
    usbip_device_info_t info;
    usbip_server_list_devices(W.srv, &info, 1);
    teardown();
}

/* ---- memory ------------------------------------------------------------- */

static void test_back_pressure(void)
{
    usbip_server_config_t cfg = USBIP_SERVER_DEFAULT_CONFIG();
    cfg.buffer_budget = 4 * 8192; /* 4 blocks */
    setup_cfg(cfg);
    uint8_t *a = pattern(3 * CHUNK, 1);
    for (uint32_t i = 0; i < 3; i++)
        cli_submit(&W, S, 1 + i, 1, USBIP_DIR_OUT, 3 * CHUNK, 0, NULL, a);
    world_pump(&W);
    usbip_buffer_stats_t b;
    usbip_server_buffer_stats(W.srv, &b);
    TL_EQ_INT(b.blocks, 4);
    TL_CHECK(b.waits >= 1);
    TL_CHECK(b.peak <= b.budget);
    TL_CHECK(!W.net.s[S].want_read); /* TCP back-pressure: not reading */
    expect_nothing();
    fake_usb_auto(&W.usb, 0, 0x01);
    world_pump(&W);
    for (uint32_t i = 0; i < 3; i++)
        expect_submit(1 + i, 0, 3 * CHUNK, false);
    TL_EQ_INT(log_count(0x01), 9);
    TL_EQ_MEM(log_nth(0x01, 8)->data, a + 2 * CHUNK, CHUNK);
    usbip_server_buffer_stats(W.srv, &b);
    TL_EQ_INT(b.used, 0);
    TL_CHECK(W.net.s[S].want_read);
    free(a);
    teardown();
}

static void test_in_waits_for_blocks(void)
{
    usbip_server_config_t cfg = USBIP_SERVER_DEFAULT_CONFIG();
    cfg.buffer_budget = 2 * 8192;
    setup_cfg(cfg);
    cli_submit(&W, S, 1, 2, USBIP_DIR_IN, 2 * CHUNK, 0, NULL, NULL); /* takes both blocks */
    cli_submit(&W, S, 2, 3, USBIP_DIR_IN, 8, 0, NULL, NULL);         /* other endpoint: waits */
    world_pump(&W);
    TL_EQ_INT(fake_usb_in_flight(&W.usb, 0x83), 0);
    fake_usb_auto(&W.usb, 0, 0x82);
    fake_usb_script(&W.usb, 0, 0x83, UHP_STATUS_COMPLETED, 8);
    world_pump(&W);
    expect_submit(1, 0, 2 * CHUNK, true);
    expect_submit(2, 0, 8, true);
    usbip_buffer_stats_t b;
    usbip_server_buffer_stats(W.srv, &b);
    TL_CHECK(b.waits >= 1);
    teardown();
}

static void test_urb_larger_than_budget(void)
{
    usbip_server_config_t cfg = USBIP_SERVER_DEFAULT_CONFIG();
    cfg.buffer_budget = 4 * 8192;
    setup_cfg(cfg);
    uint8_t *a = pattern(5 * CHUNK, 1);
    cli_submit(&W, S, 1, 1, USBIP_DIR_OUT, 5 * CHUNK, 0, NULL, a);
    cli_submit(&W, S, 2, 1, USBIP_DIR_OUT, 64, 0, NULL, a);
    fake_usb_auto(&W.usb, 0, 0x01);
    world_pump(&W);
    expect_submit(1, USBIP_ENOMEM, 0, false);
    expect_submit(2, 0, 64, false); /* its payload was drained: stream in sync */
    usbip_buffer_stats_t b;
    usbip_server_buffer_stats(W.srv, &b);
    TL_EQ_INT(b.too_big, 1);
    TL_EQ_INT(log_count(0x01), 1);
    TL_CHECK(W.net.s[S].open);
    free(a);
    teardown();
}

/* ---- zero copy, partial sends, counters ---------------------------------- */

static void test_zero_copy_and_partial_sends(void)
{
    setup();
    W.net.s[S].max_send = 7; /* the socket takes 7 bytes per call */
    fake_usb_auto(&W.usb, 0, 0x01);
    fake_usb_auto(&W.usb, 0, 0x82);
    uint8_t *a = pattern(50000, 2);
    cli_submit(&W, S, 1, 1, USBIP_DIR_OUT, 50000, 0, NULL, a);
    world_pump(&W);
    expect_submit(1, 0, 50000, false);
    cli_submit(&W, S, 2, 2, USBIP_DIR_IN, 3 * CHUNK, 0, NULL, NULL);
    cli_submit(&W, S, 3, 2, USBIP_DIR_IN, 64, 0, NULL, NULL);
    world_pump(&W);
    if (expect_submit(2, 0, 3 * CHUNK, true)) {
        TL_EQ_INT(R.data[CHUNK + 5], 5);
        TL_EQ_INT(R.data[3 * CHUNK - 1], (uint8_t)(CHUNK - 1));
    }
    expect_submit(3, 0, 64, true);
    TL_EQ_INT(usbip_server_copies(W.srv), 0);
    usbip_device_info_t info;
    usbip_server_list_devices(W.srv, &info, 1);
    TL_EQ_INT(info.stats.urbs, 3);
    TL_EQ_INT(info.stats.bytes_out, 50000);
    TL_EQ_INT(info.stats.bytes_in, 3 * CHUNK + 64);
    TL_EQ_INT(info.stats.queue_depth, 0);
    free(a);
    teardown();
}

static void test_counters(void)
{
    setup();
    cli_submit(&W, S, 1, 2, USBIP_DIR_IN, 64, 0, NULL, NULL);
    W.now_us += 1500; /* the URB takes 1.5 ms */
    world_pump(&W);
    usbip_device_info_t info;
    usbip_server_list_devices(W.srv, &info, 1);
    TL_EQ_INT(info.stats.queue_depth, 1);
    cli_unlink(&W, S, 2, 1);
    W.now_us += 500;
    world_pump(&W);
    usbip_server_list_devices(W.srv, &info, 1);
    TL_EQ_INT(info.stats.unlinks, 1);
    TL_EQ_INT(info.stats.queue_depth, 0);
    TL_EQ_INT(info.stats.urbs, 1);
    TL_CHECK(info.stats.latency_max_us >= 500);
    TL_CHECK(info.stats.latency_p50_us >= 256 && info.stats.latency_p50_us <= info.stats.latency_max_us);
    teardown();
}

int main(void)
{
    TL_RUN(test_out_small);
    TL_RUN(test_out_split_multiple_no_zlp);
    TL_RUN(test_out_split_multiple_zero_packet);
    TL_RUN(test_out_split_nonmultiple_zero_packet);
    TL_RUN(test_out_single_multiple_zero_packet);
    TL_RUN(test_out_zero_length);
    TL_RUN(test_in_split_exact);
    TL_RUN(test_short_in_chunk_ends_urb);
    TL_RUN(test_in_babble_clamped);
    TL_RUN(test_short_not_ok);
    TL_RUN(test_stall_mid_split_keeps_order);
    TL_RUN(test_status_mapping);
    TL_RUN(test_iso_in);
    TL_RUN(test_iso_out_and_refusals);
    TL_RUN(test_clear_halt_forwarded_and_toggle_reset);
    TL_RUN(test_set_interface);
    TL_RUN(test_set_configuration);
    TL_RUN(test_control_in_clamped);
    TL_RUN(test_import_resets_device_toggles_first);
    TL_RUN(test_unlink_queued);
    TL_RUN(test_unlink_in_flight_first_chunk);
    TL_RUN(test_unlink_in_flight_later_chunk);
    TL_RUN(test_unlink_raced_with_completion);
    TL_RUN(test_unlink_after_completion_goes_after_ret_submit);
    TL_RUN(test_unlink_unknown_seqnum);
    TL_RUN(test_unlink_ep0_in_flight);
    TL_RUN(test_control_watchdog);
    TL_RUN(test_back_pressure);
    TL_RUN(test_in_waits_for_blocks);
    TL_RUN(test_urb_larger_than_budget);
    TL_RUN(test_zero_copy_and_partial_sends);
    TL_RUN(test_counters);
    return TL_RESULT();
}
