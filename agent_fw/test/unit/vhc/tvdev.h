/*
 * tvdev.h - a scriptable virtual device and a pretend core for the vhc tests.
 *
 * The device: interface 0 alt 0 = bulk OUT 0x01, bulk IN 0x81, interrupt IN
 * 0x82; alt 1 = bulk OUT 0x01, bulk IN 0x81 (so SET_INTERFACE has something
 * to switch); interface 1 = interrupt IN 0x83. Bulk OUT packets are logged
 * and looped back: each OUT packet becomes one IN packet on 0x81, so packet
 * boundaries stay visible. Tests script NAK, STALL and babble per endpoint.
 *
 * The core: records dev_added / dev_gone and every completion, and checks
 * that no callback arrives while a test is inside a uhp op.
 */
#ifndef TVDEV_H
#define TVDEV_H

#include <stdbool.h>
#include <stdint.h>

#include "vhc/vhc.h"

#define TV_MAX_PKTS 4096
#define TV_PKT_MAX 1024

typedef struct {
    vdev_t dev;
    uint8_t device_desc[18];
    uint8_t config[128];
    const uint8_t *strings[4];
    uint16_t bulk_mps;
    /* loopback IN queue on 0x81 (packets) */
    uint8_t inq[TV_MAX_PKTS][TV_PKT_MAX];
    int inq_len[TV_MAX_PKTS];
    int inq_head, inq_tail;
    /* interrupt IN 0x82 reports */
    int int_reports;        /* reports ready */
    int int_polls;
    uint64_t int_poll_ns[64];
    /* OUT log */
    int out_lens[TV_MAX_PKTS];
    uint64_t out_ns[TV_MAX_PKTS];
    int out_count;
    uint8_t out_data[65536 * 2];
    int out_bytes;
    int in_polls;
    int iso_in_polls;
    int iso_out_lens[64];
    int iso_out_count;
    /* scripts */
    int nak_out;            /* NAK the next N OUT packets */
    bool nak_in_forever;    /* NAK IN until cleared even with data */
    bool stall_out, stall_in; /* STALL the next packet (device sets halt) */
    bool babble_in;         /* next IN packet is MPS + 1 bytes */
    bool loopback;          /* OUT packets feed the IN queue (default true) */
    int ctrl_nak;           /* vendor request 0x02: NAK this many times first */
    int ctrl_calls;
    uint8_t last_ctrl_req;
    /* side effects the vhc reported */
    int reset_calls;
    uint8_t reset_eps[64];
    int set_intf_calls;
    uint8_t last_intf, last_alt;
    int *destroyed;         /* incremented by destroy */
} tvdev_t;

typedef struct {
    vdev_speed_t speed;
    bool hub;
    uint8_t hub_ports;
    bool bad_bulk_mps;      /* wMaxPacketSize 100 on a bulk endpoint */
    bool bad_num_intf;      /* bNumInterfaces larger than present */
    bool bad_total_len;     /* wTotalLength beyond the real descriptors */
    bool iso;               /* interface 2: iso IN 0x85 (MPS 192, every frame), iso OUT 0x05 (every 2nd) */
} tv_opts_t;

tvdev_t *tv_create(const tv_opts_t *o, int *destroyed);
tvdev_t *tv_simple(int *destroyed); /* Full-Speed, default layout */
void tv_push_in(tvdev_t *t, const uint8_t *data, int len);

/* ---- pretend core ---- */
#define TC_MAX_DEVS 256
#define TC_MAX_DONE 8192
typedef struct {
    uhp_dev_info_t added[TC_MAX_DEVS];
    int num_added;
    uhp_dev_handle_t gone[TC_MAX_DEVS];
    int num_gone;
    uhp_xfer_t *done[TC_MAX_DONE];
    uhp_status_t done_status[TC_MAX_DONE];
    int done_actual[TC_MAX_DONE];
    int num_done;
    int cb_inside_op;       /* callbacks that arrived inside an op: must stay 0 */
    int event_order_errors; /* dev_gone before a NO_DEVICE completion of its device */
    vhc_t *vhc;
    const uhp_ops_t *ops;
    char last_log[320];
    int logs;
    int harness_errors;
    int process_calls;      /* vhc_process calls made by the pump (spin detector) */
} tcore_t;

extern int tc_in_op;
#define OP(expr) (tc_in_op = 1, tc_ret_ = (expr), tc_in_op = 0, tc_ret_)
extern int tc_ret_;

void tc_init(tcore_t *c, vhc_t *v);
void tc_xfer_cb(uhp_xfer_t *x);
/* Process until `cond` holds or timeout_ms passes, sleeping in poll(). */
bool tc_pump_until(tcore_t *c, bool (*cond)(tcore_t *), int timeout_ms);
bool tc_pump_done(tcore_t *c, int num_done, int timeout_ms);
void tc_pump_idle(tcore_t *c, int ms);
/* Plug a tvdev at path and wait for dev_added; returns its handle. */
uhp_dev_handle_t tc_plug(tcore_t *c, const char *path, tvdev_t *t);
uhp_xfer_t *tc_alloc(tcore_t *c, size_t size);
int tc_submit(tcore_t *c, uhp_xfer_t *x, uhp_dev_handle_t dev, uint8_t ep, int n, uint32_t flags);
int tc_control(tcore_t *c, uhp_xfer_t *x, uhp_dev_handle_t dev, uint8_t bm, uint8_t req,
               uint16_t val, uint16_t idx, uint16_t len);
int tc_done_index(const tcore_t *c, const uhp_xfer_t *x);

#endif
