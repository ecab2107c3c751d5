/*
 * server_priv.h - internal state of the USB/IP server, shared by its modules:
 *   pool.c     transfer-buffer pool (fixed equal blocks, chained per URB)
 *   devices.c  exported devices: descriptors, endpoint map, interfaces
 *   grants.c   lease enforcement
 *   session.c  one TCP connection: management phase, PDU parsing, replies
 *   urb.c      URB engine: endpoint queues, split transfers, unlink, EP0 requests
 *   stats.c    per-device counters and the latency histogram
 *   server.c   lifecycle, owner-loop entry points, port upcalls
 */
#ifndef USBIP_SERVER_PRIV_H
#define USBIP_SERVER_PRIV_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "usbip/usbip_proto.h"
#include "usbip/usbip_server.h"

#define USBIP_MAX_INTF 16
#define USBIP_NUM_EPQ 32     /* queue index: ep number | 16 if IN; EP0 uses 0 for both */
#define USBIP_LAT_BUCKETS 32 /* log2 microseconds */
#define USBIP_MAX_IOV 64

typedef struct urb urb_t;
typedef struct session session_t;
typedef struct device device_t;

/* USB transfer types (bmAttributes & 3). */
enum { XFER_CONTROL = 0, XFER_ISO = 1, XFER_BULK = 2, XFER_INTR = 3 };

typedef enum {
    URB_FREE = 0,
    URB_WAIT_BLOCKS, /* OUT header read, waiting for pool blocks to receive the payload */
    URB_RX,          /* receiving OUT payload / ISO descriptors into its blocks */
    URB_QUEUED,      /* in its endpoint queue, not in the host */
    URB_ACTIVE,      /* head of its endpoint queue, a chunk is in the host */
    URB_TX,          /* reply queued on the session */
    URB_ORPHAN,      /* session gone while a chunk is in the host: freed by the callback */
} urb_state_t;

typedef enum { URB_KIND_SUBMIT = 0, URB_KIND_UNLINK_REPLY } urb_kind_t;

/* EP0 requests the core handles through the host port (usbip-protocol.md 8.9). */
typedef enum { STD_NONE = 0, STD_SET_CONFIG, STD_SET_INTERFACE, STD_CLEAR_HALT } std_req_t;

struct urb {
    urb_t *next;             /* endpoint queue, tx queue or free list */
    usbip_server_t *srv;
    session_t *s;
    device_t *d;
    urb_state_t state;
    urb_kind_t kind;
    uint32_t seqnum;
    uint8_t epnum, dir, type, qidx;
    uint16_t mps;
    uint32_t flags;
    int32_t tbl;             /* transfer_buffer_length */
    int32_t np;              /* ISO packets (0 = not ISO) */
    int32_t raw_np;          /* echoed in RET_SUBMIT */
    int32_t start_frame;
    uint8_t setup[8];
    std_req_t std;
    /* Blocks: a chain in the pool; chunk i of the URB lives in block i. */
    int blk_head, nblocks;
    size_t chunk;
    int cur;                 /* chunk in the host, -1 when none */
    uhp_xfer_t *cur_xfer;
    size_t done;             /* bytes moved so far (clamped to tbl) */
    int32_t status;
    int32_t error_count;
    bool unlinked;
    uint32_t unlink_seq;
    bool timed_out;
    bool internal;           /* the core's own request (no client, no reply) */
    int8_t gate_qi;          /* internal: endpoint queue held until it completes, -1 none */
    uint64_t t_submit_us, t_start_us;
    uint8_t hdr[USBIP_URB_HDR_LEN];
};

typedef enum { PHASE_MGMT = 0, PHASE_URB, PHASE_CLOSING } phase_t;
typedef enum { RX_HDR = 0, RX_BUSID, RX_PAYLOAD, RX_ISO_DESC, RX_DRAIN } rx_state_t;

struct session {
    bool used;
    usbip_sock_t sock;
    char peer[48];
    uint16_t peer_port;
    phase_t phase;
    bool sock_open;
    bool want_read, want_write;   /* as last told to the net port */
    bool close_after_tx;          /* device gone: flush replies, then close */
    bool tx_blocked;              /* the socket took less than offered: wait for writability */
    uint64_t t_accept_us;
    /* rx */
    rx_state_t rx;
    uint8_t rx_hdr[USBIP_URB_HDR_LEN];
    size_t rx_have, rx_need;
    urb_t *rx_urb;
    size_t rx_off;                /* payload / descriptor bytes received so far */
    size_t rx_drain_left;
    bool rx_stalled;              /* waiting for blocks or URB slots (back-pressure) */
    bool rx_hdr_pending;          /* a parsed SUBMIT header waits for a slot or blocks */
    /* tx */
    urb_t *tx_head, *tx_tail;
    size_t tx_off;                /* bytes of tx_head already sent */
    uint8_t *mgmt_buf;            /* DEVLIST reply (heap) or mgmt_small */
    size_t mgmt_len, mgmt_off;
    uint8_t mgmt_small[USBIP_OP_HDR_LEN + USBIP_DEV_RECORD_LEN];
    /* URB phase */
    device_t *dev;
    uint32_t devid;
    urb_t *urbs;                  /* this session's slots */
    urb_t *free_urbs;
    int urbs_used;
};

typedef struct {
    uint8_t type;
    uint8_t intf;
    uint8_t interval;
    bool valid;
    uint16_t mps;
} ep_info_t;

typedef struct {
    urb_t *head, *tail;
    bool waiting_blocks;          /* head IN URB waits for pool blocks */
    bool resync;                  /* held until the device's toggle is reset too */
} epq_t;

typedef struct {
    uint64_t urbs, bytes_in, bytes_out, unlinks;
    usbip_error_counts_t errors;
    uint32_t hist[USBIP_LAT_BUCKETS];
    uint32_t lat_max;
} dev_stats_t;

struct device {
    bool used;
    bool gone;
    uhp_dev_handle_t h;
    char busid[USBIP_BUSID_LEN];
    uint8_t speed, addr, mps0, cfg_value;
    uint8_t ddesc[18];
    const uint8_t *cdesc;
    size_t cdesc_len;
    uint8_t num_intf;
    struct {
        uint8_t num, cls, sub, proto, alt;
        bool claimed;
    } intf[USBIP_MAX_INTF];
    ep_info_t ep[USBIP_NUM_EPQ];
    epq_t q[USBIP_NUM_EPQ];
    session_t *owner;
    bool resetting;               /* import-time SET_CONFIGURATION runs: other endpoints wait */
    int in_host;                  /* chunks in the host (incl. orphans) */
    uint32_t queued;              /* URBs queued or active */
    dev_stats_t st;
    uint32_t order;               /* export order */
};

typedef struct {
    bool used;
    char busid[USBIP_BUSID_LEN];
    char addrs[USBIP_MAX_GRANT_ADDRS][48];
    int n;
    char lease_id[64];
    int64_t expires_unix;
} grant_t;

typedef struct {
    uhp_xfer_t **blk;
    int16_t *next;                /* chain links; -1 ends */
    int nblocks, nfree;
    int free_head;
    size_t block_size;
    int peak_used;
    uint64_t waits, too_big;
} pool_t;

struct usbip_server {
    usbip_server_config_t cfg;
    usbip_server_ports_t p;
    pool_t pool;
    device_t *devs;
    session_t *sessions;
    urb_t *urb_slots;
    grant_t *grants;
    uint32_t dev_order;
    uint64_t copies;
    bool destroying;
    bool in_kick, kick_pending; /* blocks_freed() is not re-entered */
    char tag[32];
};

/* log.c-ish helper in server.c */
void srv_log(usbip_server_t *srv, usbip_log_level_t lvl, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
uint64_t srv_now(usbip_server_t *srv);
/* Tell the observer; status/reason only for IMPORT_REFUSED. */
void srv_event(usbip_server_t *srv, usbip_event_kind_t kind, const char *busid, const session_t *s,
               uint32_t status, const char *reason);

/* Payload copies go through here so the copy-counting build can prove there
 * are none on the data path. */
void srv_copy_payload(usbip_server_t *srv, void *dst, const void *src, size_t n);

/* pool.c */
int pool_init(usbip_server_t *srv);
void pool_deinit(usbip_server_t *srv);
int pool_alloc(pool_t *pool, int n);           /* chain head or -1 */
void pool_free(pool_t *pool, int head);
uhp_xfer_t *pool_block(const pool_t *pool, int head, int i);

/* devices.c */
device_t *dev_by_busid(usbip_server_t *srv, const char *busid);
device_t *dev_by_handle(usbip_server_t *srv, uhp_dev_handle_t h);
int dev_parse_config(device_t *d);             /* rebuilds intf[] and ep[] for the current alts */
void dev_record(usbip_server_t *srv, const device_t *d, usbip_dev_record_t *rec);
int dev_claim_all(usbip_server_t *srv, device_t *d);
void dev_release_all(usbip_server_t *srv, device_t *d);
int dev_epq_index(uint8_t epnum, uint8_t dir);
void dev_added_cb(void *ctx, const uhp_dev_info_t *info);
void dev_gone_cb(void *ctx, uhp_dev_handle_t h);
void dev_try_release(usbip_server_t *srv, device_t *d);
/* Exported devices in order of appearance; returns the count. */
int dev_in_order(usbip_server_t *srv, device_t **out);

/* grants.c */
grant_t *grant_find(usbip_server_t *srv, const char *busid);
bool grant_allows(usbip_server_t *srv, const char *busid, const char *peer);
void grants_expire(usbip_server_t *srv);

/* session.c */
session_t *sess_by_sock(usbip_server_t *srv, usbip_sock_t sock);
void sess_read(usbip_server_t *srv, session_t *s);
void sess_flush(usbip_server_t *srv, session_t *s);
void sess_close(usbip_server_t *srv, session_t *s, const char *why);
void sess_queue_reply(usbip_server_t *srv, session_t *s, urb_t *u);
void sess_update_interest(usbip_server_t *srv, session_t *s);
void sess_release_urb(usbip_server_t *srv, urb_t *u);
void sess_resume_waiters(usbip_server_t *srv);
void sess_check_teardown(usbip_server_t *srv, session_t *s);
void sess_flush_all(usbip_server_t *srv);
bool sess_retry_stalled(usbip_server_t *srv, session_t *s);

/* urb.c */
void urb_submit(usbip_server_t *srv, urb_t *u);       /* URB fully received */
void urb_start_import_reset(usbip_server_t *srv, session_t *s, device_t *d);
/* false: needs an URB slot for its reply and none is free (retry later) */
bool urb_unlink(usbip_server_t *srv, session_t *s, uint32_t unlink_seq, uint32_t target);
urb_t *sess_slot_get(usbip_server_t *srv, session_t *s);
void urb_xfer_cb(uhp_xfer_t *xfer);
void urb_kick_waiters(usbip_server_t *srv);
void urb_blocks_freed(usbip_server_t *srv);
void urb_ep_kick(usbip_server_t *srv, device_t *d, int qi);
int32_t urb_map_uhp_err(int rc);
void urb_free_blocks(usbip_server_t *srv, urb_t *u);
void urb_cancel_session(usbip_server_t *srv, session_t *s);
void urb_fail_device(usbip_server_t *srv, device_t *d, int32_t status);
void urb_watchdog(usbip_server_t *srv);
int urb_blocks_needed(usbip_server_t *srv, const urb_t *u, size_t *chunk);
size_t urb_chunk_len(const urb_t *u, int i);

/* stats.c */
void stats_complete(usbip_server_t *srv, device_t *d, const urb_t *u, int32_t status);
void stats_fill(const device_t *d, usbip_dev_stats_t *out);



/* Optional lock around entry points and upcalls (usbip_lock_t). */
void srv_lock(usbip_server_t *srv);
void srv_unlock(usbip_server_t *srv);
#endif /* USBIP_SERVER_PRIV_H */
