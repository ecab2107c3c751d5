/*
 * test_vhc_timing.c - the bus-timing model. Assertions use the controller's
 * own frame accounting and the simulation clock devices see (the frame's
 * start time), not wall time, so a loaded machine makes the run slower but
 * not wrong.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testlib.h"
#include "tvdev.h"

static uint64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Packets per distinct device timestamp (= per frame) and frames spanned. */
static void frame_profile(const tvdev_t *t, int from, uint64_t frame_ns, int *max_per_frame,
                          uint64_t *frames_spanned, int *misaligned)
{
    int run = 0;
    *max_per_frame = 0;
    *misaligned = 0;
    for (int i = from; i < t->out_count; i++) {
        if (i > from && t->out_ns[i] == t->out_ns[i - 1]) {
            run++;
        } else {
            if (i > from && (t->out_ns[i] - t->out_ns[from]) % frame_ns != 0)
                (*misaligned)++;
            run = 1;
        }
        if (run > *max_per_frame)
            *max_per_frame = run;
    }
    *frames_spanned = (t->out_ns[t->out_count - 1] - t->out_ns[from]) / frame_ns + 1;
}

static void run_bulk(vhc_config_t cfg, vdev_speed_t speed, int xfers, int bytes, int per_frame,
                     uint64_t frame_ns, const char *name)
{
    vhc_t *v = NULL;
    tcore_t c;
    TL_EQ_INT(vhc_create(&cfg, &v), 0);
    tc_init(&c, v);
    tv_opts_t o = {.speed = speed};
    tvdev_t *t = tv_create(&o, NULL);
    t->loopback = false;
    uhp_dev_handle_t h = tc_plug(&c, "1-1", t);
    TL_EQ_INT(OP(c.ops->interface_claim(v, h, 0, 0)), UHP_OK);
    uhp_xfer_t *x[8];
    for (int i = 0; i < xfers; i++) {
        x[i] = tc_alloc(&c, (size_t)bytes);
        memset(x[i]->data, i, (size_t)bytes);
    }
    vhc_stats_t before;
    vhc_get_stats(v, &before);
    int calls0 = c.process_calls;
    uint64_t w0 = wall_ns();
    for (int i = 0; i < xfers; i++)
        TL_EQ_INT(tc_submit(&c, x[i], h, 0x01, bytes, 0), UHP_OK);
    TL_CHECK(tc_pump_done(&c, xfers, 2000));
    uint64_t wall = wall_ns() - w0;
    vhc_stats_t st;
    vhc_get_stats(v, &st);
    int mpf, misaligned;
    uint64_t spanned;
    frame_profile(t, 0, frame_ns, &mpf, &spanned, &misaligned);
    int mps = speed == VDEV_SPEED_HIGH ? 512 : 64;
    int packets = xfers * bytes / mps;
    TL_EQ_INT(t->out_count, packets);
    TL_EQ_INT(mpf, per_frame);               /* never more than the bus allows */
    TL_EQ_INT(misaligned, 0);                /* packets only start in frames */
    TL_EQ_INT(st.max_packets_per_frame, per_frame);
    uint64_t frames_needed = (uint64_t)(packets + per_frame - 1) / (uint64_t)per_frame;
    TL_EQ_INT(spanned, frames_needed);       /* and never fewer: every frame is filled */
    TL_EQ_INT(st.frames - before.frames, frames_needed);
    double sim_s = (double)spanned * (double)frame_ns / 1e9;
    double rate = (double)(xfers * bytes) / sim_s;
    double ideal = (double)per_frame * mps / ((double)frame_ns / 1e9);
    printf("%s: %d bytes in %llu frames: %.3f MB/s on the bus clock (ideal %.3f, ratio %.3f); "
           "wall %.1f ms, %d vhc_process calls\n",
           name, xfers * bytes, (unsigned long long)spanned, rate / 1e6, ideal / 1e6,
           rate / ideal, (double)wall / 1e6, c.process_calls - calls0);
    TL_CHECK(rate / ideal > 0.97 && rate / ideal <= 1.0);
    /* paced by the clock: the run cannot beat the bus... */
    TL_CHECK(wall + frame_ns >= (spanned - 1) * frame_ns);
    /* ...and sleeps between frames instead of spinning */
    TL_CHECK(c.process_calls - calls0 <= (int)(3 * spanned + 10));
    for (int i = 0; i < xfers; i++)
        c.ops->xfer_free(v, x[i]);
    TL_EQ_INT(c.cb_inside_op, 0);
    TL_EQ_INT(c.harness_errors, 0);
    vhc_destroy(v);
}

static void test_full_speed_bulk(void)
{
    vhc_config_t cfg = VHC_CONFIG_ESP32S3();
    cfg.bus_timing = true;
    /* 4 x 8128 B = 508 packets = 27 frames of at most 19 */
    run_bulk(cfg, VDEV_SPEED_FULL, 4, 8128, 19, 1000000, "FS bulk OUT");
}

static void test_high_speed_bulk(void)
{
    vhc_config_t cfg = VHC_CONFIG_ESP32P4();
    cfg.bus_timing = true;
    /* 4 x 64 KiB = 512 packets = 40 micro-frames of at most 13 */
    run_bulk(cfg, VDEV_SPEED_HIGH, 4, 65536, 13, 125000, "HS bulk OUT");
}

static void test_interrupt_interval(void)
{
    vhc_config_t cfg = VHC_CONFIG_ESP32S3();
    cfg.bus_timing = true;
    vhc_t *v = NULL;
    tcore_t c;
    TL_EQ_INT(vhc_create(&cfg, &v), 0);
    tc_init(&c, v);
    tvdev_t *t = tv_simple(NULL);
    uhp_dev_handle_t h = tc_plug(&c, "1-1", t);
    TL_EQ_INT(OP(c.ops->interface_claim(v, h, 0, 0)), UHP_OK);
    uhp_xfer_t *x = tc_alloc(&c, 8);
    TL_EQ_INT(tc_submit(&c, x, h, 0x82, 8, 0), UHP_OK);
    tc_pump_idle(&c, 25);
    TL_CHECK(t->int_polls >= 3);
    int bad = 0;
    for (int i = 1; i < t->int_polls && i < 64; i++)
        if (t->int_poll_ns[i] - t->int_poll_ns[i - 1] != 4000000) /* bInterval 4 at FS */
            bad++;
    TL_EQ_INT(bad, 0);
    t->int_reports = 1;
    TL_CHECK(tc_pump_done(&c, 1, 100));
    TL_EQ_INT(c.done_actual[0], 8);
    c.ops->xfer_free(v, x);
    vhc_destroy(v);
}

int main(void)
{
    TL_RUN(test_full_speed_bulk);
    TL_RUN(test_high_speed_bulk);
    TL_RUN(test_interrupt_interval);
    return TL_RESULT();
}
