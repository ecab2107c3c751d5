/*
 * net_port.h - the network contract the USB/IP core calls (prefix usbip_net_).
 *
 * The owner of the event loop accepts connections and tells the core about
 * them (usbip_server_on_accept / _on_readable / _on_writable); the core then
 * reads and writes through these ops. Every op is non-blocking: the core never
 * waits for the network, it keeps what it could not send and continues when
 * the loop reports the socket writable.
 *
 * Sockets are opaque handles chosen by the port (posix: the fd; lwIP: the
 * socket number). Instances: every op takes the port context first.
 */
#ifndef USBIP_PORT_NET_PORT_H
#define USBIP_PORT_NET_PORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef intptr_t usbip_sock_t;

/* recv/sendv results besides a byte count. recv returns 0 when the peer
 * closed the connection in order. */
enum {
    USBIP_NET_WOULD_BLOCK = -1,
    USBIP_NET_ERROR = -2, /* reset, timed out (keepalive), ...: the connection is dead */
};

typedef struct {
    const void *base;
    size_t len;
} usbip_iovec_t;

typedef struct {
    bool nodelay;
    bool keepalive;
    int keepalive_idle_s;     /* idle time before the first probe */
    int keepalive_interval_s; /* between probes */
    int keepalive_count;      /* unanswered probes before the connection is dead */
} usbip_sock_opts_t;

typedef struct {
    /* Up to len bytes into buf: > 0 bytes read, 0 peer closed,
     * USBIP_NET_WOULD_BLOCK, USBIP_NET_ERROR. */
    long (*recv)(void *ctx, usbip_sock_t sock, void *buf, size_t len);
    /* Gather send: bytes sent (may be fewer than asked: the core keeps the
     * remainder), USBIP_NET_WOULD_BLOCK or USBIP_NET_ERROR. n <= 64. */
    long (*sendv)(void *ctx, usbip_sock_t sock, const usbip_iovec_t *iov, int n);
    /* Applied once, at accept. */
    int (*set_options)(void *ctx, usbip_sock_t sock, const usbip_sock_opts_t *opts);
    /* What the core wants to be told about next: the loop calls
     * usbip_server_on_readable only while want_read, _on_writable only
     * while want_write. Not reading is how the core applies back-pressure. */
    void (*set_interest)(void *ctx, usbip_sock_t sock, bool want_read, bool want_write);
    /* Peer address as text without the port ("127.0.0.1", "::1": grants
     * match on it), and the peer's port in *port. */
    int (*peer_addr)(void *ctx, usbip_sock_t sock, char *buf, size_t len, uint16_t *port);
    /* Close the socket; the core never touches the handle again. */
    void (*close)(void *ctx, usbip_sock_t sock);
} usbip_net_ops_t;

#ifdef __cplusplus
}
#endif
#endif /* USBIP_PORT_NET_PORT_H */
