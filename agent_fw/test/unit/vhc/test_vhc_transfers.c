/*
 * test_vhc_transfers.c - the packet engine: exact OUT/IN packet sequences,
 * ZLP, short packets, babble, NAK, STALL, halt/flush/clear with partial
 * byte counts, queue order, data toggles on both sides, control transfers
 * and the standard requests the vhc answers itself.
 */
#include <stdlib.h>
#include <string.h>

#include "testlib.h"
#include "fixture.h"


static vhc_stats_t stats(fx_t *f)
{
    vhc_stats_t st;
    vhc_get_stats(f->v, &st);
    return st;
}

/* Submit an OUT transfer and return how many packets the device saw. */
static int out_packets(fx_t *f, uhp_xfer_t *x, int n, uint32_t flags, int *lens)
{
    int before = f->t->out_count, done = f->c.num_done;
    TL_EQ_INT(tc_submit(&f->c, x, f->h, 0x01, n, flags), UHP_OK);
    TL_CHECK(tc_pump_done(&f->c, done + 1, 500));
    TL_EQ_INT(f->c.done_status[done], UHP_STATUS_COMPLETED);
    TL_EQ_INT(f->c.done_actual[done], n);
    int k = f->t->out_count - before;
    for (int i = 0; i < k && i < 8; i++)
        lens[i] = f->t->out_lens[before + i];
    return k;
}

static void test_out_packets_and_zlp(void)
{
    fx_t f;
    fx_up(&f);
    f.t->loopback = false;
    uhp_xfer_t *x = tc_alloc(&f.c, 1024);
    for (int i = 0; i < 1024; i++)
        x->data[i] = (uint8_t)i;
    int l[8];
    TL_EQ_INT(out_packets(&f, x, 150, 0, l), 3); /* MPS, MPS, short */
    TL_EQ_INT(l[0], 64);
    TL_EQ_INT(l[1], 64);
    TL_EQ_INT(l[2], 22);
    TL_EQ_MEM(f.t->out_data, x->data, 150);
    TL_EQ_INT(out_packets(&f, x, 128, 0, l), 2); /* exact multiple: no ZLP unless asked */
    TL_EQ_INT(l[1], 64);
    TL_EQ_INT(out_packets(&f, x, 128, UHP_XFER_FLAG_ZERO_PACK, l), 3);
    TL_EQ_INT(l[2], 0);
    TL_EQ_INT(out_packets(&f, x, 100, UHP_XFER_FLAG_ZERO_PACK, l), 2); /* short end: no ZLP */
    TL_EQ_INT(l[1], 36);
    TL_EQ_INT(out_packets(&f, x, 0, 0, l), 1); /* an empty transfer is one ZLP */
    TL_EQ_INT(l[0], 0);
    /* NAKed packets are resent, not lost */
    f.t->nak_out = 3;
    TL_EQ_INT(out_packets(&f, x, 192, 0, l), 3);
    TL_EQ_INT(f.t->nak_out, 0);
    TL_CHECK(stats(&f).naks >= 3);
    f.c.ops->xfer_free(f.v, x);
    fx_down(&f);
}

static void test_in_short_packet_and_next_data(void)
{
    fx_t f;
    fx_up(&f);
    uint8_t p[64];
    for (int i = 0; i < 4; i++) {
        memset(p, 'a' + i, sizeof p);
        tv_push_in(f.t, p, i == 2 ? 10 : 64);
    }
    uhp_xfer_t *a = tc_alloc(&f.c, 512), *b = tc_alloc(&f.c, 512);
    TL_EQ_INT(tc_submit(&f.c, a, f.h, 0x81, 512, 0), UHP_OK);
    TL_EQ_INT(tc_submit(&f.c, b, f.h, 0x81, 128, 0), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 1, 500));
    TL_EQ_INT(f.c.done[0] == a, 1);
    TL_EQ_INT(f.c.done_status[0], UHP_STATUS_COMPLETED);
    TL_EQ_INT(f.c.done_actual[0], 64 + 64 + 10); /* the short packet ended it */
    TL_EQ_INT(a->data[128], 'c');
    /* b got packet 4, then the device NAKs: b waits, polled sparingly */
    tc_pump_idle(&f.c, 30);
    TL_EQ_INT(f.c.num_done, 1);
    int polls = f.t->in_polls;
    TL_CHECK(polls < 20); /* back-off, not a spin */
    memset(p, 'z', sizeof p);
    tv_push_in(f.t, p, 30); /* device wakes the host */
    TL_CHECK(tc_pump_done(&f.c, 2, 50));
    TL_EQ_INT(f.c.done_actual[1], 94);
    TL_EQ_INT(b->data[0], 'd');
    TL_EQ_INT(b->data[64], 'z');
    f.c.ops->xfer_free(f.v, a);
    f.c.ops->xfer_free(f.v, b);
    fx_down(&f);
}

static void test_babble_overflow(void)
{
    fx_t f;
    fx_up(&f);
    uhp_xfer_t *x = tc_alloc(&f.c, 256);
    f.t->babble_in = true;
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x81, 128, 0), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 1, 500));
    TL_EQ_INT(f.c.done_status[0], UHP_STATUS_OVERFLOW);
    TL_CHECK(f.c.done_actual[0] <= 128);
    TL_CHECK(strstr(f.c.last_log, "babble") != NULL);
    /* the pipe is not halted by babble: the next transfer works */
    uint8_t p[5] = {1, 2, 3, 4, 5};
    tv_push_in(f.t, p, 5);
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x81, 64, 0), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 2, 500));
    TL_EQ_INT(f.c.done_status[1], UHP_STATUS_COMPLETED);
    TL_EQ_INT(f.c.done_actual[1], 5);
    f.c.ops->xfer_free(f.v, x);
    fx_down(&f);
}

static void test_stall_halts_pipe(void)
{
    fx_t f;
    fx_up(&f);
    uhp_xfer_t *a = tc_alloc(&f.c, 64), *b = tc_alloc(&f.c, 64), *st = tc_alloc(&f.c, 64);
    f.t->stall_in = true;
    uint8_t p[64] = {9};
    tv_push_in(f.t, p, 64);
    TL_EQ_INT(tc_submit(&f.c, a, f.h, 0x81, 64, 0), UHP_OK);
    TL_EQ_INT(tc_submit(&f.c, b, f.h, 0x81, 64, 0), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 1, 500));
    TL_EQ_INT(f.c.done_status[0], UHP_STATUS_STALL);
    tc_pump_idle(&f.c, 10);
    TL_EQ_INT(f.c.num_done, 1); /* b waits behind the halted pipe, data or not */
    /* the device reports the halt */
    TL_EQ_INT(tc_control(&f.c, st, f.h, 0x82, 0 /*GET_STATUS*/, 0, 0x81, 2), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 2, 500));
    TL_EQ_INT(f.c.done_actual[1], 10);
    TL_EQ_INT(st->data[8], 1);
    /* ep_clear alone resumes the host, but the device is still halted */
    TL_EQ_INT(OP(f.c.ops->ep_clear(f.v, f.h, 0x81)), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 3, 500));
    TL_EQ_INT(f.c.done[2] == b, 1);
    TL_EQ_INT(f.c.done_status[2], UHP_STATUS_STALL);
    /* the full recovery: CLEAR_FEATURE(ENDPOINT_HALT) to the device + ep_clear */
    int resets = f.t->reset_calls;
    TL_EQ_INT(tc_control(&f.c, st, f.h, 0x02, 1 /*CLEAR_FEATURE*/, 0, 0x81, 0), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 4, 500));
    TL_EQ_INT(f.c.done_status[3], UHP_STATUS_COMPLETED);
    TL_EQ_INT(f.t->reset_calls, resets + 1);
    TL_EQ_INT(f.t->reset_eps[resets], 0x81);
    TL_EQ_INT(OP(f.c.ops->ep_clear(f.v, f.h, 0x81)), UHP_OK);
    TL_EQ_INT(tc_submit(&f.c, b, f.h, 0x81, 64, 0), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 5, 500));
    TL_EQ_INT(f.c.done_status[4], UHP_STATUS_COMPLETED);
    TL_EQ_INT(f.c.done_actual[4], 64);
    TL_EQ_INT(b->data[0], 9);
    /* OUT STALL as well */
    f.t->stall_out = true;
    TL_EQ_INT(tc_submit(&f.c, a, f.h, 0x01, 10, 0), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 6, 500));
    TL_EQ_INT(f.c.done_status[5], UHP_STATUS_STALL);
    TL_CHECK(stats(&f).stalls >= 3);
    f.c.ops->xfer_free(f.v, a);
    f.c.ops->xfer_free(f.v, b);
    f.c.ops->xfer_free(f.v, st);
    fx_down(&f);
}

static void test_halt_flush_clear_partial(void)
{
    fx_t f;
    fx_up(&f);
    uint8_t p[64];
    for (int i = 0; i < 3; i++) {
        memset(p, 'A' + i, sizeof p);
        tv_push_in(f.t, p, 64);
    }
    uhp_xfer_t *a = tc_alloc(&f.c, 512), *b = tc_alloc(&f.c, 512), *c3 = tc_alloc(&f.c, 512);
    TL_EQ_INT(tc_submit(&f.c, a, f.h, 0x81, 512, 0), UHP_OK);
    TL_EQ_INT(tc_submit(&f.c, b, f.h, 0x81, 512, 0), UHP_OK);
    TL_EQ_INT(tc_submit(&f.c, c3, f.h, 0x81, 512, 0), UHP_OK);
    tc_pump_idle(&f.c, 5); /* a moved 3 packets, then NAKs */
    TL_EQ_INT(f.c.num_done, 0);
    TL_EQ_INT(OP(f.c.ops->ep_halt(f.v, f.h, 0x81)), UHP_OK);
    TL_EQ_INT(OP(f.c.ops->ep_flush(f.v, f.h, 0x81)), UHP_OK);
    TL_EQ_INT(f.c.num_done, 0);
    TL_CHECK(tc_pump_done(&f.c, 3, 500));
    TL_EQ_INT(f.c.done[0] == a && f.c.done[1] == b && f.c.done[2] == c3, 1);
    for (int i = 0; i < 3; i++)
        TL_EQ_INT(f.c.done_status[i], UHP_STATUS_CANCELED);
    TL_EQ_INT(f.c.done_actual[0], 192); /* the trap: a cancelled transfer that moved data */
    TL_EQ_INT(a->data[128], 'C');
    TL_EQ_INT(f.c.done_actual[1], 0);
    /* while halted, new transfers queue but do not move */
    memset(p, 'Q', sizeof p);
    tv_push_in(f.t, p, 64);
    TL_EQ_INT(tc_submit(&f.c, a, f.h, 0x81, 64, 0), UHP_OK);
    tc_pump_idle(&f.c, 5);
    TL_EQ_INT(f.c.num_done, 3);
    /* ep_clear puts the host at DATA0 while the device is at DATA1 after
     * three packets: resynchronise the device too, as a core must. */
    TL_EQ_INT(tc_control(&f.c, b, f.h, 0x02, 1 /*CLEAR_FEATURE*/, 0, 0x81, 0), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 4, 500));
    TL_EQ_INT(OP(f.c.ops->ep_clear(f.v, f.h, 0x81)), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 5, 500));
    TL_EQ_INT(f.c.done_status[4], UHP_STATUS_COMPLETED);
    TL_EQ_INT(a->data[0], 'Q');
    TL_EQ_INT(stats(&f).toggle_mismatches, 0);
    f.c.ops->xfer_free(f.v, a);
    f.c.ops->xfer_free(f.v, b);
    f.c.ops->xfer_free(f.v, c3);
    fx_down(&f);
}

static void test_queue_order(void)
{
    fx_t f;
    fx_up(&f);
    enum { N = 6 };
    uhp_xfer_t *o[N], *in[N];
    for (int i = 0; i < N; i++) {
        o[i] = tc_alloc(&f.c, 64);
        in[i] = tc_alloc(&f.c, 64);
        memset(o[i]->data, 0x30 + i, 64);
    }
    /* IN first: they wait for loopback data; more than two queue behind */
    for (int i = 0; i < N; i++)
        TL_EQ_INT(tc_submit(&f.c, in[i], f.h, 0x81, 64, 0), UHP_OK);
    for (int i = 0; i < N; i++)
        TL_EQ_INT(tc_submit(&f.c, o[i], f.h, 0x01, 20 + i, 0), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 2 * N, 1000));
    int oi = 0, ii = 0;
    for (int k = 0; k < f.c.num_done; k++) {
        if (oi < N && f.c.done[k] == o[oi])
            oi++;
        else if (ii < N && f.c.done[k] == in[ii])
            ii++;
    }
    TL_EQ_INT(oi, N);
    TL_EQ_INT(ii, N);
    for (int i = 0; i < N; i++) {
        TL_EQ_INT(in[i]->actual_num_bytes, 20 + i);
        TL_EQ_INT(in[i]->data[0], 0x30 + i);
    }
    for (int i = 0; i < N; i++) {
        f.c.ops->xfer_free(f.v, o[i]);
        f.c.ops->xfer_free(f.v, in[i]);
    }
    fx_down(&f);
}

static void test_toggle_mismatch(void)
{
    fx_t f;
    fx_up(&f);
    f.t->loopback = false;
    uhp_xfer_t *x = tc_alloc(&f.c, 256), *ctl = tc_alloc(&f.c, 64);
    memset(x->data, 0x11, 256);
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x01, 64, 0), UHP_OK); /* both sides now expect DATA1 */
    TL_CHECK(tc_pump_done(&f.c, 1, 500));
    /* CLEAR_FEATURE reaches only the device: it goes back to DATA0 */
    TL_EQ_INT(tc_control(&f.c, ctl, f.h, 0x02, 1, 0, 0x01, 0), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 2, 500));
    int pk = f.t->out_count;
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x01, 128, 0), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 3, 500));
    TL_EQ_INT(f.c.done_status[2], UHP_STATUS_COMPLETED); /* the host cannot tell... */
    TL_EQ_INT(f.t->out_count - pk, 1);                   /* ...but a packet was lost */
    TL_EQ_INT(stats(&f).toggle_mismatches, 1);
    /* the right way: device CLEAR_FEATURE and host halt + ep_clear together */
    TL_EQ_INT(tc_control(&f.c, ctl, f.h, 0x02, 1, 0, 0x01, 0), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 4, 500));
    TL_EQ_INT(OP(f.c.ops->ep_halt(f.v, f.h, 0x01)), UHP_OK);
    TL_EQ_INT(OP(f.c.ops->ep_clear(f.v, f.h, 0x01)), UHP_OK);
    pk = f.t->out_count;
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x01, 192, 0), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 5, 500));
    TL_EQ_INT(f.t->out_count - pk, 3);
    TL_EQ_INT(stats(&f).toggle_mismatches, 1);
    /* IN side: host ep_clear without the device's CLEAR_FEATURE duplicates-drops */
    f.t->loopback = true;
    uint8_t p[64] = {0};
    tv_push_in(f.t, p, 64);
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x81, 64, 0), UHP_OK); /* both at DATA1 after */
    TL_CHECK(tc_pump_done(&f.c, 6, 500));
    TL_EQ_INT(OP(f.c.ops->ep_halt(f.v, f.h, 0x81)), UHP_OK);
    TL_EQ_INT(OP(f.c.ops->ep_clear(f.v, f.h, 0x81)), UHP_OK); /* host DATA0, device DATA1 */
    p[0] = 1;
    tv_push_in(f.t, p, 64);
    p[0] = 2;
    tv_push_in(f.t, p, 64);
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x81, 64, 0), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 7, 500));
    TL_EQ_INT(x->data[0], 2); /* packet 1 was taken for a retransmission */
    TL_EQ_INT(stats(&f).toggle_mismatches, 2);
    f.c.ops->xfer_free(f.v, x);
    f.c.ops->xfer_free(f.v, ctl);
    fx_down(&f);
}

static void test_set_interface_resets_both(void)
{
    fx_t f;
    fx_up(&f);
    f.t->loopback = false;
    uhp_xfer_t *x = tc_alloc(&f.c, 256), *ctl = tc_alloc(&f.c, 64);
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x01, 64, 0), UHP_OK); /* toggles at DATA1 */
    TL_CHECK(tc_pump_done(&f.c, 1, 500));
    /* switch alt: drain, release, claim alt 1, SET_INTERFACE (claim does not send it) */
    TL_EQ_INT(OP(f.c.ops->interface_release(f.v, f.h, 0)), UHP_OK);
    TL_EQ_INT(OP(f.c.ops->interface_claim(f.v, f.h, 0, 1)), UHP_OK);
    TL_EQ_INT(f.t->set_intf_calls, 0);
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x82, 8, 0), UHP_ERR_NOT_FOUND); /* not in alt 1 */
    TL_EQ_INT(tc_control(&f.c, ctl, f.h, 0x01, 11, 1, 0, 0), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 2, 500));
    TL_EQ_INT(f.c.done_status[1], UHP_STATUS_COMPLETED);
    TL_EQ_INT(f.t->set_intf_calls, 1);
    TL_EQ_INT(f.t->last_alt, 1);
    TL_CHECK(f.t->reset_calls >= 2);
    int pk = f.t->out_count;
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x01, 128, 0), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 3, 500));
    TL_EQ_INT(f.t->out_count - pk, 2); /* nothing lost: both sides reset */
    TL_EQ_INT(stats(&f).toggle_mismatches, 0);
    TL_EQ_INT(tc_control(&f.c, ctl, f.h, 0x81, 10, 0, 0, 1), UHP_OK); /* GET_INTERFACE */
    TL_CHECK(tc_pump_done(&f.c, 4, 500));
    TL_EQ_INT(ctl->data[8], 1);
    TL_EQ_INT(tc_control(&f.c, ctl, f.h, 0x01, 11, 5, 0, 0), UHP_OK); /* no alt 5 */
    TL_CHECK(tc_pump_done(&f.c, 5, 500));
    TL_EQ_INT(f.c.done_status[4], UHP_STATUS_STALL);
    TL_EQ_INT(f.t->set_intf_calls, 1);
    f.c.ops->xfer_free(f.v, x);
    f.c.ops->xfer_free(f.v, ctl);
    fx_down(&f);
}

static void test_control_transfers(void)
{
    fx_t f;
    fx_up(&f);
    uhp_xfer_t *x = tc_alloc(&f.c, 8 + 512);
    int n = 0;
    /* standard requests answered by the vhc from its descriptor cache */
    int calls = f.t->ctrl_calls;
    TL_EQ_INT(tc_control(&f.c, x, f.h, 0x80, 6, 0x0100, 0, 64), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, ++n, 500));
    TL_EQ_INT(f.c.done_actual[n - 1], 8 + 18); /* actual includes the setup packet */
    TL_EQ_MEM(x->data + 8, f.t->device_desc, 18);
    TL_EQ_INT(tc_control(&f.c, x, f.h, 0x80, 6, 0x0200, 0, 9), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, ++n, 500));
    TL_EQ_INT(f.c.done_actual[n - 1], 8 + 9);
    TL_EQ_INT(tc_control(&f.c, x, f.h, 0x80, 6, 0x0302, 0x0409, 255), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, ++n, 500));
    TL_EQ_INT(f.c.done_actual[n - 1], 8 + 6);
    TL_EQ_INT(x->data[10], 't');
    TL_EQ_INT(tc_control(&f.c, x, f.h, 0x80, 6, 0x0309, 0x0409, 255), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, ++n, 500));
    TL_EQ_INT(f.c.done_status[n - 1], UHP_STATUS_STALL);
    TL_EQ_INT(tc_control(&f.c, x, f.h, 0x80, 8, 0, 0, 1), UHP_OK); /* GET_CONFIGURATION */
    TL_CHECK(tc_pump_done(&f.c, ++n, 500));
    TL_EQ_INT(x->data[8], 1);
    TL_EQ_INT(tc_control(&f.c, x, f.h, 0x00, 5, 9, 0, 0), UHP_OK); /* SET_ADDRESS: host's */
    TL_CHECK(tc_pump_done(&f.c, ++n, 500));
    TL_EQ_INT(f.c.done_status[n - 1], UHP_STATUS_STALL);
    TL_EQ_INT(f.t->ctrl_calls, calls); /* none of those reached the model */
    int resets = f.t->reset_calls;
    TL_EQ_INT(tc_control(&f.c, x, f.h, 0x00, 9, 1, 0, 0), UHP_OK); /* SET_CONFIGURATION 1 */
    TL_CHECK(tc_pump_done(&f.c, ++n, 500));
    TL_EQ_INT(f.c.done_status[n - 1], UHP_STATUS_COMPLETED);
    TL_EQ_INT(f.t->reset_calls, resets + 1);
    TL_EQ_INT(f.t->reset_eps[resets], 0xff);
    TL_EQ_INT(tc_control(&f.c, x, f.h, 0x00, 9, 2, 0, 0), UHP_OK); /* no configuration 2 */
    TL_CHECK(tc_pump_done(&f.c, ++n, 500));
    TL_EQ_INT(f.c.done_status[n - 1], UHP_STATUS_STALL);

    /* vendor requests go to the model */
    TL_EQ_INT(tc_control(&f.c, x, f.h, 0xc0, 0x01, 0, 0, 100), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, ++n, 500));
    TL_EQ_INT(f.c.done_actual[n - 1], 108);
    TL_EQ_INT(x->data[8 + 99], 99 ^ 0x5a);
    f.t->ctrl_nak = 3; /* NAKed, retried, never cancelled */
    TL_EQ_INT(tc_control(&f.c, x, f.h, 0x40, 0x02, 0, 0, 0), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, ++n, 500));
    TL_EQ_INT(f.c.done_status[n - 1], UHP_STATUS_COMPLETED);
    TL_EQ_INT(f.t->ctrl_nak, 0);
    TL_EQ_INT(tc_control(&f.c, x, f.h, 0xc0, 0x03, 0, 0, 4), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, ++n, 500));
    TL_EQ_INT(f.c.done_status[n - 1], UHP_STATUS_STALL);
    TL_EQ_INT(tc_control(&f.c, x, f.h, 0xc0, 0x04, 0, 0, 16), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, ++n, 500));
    TL_EQ_INT(f.c.done_status[n - 1], UHP_STATUS_OVERFLOW);
    /* EP0 keeps working after a protocol STALL */
    memset(x->data + 8, 0x77, 32);
    TL_EQ_INT(tc_control(&f.c, x, f.h, 0x40, 0x05, 0, 0, 32), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, ++n, 500));
    TL_EQ_INT(f.c.done_status[n - 1], UHP_STATUS_COMPLETED);
    TL_EQ_INT(f.c.done_actual[n - 1], 40);
    TL_EQ_INT(f.t->out_data[31], 0x77);
    f.c.ops->xfer_free(f.v, x);
    fx_down(&f);
}

static void test_interrupt_in(void)
{
    fx_t f;
    fx_up(&f);
    uhp_xfer_t *x = tc_alloc(&f.c, 8);
    TL_EQ_INT(tc_submit(&f.c, x, f.h, 0x82, 8, 0), UHP_OK);
    tc_pump_idle(&f.c, 20);
    TL_EQ_INT(f.c.num_done, 0);
    /* bInterval 4 ms: polled at that pace after each NAK, not spun on */
    TL_CHECK(f.t->int_polls >= 2);
    int early = 0;
    for (int i = 1; i < f.t->int_polls && i < 64; i++)
        if (f.t->int_poll_ns[i] - f.t->int_poll_ns[i - 1] < 4000000)
            early++;
    TL_EQ_INT(early, 0);
    char reply[32];
    TL_EQ_INT(vhc_device_command(f.v, "1-1", "report", reply, sizeof reply), 0);
    TL_EQ_STR(reply, "queued");
    TL_CHECK(tc_pump_done(&f.c, 1, 100));
    TL_EQ_INT(f.c.done_actual[0], 8);
    TL_EQ_INT(x->data[0], 0xab);
    f.c.ops->xfer_free(f.v, x);
    fx_down(&f);
}

int main(void)
{
    TL_RUN(test_out_packets_and_zlp);
    TL_RUN(test_in_short_packet_and_next_data);
    TL_RUN(test_babble_overflow);
    TL_RUN(test_stall_halts_pipe);
    TL_RUN(test_halt_flush_clear_partial);
    TL_RUN(test_queue_order);
    TL_RUN(test_toggle_mismatch);
    TL_RUN(test_set_interface_resets_both);
    TL_RUN(test_control_transfers);
    TL_RUN(test_interrupt_in);
    return TL_RESULT();
}
