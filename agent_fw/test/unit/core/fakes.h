/*
 * fakes.h - scripted ports for the core's unit tests.
 *
 * fake_usb: a USB host port that enforces the uhp rules the real chip
 * imposes (IN % MPS, 127 x MPS per transfer, claimed endpoints only, EP0
 * never cancellable, flush only when halted, release only when idle) and
 * delivers callbacks only from fake_usb_process(), never from inside an op.
 * Devices answer from per-endpoint scripts, or automatically.
 *
 * fake_net: in-memory sockets; the test is the client on the other end.
 */
#ifndef CORE_TEST_FAKES_H
#define CORE_TEST_FAKES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "usbip/usbip_proto.h"
#include "usbip/usbip_server.h"

/* ---- fake USB host ------------------------------------------------------ */

#define FU_MAX_DEV 4
#define FU_MAX_LOG 512
#define FU_MAX_SCRIPT 64

typedef struct {
    uhp_status_t status;
    int len;             /* IN: bytes the device sends; OUT: bytes it accepts (-1 = all) */
    uint8_t fill;        /* IN data byte pattern base */
} fu_resp_t;

typedef struct {
    uint8_t ep_addr;
    int num_bytes;
    uint32_t flags;
    bool control;
    uint8_t setup[8];
    uint8_t *data;       /* OUT payload copy (test-side) */
} fu_log_t;

typedef enum { FU_SCRIPT = 0, FU_AUTO } fu_mode_t;

typedef struct fu_pending fu_pending_t;

typedef struct {
    bool present, announced, gone_reported;
    uhp_dev_info_t info;
    uint8_t desc[18];
    const uint8_t *cfg;
    size_t cfg_len;
    int claimed_alt[8];  /* -1 = not claimed */
    bool halted[32];
    int toggle_resets[32];
    fu_mode_t mode[32];
    fu_resp_t script[32][FU_MAX_SCRIPT];
    int script_n[32], script_pos[32];
    bool ctrl_hold;      /* EP0 transfers never complete (stuck device) */
    int ctrl_stall_req;  /* bRequest that STALLs, -1 none */
} fu_dev_t;

typedef struct {
    const uhp_event_cbs_t *cbs;
    void *core;
    fu_dev_t dev[FU_MAX_DEV];
    fu_pending_t *pending;  /* in the "controller", in submission order */
    fu_pending_t *done;     /* completed, callback not yet delivered */
    fu_log_t log[FU_MAX_LOG];
    int nlog;
    int violations;         /* submits that broke a rule */
    int channels_free;
    int xfers_alive;
    int port_resets;
    bool in_op;
    bool cb_in_op;          /* a callback ran inside an op: contract broken */
} fake_usb_t;

const uhp_ops_t *fake_usb_ops(void);
void fake_usb_init(fake_usb_t *f);
void fake_usb_fini(fake_usb_t *f);
/* Test device: EP0 mps 64; intf 0 alt 0/1: bulk OUT 0x01 and IN 0x82 (mps 64),
 * interrupt IN 0x83 (mps 8); intf 1: bulk IN 0x84 (mps 64). */
int fake_usb_add_test_device(fake_usb_t *f, const char *port_path, uint16_t vid, uint16_t pid);
void fake_usb_unplug(fake_usb_t *f, int dev);
void fake_usb_script(fake_usb_t *f, int dev, uint8_t ep_addr, uhp_status_t st, int len);
void fake_usb_auto(fake_usb_t *f, int dev, uint8_t ep_addr);
/* Deliver what is due; returns callbacks delivered. */
int fake_usb_process(fake_usb_t *f);
/* Let the device answer without delivering callbacks (to race an unlink). */
void fake_usb_run_bus(fake_usb_t *f);
int fake_usb_in_flight(const fake_usb_t *f, uint8_t ep_addr);

/* ---- fake net ----------------------------------------------------------- */

#define FN_MAX_SOCK 8

typedef struct {
    bool open;          /* server side not closed */
    bool peer_closed;
    char peer[48];
    uint8_t *c2s;
    size_t c2s_len, c2s_pos, c2s_cap;
    uint8_t *s2c;
    size_t s2c_len, s2c_pos, s2c_cap;
    bool want_read, want_write;
    size_t max_send;    /* per sendv call, 0 = unlimited */
    bool send_blocked;
    bool nodelay, keepalive;
    int sendv_calls;
} fn_sock_t;

typedef struct {
    fn_sock_t s[FN_MAX_SOCK];
} fake_net_t;

const usbip_net_ops_t *fake_net_ops(void);
int fake_net_connect(fake_net_t *n, const char *peer); /* returns the sock id */
void fake_net_write(fake_net_t *n, int sock, const void *p, size_t len);
size_t fake_net_avail(fake_net_t *n, int sock);
size_t fake_net_read(fake_net_t *n, int sock, void *p, size_t len);
void fake_net_fini(fake_net_t *n);

/* ---- a test world: server + fakes + a fake clock ------------------------ */

typedef struct {
    fake_usb_t usb;
    fake_net_t net;
    usbip_server_t *srv;
    uint64_t now_us;
    int64_t unix_now;
    char last_log[512];
    int warn_logs;
    /* what the server's observer told, in order */
    int nev;
    struct {
        usbip_event_kind_t kind;
        char busid[32], peer[48];
        uint16_t port;
        uint32_t status;
    } ev[32];
    usbip_observer_t forward; /* also told, when set after world_init */
} world_t;

void world_init(world_t *w, const usbip_server_config_t *cfg);
void world_fini(world_t *w);
/* Run server and fakes until nothing moves. */
void world_pump(world_t *w);
int world_connect(world_t *w, const char *peer);

/* Client helpers (the test is the USB/IP client). */
uint32_t cli_import(world_t *w, int sock, const char *busid); /* returns status; devid in *last_devid */
extern uint32_t cli_last_devid;
void cli_submit(world_t *w, int sock, uint32_t seq, uint32_t ep, uint32_t dir, int32_t tbl, uint32_t flags,
                const uint8_t setup[8], const uint8_t *data);
void cli_unlink(world_t *w, int sock, uint32_t seq, uint32_t target);

typedef struct {
    usbip_urb_hdr_t h;
    uint8_t data[65536 * 4];
    size_t data_len;
} reply_t;

/* Read one reply; in_data tells whether a RET_SUBMIT carries data (IN). */
bool cli_reply(world_t *w, int sock, reply_t *r, bool in_data);

#endif /* CORE_TEST_FAKES_H */
