/*
 * posix_port.h - the Linux side of the USB/IP core's ports: an epoll loop,
 * TCP sockets for the net port, clock and log. No global state: a process
 * may run several loops, and several servers on one loop (one posix_net_t
 * listener per server).
 */
#ifndef USBIP_POSIX_POSIX_PORT_H
#define USBIP_POSIX_POSIX_PORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "usbip/port/net_port.h"
#include "usbip/port/sys_port.h"
#include "usbip/usbip_server.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- epoll loop --------------------------------------------------------- */

typedef struct posix_loop posix_loop_t;

enum { POSIX_EV_READ = 1, POSIX_EV_WRITE = 2, POSIX_EV_HUP = 4 };

/* events: POSIX_EV_* that fired. */
typedef void (*posix_fd_cb_t)(void *arg, int fd, unsigned events);

int posix_loop_create(posix_loop_t **out);
void posix_loop_destroy(posix_loop_t *loop);
/* Watch fd; one callback per fd. */
int posix_loop_add(posix_loop_t *loop, int fd, bool rd, bool wr, posix_fd_cb_t cb, void *arg);
int posix_loop_mod(posix_loop_t *loop, int fd, bool rd, bool wr);
void posix_loop_del(posix_loop_t *loop, int fd);
/* Wait up to timeout_ms and dispatch. Returns events handled or -1. */
int posix_loop_run_once(posix_loop_t *loop, int timeout_ms);
/* Called just before the loop blocks in epoll_wait and just after it wakes
 * (NULL: nothing). fleet-dongle drops its big lock there, so its OTA threads
 * run while the loop has nothing to do. Callbacks are always called between
 * after() and the next before(). */
void posix_loop_set_wait_hooks(posix_loop_t *loop, void (*before)(void *arg), void (*after)(void *arg), void *arg);

/* ---- TCP listener + net port ------------------------------------------- */

typedef struct posix_net posix_net_t;

/* Listen on "HOST:PORT" (port 0 = any free port). Accepted connections are
 * handed to the server given to posix_net_attach. */
int posix_net_listen(posix_loop_t *loop, const char *host_port, posix_net_t **out, char *err,
                     size_t err_len);
void posix_net_attach(posix_net_t *net, usbip_server_t *srv);
/* The net port: pass the posix_net_t as net_ctx. */
const usbip_net_ops_t *posix_net_ops(void);
int posix_net_bound_port(const posix_net_t *net);
/* A net port without a listener (a firmware whose listener never came up):
 * bound port 0, posix_net_listening() false. */
int posix_net_create(posix_loop_t *loop, posix_net_t **out, char *err, size_t err_len);
bool posix_net_listening(const posix_net_t *net);
/* Simulated network cut: while down, neither the listener nor any connection
 * is polled, read or written (the core's replies wait, connections stay
 * open). Back up, everything resumes where it stopped. */
void posix_net_set_link(posix_net_t *net, bool up);
bool posix_net_link_up(const posix_net_t *net);
/* Stops listening and closes every connection still open. */
void posix_net_destroy(posix_net_t *net);

/* ---- clock and log ------------------------------------------------------ */

usbip_clock_t posix_clock(void);

typedef struct {
    usbip_log_level_t max_level; /* messages above this level are dropped */
} posix_log_t;

/* Writes "LEVEL tag: message" lines to stderr. */
usbip_log_t posix_log(posix_log_t *cfg);
int posix_log_level_parse(const char *name, usbip_log_level_t *out);

#ifdef __cplusplus
}
#endif
#endif /* USBIP_POSIX_POSIX_PORT_H */
