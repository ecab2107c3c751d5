#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4, TCP_USER_TIMEOUT, clock_gettime */
#endif
/*
 * tcp.c - the core's net port on Linux TCP sockets, driven by posix_loop.
 * Socket handles are the fds.
 *
 * System calls per URB are what the simulated dongle's data path costs, so:
 *  - reads: the core asks for one PDU part at a time (a 48-byte header,
 *    then the payload). Small reads are served from a per-connection
 *    read-ahead buffer filled by one recv of up to RA_SIZE bytes; reads of
 *    RA_DIRECT bytes or more go straight into the caller's buffer, so large
 *    OUT payloads still land in the transfer blocks without a copy. Bytes
 *    left in the buffer are invisible to epoll: the fd is marked ready in
 *    user space while the core wants to read.
 *  - writes: the core sends each reply as it completes. Small replies (up to
 *    SMALL_REPLY bytes: headers, short IN data) are gathered in a
 *    per-connection buffer and leave with one send per loop round; larger
 *    ones go straight from the transfer blocks with MSG_MORE, behind what is
 *    gathered, and are pushed at the end of the round. The same copy lwIP's
 *    send() makes on the chip, for small replies only. Bytes the socket did
 *    not take stay ours: we ask the loop for writability until they are out,
 *    so the core never sees them as unsent.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "net_internal.h"

#define RA_SIZE 16384
#define RA_DIRECT 4096
#define OBUF_SIZE 16384
#define SMALL_REPLY 1024

typedef struct {
    bool used;
    uint8_t *rbuf; /* read-ahead, RA_SIZE bytes */
    size_t roff, rlen;
    uint8_t *obuf; /* small replies not yet handed to the socket, OBUF_SIZE bytes */
    size_t olen;
    bool drained;     /* the last recv of this dispatch came back short: the socket is empty,
                         don't ask again (epoll reports new bytes) */
    bool out_blocked; /* the socket refused part of obuf: wait for writability */
    bool corked;      /* sent with MSG_MORE since the last push */
    bool want_rd, want_wr; /* the core's interest */
    bool ep_rd, ep_wr;     /* what epoll has */
} conn_t;

struct posix_net {
    posix_loop_t *loop;
    int lfd;
    int port;
    usbip_server_t *srv;
    /* fds handed to the server, so destroy can close what is left */
    int *fds;
    int nfds, capfds;
    conn_t *conns; /* by fd */
    int nconns;
    bool any_pending; /* some connection has gathered or corked bytes */
    bool link_down;   /* simulated network cut: no socket is read or written */
};

static conn_t *conn_of(posix_net_t *n, int fd)
{
    return fd >= 0 && fd < n->nconns && n->conns[fd].used ? &n->conns[fd] : NULL;
}

static int conn_open(posix_net_t *n, int fd)
{
    if (fd >= n->nconns) {
        int cap = n->nconns ? n->nconns : 64;
        while (cap <= fd)
            cap *= 2;
        conn_t *c = realloc(n->conns, (size_t)cap * sizeof(*c));
        if (!c)
            return -1;
        for (int i = n->nconns; i < cap; i++)
            c[i] = (conn_t){0};
        n->conns = c;
        n->nconns = cap;
    }
    uint8_t *rbuf = malloc(RA_SIZE), *obuf = malloc(OBUF_SIZE);
    if (!rbuf || !obuf) {
        free(rbuf);
        free(obuf);
        return -1;
    }
    n->conns[fd] = (conn_t){.used = true, .rbuf = rbuf, .obuf = obuf};
    return 0;
}

static void conn_close(posix_net_t *n, int fd)
{
    conn_t *c = conn_of(n, fd);
    if (!c)
        return;
    free(c->rbuf);
    free(c->obuf);
    *c = (conn_t){0};
}

static bool conn_buffered(posix_net_t *n, int fd)
{
    conn_t *c = conn_of(n, fd);
    return c && c->rlen > c->roff;
}

static void apply_interest(posix_net_t *n, int fd, conn_t *c)
{
    /* a cut link keeps the core's interest but tells epoll nothing, so the
     * sockets are not even polled until the link is back */
    bool rd = !n->link_down && c->want_rd, wr = !n->link_down && (c->want_wr || c->out_blocked);
    if (rd == c->ep_rd && wr == c->ep_wr)
        return;
    c->ep_rd = rd;
    c->ep_wr = wr;
    posix_loop_mod(n->loop, fd, rd, wr);
}

/* Hand gathered bytes to the socket (without MSG_MORE: this pushes the
 * corked ones too). Whatever it refuses waits for writability. */
static void send_gathered(posix_net_t *n, int fd, conn_t *c)
{
    if (c->olen > 0) {
        ssize_t r = send(fd, c->obuf, c->olen, MSG_NOSIGNAL);
        if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            c->olen = 0; /* dead connection: the core learns it from its next recv */
            r = 0;
        }
        if (r > 0) {
            memmove(c->obuf, c->obuf + r, c->olen - (size_t)r);
            c->olen -= (size_t)r;
            c->corked = false;
        }
        c->out_blocked = c->olen > 0;
        apply_interest(n, fd, c);
    }
    if (c->corked && c->olen == 0) {
        int one = 1; /* setting TCP_NODELAY pushes pending frames */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c->corked = false;
    }
}

/* End of a loop round: what the round's replies gathered or corked leaves. */
static void flush_round(void *arg)
{
    posix_net_t *n = arg;
    if (!n->any_pending || n->link_down)
        return;
    n->any_pending = false;
    for (int i = 0; i < n->nfds; i++) {
        conn_t *c = conn_of(n, n->fds[i]);
        if (c && !c->out_blocked && (c->olen > 0 || c->corked))
            send_gathered(n, n->fds[i], c);
    }
}

static void track(posix_net_t *n, int fd, bool add)
{
    if (add) {
        if (n->nfds == n->capfds) {
            int cap = n->capfds ? n->capfds * 2 : 16;
            int *f = realloc(n->fds, (size_t)cap * sizeof(*f));
            if (!f)
                return;
            n->fds = f;
            n->capfds = cap;
        }
        n->fds[n->nfds++] = fd;
        return;
    }
    for (int i = 0; i < n->nfds; i++)
        if (n->fds[i] == fd) {
            n->fds[i] = n->fds[--n->nfds];
            return;
        }
}

static void client_cb(void *arg, int fd, unsigned ev)
{
    posix_net_t *n = arg;
    if (n->link_down)
        return; /* an edge-triggered HUP can still arrive */
    conn_t *c = conn_of(n, fd);
    if (c)
        c->drained = false;
    if ((ev & POSIX_EV_WRITE) && c && c->out_blocked)
        send_gathered(n, fd, c);
    if (ev & (POSIX_EV_READ | POSIX_EV_HUP))
        usbip_server_on_readable(n->srv, fd);
    /* the read may have closed it */
    if ((ev & POSIX_EV_WRITE) && usbip_server_wants_write(n->srv, fd))
        usbip_server_on_writable(n->srv, fd);
    /* the core stopped early (its per-call PDU budget) with PDUs in our buffer */
    if (conn_buffered(n, fd) && usbip_server_wants_read(n->srv, fd))
        posix_loop_mark_ready(n->loop, fd);
}

static void accept_cb(void *arg, int fd, unsigned ev)
{
    posix_net_t *n = arg;
    (void)ev;
    if (n->link_down)
        return;
    for (int i = 0; i < 16; i++) {
        int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0)
            return;
        if (!n->srv || conn_open(n, c) != 0) {
            close(c);
            continue;
        }
        if (posix_loop_add(n->loop, c, false, false, client_cb, n) != 0) {
            conn_close(n, c);
            close(c);
            continue;
        }
        track(n, c, true);
        usbip_server_on_accept(n->srv, c);
    }
}

/* Takes lfd (-1: a net port without a listener). */
static int net_new(posix_loop_t *loop, int lfd, int port, posix_net_t **out, char *err, size_t err_len)
{
    posix_net_t *n = calloc(1, sizeof(*n));
    if (!n) {
        if (lfd >= 0)
            close(lfd);
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    n->loop = loop;
    n->lfd = lfd;
    n->port = port;
    if ((lfd >= 0 && posix_loop_add(loop, lfd, true, false, accept_cb, n) != 0) ||
        posix_loop_add_flush(loop, flush_round, n) != 0) {
        if (lfd >= 0) {
            posix_loop_del(loop, lfd);
            close(lfd);
        }
        free(n);
        snprintf(err, err_len, "cannot watch the listening socket");
        return -1;
    }
    *out = n;
    return 0;
}

int posix_net_listen(posix_loop_t *loop, const char *host_port, posix_net_t **out, char *err, size_t err_len)
{
    char host[256];
    const char *colon = strrchr(host_port, ':');
    if (!colon || (size_t)(colon - host_port) >= sizeof(host) || colon == host_port) {
        snprintf(err, err_len, "listen address must be HOST:PORT, got '%s'", host_port);
        return -1;
    }
    memcpy(host, host_port, (size_t)(colon - host_port));
    host[colon - host_port] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port < 0 || port > 65535) {
        snprintf(err, err_len, "bad port in '%s'", host_port);
        return -1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_PASSIVE};
    struct addrinfo *ai;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0) {
        snprintf(err, err_len, "listen host must be a numeric address, got '%s'", host);
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 64) != 0) {
        snprintf(err, err_len, "cannot listen on %s: %s", host_port, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    int bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    return net_new(loop, fd, bound, out, err, err_len);
}

int posix_net_create(posix_loop_t *loop, posix_net_t **out, char *err, size_t err_len)
{
    return net_new(loop, -1, 0, out, err, err_len);
}

void posix_net_attach(posix_net_t *net, usbip_server_t *srv)
{
    net->srv = srv;
}

int posix_net_bound_port(const posix_net_t *net)
{
    return net->port;
}

bool posix_net_listening(const posix_net_t *net)
{
    return net->lfd >= 0;
}

void posix_net_set_link(posix_net_t *n, bool up)
{
    if (n->link_down == !up)
        return;
    n->link_down = !up;
    if (n->lfd >= 0)
        posix_loop_mod(n->loop, n->lfd, up, false);
    for (int i = 0; i < n->nfds; i++) {
        conn_t *c = conn_of(n, n->fds[i]);
        if (!c)
            continue;
        apply_interest(n, n->fds[i], c);
        if (up && c->want_rd && conn_buffered(n, n->fds[i]))
            posix_loop_mark_ready(n->loop, n->fds[i]);
    }
    if (up)
        n->any_pending = true; /* replies gathered while cut leave at the end of the next round */
}

bool posix_net_link_up(const posix_net_t *net)
{
    return !net->link_down;
}

void posix_net_destroy(posix_net_t *net)
{
    if (!net)
        return;
    posix_loop_del_flush(net->loop, flush_round, net);
    if (net->lfd >= 0) {
        posix_loop_del(net->loop, net->lfd);
        close(net->lfd);
    }
    for (int i = 0; i < net->nfds; i++) {
        posix_loop_del(net->loop, net->fds[i]);
        conn_close(net, net->fds[i]);
        close(net->fds[i]);
    }
    free(net->fds);
    free(net->conns);
    free(net);
}

/* ---- the ops ------------------------------------------------------------ */

static long recv_result(ssize_t r)
{
    if (r >= 0)
        return (long)r;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return USBIP_NET_WOULD_BLOCK;
    return USBIP_NET_ERROR;
}

static long op_recv(void *ctx, usbip_sock_t sock, void *buf, size_t len)
{
    posix_net_t *n = ctx;
    int fd = (int)sock;
    if (n->link_down)
        return USBIP_NET_WOULD_BLOCK;
    conn_t *c = conn_of(n, fd);
    if (!c || len >= RA_DIRECT) {
        if (c && c->rlen > c->roff) {
            /* what was read ahead comes first */
            size_t k = c->rlen - c->roff < len ? c->rlen - c->roff : len;
            memcpy(buf, c->rbuf + c->roff, k);
            c->roff += k;
            return (long)k;
        }
        if (c && c->drained)
            return USBIP_NET_WOULD_BLOCK;
        ssize_t r = recv(fd, buf, len, 0);
        if (c && r >= 0 && (size_t)r < len)
            c->drained = true;
        return recv_result(r);
    }
    if (c->rlen == c->roff) {
        if (c->drained)
            return USBIP_NET_WOULD_BLOCK;
        ssize_t r = recv(fd, c->rbuf, RA_SIZE, 0);
        if (r <= 0)
            return recv_result(r);
        c->roff = 0;
        c->rlen = (size_t)r;
        c->drained = (size_t)r < RA_SIZE;
    }
    size_t k = c->rlen - c->roff < len ? c->rlen - c->roff : len;
    memcpy(buf, c->rbuf + c->roff, k);
    c->roff += k;
    return (long)k;
}

static long op_sendv(void *ctx, usbip_sock_t sock, const usbip_iovec_t *iov, int n)
{
    posix_net_t *net = ctx;
    int fd = (int)sock;
    conn_t *c = conn_of(net, fd);
    if (n > 63)
        n = 63; /* one entry stays free for the gathered bytes */
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += iov[i].len;
    if (c && total <= SMALL_REPLY && c->olen + total <= OBUF_SIZE) {
        for (int i = 0; i < n; i++) {
            memcpy(c->obuf + c->olen, iov[i].base, iov[i].len);
            c->olen += iov[i].len;
        }
        net->any_pending = true;
        return (long)total;
    }
    if ((c && c->out_blocked) || net->link_down)
        return USBIP_NET_WOULD_BLOCK; /* gathered bytes first: order on the wire */
    struct iovec v[64];
    int k = 0;
    size_t pre = c ? c->olen : 0;
    if (pre > 0)
        v[k++] = (struct iovec){.iov_base = c->obuf, .iov_len = pre};
    for (int i = 0; i < n; i++)
        v[k++] = (struct iovec){.iov_base = (void *)iov[i].base, .iov_len = iov[i].len};
    struct msghdr m = {.msg_iov = v, .msg_iovlen = (size_t)k};
    ssize_t r = sendmsg(fd, &m, MSG_NOSIGNAL | (c ? MSG_MORE : 0));
    if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            if (pre > 0) {
                c->out_blocked = true;
                apply_interest(net, fd, c);
            }
            return USBIP_NET_WOULD_BLOCK;
        }
        return USBIP_NET_ERROR;
    }
    if (!c)
        return (long)r;
    c->corked = true;
    net->any_pending = true;
    if ((size_t)r < pre) {
        memmove(c->obuf, c->obuf + r, pre - (size_t)r);
        c->olen = pre - (size_t)r;
        c->out_blocked = true;
        apply_interest(net, fd, c);
        return USBIP_NET_WOULD_BLOCK;
    }
    c->olen = 0;
    if ((size_t)r == pre)
        return USBIP_NET_WOULD_BLOCK; /* the socket is full: the core waits for writability */
    return (long)((size_t)r - pre);
}

static int op_set_options(void *ctx, usbip_sock_t sock, const usbip_sock_opts_t *o)
{
    (void)ctx;
    int fd = (int)sock, one = 1, rc = 0;
    if (o->nodelay)
        rc |= setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (o->keepalive) {
        rc |= setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
        rc |= setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &o->keepalive_idle_s, sizeof(int));
        rc |= setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &o->keepalive_interval_s, sizeof(int));
        rc |= setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &o->keepalive_count, sizeof(int));
        /* unacknowledged data must not outlive the keepalive either */
        unsigned int ut = (unsigned)(o->keepalive_idle_s + o->keepalive_interval_s * o->keepalive_count) * 1000u;
        rc |= setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut));
    }
    return rc ? -1 : 0;
}

static void op_set_interest(void *ctx, usbip_sock_t sock, bool rd, bool wr)
{
    posix_net_t *n = ctx;
    conn_t *c = conn_of(n, (int)sock);
    if (!c) {
        posix_loop_mod(n->loop, (int)sock, rd, wr);
        return;
    }
    c->want_rd = rd;
    c->want_wr = wr;
    apply_interest(n, (int)sock, c);
    /* the kernel will not report bytes that are already in our buffer */
    if (rd && conn_buffered(n, (int)sock))
        posix_loop_mark_ready(n->loop, (int)sock);
}

static int op_peer_addr(void *ctx, usbip_sock_t sock, char *buf, size_t len, uint16_t *port)
{
    (void)ctx;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getpeername((int)sock, (struct sockaddr *)&ss, &sl) != 0)
        return -1;
    *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                           : ((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
        /* v4-mapped peers are reported as plain IPv4 so grants match */
        if (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr))
            return inet_ntop(AF_INET, &a6->sin6_addr.s6_addr[12], buf, (socklen_t)len) ? 0 : -1;
        return inet_ntop(AF_INET6, &a6->sin6_addr, buf, (socklen_t)len) ? 0 : -1;
    }
    return inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, buf, (socklen_t)len) ? 0 : -1;
}

static void op_close(void *ctx, usbip_sock_t sock)
{
    posix_net_t *n = ctx;
    conn_t *c = conn_of(n, (int)sock);
    if (c && c->olen > 0 && !n->link_down) {
        /* the core counts these as sent: best effort, never blocking */
        ssize_t r = send((int)sock, c->obuf, c->olen, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)r;
    }
    posix_loop_del(n->loop, (int)sock);
    track(n, (int)sock, false);
    conn_close(n, (int)sock);
    close((int)sock);
}

static const usbip_net_ops_t k_ops = {
    .recv = op_recv,
    .sendv = op_sendv,
    .set_options = op_set_options,
    .set_interest = op_set_interest,
    .peer_addr = op_peer_addr,
    .close = op_close,
};

const usbip_net_ops_t *posix_net_ops(void)
{
    return &k_ops;
}
