/*
 * vhc_internal.h - state shared by the modules of the virtual host controller.
 *
 *   topology.c  root ports, hubs, plug/unplug, address + channel accounting
 *   enumerate.c descriptor validation ("paranoid host") and enumeration
 *   pipes.c     submit rules, claim/release, halt/flush/clear
 *   engine.c    the packet mover: OUT/IN/iso packets, toggles, NAK, STALL
 *   control.c   EP0 transfers and the standard requests the host owns
 *   timing.c    clock, bus frames, the timerfd that wakes the event loop
 *   uhp.c       the uhp_ops_t table, event delivery, stats
 *
 * Everything runs on one thread; nothing here is global, so one process can
 * simulate many dongles.
 */
#ifndef VHC_INTERNAL_H
#define VHC_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vhc/vhc.h"

#if defined(__GNUC__)
#define VHC_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define VHC_PRINTF(f, a)
#endif

#define VHC_MAX_ROOT_PORTS 15
#define VHC_MAX_HUB_PORTS 15
#define VHC_MAX_HUB_TIERS 5   /* USB 2.0 11.1.2.1: at most five hubs in a chain */
#define VHC_MAX_INTF 32       /* interface numbers we track (validation refuses more) */
#define VHC_EP_KEYS 32        /* (ep & 0x0f) | (IN ? 0x10 : 0) */
#define VHC_MAX_CONFIG_LEN 4096 /* CONFIG_USB_HOST_CONTROL_TRANSFER_MAX_SIZE raised for USB/IP */
#define VHC_XFER_MAGIC 0x76786672u
/* Without bus timing one vhc_process moves at most this many packets, so a
 * large transfer cannot starve the network side of the event loop. */
#define VHC_PACKETS_PER_PROCESS 4096
/* Bus runs per vhc_process: transfers the completion callbacks submit (the
 * next chunk of a split URB, the next queued URB) start in the same call,
 * as ESP-IDF's second loaded transfer starts without a software turnaround. */
#define VHC_ROUNDS_PER_PROCESS 32

enum { VHC_EP_CONTROL = 0, VHC_EP_ISO = 1, VHC_EP_BULK = 2, VHC_EP_INTERRUPT = 3 };

typedef struct vhc_dev vhc_dev_t;

/* uhp_xfer_t plus what the controller keeps per transfer. The public part
 * comes first so the core's pointer converts back. */
typedef struct vhc_xfer {
    uhp_xfer_t pub;
    uint32_t magic;
    bool in_flight;
    struct vhc_xfer *next;      /* pipe FIFO */
    struct vhc_xfer *done_next; /* completion queue */
    int moved;                  /* bytes moved so far (OUT sent / IN received) */
    bool zlp_done;
    int iso_idx;                /* next isochronous packet */
    int iso_offset;             /* its offset in data */
    /* control: the device answered; the bus still owes packet time */
    bool ctrl_answered;
    int ctrl_cost_left;
    uhp_status_t ctrl_status;
    int ctrl_actual;
} vhc_xfer_t;

typedef struct {
    bool in_use;          /* claimed (or EP0 of an enumerated device) */
    uint8_t ep_addr;
    uint8_t type;         /* VHC_EP_* */
    uint16_t mps;         /* wMaxPacketSize bits 0..10 */
    uint8_t mult;         /* 1 + additional transactions per micro-frame */
    uint8_t intf;
    uint32_t interval_frames; /* periodic service interval in (micro)frames */
    bool halted;          /* host side: ep_halt or a STALL */
    uint8_t toggle;       /* host side DATA0/DATA1 */
    uint64_t due_ns;      /* earliest time the pipe may move its next packet */
    int nak_streak;
    vhc_xfer_t *head, *tail;
    int queued;
} vhc_pipe_t;

typedef enum {
    VHC_DEV_PENDING,    /* plugged, waiting for enumeration */
    VHC_DEV_REFUSED,    /* plugged, enumeration refused (logged) */
    VHC_DEV_CONFIGURED, /* enumerated; reported to the core unless a hub */
    VHC_DEV_GONE,       /* unplugged / reset, handle alive until dev_close */
} vhc_dev_state_t;

struct vhc_dev {
    vhc_t *vhc;
    vhc_dev_t *next_all;   /* every record, present or gone */
    vdev_t *vdev;          /* NULL once handed to a re-enumerated record */
    char path[24];
    int depth;             /* hubs above this device */
    vhc_dev_t *parent;     /* NULL on a root port or once detached */
    uint8_t port_num;
    vhc_dev_t *children[VHC_MAX_HUB_PORTS];
    vhc_dev_state_t state;
    bool is_hub;
    bool reported;         /* dev_added delivered, not yet closed */
    bool report_pending;
    bool gone_pending;
    bool closed;
    bool reap;             /* free at the end of vhc_process */
    uint64_t enum_due_ns;
    uint8_t addr;
    int channels;          /* host channels this device holds */
    uint8_t dev_desc[18];
    uint8_t *config;
    size_t config_len;
    uint8_t *str[3];       /* manufacturer, product, serial (cached copies) */
    vhc_pipe_t ep0;
    vhc_pipe_t pipes[VHC_EP_KEYS];
    bool claimed[VHC_MAX_INTF];
    uint8_t claimed_alt[VHC_MAX_INTF];
    /* device side, as the device's silicon sees it */
    uint8_t cur_alt[VHC_MAX_INTF];
    uint8_t dev_toggle[VHC_EP_KEYS];
    bool dev_halted[VHC_EP_KEYS];
};

struct vhc {
    vhc_config_t cfg;
    int root_ports;
    vhc_dev_t *root[VHC_MAX_ROOT_PORTS];
    vhc_dev_t *devs;          /* list of every record */
    vdev_host_t host;         /* what devices call back into */
    uhp_event_cbs_t cbs;
    void *core_ctx;
    bool installed;
    uint8_t next_addr;
    int channels_in_use;
    vhc_xfer_t *done_head, *done_tail;
    vhc_stats_t stats;
    vhc_log_fn log_fn;
    void *log_ctx;
    /* timing */
    int tfd;
    uint64_t armed_ns;        /* what the timerfd is set to: 0 disarmed, else an absolute
                                 CLOCK_MONOTONIC time (1 = "now"); it is never read, so it
                                 stays readable from that time until the next settime */
    bool in_process;          /* inside vhc_process: kicks only note the work */
    bool more_work;           /* a kick happened inside vhc_process */
    uint64_t proc_now;        /* the clock, read once per vhc_process */
    /* pipes with a transfer, collected once per bus run (heads only leave
     * during a run: the core is not called back until it ends) */
    struct vhc_active { vhc_dev_t *d; vhc_pipe_t *p; } *active;
    int nactive, cap_active;
    uint64_t epoch_ns;        /* bus frame 0 */
    uint64_t frame_ns;        /* 1 ms FS, 125 us HS */
    uint64_t cur_frame;
    int64_t budget;           /* bulk/control bytes left in cur_frame */
    uint64_t sim_now;         /* bus clock seen by devices inside vhc_process */
    uint64_t frame_packets;   /* non-periodic packets in cur_frame */
    bool frame_busy;          /* cur_frame already counted in stats.frames */
    bool bus_idle;            /* no pipe had work when the last vhc_process ended */
};

/* ---- log ---- */
void vhc_log(vhc_t *v, const char *fmt, ...) VHC_PRINTF(2, 3);
void vhc_seterr(char *err, size_t len, const char *fmt, ...) VHC_PRINTF(3, 4);

/* ---- timing.c ---- */
uint64_t vhc_clock_ns(void);
int vhc_timing_init(vhc_t *v);
void vhc_timing_fini(vhc_t *v);
void vhc_kick(vhc_t *v);                 /* work appeared: make the fd readable */
/* Move packets for the frames now due; untimed runs draw on *packets_left. */
void vhc_bus_run(vhc_t *v, int *packets_left);
void vhc_timer_rearm(vhc_t *v);          /* arm the fd for the next due time */
uint64_t vhc_now(vhc_t *v);              /* the simulation clock (frozen inside vhc_process) */
uint64_t vhc_frame_ns_for(const vhc_t *v, const vhc_dev_t *d);
void vhc_host_wake(void *host_ctx, vdev_t *dev, uint8_t ep_addr, uint64_t delay_ns);
uint64_t vhc_host_now(void *host_ctx);

/* ---- topology.c ---- */
vhc_dev_t *vhc_find_path(vhc_t *v, const char *path);
vhc_dev_t *vhc_dev_from_handle(vhc_t *v, uhp_dev_handle_t h);
void vhc_dev_gone(vhc_dev_t *d);          /* complete NO_DEVICE, return channels, queue dev_gone */
void vhc_dev_free(vhc_dev_t *d);
int vhc_take_channels(vhc_t *v, vhc_dev_t *d, int n, const char *what);
void vhc_return_channels(vhc_t *v, vhc_dev_t *d, int n);
void vhc_reap(vhc_t *v);
int vhc_reset_port(vhc_t *v, vhc_dev_t *d);

/* ---- enumerate.c ---- */
/* Validates the device's descriptors; 0 or -1 with a reason in err. */
int vhc_validate_device(const vhc_t *v, const vhc_dev_t *d, char *err, size_t len);
void vhc_enumerate_due(vhc_t *v, uint64_t now);
/* Descriptor walking helpers (config already validated). */
typedef struct {
    uint8_t intf, alt;
    const uint8_t *intf_desc;
    const uint8_t *ep[VHC_EP_KEYS];
    int num_ep;
} vhc_alt_t;
bool vhc_find_alt(const vhc_dev_t *d, uint8_t intf, uint8_t alt, vhc_alt_t *out);
int vhc_ep_key(uint8_t ep_addr);
void vhc_pipe_from_desc(vhc_pipe_t *p, const vhc_dev_t *d, const uint8_t *ep, uint8_t intf);

/* ---- pipes.c ---- */
int vhc_op_claim(void *ctx, uhp_dev_handle_t dev, uint8_t intf, uint8_t alt);
int vhc_op_release(void *ctx, uhp_dev_handle_t dev, uint8_t intf);
int vhc_op_submit(void *ctx, uhp_xfer_t *xfer);
int vhc_op_submit_control(void *ctx, uhp_xfer_t *xfer);
int vhc_op_ep_halt(void *ctx, uhp_dev_handle_t dev, uint8_t ep);
int vhc_op_ep_flush(void *ctx, uhp_dev_handle_t dev, uint8_t ep);
int vhc_op_ep_clear(void *ctx, uhp_dev_handle_t dev, uint8_t ep);
size_t vhc_op_max_transfer(void *ctx, uhp_dev_handle_t dev, uint16_t mps);
size_t vhc_max_transfer(const vhc_t *v, const vhc_dev_t *d, uint16_t mps);
vhc_pipe_t *vhc_pipe_for(vhc_dev_t *d, uint8_t ep_addr); /* claimed pipe or EP0 */
void vhc_pipe_push(vhc_pipe_t *p, vhc_xfer_t *x);
vhc_xfer_t *vhc_pipe_pop(vhc_pipe_t *p);
void vhc_pipe_fail_all(vhc_t *v, vhc_pipe_t *p, uhp_status_t st);
void vhc_complete(vhc_t *v, vhc_xfer_t *x, uhp_status_t st);

/* ---- engine.c ---- */
/* Move at most one packet (one control transfer stage group for EP0).
 * Returns true if the bus carried something. */
bool vhc_pipe_step(vhc_t *v, vhc_dev_t *d, vhc_pipe_t *p, uint64_t now);
/* Bytes of bus time the next packet of this pipe costs (0 = periodic). */
int vhc_pipe_cost(const vhc_pipe_t *p);

/* ---- control.c ---- */
bool vhc_control_step(vhc_t *v, vhc_dev_t *d, vhc_pipe_t *p, uint64_t now);
void vhc_reset_device_side(vhc_dev_t *d);

#endif /* VHC_INTERNAL_H */
