#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4, TCP_USER_TIMEOUT, clock_gettime */
#endif
/*
 * tcp.c - the core's net port on Linux TCP sockets, driven by posix_loop.
 * Socket handles are the fds.
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

#include "usbip_posix/posix_port.h"

struct posix_net {
    posix_loop_t *loop;
    int lfd;
    int port;
    usbip_server_t *srv;
    /* fds handed to the server, so destroy can close what is left */
    int *fds;
    int nfds, capfds;
};

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
    if (ev & (POSIX_EV_READ | POSIX_EV_HUP))
        usbip_server_on_readable(n->srv, fd);
    /* the read may have closed it */
    if ((ev & POSIX_EV_WRITE) && usbip_server_wants_write(n->srv, fd))
        usbip_server_on_writable(n->srv, fd);
}

static void accept_cb(void *arg, int fd, unsigned ev)
{
    posix_net_t *n = arg;
    (void)ev;
    for (int i = 0; i < 16; i++) {
        int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0)
            return;
        if (!n->srv || posix_loop_add(n->loop, c, false, false, client_cb, n) != 0) {
            close(c);
            continue;
        }
        track(n, c, true);
        usbip_server_on_accept(n->srv, c);
    }
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
    posix_net_t *n = calloc(1, sizeof(*n));
    if (!n) {
        close(fd);
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    n->loop = loop;
    n->lfd = fd;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    n->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    if (posix_loop_add(loop, fd, true, false, accept_cb, n) != 0) {
        close(fd);
        free(n);
        snprintf(err, err_len, "cannot watch the listening socket");
        return -1;
    }
    *out = n;
    return 0;
}

void posix_net_attach(posix_net_t *net, usbip_server_t *srv)
{
    net->srv = srv;
}

int posix_net_bound_port(const posix_net_t *net)
{
    return net->port;
}

void posix_net_destroy(posix_net_t *net)
{
    if (!net)
        return;
    posix_loop_del(net->loop, net->lfd);
    close(net->lfd);
    for (int i = 0; i < net->nfds; i++) {
        posix_loop_del(net->loop, net->fds[i]);
        close(net->fds[i]);
    }
    free(net->fds);
    free(net);
}

/* ---- the ops ------------------------------------------------------------ */

static long op_recv(void *ctx, usbip_sock_t sock, void *buf, size_t len)
{
    (void)ctx;
    ssize_t r = recv((int)sock, buf, len, 0);
    if (r >= 0)
        return (long)r;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return USBIP_NET_WOULD_BLOCK;
    return USBIP_NET_ERROR;
}

static long op_sendv(void *ctx, usbip_sock_t sock, const usbip_iovec_t *iov, int n)
{
    (void)ctx;
    struct iovec v[64];
    if (n > 64)
        n = 64;
    for (int i = 0; i < n; i++) {
        v[i].iov_base = (void *)iov[i].base;
        v[i].iov_len = iov[i].len;
    }
    struct msghdr m = {.msg_iov = v, .msg_iovlen = (size_t)n};
    ssize_t r = sendmsg((int)sock, &m, MSG_NOSIGNAL);
    if (r >= 0)
        return (long)r;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return USBIP_NET_WOULD_BLOCK;
    return USBIP_NET_ERROR;
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
    posix_loop_mod(n->loop, (int)sock, rd, wr);
}

static int op_peer_addr(void *ctx, usbip_sock_t sock, char *buf, size_t len)
{
    (void)ctx;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getpeername((int)sock, (struct sockaddr *)&ss, &sl) != 0)
        return -1;
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
    posix_loop_del(n->loop, (int)sock);
    track(n, (int)sock, false);
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
