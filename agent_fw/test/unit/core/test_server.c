/*
 * test_server.c - sessions and devices: DEVLIST, IMPORT status codes, lease
 * grants and revoke, device removal mid-transfer, dead clients, protocol
 * violations (closing only the offending session), limits.
 */
#include <stdlib.h>
#include <string.h>

#include "fakes.h"
#include "testlib.h"

static world_t W;
static reply_t R;

static void start(usbip_server_config_t cfg, int ndev)
{
    world_init(&W, &cfg);
    static const char *paths[] = {"1-1", "1-2.3", "1-3"};
    for (int i = 0; i < ndev; i++)
        fake_usb_add_test_device(&W.usb, paths[i], 0x1209, (uint16_t)(0x10 + i));
    world_pump(&W);
}

static void finish(void)
{
    usbip_buffer_stats_t b;
    usbip_server_buffer_stats(W.srv, &b);
    TL_EQ_INT(b.used, 0);
    TL_EQ_INT(W.usb.violations, 0);
    world_fini(&W);
    TL_EQ_INT(W.usb.xfers_alive, 0);
}

/* Send OP_REQ_DEVLIST; returns the device count and fills busids. */
static int devlist(int s, char busids[][32], uint16_t *pids)
{
    uint8_t req[8];
    usbip_pack_op_hdr(req, USBIP_OP_REQ_DEVLIST, 0);
    fake_net_write(&W.net, s, req, 8);
    world_pump(&W);
    uint8_t h[12];
    if (fake_net_read(&W.net, s, h, 12) != 12)
        return -1;
    TL_EQ_INT(usbip_get_be16(h), USBIP_VERSION);
    TL_EQ_INT(usbip_get_be16(h + 2), USBIP_OP_REP_DEVLIST);
    TL_EQ_INT(usbip_get_be32(h + 4), 0);
    int n = (int)usbip_get_be32(h + 8);
    for (int i = 0; i < n; i++) {
        uint8_t rec[312];
        fake_net_read(&W.net, s, rec, 312);
        usbip_dev_record_t r;
        TL_EQ_INT(usbip_unpack_dev_record(rec, 312, &r), USBIP_PROTO_OK);
        strcpy(busids[i], r.busid);
        pids[i] = r.idProduct;
        uint8_t intf[4 * 16];
        fake_net_read(&W.net, s, intf, 4u * r.bNumInterfaces);
        TL_EQ_INT(r.bNumInterfaces, 3);
        TL_EQ_INT(intf[0], 0xff); /* class of intf 0 */
        TL_EQ_INT(intf[3], 0);    /* padding */
        TL_EQ_INT(intf[4], 0x0a); /* class of intf 1 */
    }
    return n;
}

static void test_devlist(void)
{
    start(USBIP_SERVER_DEFAULT_CONFIG(), 2);
    int s = world_connect(&W, "127.0.0.1");
    TL_CHECK(W.net.s[s].nodelay);
    TL_CHECK(W.net.s[s].keepalive);
    char b[4][32];
    uint16_t p[4];
    TL_EQ_INT(devlist(s, b, p), 2);
    TL_EQ_STR(b[0], "1-1");
    TL_EQ_STR(b[1], "1-2.3"); /* busid = port path */
    TL_EQ_INT(p[1], 0x11);
    TL_EQ_INT(fake_net_avail(&W.net, s), 0);
    finish();
}

static void test_busid_stable_across_replug(void)
{
    start(USBIP_SERVER_DEFAULT_CONFIG(), 1);
    fake_usb_unplug(&W.usb, 0);
    world_pump(&W);
    TL_EQ_INT(usbip_server_list_devices(W.srv, NULL, 0), 0);
    int d = fake_usb_add_test_device(&W.usb, "1-1", 0x1209, 0x10);
    W.usb.dev[d].info.dev_addr = 9; /* a new USB address */
    world_pump(&W);
    usbip_device_info_t info;
    TL_EQ_INT(usbip_server_list_devices(W.srv, &info, 1), 1);
    TL_EQ_STR(info.busid, "1-1");
    finish();
}

static void test_import_status_codes(void)
{
    start(USBIP_SERVER_DEFAULT_CONFIG(), 2);
    int a = world_connect(&W, "127.0.0.1");
    TL_EQ_INT(cli_import(&W, a, "9-9"), USBIP_ST_NODEV);
    TL_CHECK(W.net.s[a].open); /* a refusal is not a protocol error */
    TL_EQ_INT(cli_import(&W, a, "1-1"), USBIP_ST_OK);
    TL_EQ_INT(cli_last_devid, (1u << 16) | 2u);
    int b = world_connect(&W, "127.0.0.2");
    TL_EQ_INT(cli_import(&W, b, "1-1"), USBIP_ST_DEV_BUSY);
    /* host channels exhausted: a clear refusal, nothing claimed */
    W.usb.channels_free = 0;
    TL_EQ_INT(cli_import(&W, b, "1-2.3"), USBIP_ST_DEV_ERR);
    TL_EQ_INT(W.usb.dev[1].claimed_alt[0], -1);
    TL_CHECK(strstr(W.last_log, "channels") != NULL);
    W.usb.channels_free = 8;
    TL_EQ_INT(cli_import(&W, b, "1-2.3"), USBIP_ST_OK);
    finish();
}

static void test_grants(void)
{
    usbip_server_config_t cfg = USBIP_SERVER_DEFAULT_CONFIG();
    cfg.enforce_grants = true;
    start(cfg, 2);
    int a = world_connect(&W, "127.0.0.1");
    TL_EQ_INT(cli_import(&W, a, "1-1"), USBIP_ST_NA);
    const char *addrs[] = {"127.0.0.2", "127.0.0.3"};
    TL_EQ_INT(usbip_grant(W.srv, "1-1", addrs, 2, "lease-7", 0), USBIP_OK);
    TL_EQ_INT(cli_import(&W, a, "1-1"), USBIP_ST_NA);
    /* hidden from others' device lists while granted */
    char b[4][32];
    uint16_t p[4];
    TL_EQ_INT(devlist(a, b, p), 1);
    TL_EQ_STR(b[0], "1-2.3");
    int g = world_connect(&W, "127.0.0.3");
    TL_EQ_INT(devlist(g, b, p), 2);
    TL_EQ_INT(cli_import(&W, g, "1-1"), USBIP_ST_OK);
    usbip_device_info_t info[2];
    usbip_server_list_devices(W.srv, info, 2);
    TL_EQ_STR(info[0].attached_to, "127.0.0.3");
    TL_EQ_INT(info[0].attached_port, 40000 + g);
    /* the observer heard both refusals and the import, with who and why */
    TL_EQ_INT(W.nev, 3);
    TL_EQ_INT(W.ev[0].kind, USBIP_EV_IMPORT_REFUSED);
    TL_EQ_INT(W.ev[0].status, USBIP_ST_NA);
    TL_EQ_STR(W.ev[0].busid, "1-1");
    TL_EQ_STR(W.ev[1].peer, "127.0.0.1");
    TL_EQ_INT(W.ev[1].port, 40000 + a);
    TL_EQ_INT(W.ev[2].kind, USBIP_EV_ATTACHED);
    TL_EQ_STR(W.ev[2].peer, "127.0.0.3");
    TL_EQ_INT(info[0].num_granted, 2);
    TL_EQ_STR(info[0].lease_id, "lease-7");
    /* revoke closes the granted client's session at once, even with an URB in flight */
    cli_submit(&W, g, 1, 2, USBIP_DIR_IN, 64, 0, NULL, NULL);
    world_pump(&W);
    TL_EQ_INT(fake_usb_in_flight(&W.usb, 0x82), 1);
    TL_EQ_INT(usbip_revoke(W.srv, "1-1"), USBIP_OK);
    TL_CHECK(!W.net.s[g].open);
    TL_EQ_INT(W.nev, 4);
    TL_EQ_INT(W.ev[3].kind, USBIP_EV_DETACHED);
    TL_EQ_INT(W.ev[3].port, 40000 + g);
    world_pump(&W);
    TL_EQ_INT(fake_usb_in_flight(&W.usb, 0x82), 0);
    TL_EQ_INT(W.usb.dev[0].claimed_alt[0], -1); /* channels given back */
    int g2 = world_connect(&W, "127.0.0.3");
    TL_EQ_INT(cli_import(&W, g2, "1-1"), USBIP_ST_NA); /* grant is gone */
    /* bad arguments are refused, nothing changes */
    TL_EQ_INT(usbip_grant(W.srv, "1-1", addrs, 0, NULL, 0), USBIP_ERR_INVALID_ARG);
    TL_EQ_INT(usbip_grant(W.srv, "", addrs, 1, NULL, 0), USBIP_ERR_INVALID_ARG);
    TL_EQ_INT(usbip_revoke(W.srv, "7-7"), USBIP_ERR_NOT_FOUND);
    /* enforcement off: anyone may import */
    usbip_set_enforce(W.srv, false);
    TL_EQ_INT(cli_import(&W, a, "1-1"), USBIP_ST_OK);
    finish();
}

static void test_grant_expiry(void)
{
    usbip_server_config_t cfg = USBIP_SERVER_DEFAULT_CONFIG();
    cfg.enforce_grants = true;
    start(cfg, 1);
    const char *addrs[] = {"127.0.0.1"};
    usbip_grant(W.srv, "1-1", addrs, 1, "l1", W.unix_now + 60);
    int a = world_connect(&W, "127.0.0.1");
    TL_EQ_INT(cli_import(&W, a, "1-1"), USBIP_ST_OK);
    usbip_server_tick(W.srv);
    TL_CHECK(W.net.s[a].open);
    W.unix_now += 61;
    usbip_server_tick(W.srv);
    TL_CHECK(!W.net.s[a].open);
    world_pump(&W);
    finish();
}

static void test_removal_mid_transfer(void)
{
    start(USBIP_SERVER_DEFAULT_CONFIG(), 1);
    int s = world_connect(&W, "127.0.0.1");
    TL_EQ_INT(cli_import(&W, s, "1-1"), USBIP_ST_OK);
    cli_submit(&W, s, 1, 2, USBIP_DIR_IN, 3 * 8128, 0, NULL, NULL); /* in the host */
    cli_submit(&W, s, 2, 2, USBIP_DIR_IN, 64, 0, NULL, NULL);       /* queued */
    uint8_t d[100] = {0};
    cli_submit(&W, s, 3, 1, USBIP_DIR_OUT, 100, 0, NULL, d);        /* other endpoint, in the host */
    world_pump(&W);
    fake_usb_unplug(&W.usb, 0);
    world_pump(&W);
    int seen[4] = {0};
    for (int i = 0; i < 3; i++) {
        if (!cli_reply(&W, s, &R, false))
            break;
        TL_EQ_INT(R.h.command, USBIP_RET_SUBMIT);
        TL_EQ_INT(R.h.u.ret_submit.status, USBIP_ENODEV);
        TL_EQ_INT(R.h.u.ret_submit.actual_length, 0);
        if (R.h.seqnum < 4)
            seen[R.h.seqnum]++;
    }
    TL_CHECK(seen[1] == 1 && seen[2] == 1 && seen[3] == 1);
    TL_CHECK(!W.net.s[s].open); /* closed cleanly after the replies */
    /* unplugged while imported: one detach, not a second one when the session ends */
    TL_EQ_INT(W.nev, 2);
    TL_EQ_INT(W.ev[0].kind, USBIP_EV_ATTACHED);
    TL_EQ_INT(W.ev[1].kind, USBIP_EV_DETACHED);
    TL_EQ_STR(W.ev[1].busid, "1-1");
    TL_EQ_INT(usbip_server_session_count(W.srv), 0);
    TL_EQ_INT(usbip_server_list_devices(W.srv, NULL, 0), 0);
    finish();
}

static void test_client_disconnect_frees_everything(void)
{
    start(USBIP_SERVER_DEFAULT_CONFIG(), 1);
    int s = world_connect(&W, "127.0.0.1");
    TL_EQ_INT(cli_import(&W, s, "1-1"), USBIP_ST_OK);
    cli_submit(&W, s, 1, 2, USBIP_DIR_IN, 2 * 8128, 0, NULL, NULL);
    cli_submit(&W, s, 2, 2, USBIP_DIR_IN, 64, 0, NULL, NULL);
    W.usb.dev[0].ctrl_hold = true;
    const uint8_t gd[8] = {0x80, 0x06, 0, 1, 0, 0, 18, 0};
    cli_submit(&W, s, 3, 0, USBIP_DIR_IN, 18, 0, gd, NULL);
    world_pump(&W);
    W.net.s[s].peer_closed = true; /* vanishes without a word */
    world_pump(&W);
    TL_CHECK(!W.net.s[s].open);
    TL_EQ_INT(fake_usb_in_flight(&W.usb, 0x82), 0); /* cancelled in the host */
    /* EP0 cannot be cancelled: the device stays busy until it ends */
    int b = world_connect(&W, "127.0.0.2");
    TL_EQ_INT(cli_import(&W, b, "1-1"), USBIP_ST_DEV_BUSY);
    W.usb.dev[0].ctrl_hold = false;
    world_pump(&W);
    TL_EQ_INT(W.usb.dev[0].claimed_alt[0], -1);
    TL_EQ_INT(cli_import(&W, b, "1-1"), USBIP_ST_OK);
    finish();
}

static void expect_closed_for(int s, const char *why)
{
    world_pump(&W);
    TL_CHECK(!W.net.s[s].open);
    TL_CHECK(strstr(W.last_log, why) != NULL);
}

static void test_protocol_violations_close_only_that_session(void)
{
    start(USBIP_SERVER_DEFAULT_CONFIG(), 2);
    W.usb.channels_free = 32; /* both devices imported at once */
    int good = world_connect(&W, "127.0.0.9");
    TL_EQ_INT(cli_import(&W, good, "1-2.3"), USBIP_ST_OK);
    uint32_t good_devid = cli_last_devid;

    int s = world_connect(&W, "127.0.0.1");
    uint8_t bad[8] = {0x01, 0x11, 0x80, 0x09, 0, 0, 0, 0};
    fake_net_write(&W.net, s, bad, 8);
    expect_closed_for(s, "unknown operation code");

    s = world_connect(&W, "127.0.0.1");
    uint8_t badver[8] = {0x02, 0x00, 0x80, 0x05, 0, 0, 0, 0};
    fake_net_write(&W.net, s, badver, 8);
    expect_closed_for(s, "version");

    s = world_connect(&W, "127.0.0.1");
    TL_EQ_INT(cli_import(&W, s, "1-1"), USBIP_ST_OK);
    cli_last_devid ^= 1;
    cli_submit(&W, s, 1, 2, USBIP_DIR_IN, 64, 0, NULL, NULL);
    expect_closed_for(s, "devid");
    world_pump(&W);

    s = world_connect(&W, "127.0.0.1");
    TL_EQ_INT(cli_import(&W, s, "1-1"), USBIP_ST_OK);
    cli_submit(&W, s, 5, 2, USBIP_DIR_IN, 64, 0, NULL, NULL);
    cli_submit(&W, s, 5, 2, USBIP_DIR_IN, 64, 0, NULL, NULL);
    expect_closed_for(s, "seqnum already in flight");
    world_pump(&W);

    s = world_connect(&W, "127.0.0.1");
    TL_EQ_INT(cli_import(&W, s, "1-1"), USBIP_ST_OK);
    uint8_t h[48] = {0};
    usbip_put_be32(h, 3); /* a RET_SUBMIT from a client */
    fake_net_write(&W.net, s, h, 48);
    expect_closed_for(s, "unknown URB command");
    world_pump(&W);

    s = world_connect(&W, "127.0.0.1");
    TL_EQ_INT(cli_import(&W, s, "1-1"), USBIP_ST_OK);
    usbip_put_be32(h, 1);
    usbip_put_be32(h + 8, cli_last_devid);
    usbip_put_be32(h + 16, 16); /* ep 16 */
    fake_net_write(&W.net, s, h, 48);
    expect_closed_for(s, "endpoint number");
    world_pump(&W);

    s = world_connect(&W, "127.0.0.1");
    uint8_t imp[40] = {0x01, 0x11, 0x80, 0x03, 0, 0, 0, 0};
    memset(imp + 8, 'A', 32); /* busid without NUL */
    fake_net_write(&W.net, s, imp, 40);
    expect_closed_for(s, "busid");

    /* the well-behaved client never noticed */
    TL_CHECK(W.net.s[good].open);
    cli_last_devid = good_devid;
    fake_usb_script(&W.usb, 1, 0x82, UHP_STATUS_COMPLETED, 3);
    cli_submit(&W, good, 1, 2, USBIP_DIR_IN, 64, 0, NULL, NULL);
    world_pump(&W);
    TL_CHECK(cli_reply(&W, good, &R, true));
    TL_EQ_INT(R.h.u.ret_submit.actual_length, 3);
    finish();
}

static void test_bad_submits_get_a_status(void)
{
    start(USBIP_SERVER_DEFAULT_CONFIG(), 1);
    int s = world_connect(&W, "127.0.0.1");
    TL_EQ_INT(cli_import(&W, s, "1-1"), USBIP_ST_OK);
    uint8_t d[32] = {0};
    cli_submit(&W, s, 1, 7, USBIP_DIR_OUT, 32, 0, NULL, d); /* no such endpoint */
    /* control OUT whose payload does not match wLength */
    const uint8_t st[8] = {0x21, 0x09, 0, 2, 0, 0, 8, 0};
    cli_submit(&W, s, 2, 0, USBIP_DIR_OUT, 32, 0, st, d);
    fake_usb_auto(&W.usb, 0, 0x01);
    cli_submit(&W, s, 3, 1, USBIP_DIR_OUT, 32, 0, NULL, d);
    world_pump(&W);
    TL_CHECK(cli_reply(&W, s, &R, false));
    TL_EQ_INT(R.h.u.ret_submit.status, USBIP_ENOENT);
    TL_CHECK(cli_reply(&W, s, &R, false));
    TL_EQ_INT(R.h.u.ret_submit.status, USBIP_EINVAL);
    TL_CHECK(cli_reply(&W, s, &R, false));
    TL_EQ_INT(R.h.seqnum, 3);
    TL_EQ_INT(R.h.u.ret_submit.status, 0);
    TL_CHECK(W.net.s[s].open);
    finish();
}

static void test_session_limit_and_mgmt_timeout(void)
{
    usbip_server_config_t cfg = USBIP_SERVER_DEFAULT_CONFIG();
    cfg.max_sessions = 2;
    start(cfg, 1);
    int a = world_connect(&W, "127.0.0.1");
    int b = world_connect(&W, "127.0.0.1");
    int c = world_connect(&W, "127.0.0.1");
    TL_CHECK(W.net.s[a].open && W.net.s[b].open);
    TL_CHECK(!W.net.s[c].open);
    TL_EQ_INT(cli_import(&W, b, "1-1"), USBIP_ST_OK);
    W.now_us += 31ull * 1000000ull;
    usbip_server_tick(W.srv);
    TL_CHECK(!W.net.s[a].open); /* idle in the management phase */
    TL_CHECK(W.net.s[b].open);  /* silent with a device: legitimate */
    finish();
}

static void test_create_rejects_bad_config(void)
{
    world_t w;
    memset(&w, 0, sizeof(w));
    usbip_server_ports_t p = {.usb = fake_usb_ops(), .usb_ctx = &w.usb, .net = fake_net_ops(), .net_ctx = &w.net};
    usbip_server_t *srv = NULL;
    usbip_server_config_t cfg = USBIP_SERVER_DEFAULT_CONFIG();
    TL_EQ_INT(usbip_server_create(&cfg, &p, &srv), USBIP_ERR_INVALID_ARG); /* no clock */
    TL_CHECK(srv == NULL);
    TL_CHECK(strcmp(usbip_strerror(USBIP_ERR_FULL), "unknown error") != 0);
}

int main(void)
{
    TL_RUN(test_devlist);
    TL_RUN(test_busid_stable_across_replug);
    TL_RUN(test_import_status_codes);
    TL_RUN(test_grants);
    TL_RUN(test_grant_expiry);
    TL_RUN(test_removal_mid_transfer);
    TL_RUN(test_client_disconnect_frees_everything);
    TL_RUN(test_protocol_violations_close_only_that_session);
    TL_RUN(test_bad_submits_get_a_status);
    TL_RUN(test_session_limit_and_mgmt_timeout);
    TL_RUN(test_create_rejects_bad_config);
    return TL_RESULT();
}
