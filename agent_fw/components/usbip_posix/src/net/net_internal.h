/*
 * net_internal.h - what tcp.c needs from loop.c beyond posix_port.h.
 *
 * User-space readiness: tcp.c reads ahead, so a connection can hold bytes
 * the kernel no longer reports; it marks the fd ready and the loop
 * dispatches it without waiting in epoll. Flush hooks run before the loop
 * blocks and after each round of callbacks: tcp.c sends replies with
 * MSG_MORE while callbacks run and pushes them there, so the replies of one
 * round leave as one segment instead of one transmit each.
 */
#ifndef USBIP_POSIX_NET_INTERNAL_H
#define USBIP_POSIX_NET_INTERNAL_H

#include "usbip_posix/posix_port.h"

/* Dispatch fd's callback with POSIX_EV_READ in the next round, even if the
 * kernel has nothing for it. */
void posix_loop_mark_ready(posix_loop_t *loop, int fd);

typedef void (*posix_flush_fn_t)(void *arg);
int posix_loop_add_flush(posix_loop_t *loop, posix_flush_fn_t fn, void *arg);
void posix_loop_del_flush(posix_loop_t *loop, posix_flush_fn_t fn, void *arg);

#endif /* USBIP_POSIX_NET_INTERNAL_H */
