/*
 * engine.c - moving packets, one at a time, the way the wire does.
 *
 * Only the head transfer of a pipe moves data; the second one is "loaded"
 * in the controller in the sense that it starts in the same (micro)frame
 * the head ends, with no software turnaround (ESP-IDF's double buffering).
 *
 * Data toggles are modelled on both sides. Host side: one per pipe, reset by
 * ep_clear and by SET_CONFIGURATION / SET_INTERFACE. Device side: one per
 * endpoint in the device record, reset when the device receives
 * CLEAR_FEATURE(ENDPOINT_HALT) / SET_INTERFACE / SET_CONFIGURATION. When they
 * disagree, the receiver takes the packet for a retransmission: it ACKs and
 * drops it, so one packet is lost, as on real hardware.
 */
#include <string.h>

#include "vhc_internal.h"

#define NAK_BACKOFF_MAX_FRAMES 32

int vhc_pipe_cost(const vhc_pipe_t *p)
{
    if (p->type == VHC_EP_INTERRUPT || p->type == VHC_EP_ISO)
        return 0; /* periodic: served from the reserved share, once per interval */
    return p->mps;
}

static uint64_t interval_ns(const vhc_t *v, const vhc_dev_t *d, const vhc_pipe_t *p)
{
    return (uint64_t)p->interval_frames * vhc_frame_ns_for(v, d);
}

/* After NAK: bulk/control retry next frame, backing off while the device
 * keeps refusing (it must wake us when ready; the back-off only bounds the
 * cost of polling a silent device); interrupt endpoints at their interval. */
static void nak(vhc_t *v, vhc_dev_t *d, vhc_pipe_t *p, uint64_t now)
{
    v->stats.naks++;
    if (p->type == VHC_EP_INTERRUPT) {
        p->due_ns = now + interval_ns(v, d, p);
        return;
    }
    int frames = 1 << (p->nak_streak < 5 ? p->nak_streak : 5);
    if (frames > NAK_BACKOFF_MAX_FRAMES)
        frames = NAK_BACKOFF_MAX_FRAMES;
    p->nak_streak++;
    p->due_ns = now + (uint64_t)frames * vhc_frame_ns_for(v, d);
}

static void stall(vhc_t *v, vhc_dev_t *d, vhc_pipe_t *p)
{
    v->stats.stalls++;
    d->dev_halted[vhc_ep_key(p->ep_addr)] = true;
    /* ESP-IDF: a STALL halts the pipe; queued transfers wait for ep_clear. */
    p->halted = true;
    vhc_complete(v, vhc_pipe_pop(p), UHP_STATUS_STALL);
}

static void finish(vhc_t *v, vhc_pipe_t *p, uhp_status_t st)
{
    vhc_complete(v, vhc_pipe_pop(p), st);
}

static void after_packet(const vhc_t *v, const vhc_dev_t *d, vhc_pipe_t *p, uint64_t now)
{
    p->nak_streak = 0;
    if (p->type == VHC_EP_INTERRUPT && v->cfg.bus_timing)
        p->due_ns = now + interval_ns(v, d, p);
}

static bool step_out(vhc_t *v, vhc_dev_t *d, vhc_pipe_t *p, vhc_xfer_t *x, uint64_t now)
{
    int left = x->pub.num_bytes - x->moved;
    int len = left < p->mps ? left : p->mps;
    int key = vhc_ep_key(p->ep_addr);
    if (d->dev_halted[key]) {
        stall(v, d, p);
        return true;
    }
    int rc;
    if (p->toggle != d->dev_toggle[key]) {
        /* Device thinks it already has this packet: ACK, drop. */
        v->stats.toggle_mismatches++;
        rc = 0;
    } else {
        rc = d->vdev->ops->out_packet(d->vdev, p->ep_addr, x->pub.data + x->moved, (size_t)len);
        if (rc == VDEV_NAK) {
            nak(v, d, p, now);
            return false;
        }
        if (rc < 0) {
            stall(v, d, p);
            return true;
        }
        d->dev_toggle[key] ^= 1;
    }
    v->stats.packets++;
    p->toggle ^= 1;
    after_packet(v, d, p, now);
    if (len == 0)
        x->zlp_done = true;
    x->moved += len;
    if (x->moved < x->pub.num_bytes)
        return true;
    /* Exactly a multiple of MPS (or empty): a ZLP only when asked for; a
     * zero-byte transfer is itself one ZLP. */
    bool want_zlp = (x->pub.flags & UHP_XFER_FLAG_ZERO_PACK) && x->pub.num_bytes % p->mps == 0;
    if (x->pub.num_bytes == 0 || !want_zlp || x->zlp_done)
        finish(v, p, UHP_STATUS_COMPLETED);
    return true;
}

/* Room for a babbling device beyond MPS. */
#define BABBLE_ROOM (1024 * 3 + 64)

static bool step_in(vhc_t *v, vhc_dev_t *d, vhc_pipe_t *p, vhc_xfer_t *x, uint64_t now)
{
    uint8_t spare[BABBLE_ROOM];
    /* The device writes straight into the transfer when the buffer has the
     * same slack the spare buffer gives; what lands beyond the packet's
     * share is never reported (actual_num_bytes stops before it). */
    bool direct = x->pub.capacity - (size_t)x->moved >= sizeof spare;
    uint8_t *buf = direct ? x->pub.data + x->moved : spare;
    int key = vhc_ep_key(p->ep_addr);
    if (d->dev_halted[key]) {
        stall(v, d, p);
        return true;
    }
    int rc = d->vdev->ops->in_packet(d->vdev, p->ep_addr, buf, p->mps);
    if (rc == VDEV_NAK) {
        nak(v, d, p, now);
        return false;
    }
    if (rc < 0) {
        stall(v, d, p);
        return true;
    }
    v->stats.packets++;
    after_packet(v, d, p, now);
    uint8_t sent = d->dev_toggle[key];
    d->dev_toggle[key] ^= 1; /* the host ACKs whatever toggle it carried */
    if (p->toggle != sent) {
        /* Host expected the other toggle: a "retransmission", dropped. */
        v->stats.toggle_mismatches++;
        return true;
    }
    p->toggle ^= 1;
    int room = x->pub.num_bytes - x->moved;
    if (rc > p->mps || rc > room) {
        int keep = room < p->mps ? room : p->mps;
        if (!direct)
            memcpy(x->pub.data + x->moved, buf, (size_t)keep);
        x->moved += keep;
        vhc_log(v, "%s ep 0x%02x: device sent %d bytes, %d expected at most: babble", d->path,
                p->ep_addr, rc, keep);
        finish(v, p, UHP_STATUS_OVERFLOW);
        return true;
    }
    if (!direct)
        memcpy(x->pub.data + x->moved, buf, (size_t)rc);
    x->moved += rc;
    if (rc < p->mps || x->moved == x->pub.num_bytes)
        finish(v, p, UHP_STATUS_COMPLETED);
    return true;
}

/* Isochronous: one packet per service interval, no handshake, no toggle,
 * status per packet; a missing answer is an empty packet, not a retry. */
static bool step_iso(vhc_t *v, vhc_dev_t *d, vhc_pipe_t *p, vhc_xfer_t *x, uint64_t now)
{
    uhp_iso_packet_t *ip = &x->pub.iso[x->iso_idx];
    uint8_t *at = x->pub.data + x->iso_offset;
    if (p->ep_addr & 0x80) {
        uint8_t buf[BABBLE_ROOM];
        int rc = d->vdev->ops->in_packet(d->vdev, p->ep_addr, buf, (size_t)p->mps * p->mult);
        if (rc == VDEV_NAK || rc == 0) {
            ip->actual_num_bytes = 0;
            ip->status = UHP_STATUS_COMPLETED;
        } else if (rc < 0) {
            ip->actual_num_bytes = 0;
            ip->status = UHP_STATUS_ERROR;
        } else if (rc > ip->num_bytes) {
            memcpy(at, buf, (size_t)ip->num_bytes);
            ip->actual_num_bytes = ip->num_bytes;
            ip->status = UHP_STATUS_OVERFLOW;
        } else {
            memcpy(at, buf, (size_t)rc);
            ip->actual_num_bytes = rc;
            ip->status = UHP_STATUS_COMPLETED;
        }
    } else {
        int rc = d->vdev->ops->out_packet(d->vdev, p->ep_addr, at, (size_t)ip->num_bytes);
        ip->actual_num_bytes = rc < 0 ? 0 : ip->num_bytes;
        ip->status = rc == VDEV_STALL ? UHP_STATUS_ERROR
                     : rc == VDEV_NAK ? UHP_STATUS_SKIPPED
                                      : UHP_STATUS_COMPLETED;
    }
    v->stats.packets++;
    x->moved += ip->actual_num_bytes;
    x->iso_offset += ip->num_bytes;
    x->iso_idx++;
    if (v->cfg.bus_timing)
        p->due_ns = now + interval_ns(v, d, p);
    if (x->iso_idx == x->pub.iso_count)
        finish(v, p, UHP_STATUS_COMPLETED);
    return true;
}

bool vhc_pipe_step(vhc_t *v, vhc_dev_t *d, vhc_pipe_t *p, uint64_t now)
{
    vhc_xfer_t *x = p->head;
    if (!x || p->halted)
        return false;
    if (p->type == VHC_EP_CONTROL)
        return vhc_control_step(v, d, p, now);
    if (p->type == VHC_EP_ISO)
        return step_iso(v, d, p, x, now);
    if (p->ep_addr & 0x80)
        return step_in(v, d, p, x, now);
    return step_out(v, d, p, x, now);
}
