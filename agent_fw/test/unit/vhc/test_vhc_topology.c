/*
 * test_vhc_topology.c - root ports, hubs at several levels, host-channel
 * accounting, enumeration (addresses, paranoid descriptor checks), unplug
 * and port reset semantics.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testlib.h"
#include "tvdev.h"

static vhc_t *mk(vhc_config_t cfg, tcore_t *c)
{
    vhc_t *v = NULL;
    TL_EQ_INT(vhc_create(&cfg, &v), 0);
    tc_init(c, v);
    return v;
}

static void done(tcore_t *c, vhc_t *v)
{
    TL_EQ_INT(c->cb_inside_op, 0);
    TL_EQ_INT(c->event_order_errors, 0);
    TL_EQ_INT(c->harness_errors, 0);
    vhc_destroy(v);
}

static vhc_stats_t stats(vhc_t *v)
{
    vhc_stats_t st;
    vhc_get_stats(v, &st);
    return st;
}

static tvdev_t *hub(uint8_t ports, vdev_speed_t speed, int *destroyed)
{
    tv_opts_t o = {.speed = speed, .hub = true, .hub_ports = ports};
    return tv_create(&o, destroyed);
}

static int plug_err(vhc_t *v, const char *path, tvdev_t *t, char *err, size_t len)
{
    return vhc_plug(v, path, &t->dev, err, len);
}

static void test_channels_s3(void)
{
    tcore_t c;
    vhc_t *v = mk(VHC_CONFIG_ESP32S3(), &c);
    uhp_dev_handle_t a = tc_plug(&c, "1-1", tv_simple(NULL));
    TL_EQ_INT(stats(v).channels_in_use, 1); /* EP0 */
    TL_EQ_INT(OP(c.ops->interface_claim(v, a, 0, 0)), UHP_OK);
    TL_EQ_INT(stats(v).channels_in_use, 4); /* + 3 endpoints */
    char err[160];
    TL_EQ_INT(plug_err(v, "1-2", hub(4, VDEV_SPEED_FULL, NULL), err, sizeof err), 0);
    uhp_dev_handle_t b = tc_plug(&c, "1-2.1", tv_simple(NULL));
    TL_EQ_INT(c.num_added, 2); /* the hub is consumed, never reported */
    TL_EQ_INT(stats(v).channels_in_use, 7); /* hub: EP0 + interrupt IN */
    TL_EQ_INT(OP(c.ops->interface_claim(v, b, 0, 0)), UHP_ERR_NO_CHANNEL);
    TL_CHECK(strstr(c.last_log, "channels exhausted") != NULL);
    TL_EQ_INT(stats(v).channel_refusals, 1);
    TL_EQ_INT(stats(v).channels_in_use, 7); /* nothing half-claimed */
    uhp_xfer_t *x = tc_alloc(&c, 64);
    TL_EQ_INT(tc_submit(&c, x, b, 0x81, 64, 0), UHP_ERR_NOT_FOUND);
    TL_EQ_INT(OP(c.ops->interface_claim(v, b, 1, 0)), UHP_OK); /* one endpoint fits */
    TL_EQ_INT(stats(v).channels_in_use, 8);
    /* no channel for a new device's EP0: not enumerated */
    TL_EQ_INT(plug_err(v, "1-3", tv_simple(NULL), err, sizeof err), 0);
    tc_pump_idle(&c, 5);
    TL_EQ_INT(c.num_added, 2);
    TL_EQ_INT(stats(v).channel_refusals, 2);
    TL_EQ_INT(stats(v).enum_refusals, 1);
    /* unplug returns the channels at once, even before the core closes */
    TL_EQ_INT(vhc_unplug(v, "1-2", err, sizeof err), 0);
    TL_EQ_INT(stats(v).channels_in_use, 4);
    tc_pump_idle(&c, 2);
    TL_EQ_INT(c.num_gone, 1);
    TL_EQ_INT(OP(c.ops->interface_release(v, b, 1)), UHP_OK);
    TL_EQ_INT(OP(c.ops->dev_close(v, b)), UHP_OK);
    TL_EQ_INT(stats(v).channels_in_use, 4);
    /* a refused device stays refused until re-plugged */
    TL_EQ_INT(vhc_unplug(v, "1-3", err, sizeof err), 0);
    uhp_dev_handle_t cdev = tc_plug(&c, "1-3", tv_simple(NULL));
    TL_CHECK(cdev != NULL);
    TL_EQ_INT(stats(v).channels_in_use, 5);
    c.ops->xfer_free(v, x);
    done(&c, v);

    /* P4 has 16 */
    v = mk(VHC_CONFIG_ESP32P4(), &c);
    uhp_dev_handle_t h = NULL;
    for (int i = 1; i <= 4; i++) {
        char p[8];
        snprintf(p, sizeof p, "1-%d", i);
        h = tc_plug(&c, p, tv_simple(NULL));
        TL_EQ_INT(OP(c.ops->interface_claim(v, h, 0, 0)), UHP_OK); /* 1 + 3 each */
    }
    TL_EQ_INT(stats(v).channels_in_use, 16);
    TL_EQ_INT(OP(c.ops->interface_claim(v, h, 1, 0)), UHP_ERR_NO_CHANNEL);
    TL_EQ_INT(stats(v).channel_refusals, 1);
    done(&c, v);
}

static void test_hub_paths_and_subtree_unplug(void)
{
    tcore_t c;
    int destroyed = 0;
    vhc_t *v = mk(VHC_CONFIG_ESP32P4(), &c); /* 16 channels: two hubs and three devices */
    char err[160];
    TL_EQ_INT(plug_err(v, "1-2", hub(4, VDEV_SPEED_FULL, &destroyed), err, sizeof err), 0);
    TL_EQ_INT(plug_err(v, "1-2.3", hub(2, VDEV_SPEED_FULL, &destroyed), err, sizeof err), 0);
    uhp_dev_handle_t deep = tc_plug(&c, "1-2.3.1", tv_simple(&destroyed));
    uhp_dev_handle_t side = tc_plug(&c, "1-2.4", tv_simple(&destroyed));
    uhp_dev_handle_t root = tc_plug(&c, "1-1", tv_simple(&destroyed));
    TL_EQ_INT(c.num_added, 3);
    TL_EQ_STR(c.added[0].port_path, "1-2.3.1");
    TL_EQ_STR(c.added[1].port_path, "1-2.4");
    TL_EQ_STR(c.added[2].port_path, "1-1");
    TL_EQ_INT(c.added[0].speed, UHP_SPEED_FULL);
    TL_CHECK(c.added[0].str_product && c.added[0].str_product[2] == 't');
    TL_EQ_INT(c.added[0].bConfigurationValue, 1);
    TL_EQ_INT(c.added[0].bMaxPacketSize0, 64);

    /* plugging mistakes: clear error, the device is not kept */
    struct { const char *path, *msg; } bad[] = {
        {"1-1.1", "not a hub"},           {"1-2.4", "occupied"},
        {"1-2.5", "only 4 ports"},        {"1-5", "1-1..1-4"},
        {"2-1", "bus 1"},                 {"1-0", "1..15"},
        {"1-2..1", "1..15"},              {"1-3.1", "nothing is plugged"},
        {"1-2.3.1.1.1.1.1", "hubs in a chain"}, {"1-2x", "unexpected"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int before = destroyed;
        err[0] = 0;
        TL_EQ_INT(plug_err(v, bad[i].path, tv_simple(&destroyed), err, sizeof err), -1);
        if (!strstr(err, bad[i].msg))
            fprintf(stderr, "path %s: message '%s' lacks '%s'\n", bad[i].path, err, bad[i].msg);
        TL_CHECK(strstr(err, bad[i].msg) != NULL);
        TL_EQ_INT(destroyed, before + 1);
    }
    TL_EQ_INT(vhc_unplug(v, "1-3", err, sizeof err), -1);
    TL_CHECK(strstr(err, "nothing is plugged at 1-3") != NULL);

    /* in-flight transfer below the hub */
    TL_EQ_INT(OP(c.ops->interface_claim(v, deep, 0, 0)), UHP_OK);
    uhp_xfer_t *x = tc_alloc(&c, 64);
    TL_EQ_INT(tc_submit(&c, x, deep, 0x81, 64, 0), UHP_OK);
    tc_pump_idle(&c, 2);
    /* pull the top hub: everything below goes, leaves first */
    TL_EQ_INT(vhc_unplug(v, "1-2", err, sizeof err), 0);
    TL_CHECK(tc_pump_done(&c, 1, 100));
    tc_pump_idle(&c, 2);
    TL_EQ_INT(c.done_status[0], UHP_STATUS_NO_DEVICE);
    TL_EQ_INT(c.num_gone, 2);
    TL_CHECK(c.gone[0] == deep && c.gone[1] == side);
    TL_EQ_INT(destroyed, 10 + 2); /* both hubs, not the devices the core still holds */
    TL_EQ_INT(plug_err(v, "1-2.4", tv_simple(&destroyed), err, sizeof err), -1);
    TL_EQ_INT(OP(c.ops->interface_release(v, deep, 0)), UHP_OK);
    TL_EQ_INT(OP(c.ops->dev_close(v, deep)), UHP_OK);
    TL_EQ_INT(OP(c.ops->dev_close(v, side)), UHP_OK);
    tc_pump_idle(&c, 2);
    TL_EQ_INT(destroyed, 10 + 1 + 4); /* + the failed plug, + the two closed devices */
    TL_EQ_INT(stats(v).channels_in_use, 1);
    (void)root;
    c.ops->xfer_free(v, x);
    done(&c, v);
}

static void test_unplug_mid_transfer(void)
{
    tcore_t c;
    int destroyed = 0;
    vhc_t *v = mk(VHC_CONFIG_ESP32S3(), &c);
    tvdev_t *t = tv_simple(&destroyed);
    uhp_dev_handle_t h = tc_plug(&c, "1-1", t);
    TL_EQ_INT(OP(c.ops->interface_claim(v, h, 0, 0)), UHP_OK);
    uhp_xfer_t *in1 = tc_alloc(&c, 512), *in2 = tc_alloc(&c, 512), *ctl = tc_alloc(&c, 64);
    uint8_t p[64] = {0};
    tv_push_in(t, p, 64);
    t->ctrl_nak = 1000000; /* a control transfer that never ends by itself */
    TL_EQ_INT(tc_submit(&c, in1, h, 0x81, 512, 0), UHP_OK);
    TL_EQ_INT(tc_submit(&c, in2, h, 0x81, 512, 0), UHP_OK);
    TL_EQ_INT(tc_control(&c, ctl, h, 0x40, 0x02, 0, 0, 0), UHP_OK);
    tc_pump_idle(&c, 5);
    TL_EQ_INT(c.num_done, 0);
    char err[64];
    TL_EQ_INT(vhc_unplug(v, "1-1", err, sizeof err), 0);
    TL_EQ_INT(c.num_done, 0); /* not from inside vhc_unplug */
    TL_CHECK(tc_pump_done(&c, 3, 100));
    tc_pump_idle(&c, 2);
    for (int i = 0; i < 3; i++)
        TL_EQ_INT(c.done_status[i], UHP_STATUS_NO_DEVICE);
    TL_EQ_INT(in1->actual_num_bytes, 64); /* moved before the cable went */
    TL_EQ_INT(c.num_gone, 1);
    TL_CHECK(c.gone[0] == h);
    TL_EQ_INT(c.event_order_errors, 0);
    TL_EQ_INT(tc_submit(&c, in1, h, 0x81, 64, 0), UHP_ERR_GONE);
    TL_EQ_INT(OP(c.ops->dev_close(v, h)), UHP_ERR_INVALID_STATE); /* interface still claimed */
    TL_EQ_INT(destroyed, 0);
    TL_EQ_INT(OP(c.ops->interface_release(v, h, 0)), UHP_OK);
    TL_EQ_INT(OP(c.ops->dev_close(v, h)), UHP_OK);
    tc_pump_idle(&c, 2);
    TL_EQ_INT(destroyed, 1);
    TL_EQ_INT(stats(v).channels_in_use, 0);
    TL_EQ_INT(OP(c.ops->dev_close(v, h)), UHP_ERR_NOT_FOUND); /* stale handle: refused */
    c.ops->xfer_free(v, in1);
    c.ops->xfer_free(v, in2);
    c.ops->xfer_free(v, ctl);
    done(&c, v);
}

static void test_addresses(void)
{
    tcore_t c;
    vhc_t *v = mk(VHC_CONFIG_ESP32S3(), &c);
    char err[64];
    uhp_dev_handle_t first = tc_plug(&c, "1-1", tv_simple(NULL));
    TL_EQ_INT(c.added[0].dev_addr, 1);
    for (int i = 0; i < 127; i++) {
        uhp_dev_handle_t h = tc_plug(&c, "1-2", tv_simple(NULL));
        int expect = i < 126 ? 2 + i : 2; /* 2..127, then wrap skipping 1 (in use) */
        TL_EQ_INT(c.added[c.num_added - 1].dev_addr, expect);
        TL_EQ_STR(c.added[c.num_added - 1].port_path, "1-2"); /* busid is stable, address not */
        TL_EQ_INT(vhc_unplug(v, "1-2", err, sizeof err), 0);
        tc_pump_idle(&c, 0);
        vhc_process(v);
        TL_EQ_INT(OP(c.ops->dev_close(v, h)), UHP_OK);
    }
    (void)first;
    /* an address is held until close: unplugged-but-open devices keep theirs */
    uhp_dev_handle_t a = tc_plug(&c, "1-2", tv_simple(NULL));
    int addr_a = c.added[c.num_added - 1].dev_addr;
    TL_EQ_INT(vhc_unplug(v, "1-2", err, sizeof err), 0);
    tc_plug(&c, "1-2", tv_simple(NULL));
    TL_CHECK(c.added[c.num_added - 1].dev_addr != addr_a);
    TL_EQ_INT(OP(c.ops->dev_close(v, a)), UHP_OK);
    done(&c, v);
}

static void test_port_reset(void)
{
    tcore_t c;
    int destroyed = 0;
    vhc_t *v = mk(VHC_CONFIG_ESP32S3(), &c);
    tvdev_t *t = tv_simple(&destroyed);
    uhp_dev_handle_t h = tc_plug(&c, "1-3", t);
    int addr = c.added[0].dev_addr;
    uhp_xfer_t *ctl = tc_alloc(&c, 64);
    t->ctrl_nak = 1000000; /* stuck control transfer: the watchdog's case */
    TL_EQ_INT(tc_control(&c, ctl, h, 0x40, 0x02, 0, 0, 0), UHP_OK);
    tc_pump_idle(&c, 3);
    int resets = t->reset_calls;
    TL_EQ_INT(OP(c.ops->port_reset(v, h)), UHP_OK);
    TL_CHECK(tc_pump_done(&c, 1, 100));
    TL_EQ_INT(c.done_status[0], UHP_STATUS_NO_DEVICE);
    tc_pump_idle(&c, 3);
    TL_EQ_INT(c.num_gone, 1);
    TL_EQ_INT(c.num_added, 2);
    TL_EQ_STR(c.added[1].port_path, "1-3");
    TL_CHECK(c.added[1].dev_addr != addr);
    TL_CHECK(c.added[1].handle != h);
    TL_CHECK(t->reset_calls > resets); /* bus reset reached the model */
    TL_EQ_INT(OP(c.ops->port_reset(v, h)), UHP_ERR_GONE);
    TL_EQ_INT(OP(c.ops->dev_close(v, h)), UHP_OK);
    tc_pump_idle(&c, 2);
    TL_EQ_INT(destroyed, 0); /* the model lives on in the new record */
    t->ctrl_nak = 0;
    TL_EQ_INT(tc_control(&c, ctl, c.added[1].handle, 0x40, 0x02, 0, 0, 0), UHP_OK);
    TL_CHECK(tc_pump_done(&c, 2, 100));
    TL_EQ_INT(c.done_status[1], UHP_STATUS_COMPLETED);
    c.ops->xfer_free(v, ctl);
    done(&c, v);
    TL_EQ_INT(destroyed, 1);
}

static void test_paranoid_enumeration(void)
{
    tcore_t c;
    vhc_t *v = mk(VHC_CONFIG_ESP32S3(), &c);
    char err[160];
    tv_opts_t o1 = {.speed = VDEV_SPEED_FULL, .bad_bulk_mps = true};
    TL_EQ_INT(plug_err(v, "1-1", tv_create(&o1, NULL), err, sizeof err), 0);
    tc_pump_idle(&c, 3);
    TL_CHECK(strstr(c.last_log, "bulk max packet size illegal") != NULL);
    tv_opts_t o2 = {.speed = VDEV_SPEED_FULL, .bad_num_intf = true};
    TL_EQ_INT(plug_err(v, "1-2", tv_create(&o2, NULL), err, sizeof err), 0);
    tc_pump_idle(&c, 3);
    TL_CHECK(strstr(c.last_log, "no alternate setting 0") != NULL);
    tv_opts_t o3 = {.speed = VDEV_SPEED_FULL, .bad_total_len = true};
    TL_EQ_INT(plug_err(v, "1-3", tv_create(&o3, NULL), err, sizeof err), 0);
    tc_pump_idle(&c, 3);
    TL_CHECK(strstr(c.last_log, "refused") != NULL);
    tvdev_t *t4 = tv_simple(NULL);
    t4->device_desc[7] = 12; /* bMaxPacketSize0 must be 8/16/32/64 */
    TL_EQ_INT(plug_err(v, "1-4", t4, err, sizeof err), 0);
    tc_pump_idle(&c, 3);
    TL_CHECK(strstr(c.last_log, "bMaxPacketSize0 12") != NULL);
    TL_EQ_INT(c.num_added, 0);
    TL_EQ_INT(stats(v).enum_refusals, 4);
    TL_EQ_INT(stats(v).channels_in_use, 0);
    /* a High-Speed-only model on the Full-Speed S3 is refused at plug time */
    TL_EQ_INT(vhc_unplug(v, "1-1", err, sizeof err), 0);
    tv_opts_t hs = {.speed = VDEV_SPEED_HIGH};
    TL_EQ_INT(plug_err(v, "1-1", tv_create(&hs, NULL), err, sizeof err), -1);
    TL_CHECK(strstr(err, "Full-Speed-only") != NULL);
    done(&c, v);

    /* P4: no transaction translator behind a High-Speed hub */
    v = mk(VHC_CONFIG_ESP32P4(), &c);
    TL_EQ_INT(plug_err(v, "1-1", hub(4, VDEV_SPEED_HIGH, NULL), err, sizeof err), 0);
    TL_EQ_INT(plug_err(v, "1-1.1", tv_simple(NULL), err, sizeof err), 0);
    tc_pump_idle(&c, 3);
    TL_CHECK(strstr(c.last_log, "transaction translator") != NULL);
    TL_EQ_INT(c.num_added, 0);
    tc_plug(&c, "1-1.2", tv_create(&hs, NULL));
    TL_EQ_INT(c.num_added, 1);
    TL_EQ_INT(c.added[0].speed, UHP_SPEED_HIGH);
    done(&c, v);
}

static uint64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static bool added_one(tcore_t *c)
{
    return c->num_added >= 1;
}

static void test_enum_delay_and_late_install(void)
{
    vhc_config_t cfg = VHC_CONFIG_ESP32S3();
    cfg.enum_delay_ns = 30 * 1000000ull;
    tcore_t c;
    vhc_t *v = mk(cfg, &c);
    char err[64];
    uint64_t t0 = wall_ns();
    TL_EQ_INT(plug_err(v, "1-1", tv_simple(NULL), err, sizeof err), 0);
    vhc_process(v);
    if (wall_ns() - t0 < cfg.enum_delay_ns) /* only meaningful if we were not descheduled */
        TL_EQ_INT(c.num_added, 0);
    TL_CHECK(tc_pump_until(&c, added_one, 1000));
    TL_CHECK(wall_ns() - t0 >= cfg.enum_delay_ns);
    done(&c, v);

    /* devices present before install are reported after it */
    v = NULL;
    cfg = VHC_CONFIG_ESP32S3();
    TL_EQ_INT(vhc_create(&cfg, &v), 0);
    TL_EQ_INT(plug_err(v, "1-1", tv_simple(NULL), err, sizeof err), 0);
    vhc_process(v);
    tc_init(&c, v);
    TL_EQ_INT(c.num_added, 0);
    tc_pump_idle(&c, 3);
    TL_EQ_INT(c.num_added, 1);
    char path[16];
    TL_EQ_INT(vhc_next_free_port(v, path, sizeof path), 0);
    TL_EQ_STR(path, "1-2");

    /* a core that stops without cleaning up: its claims and transfers are
     * dropped without callbacks, the device is reported to the next core */
    uhp_dev_handle_t h = c.added[0].handle;
    TL_EQ_INT(OP(c.ops->interface_claim(v, h, 0, 0)), UHP_OK);
    uhp_xfer_t *x = tc_alloc(&c, 64);
    TL_EQ_INT(tc_submit(&c, x, h, 0x81, 64, 0), UHP_OK); /* NAKs: no data */
    tc_pump_idle(&c, 2);
    c.ops->uninstall(v);
    TL_EQ_INT(stats(v).channels_in_use, 1);
    uint64_t viol = stats(v).rule_violations;
    c.ops->xfer_free(v, x); /* no longer in flight */
    TL_EQ_INT(stats(v).rule_violations, viol);
    tc_pump_idle(&c, 2);
    TL_EQ_INT(c.num_done, 0);
    tc_init(&c, v);
    tc_pump_idle(&c, 2);
    TL_EQ_INT(c.num_added, 1);
    TL_EQ_INT(OP(c.ops->interface_claim(v, c.added[0].handle, 0, 0)), UHP_OK);
    done(&c, v);
}

/* No global state: two controllers in one process keep separate books. */
static void test_two_instances(void)
{
    tcore_t c1, c2;
    vhc_t *v1 = mk(VHC_CONFIG_ESP32S3(), &c1);
    vhc_t *v2 = mk(VHC_CONFIG_ESP32P4(), &c2);
    char err[64];
    TL_EQ_INT(plug_err(v1, "1-1", tv_simple(NULL), err, sizeof err), 0);
    TL_EQ_INT(plug_err(v2, "1-1", tv_simple(NULL), err, sizeof err), 0);
    TL_EQ_INT(plug_err(v2, "1-2", tv_simple(NULL), err, sizeof err), 0);
    vhc_process(v1);
    vhc_process(v2);
    TL_EQ_INT(c1.num_added, 1);
    TL_EQ_INT(c2.num_added, 2);
    TL_EQ_INT(c1.added[0].dev_addr, 1);
    TL_EQ_INT(c2.added[0].dev_addr, 1);
    TL_EQ_INT(c2.added[1].dev_addr, 2);
    TL_EQ_INT(stats(v1).channels_in_use, 1);
    TL_EQ_INT(stats(v2).channels_in_use, 2);
    TL_CHECK(vhc_fd(v1) != vhc_fd(v2));
    done(&c1, v1);
    done(&c2, v2);
}

int main(void)
{
    TL_RUN(test_two_instances);
    TL_RUN(test_channels_s3);
    TL_RUN(test_hub_paths_and_subtree_unplug);
    TL_RUN(test_unplug_mid_transfer);
    TL_RUN(test_addresses);
    TL_RUN(test_port_reset);
    TL_RUN(test_paranoid_enumeration);
    TL_RUN(test_enum_delay_and_late_install);
    return TL_RESULT();
}
