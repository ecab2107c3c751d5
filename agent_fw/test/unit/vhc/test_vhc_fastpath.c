/*
 * test_vhc_fastpath.c - what keeps the simulated data path cheap, with the
 * packet semantics unchanged:
 *   - a transfer the completion callback submits (the core's next chunk of a
 *     split URB) moves in the same vhc_process, no loop turn in between;
 *   - a device's wake inside vhc_process is served in that call, not after
 *     a NAK back-off or another loop turn;
 *   - the fd stays readable while work is due and sleeps when idle, without
 *     being read (the loop keeps calling, the idle dongle costs nothing);
 *   - a bounded call: a callback chain longer than one call's packet budget
 *     continues on the next call.
 */
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"
#include "fixture.h"

#define CHUNK 8128 /* 127 x 64: the largest S3 Full-Speed transfer */


static int readable(vhc_t *v)
{
    struct pollfd pfd = {.fd = vhc_fd(v), .events = POLLIN};
    return poll(&pfd, 1, 0);
}

/* A pretend core that resubmits from its completion callback, as the USB/IP
 * core does for the next chunk of a split URB. */
static struct {
    vhc_t *v;
    int left, done, refused;
} chain;

static void chain_cb(uhp_xfer_t *x)
{
    if (x->status != UHP_STATUS_COMPLETED || x->actual_num_bytes != CHUNK)
        chain.refused++;
    chain.done++;
    if (chain.left > 0) {
        chain.left--;
        if (vhc_uhp_ops()->submit(chain.v, x) != UHP_OK)
            chain.refused++;
    }
}

static void chain_start(fx_t *f, uhp_xfer_t *x, int transfers)
{
    memset(&chain, 0, sizeof chain);
    chain.v = f->v;
    chain.left = transfers - 1;
    x->dev = f->h;
    x->ep_addr = 0x01;
    x->num_bytes = CHUNK;
    x->flags = 0;
    x->callback = chain_cb;
    TL_EQ_INT(OP(f->c.ops->submit(f->v, x)), UHP_OK);
}

static void test_resubmitted_chunks_move_in_the_same_call(void)
{
    fx_t f;
    fx_up(&f);
    f.t->loopback = false;
    uhp_xfer_t *x = tc_alloc(&f.c, CHUNK);
    memset(x->data, 0x5a, CHUNK);
    int before = f.t->out_count;
    chain_start(&f, x, 4);
    TL_EQ_INT(readable(f.v), 1);
    vhc_process(f.v);
    /* all four transfers, 4 x 127 packets, in one call */
    TL_EQ_INT(chain.done, 4);
    TL_EQ_INT(chain.refused, 0);
    TL_EQ_INT(f.t->out_count - before, 4 * 127);
    for (int i = before; i < f.t->out_count; i++)
        TL_EQ_INT(f.t->out_lens[i], 64);
    TL_EQ_INT(readable(f.v), 0); /* idle again: the fd sleeps */
    f.c.ops->xfer_free(f.v, x);
    fx_down(&f);
}

static void test_long_chain_is_bounded_and_fd_stays_due(void)
{
    fx_t f;
    fx_up(&f);
    f.t->loopback = false;
    uhp_xfer_t *x = tc_alloc(&f.c, CHUNK);
    int total = 41; /* 41 x 127 = 5207 packets: more than one call may move */
    chain_start(&f, x, total);
    vhc_process(f.v);
    TL_CHECK(chain.done > 1);     /* the chain ran inside the call ... */
    TL_CHECK(chain.done < total); /* ... but stopped at the call's budget */
    TL_EQ_INT(readable(f.v), 1);  /* and the loop is told to come back at once */
    int calls = 1;
    while (chain.done < total && calls < 100) {
        TL_EQ_INT(readable(f.v), 1);
        vhc_process(f.v);
        calls++;
    }
    TL_EQ_INT(chain.done, total);
    TL_EQ_INT(chain.refused, 0);
    TL_CHECK(calls <= 3);
    TL_EQ_INT(readable(f.v), 0);
    f.c.ops->xfer_free(f.v, x);
    fx_down(&f);
}

static void test_wake_inside_process_is_served_at_once(void)
{
    fx_t f;
    fx_up(&f);
    uhp_xfer_t *in = tc_alloc(&f.c, 64), *out = tc_alloc(&f.c, 64);
    /* IN first: nothing to send, the device NAKs and the pipe backs off */
    TL_EQ_INT(tc_submit(&f.c, in, f.h, 0x81, 64, 0), UHP_OK);
    vhc_process(f.v);
    TL_EQ_INT(f.c.num_done, 0);
    TL_CHECK(f.t->in_polls >= 1);
    /* the OUT packet loops back and the device wakes IN from inside the
     * bus run: the same call must deliver both, not wait out the back-off */
    for (int i = 0; i < 20; i++)
        out->data[i] = (uint8_t)(0xa0 + i);
    TL_EQ_INT(tc_submit(&f.c, out, f.h, 0x01, 20, 0), UHP_OK);
    vhc_process(f.v);
    TL_EQ_INT(f.c.num_done, 2);
    int ii = tc_done_index(&f.c, in);
    TL_CHECK(ii >= 0);
    if (ii >= 0) {
        TL_EQ_INT(f.c.done_status[ii], UHP_STATUS_COMPLETED);
        TL_EQ_INT(f.c.done_actual[ii], 20);
        TL_EQ_INT(memcmp(in->data, out->data, 20), 0);
    }
    TL_EQ_INT(readable(f.v), 0);
    f.c.ops->xfer_free(f.v, in);
    f.c.ops->xfer_free(f.v, out);
    fx_down(&f);
}

/* Untimed bursts keep each endpoint's packet boundaries: a short packet in
 * the middle of the IN queue still ends the first transfer there. */
static void test_burst_keeps_packet_boundaries(void)
{
    fx_t f;
    fx_up(&f);
    f.t->loopback = false;
    uint8_t p[64];
    for (int i = 0; i < 200; i++) {
        memset(p, (uint8_t)i, sizeof p);
        tv_push_in(f.t, p, i == 150 ? 7 : 64);
    }
    uhp_xfer_t *a = tc_alloc(&f.c, CHUNK), *b = tc_alloc(&f.c, CHUNK);
    TL_EQ_INT(tc_submit(&f.c, a, f.h, 0x81, CHUNK, 0), UHP_OK);
    TL_EQ_INT(tc_submit(&f.c, b, f.h, 0x81, 64 * 49, 0), UHP_OK);
    TL_CHECK(tc_pump_done(&f.c, 2, 500));
    TL_EQ_INT(f.c.done_actual[tc_done_index(&f.c, a)], 127 * 64); /* full: 127 packets */
    TL_EQ_INT(f.c.done_actual[tc_done_index(&f.c, b)], 23 * 64 + 7); /* packets 127..150 */
    TL_EQ_INT(a->data[126 * 64], 126);
    TL_EQ_INT(b->data[0], 127);
    TL_EQ_INT(b->data[23 * 64], 150);
    f.c.ops->xfer_free(f.v, a);
    f.c.ops->xfer_free(f.v, b);
    fx_down(&f);
}

int main(void)
{
    TL_RUN(test_resubmitted_chunks_move_in_the_same_call);
    TL_RUN(test_long_chain_is_bounded_and_fd_stays_due);
    TL_RUN(test_wake_inside_process_is_served_at_once);
    TL_RUN(test_burst_keeps_packet_boundaries);
    return TL_RESULT();
}
