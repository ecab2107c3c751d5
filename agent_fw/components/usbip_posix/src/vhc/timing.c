/*
 * timing.c - the simulation clock, bus frames and the timerfd.
 *
 * The event loop owns no timer of ours: vhc_fd() is a timerfd that we arm
 * for the next moment something is due (immediately when work is waiting,
 * at the next frame when the frame budget ran out, at a NAK retry time) and
 * disarm when idle, so an idle dongle costs no CPU and a busy one never
 * spins.
 *
 * The data path must not pay a system call per transfer for that: the fd is
 * never read. A timer set to a past time stays readable until the next
 * timerfd_settime (which also resets its expiry count), so while work keeps
 * being due, vhc_process leaves it as it is and the loop keeps calling us;
 * settime only runs when the next due time really changes (idle <-> busy,
 * a NAK back-off, the next bus frame). Kicks inside vhc_process only note
 * the work: the final rearm sees it.
 *
 * Bus timing: with cfg.bus_timing the bus runs in (micro)frames of 1 ms
 * (Full-Speed) or 125 us (High-Speed, P4 root port). Each frame offers the
 * non-periodic budget of 19 x 64 B (FS) or 13 x 512 B (HS); a packet costs
 * its pipe's max packet size, which gives exactly 19 bulk packets per FS
 * frame and 13 per HS micro-frame. Periodic pipes (interrupt, iso) are
 * served once per bInterval from the reserved periodic share and do not
 * draw on that budget. If the process is late, up to 100 ms of frames are
 * replayed, so scheduler jitter does not lower throughput; devices see the
 * frame's start time as "now".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "vhc_internal.h"

/* Replay at most this much missed bus time (a stalled process must not
 * come back to a burst of seconds' worth of frames). */
#define VHC_CATCHUP_NS 100000000ull
#define FS_FRAME_NS 1000000ull
#define HS_FRAME_NS 125000ull
#define FS_FRAME_BUDGET (19 * 64)
#define HS_FRAME_BUDGET (13 * 512)

uint64_t vhc_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int vhc_timing_init(vhc_t *v)
{
    v->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (v->tfd < 0)
        return -1;
    v->frame_ns = v->cfg.high_speed ? HS_FRAME_NS : FS_FRAME_NS;
    v->epoch_ns = vhc_clock_ns();
    v->cur_frame = 0;
    v->budget = v->cfg.high_speed ? HS_FRAME_BUDGET : FS_FRAME_BUDGET;
    return 0;
}

void vhc_timing_fini(vhc_t *v)
{
    if (v->tfd >= 0)
        close(v->tfd);
    v->tfd = -1;
    free(v->active);
    v->active = NULL;
    v->nactive = v->cap_active = 0;
}

static void arm_at(vhc_t *v, uint64_t when_ns)
{
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (when_ns == 0)
        when_ns = 1; /* an all-zero value would disarm; 1 ns is in the past = fire now */
    its.it_value.tv_sec = (time_t)(when_ns / 1000000000ull);
    its.it_value.tv_nsec = (long)(when_ns % 1000000000ull);
    timerfd_settime(v->tfd, TFD_TIMER_ABSTIME, &its, NULL);
    v->armed_ns = when_ns;
}

static void disarm(vhc_t *v)
{
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    timerfd_settime(v->tfd, TFD_TIMER_ABSTIME, &its, NULL);
    v->armed_ns = 0;
}

/* The fd is (or is about to be) readable without another settime. */
static bool fires_by(const vhc_t *v, uint64_t now)
{
    return v->armed_ns != 0 && v->armed_ns <= now;
}

void vhc_kick(vhc_t *v)
{
    if (v->in_process) {
        v->more_work = true;
        return;
    }
    if (fires_by(v, vhc_clock_ns()))
        return;
    arm_at(v, 1);
}

uint64_t vhc_now(vhc_t *v)
{
    /* Inside vhc_process the clock is frozen (the frame start with bus
     * timing, the time of the call without): devices poll it per packet. */
    if (v->in_process)
        return v->sim_now;
    return vhc_clock_ns();
}

uint64_t vhc_host_now(void *host_ctx)
{
    return vhc_now((vhc_t *)host_ctx);
}

uint64_t vhc_frame_ns_for(const vhc_t *v, const vhc_dev_t *d)
{
    if (d && d->vdev && d->vdev->speed == VDEV_SPEED_HIGH)
        return HS_FRAME_NS;
    (void)v;
    return FS_FRAME_NS;
}

void vhc_host_wake(void *host_ctx, vdev_t *dev, uint8_t ep_addr, uint64_t delay_ns)
{
    vhc_t *v = host_ctx;
    vhc_dev_t *d;
    for (d = v->devs; d; d = d->next_all)
        if (d->vdev == dev && d->state == VHC_DEV_CONFIGURED)
            break;
    if (!d)
        return; /* unplugged or not enumerated: nothing to poll */
    vhc_pipe_t *p = vhc_pipe_for(d, ep_addr);
    if (!p)
        return;
    uint64_t due = vhc_now(v) + delay_ns;
    /* A wake shortens a NAK back-off; it never postpones a sooner poll. */
    if (p->due_ns > due)
        p->due_ns = due;
    p->nak_streak = 0;
    vhc_kick(v);
}

static bool pipe_has_work(const vhc_pipe_t *p)
{
    return p->in_use && p->head && !p->halted;
}

/* Pipes that have a transfer, in scheduling order (devices in plug order,
 * EP0 first). Returns false when there are none. */
static bool collect_active(vhc_t *v)
{
    v->nactive = 0;
    for (vhc_dev_t *d = v->devs; d; d = d->next_all) {
        if (d->state != VHC_DEV_CONFIGURED)
            continue;
        for (int k = -1; k < VHC_EP_KEYS; k++) {
            vhc_pipe_t *p = k < 0 ? &d->ep0 : &d->pipes[k];
            if (!pipe_has_work(p))
                continue;
            if (v->nactive == v->cap_active) {
                int cap = v->cap_active ? v->cap_active * 2 : 16;
                struct vhc_active *a = realloc(v->active, (size_t)cap * sizeof *a);
                if (!a)
                    return v->nactive > 0; /* serve what fits; the rest next run */
                v->active = a;
                v->cap_active = cap;
            }
            v->active[v->nactive].d = d;
            v->active[v->nactive].p = p;
            v->nactive++;
        }
    }
    return v->nactive > 0;
}

/* One round-robin sweep over the pipes due at `now`. With bus timing each
 * pipe moves at most one packet per sweep, like the controller's channel
 * scheduler; without it (no frames, no budget to share) a pipe keeps the
 * bus for up to UNTIMED_BURST packets of its head transfer while the
 * device answers at once, which is the same packets in the same order on
 * that endpoint for a fraction of the scheduling cost. */
#define UNTIMED_BURST 128

static int sweep(vhc_t *v, uint64_t now, bool timed, int *packets_left, int *budgeted)
{
    int moved = 0;
    for (int i = 0; i < v->nactive; i++) {
        vhc_dev_t *d = v->active[i].d;
        vhc_pipe_t *p = v->active[i].p;
        if (!pipe_has_work(p) || p->due_ns > now)
            continue;
        int cost = vhc_pipe_cost(p);
        const vhc_xfer_t *head = p->head;
        for (int burst = timed ? 1 : UNTIMED_BURST; burst > 0; burst--) {
            if (timed && cost > 0 && v->budget < cost)
                break;
            if (*packets_left <= 0)
                return moved;
            if (!vhc_pipe_step(v, d, p, now))
                break;
            moved++;
            (*packets_left)--;
            if (cost > 0) {
                (*budgeted)++;
                if (timed)
                    v->budget -= cost;
            }
            if (p->head != head || p->halted || p->due_ns > now)
                break; /* transfer over, stalled, or the pipe waits */
        }
    }
    return moved;
}

static int run_frame(vhc_t *v, uint64_t now, bool timed, int *packets_left, int *budgeted)
{
    int total = 0, n;
    do {
        n = sweep(v, now, timed, packets_left, budgeted);
        total += n;
    } while (n > 0 && *packets_left > 0);
    return total;
}

static bool any_pipe_work(const vhc_t *v)
{
    for (const vhc_dev_t *d = v->devs; d; d = d->next_all) {
        if (d->state != VHC_DEV_CONFIGURED)
            continue;
        if (pipe_has_work(&d->ep0))
            return true;
        for (int k = 0; k < VHC_EP_KEYS; k++)
            if (pipe_has_work(&d->pipes[k]))
                return true;
    }
    return false;
}

void vhc_bus_run(vhc_t *v, int *untimed_left)
{
    uint64_t real = v->proc_now;
    int packets_left = VHC_PACKETS_PER_PROCESS;
    int budgeted = 0;
    if (!v->cfg.bus_timing) {
        v->sim_now = real;
        if (!collect_active(v))
            return;
        if (run_frame(v, real, false, untimed_left, &budgeted) > 0 && !v->frame_busy) {
            v->frame_busy = true;
            v->stats.frames++; /* untimed: one "frame" per busy vhc_process */
        }
        return;
    }
    int64_t full = v->cfg.high_speed ? HS_FRAME_BUDGET : FS_FRAME_BUDGET;
    uint64_t target = (real - v->epoch_ns) / v->frame_ns;
    if (v->bus_idle || !any_pipe_work(v)) {
        /* The bus had nothing to do since the last run: frames that went by
         * meanwhile carried nothing and are not replayed. */
        if (target > v->cur_frame) {
            v->cur_frame = target;
            v->budget = full;
            v->frame_packets = 0;
            v->frame_busy = false;
        }
        v->bus_idle = false;
        if (!any_pipe_work(v))
            return;
    }
    if (!collect_active(v))
        return;
    uint64_t first = v->cur_frame;
    if (target > v->cur_frame) {
        first = v->cur_frame + 1;
        uint64_t catchup = VHC_CATCHUP_NS / v->frame_ns;
        if (target - first >= catchup)
            first = target - catchup + 1;
    }
    for (uint64_t f = first; f <= target; f++) {
        if (f != v->cur_frame) {
            v->cur_frame = f;
            v->budget = full;
            v->frame_packets = 0;
            v->frame_busy = false;
        }
        v->sim_now = v->epoch_ns + f * v->frame_ns;
        packets_left = VHC_PACKETS_PER_PROCESS;
        budgeted = 0;
        int moved = run_frame(v, v->sim_now, true, &packets_left, &budgeted);
        /* A frame may be visited twice (work arrived mid-frame): the stats
         * add up per frame, not per visit. */
        if (moved > 0 && !v->frame_busy) {
            v->frame_busy = true;
            v->stats.frames++;
        }
        v->frame_packets += (uint64_t)budgeted;
        if (v->frame_packets > v->stats.max_packets_per_frame)
            v->stats.max_packets_per_frame = v->frame_packets;
    }
}

static uint64_t pipe_due(const vhc_t *v, const vhc_pipe_t *p)
{
    if (!v->cfg.bus_timing)
        return p->due_ns;
    uint64_t next_frame = v->epoch_ns + (v->cur_frame + 1) * v->frame_ns;
    uint64_t due = p->due_ns;
    int cost = vhc_pipe_cost(p);
    if (cost > 0 && v->budget < cost && due < next_frame)
        due = next_frame;
    /* Round up to a frame boundary: the bus only starts packets in frames. */
    if (due > v->epoch_ns) {
        uint64_t rel = due - v->epoch_ns;
        uint64_t f = (rel + v->frame_ns - 1) / v->frame_ns;
        due = v->epoch_ns + f * v->frame_ns;
    }
    return due;
}

void vhc_timer_rearm(vhc_t *v)
{
    uint64_t next = UINT64_MAX;
    if (v->done_head)
        next = 0;
    for (vhc_dev_t *d = v->devs; d && next; d = d->next_all) {
        if (d->report_pending && v->installed)
            next = 0;
        if (d->gone_pending && v->installed)
            next = 0;
        if (d->reap)
            next = 0;
        if (d->state == VHC_DEV_PENDING) {
            if (d->enum_due_ns < next)
                next = d->enum_due_ns;
            continue;
        }
        if (d->state != VHC_DEV_CONFIGURED)
            continue;
        for (int k = -1; k < VHC_EP_KEYS; k++) {
            const vhc_pipe_t *p = k < 0 ? &d->ep0 : &d->pipes[k];
            if (!pipe_has_work(p))
                continue;
            uint64_t due = pipe_due(v, p);
            if (due < next)
                next = due;
        }
    }
    v->bus_idle = !any_pipe_work(v);
    if (next == UINT64_MAX) {
        if (v->armed_ns != 0)
            disarm(v);
        return;
    }
    uint64_t now = vhc_clock_ns();
    if (next <= now) {
        if (!fires_by(v, now))
            arm_at(v, 1);
        return; /* still readable: the loop calls again */
    }
    if (v->armed_ns != next)
        arm_at(v, next);
}
