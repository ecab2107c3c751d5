/*
 * test_vhc_rules.c - every ESP-IDF submit/cancel rule the vhc enforces is
 * refused with the right error, counted and logged; nothing calls back from
 * inside an op.
 */
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"
#include "fixture.h"

static void fx_up_rules(fx_t *f, vhc_config_t cfg, bool iso)
{
    tv_opts_t o = {.speed = cfg.high_speed ? VDEV_SPEED_HIGH : VDEV_SPEED_FULL, .iso = iso};
    fx_up_dev(f, cfg, tv_create(&o, NULL));
}

static uint64_t violations(fx_t *f)
{
    vhc_stats_t st;
    vhc_get_stats(f->v, &st);
    return st.rule_violations;
}

static void test_bulk_rules(void)
{
    fx_t f;
    fx_up_rules(&f, VHC_CONFIG_ESP32S3(), false);
    uhp_xfer_t *x = tc_alloc(&f.c, 16384);
    TL_CHECK(x->capacity >= 16384);

    /* callback missing */
    x->dev = f.h;
    x->ep_addr = 0x81;
    x->num_bytes = 64;
    x->flags = 0;
    x->callback = NULL;
    TL_EQ_INT(OP(f.c.ops->submit(f.v, x)), UHP_ERR_INVALID_ARG);
    TL_EQ_INT(violations(&f), 1);
    TL_CHECK(strstr(f.c.last_log, "callback") != NULL);

    /* IN not a multiple of MPS */
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x81, 100, 0), UHP_ERR_INVALID_ARG);
    TL_CHECK(strstr(f.c.last_log, "not a multiple of MPS 64") != NULL);
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x82, 12, 0), UHP_ERR_INVALID_ARG); /* interrupt, MPS 8 */
    TL_EQ_INT(violations(&f), 3);

    /* beyond the buffer */
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x01, (int)x->capacity + 1, 0), UHP_ERR_INVALID_ARG);
    TL_CHECK(strstr(f.c.last_log, "capacity") != NULL);
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x01, -1, 0), UHP_ERR_INVALID_ARG);
    /* unknown flag bits */
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x01, 10, 0x80), UHP_ERR_INVALID_ARG);
    /* EP0 through submit */
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x00, 8, 0), UHP_ERR_INVALID_ARG);
    TL_EQ_INT(violations(&f), 7);

    /* oversize: 127 x 64 = 8128 is the S3 limit for MPS 64 */
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x81, 8192, 0), UHP_ERR_TOO_BIG);
    TL_CHECK(strstr(f.c.last_log, "max_transfer_bytes 8128") != NULL);
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x01, 8129, 0), UHP_ERR_TOO_BIG);
    TL_EQ_INT(violations(&f), 9);

    /* not counted as rule violations: lookup failures */
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x83, 64, 0), UHP_ERR_NOT_FOUND); /* interface 1 unclaimed */
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x02, 64, 0), UHP_ERR_NOT_FOUND); /* no such endpoint */
    TL_EQ_INT(violations(&f), 9);

    /* legal: OUT of any length, IN at the limit; in flight twice refused */
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x81, 8128, 0), UHP_OK);
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x81, 64, 0), UHP_ERR_NOT_FINISHED);
    /* the only way out: halt, flush, clear */
    TL_EQ_INT(OP(f.c.ops->ep_flush(f.v, f.h, 0x81)), UHP_ERR_INVALID_STATE);
    TL_EQ_INT(OP(f.c.ops->ep_clear(f.v, f.h, 0x81)), UHP_ERR_INVALID_STATE);
    TL_EQ_INT(OP(f.c.ops->interface_release(f.v, f.h, 0)), UHP_ERR_NOT_FINISHED);
    TL_EQ_INT(OP(f.c.ops->ep_halt(f.v, f.h, 0x81)), UHP_OK);
    TL_EQ_INT(OP(f.c.ops->ep_flush(f.v, f.h, 0x81)), UHP_OK);
    TL_EQ_INT(f.c.num_done, 0); /* flushed, but the callback comes from vhc_process */
    TL_CHECK(tc_pump_done(&f.c, 1, 500));
    TL_EQ_INT(f.c.done_status[0], UHP_STATUS_CANCELED);
    TL_EQ_INT(OP(f.c.ops->ep_clear(f.v, f.h, 0x81)), UHP_OK);
    TL_EQ_INT(OP(f.c.ops->interface_release(f.v, f.h, 0)), UHP_OK);
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x81, 64, 0), UHP_ERR_NOT_FOUND); /* released */
    TL_EQ_INT(violations(&f), 9);

    f.c.ops->xfer_free(f.v, x);
    fx_down(&f);
}

static void test_ep0_rules(void)
{
    fx_t f;
    fx_up_rules(&f, VHC_CONFIG_ESP32S3(), false);
    uhp_xfer_t *x = tc_alloc(&f.c, 256);
    TL_EQ_INT(OP(f.c.ops->ep_halt(f.v, f.h, 0x00)), UHP_ERR_NOT_SUPPORTED);
    TL_CHECK(strstr(f.c.last_log, "cannot be cancelled") != NULL);
    TL_EQ_INT(OP(f.c.ops->ep_halt(f.v, f.h, 0x80)), UHP_ERR_NOT_SUPPORTED);
    TL_EQ_INT(OP(f.c.ops->ep_flush(f.v, f.h, 0x00)), UHP_ERR_NOT_SUPPORTED);

    /* control OUT: num_bytes must equal 8 + wLength */
    TL_EQ_INT(tc_control(&f.c, x, f.h, 0x40, 0x05, 0, 0, 16), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 1, 500));
    x->num_bytes = 8 + 20; /* setup still says 16 */
    TL_EQ_INT(OP(f.c.ops->submit_control(f.v, x)), UHP_ERR_INVALID_ARG);
    TL_CHECK(strstr(f.c.last_log, "control OUT") != NULL);
    /* control IN: num_bytes >= 8 + wLength (more is fine) */
    TL_EQ_INT(tc_control(&f.c, x, f.h, 0xc0, 0x01, 0, 0, 32), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 2, 500));
    x->num_bytes = 8 + 31;
    TL_EQ_INT(OP(f.c.ops->submit_control(f.v, x)), UHP_ERR_INVALID_ARG);
    x->num_bytes = 8 + 64;
    TL_EQ_INT(OP(f.c.ops->submit_control(f.v, x)), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 3, 500));
    TL_EQ_INT(f.c.done_actual[2], 8 + 32);
    x->num_bytes = 4;
    TL_EQ_INT(OP(f.c.ops->submit_control(f.v, x)), UHP_ERR_INVALID_ARG);
    x->num_bytes = 8;
    x->ep_addr = 0x81;
    TL_EQ_INT(OP(f.c.ops->submit_control(f.v, x)), UHP_ERR_INVALID_ARG);
    TL_EQ_INT(violations(&f), 4);
    f.c.ops->xfer_free(f.v, x);
    fx_down(&f);
}

static void test_max_transfer_bytes(void)
{
    fx_t f;
    fx_up_rules(&f, VHC_CONFIG_ESP32S3(), false);
    TL_EQ_INT(f.c.ops->max_transfer_bytes(f.v, f.h, 64), 8128);
    TL_EQ_INT(f.c.ops->max_transfer_bytes(f.v, f.h, 512), 65024);
    TL_EQ_INT(f.c.ops->max_transfer_bytes(f.v, f.h, 1023), 65535);
    fx_down(&f);

    fx_up_rules(&f, VHC_CONFIG_ESP32P4(), false); /* rev 301, HS device */
    TL_EQ_INT(f.c.ops->max_transfer_bytes(f.v, f.h, 512), 523776);
    TL_EQ_INT(f.c.ops->max_transfer_bytes(f.v, f.h, 1024), 524287);
    /* HS bulk 512: 65536 would corrupt data on S3 / old P4, legal on rev 3 */
    uhp_xfer_t *x = tc_alloc(&f.c, 600000);
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x81, 523776 + 512, 0), UHP_ERR_TOO_BIG);
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x81, 131072, 0), UHP_OK);
    TL_EQ_INT(OP(f.c.ops->ep_halt(f.v, f.h, 0x81)), UHP_OK);
    TL_EQ_INT(OP(f.c.ops->ep_flush(f.v, f.h, 0x81)), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 1, 500));
    f.c.ops->xfer_free(f.v, x);
    fx_down(&f);

    vhc_config_t old = VHC_CONFIG_ESP32P4();
    old.chip_revision = 100;
    fx_up_rules(&f, old, false);
    TL_EQ_INT(f.c.ops->max_transfer_bytes(f.v, f.h, 512), 65024);
    x = tc_alloc(&f.c, 131072);
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x81, 65536, 0), UHP_ERR_TOO_BIG);
    f.c.ops->xfer_free(f.v, x);
    fx_down(&f);
}

static void test_iso_rules(void)
{
    fx_t f;
    fx_up_rules(&f, VHC_CONFIG_ESP32S3(), true);
    TL_EQ_INT(OP(f.c.ops->interface_claim(f.v, f.h, 2, 0)), UHP_OK);
    uhp_xfer_t *x = NULL;
    TL_EQ_INT(f.c.ops->xfer_alloc(f.v, 192 * 70, 70, &x), UHP_OK);
    x->dev = f.h;
    x->callback = tc_xfer_cb;
    x->flags = 0;
    x->ep_addr = 0x85;
    x->iso_count = 4;
    for (int i = 0; i < 4; i++)
        x->iso[i].num_bytes = 192;
    x->num_bytes = 192 * 4 - 1; /* sum mismatch */
    TL_EQ_INT(OP(f.c.ops->submit(f.v, x)), UHP_ERR_INVALID_ARG);
    TL_CHECK(strstr(f.c.last_log, "sum of packet sizes") != NULL);
    x->iso[3].num_bytes = 191; /* IN packet not a multiple of MPS */
    TL_EQ_INT(OP(f.c.ops->submit(f.v, x)), UHP_ERR_INVALID_ARG);
    TL_CHECK(strstr(f.c.last_log, "multiple of MPS") != NULL);
    x->iso_count = 65; /* 65 x interval 1 > 64 */
    x->num_bytes = 0;
    for (int i = 0; i < 65; i++) {
        x->iso[i].num_bytes = 0;
    }
    TL_EQ_INT(OP(f.c.ops->submit(f.v, x)), UHP_ERR_INVALID_ARG);
    TL_CHECK(strstr(f.c.last_log, "64") != NULL);
    /* OUT every 2nd frame: 33 x 2 > 64 */
    x->ep_addr = 0x05;
    x->iso_count = 33;
    TL_EQ_INT(OP(f.c.ops->submit(f.v, x)), UHP_ERR_INVALID_ARG);
    TL_EQ_INT(violations(&f), 4);

    /* a legal IN transfer: per-packet status and length, data in place */
    x->ep_addr = 0x85;
    x->iso_count = 6;
    x->num_bytes = 6 * 192;
    for (int i = 0; i < 6; i++)
        x->iso[i].num_bytes = 192;
    TL_EQ_INT(OP(f.c.ops->submit(f.v, x)), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 1, 500));
    TL_EQ_INT(f.c.done_status[0], UHP_STATUS_COMPLETED);
    TL_EQ_INT(x->iso[0].actual_num_bytes, 192);
    TL_EQ_INT(x->iso[2].actual_num_bytes, 0); /* device had nothing in the 3rd frame */
    TL_EQ_INT(x->iso[2].status, UHP_STATUS_COMPLETED);
    TL_EQ_INT(x->actual_num_bytes, 4 * 192);
    TL_EQ_INT(x->data[192 * 1], 2); /* packet 2 sits at its own offset */
    TL_EQ_INT(x->data[192 * 3], 4);
    /* OUT: packets of the given sizes, in order */
    x->ep_addr = 0x05;
    x->iso_count = 3;
    x->iso[0].num_bytes = 10;
    x->iso[1].num_bytes = 0;
    x->iso[2].num_bytes = 192;
    x->num_bytes = 202;
    TL_EQ_INT(OP(f.c.ops->submit(f.v, x)), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 2, 500));
    TL_EQ_INT(f.t->iso_out_count, 3);
    TL_EQ_INT(f.t->iso_out_lens[0], 10);
    TL_EQ_INT(f.t->iso_out_lens[1], 0);
    TL_EQ_INT(f.t->iso_out_lens[2], 192);
    TL_EQ_INT(x->actual_num_bytes, 202);
    f.c.ops->xfer_free(f.v, x);
    fx_down(&f);
}

static void test_claim_rules(void)
{
    fx_t f;
    fx_up_rules(&f, VHC_CONFIG_ESP32S3(), false);
    TL_EQ_INT(OP(f.c.ops->interface_claim(f.v, f.h, 0, 0)), UHP_ERR_INVALID_STATE); /* twice */
    TL_EQ_INT(OP(f.c.ops->interface_claim(f.v, f.h, 1, 7)), UHP_ERR_NOT_FOUND);     /* no alt 7 */
    TL_EQ_INT(OP(f.c.ops->interface_claim(f.v, f.h, 9, 0)), UHP_ERR_NOT_FOUND);
    TL_EQ_INT(OP(f.c.ops->interface_release(f.v, f.h, 1)), UHP_ERR_NOT_FOUND); /* not claimed */
    TL_EQ_INT(OP(f.c.ops->dev_close(f.v, f.h)), UHP_ERR_INVALID_STATE);        /* still claimed */
    int bogus;
    TL_EQ_INT(OP(f.c.ops->interface_claim(f.v, (uhp_dev_handle_t)&bogus, 0, 0)), UHP_ERR_NOT_FOUND);
    fx_down(&f);
}

/* Callbacks only from vhc_process, and the fd tells the loop when to call it. */
static void test_async_only(void)
{
    fx_t f;
    fx_up_rules(&f, VHC_CONFIG_ESP32S3(), false);
    struct pollfd pfd = {.fd = vhc_fd(f.v), .events = POLLIN};
    tc_pump_idle(&f.c, 5);
    TL_EQ_INT(poll(&pfd, 1, 0), 0); /* idle: nothing due, the fd sleeps */
    uhp_xfer_t *x = tc_alloc(&f.c, 64);
    memset(x->data, 7, 64);
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x01, 10, 0), UHP_OK);
    TL_EQ_INT(f.c.num_done, 0);
    TL_EQ_INT(poll(&pfd, 1, 0), 1); /* readable at once */
    vhc_process(f.v);
    TL_EQ_INT(f.c.num_done, 1);
    TL_EQ_INT(f.c.done_actual[0], 10);
    TL_EQ_INT(poll(&pfd, 1, 0), 0);
    f.c.ops->xfer_free(f.v, x);
    fx_down(&f);
}

int main(void)
{
    TL_RUN(test_bulk_rules);
    TL_RUN(test_ep0_rules);
    TL_RUN(test_max_transfer_bytes);
    TL_RUN(test_iso_rules);
    TL_RUN(test_claim_rules);
    TL_RUN(test_async_only);
    return TL_RESULT();
}
