/*
 * usbip_server.h - the USB/IP server core (public API).
 *
 * One usbip_server_t is one dongle: it exports the devices its USB host port
 * reports, serves any number of TCP clients (up to max_sessions) and moves
 * URBs between them. It owns no thread and no socket loop: the owner's loop
 * calls the on_* entry points and usbip_server_tick(), and runs the USB host
 * port's event processing on the same thread (see usb_host_port.h).
 *
 * Memory: everything is allocated in usbip_server_create (sessions, URB
 * slots, the transfer-buffer pool); the data path allocates nothing. The
 * only allocation after start-up is the OP_REP_DEVLIST reply (management
 * phase, freed once sent).
 */
#ifndef USBIP_USBIP_SERVER_H
#define USBIP_USBIP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "usbip/port/net_port.h"
#include "usbip/port/sys_port.h"
#include "usbip/port/usb_host_port.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    USBIP_OK = 0,
    USBIP_ERR_INVALID_ARG = -1,
    USBIP_ERR_NO_MEM = -2,
    USBIP_ERR_NOT_FOUND = -3,   /* unknown busid / socket */
    USBIP_ERR_FULL = -4,        /* no free session / grant / device slot */
    USBIP_ERR_PORT = -5,        /* a port op failed */
    USBIP_ERR_STATE = -6,       /* not allowed in the current state */
} usbip_err_t;

const char *usbip_strerror(usbip_err_t err);

typedef struct {
    const char *tag;             /* log tag of this instance, e.g. the dongle id */
    size_t buffer_budget;        /* bytes of transfer buffers (DMA-capable RAM on the chip) */
    size_t block_size;           /* one pool block = one USB transfer at most */
    int max_sessions;            /* TCP connections served at once */
    int max_devices;             /* exported devices */
    int max_urbs_per_session;    /* URBs (and pending unlink answers) per connection */
    int max_iso_packets;         /* per ISO URB (ESP-IDF: packets x interval <= 64) */
    int keepalive_idle_s, keepalive_interval_s, keepalive_count;
    uint32_t mgmt_timeout_ms;    /* a connection must finish DEVLIST/IMPORT within this */
    uint32_t control_watchdog_ms;/* EP0 transfers cannot be cancelled: reset the port after this */
    bool enforce_grants;         /* import only from granted addresses */
    bool hide_granted;           /* when enforcing, hide devices granted to others from DEVLIST */
    uint32_t busnum;             /* USB/IP bus number reported for all devices */
} usbip_server_config_t;

/* S3 defaults: 192 KiB of 8 KiB blocks (24 transfers in flight). */
#define USBIP_SERVER_DEFAULT_CONFIG()                                                   \
    ((usbip_server_config_t){.tag = "usbip", .buffer_budget = 192u * 1024u,            \
                             .block_size = 8192u, .max_sessions = 8, .max_devices = 16, \
                             .max_urbs_per_session = 64, .max_iso_packets = 32,         \
                             .keepalive_idle_s = 10, .keepalive_interval_s = 2,         \
                             .keepalive_count = 3, .mgmt_timeout_ms = 30000,            \
                             .control_watchdog_ms = 5000, .enforce_grants = false,      \
                             .hide_granted = true, .busnum = 1})

/* What happened to an exported device, told as it happens so the owner
 * (the agent) reports it without polling. */
typedef enum {
    USBIP_EV_ATTACHED,       /* a client imported the device */
    USBIP_EV_DETACHED,       /* that session ended (client gone, revoke, unplug) */
    USBIP_EV_IMPORT_REFUSED, /* an import was answered with an error status */
} usbip_event_kind_t;

typedef struct {
    usbip_event_kind_t kind;
    const char *busid;
    const char *peer;        /* client address without the port */
    uint16_t peer_port;
    uint32_t status;         /* IMPORT_REFUSED: the USBIP_ST_* sent */
    const char *reason;      /* IMPORT_REFUSED: why, in words */
} usbip_event_t;

/* Called on the owner loop with the server's lock held: it must not call
 * back into the server. */
typedef struct {
    void (*on_event)(void *arg, const usbip_event_t *ev);
    void *arg;
} usbip_observer_t;

typedef struct {
    const uhp_ops_t *usb;
    void *usb_ctx;
    const usbip_net_ops_t *net;
    void *net_ctx;
    usbip_clock_t clock;
    usbip_log_t log;    /* vlog may be NULL: silent */
    usbip_lock_t lock;  /* lock may be NULL: single-threaded */
    usbip_observer_t observer; /* on_event may be NULL: nobody listens */
} usbip_server_ports_t;

typedef struct usbip_server usbip_server_t;

/* Allocates everything, fills the buffer pool with xfer_alloc and installs
 * the USB host port's upcalls. */
usbip_err_t usbip_server_create(const usbip_server_config_t *cfg, const usbip_server_ports_t *ports,
                                usbip_server_t **out);
/* Closes every session, returns every block to the port. Transfers still in
 * the host are cancelled first; the port must be able to run its event
 * processing afterwards (their callbacks are ignored). */
void usbip_server_destroy(usbip_server_t *srv);

/* Owner-loop entry points. on_accept refuses (and closes) the socket when
 * every session slot is taken. */
usbip_err_t usbip_server_on_accept(usbip_server_t *srv, usbip_sock_t sock);
void usbip_server_on_readable(usbip_server_t *srv, usbip_sock_t sock);
void usbip_server_on_writable(usbip_server_t *srv, usbip_sock_t sock);
/* Timeouts, control watchdog, grant expiry. Call every ~100 ms. */
void usbip_server_tick(usbip_server_t *srv);
/* Same information as the net port's set_interest, for loops that poll. */
bool usbip_server_wants_read(const usbip_server_t *srv, usbip_sock_t sock);
bool usbip_server_wants_write(const usbip_server_t *srv, usbip_sock_t sock);

/* Lease enforcement. A grant lists the client addresses allowed to import
 * busid (it survives re-plug: it is keyed by busid). expires_unix 0 = none.
 * Replacing a grant closes a session whose peer is no longer listed. */
#define USBIP_MAX_GRANT_ADDRS 4
usbip_err_t usbip_grant(usbip_server_t *srv, const char *busid, const char *const *addrs, int n,
                        const char *lease_id, int64_t expires_unix);
/* Removes the grant and closes the session using busid at once. */
usbip_err_t usbip_revoke(usbip_server_t *srv, const char *busid);
void usbip_set_enforce(usbip_server_t *srv, bool on);
bool usbip_get_enforce(const usbip_server_t *srv);

typedef struct {
    uint64_t stall, proto, overflow, nodev, timeout, other;
} usbip_error_counts_t;

typedef struct {
    uint64_t urbs;          /* URBs completed (RET_SUBMIT or RET_UNLINK sent for them) */
    uint64_t bytes_in;      /* device -> client payload */
    uint64_t bytes_out;     /* client -> device payload */
    uint64_t unlinks;       /* CMD_UNLINK received for this device */
    uint32_t queue_depth;   /* URBs queued or in the host right now */
    usbip_error_counts_t errors;
    uint32_t latency_p50_us, latency_p99_us, latency_max_us; /* submit -> completion */
} usbip_dev_stats_t;

typedef struct {
    char busid[32];
    uint16_t vid, pid;
    uint8_t speed;           /* Linux usb_device_speed */
    uint8_t num_interfaces;
    char attached_to[48];    /* peer address of the importing client, "" if free */
    uint16_t attached_port;  /* and its TCP port */
    char granted_to[USBIP_MAX_GRANT_ADDRS][48];
    int num_granted;
    char lease_id[64];
    usbip_dev_stats_t stats;
} usbip_device_info_t;

typedef struct {
    size_t budget, block_size;
    int blocks;
    size_t used, peak;       /* bytes of blocks in use */
    uint64_t waits;          /* times an URB had to wait for blocks */
    uint64_t too_big;        /* URBs refused because they exceed the whole budget */
} usbip_buffer_stats_t;

/* Devices in export order; returns the count (may exceed max, fills max). */
int usbip_server_list_devices(usbip_server_t *srv, usbip_device_info_t *out, int max);
void usbip_server_buffer_stats(const usbip_server_t *srv, usbip_buffer_stats_t *out);
/* Payload bytes copied inside the core (must stay 0: zero-copy data path).
 * Counted only in builds with USBIP_COUNT_COPIES; 0 otherwise. */
uint64_t usbip_server_copies(const usbip_server_t *srv);
/* Sessions currently open (any phase). */
int usbip_server_session_count(const usbip_server_t *srv);

#ifdef __cplusplus
}
#endif
#endif /* USBIP_USBIP_SERVER_H */
