/*
 * control.c - the control channel transport: a Unix stream socket (several
 * clients at once) or stdin/stdout. One command per line, one reply line.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4 */
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "dongle.h"

#define CTL_MAX_CLIENTS 16
#define CTL_LINE_MAX 4096
#define CTL_REPLY_MAX 65536

typedef struct {
    int rfd, wfd; /* -1 = unused */
    char buf[CTL_LINE_MAX];
    size_t have;
    bool discarding; /* an overlong line is being skipped */
} ctl_client_t;

struct control {
    dongle_t *d;
    int lfd;
    char path[108];
    ctl_client_t clients[CTL_MAX_CLIENTS];
    char reply[CTL_REPLY_MAX];
};

static void client_drop(control_t *c, ctl_client_t *cl)
{
    posix_loop_del(c->d->loop, cl->rfd);
    if (cl->rfd > 2)
        close(cl->rfd);
    if (cl->wfd > 2 && cl->wfd != cl->rfd)
        close(cl->wfd);
    if (cl->rfd == 0) /* stdin closed: the controlling process is gone */
        c->d->quit = true;
    cl->rfd = cl->wfd = -1;
}

/* Replies are short and the peer reads them; a blocking write keeps each
 * reply whole without buffering. */
static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void handle_line(control_t *c, ctl_client_t *cl, const char *line)
{
    dongle_command(c->d, line, c->reply, sizeof(c->reply) - 1);
    size_t n = strlen(c->reply);
    c->reply[n++] = '\n';
    write_all(cl->wfd, c->reply, n);
}

static void client_cb(void *arg, int fd, unsigned ev)
{
    control_t *c = arg;
    (void)ev;
    ctl_client_t *cl = NULL;
    for (int i = 0; i < CTL_MAX_CLIENTS; i++)
        if (c->clients[i].rfd == fd)
            cl = &c->clients[i];
    if (!cl)
        return;
    ssize_t r = read(fd, cl->buf + cl->have, sizeof(cl->buf) - cl->have);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r <= 0) {
        client_drop(c, cl);
        return;
    }
    cl->have += (size_t)r;
    size_t start = 0;
    for (size_t i = 0; i < cl->have; i++) {
        if (cl->buf[i] != '\n')
            continue;
        cl->buf[i] = 0;
        if (i > start && cl->buf[i - 1] == '\r')
            cl->buf[i - 1] = 0;
        if (cl->discarding)
            cl->discarding = false;
        else if (cl->buf[start])
            handle_line(c, cl, cl->buf + start);
        start = i + 1;
        if (c->d->quit)
            break;
    }
    memmove(cl->buf, cl->buf + start, cl->have - start);
    cl->have -= start;
    if (cl->have == sizeof(cl->buf)) {
        const char *msg = "err command line too long\n";
        write_all(cl->wfd, msg, strlen(msg));
        cl->have = 0;
        cl->discarding = true;
    }
}

static ctl_client_t *client_add(control_t *c, int rfd, int wfd)
{
    for (int i = 0; i < CTL_MAX_CLIENTS; i++) {
        ctl_client_t *cl = &c->clients[i];
        if (cl->rfd >= 0)
            continue;
        if (posix_loop_add(c->d->loop, rfd, true, false, client_cb, c) != 0)
            return NULL;
        cl->rfd = rfd;
        cl->wfd = wfd;
        cl->have = 0;
        cl->discarding = false;
        return cl;
    }
    return NULL;
}

static void accept_cb(void *arg, int fd, unsigned ev)
{
    control_t *c = arg;
    (void)ev;
    int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
    if (cfd < 0)
        return;
    if (!client_add(c, cfd, cfd)) {
        const char *msg = "err too many control connections\n";
        write_all(cfd, msg, strlen(msg));
        close(cfd);
    }
}

int control_open(dongle_t *d, const char *path, control_t **out, char *err, size_t err_len)
{
    control_t *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    c->d = d;
    c->lfd = -1;
    for (int i = 0; i < CTL_MAX_CLIENTS; i++)
        c->clients[i].rfd = c->clients[i].wfd = -1;
    if (strcmp(path, "-") == 0) {
        if (!client_add(c, 0, 1)) {
            snprintf(err, err_len, "cannot watch stdin");
            free(c);
            return -1;
        }
        *out = c;
        return 0;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, err_len, "control socket path too long (max %zu bytes)", sizeof(sa.sun_path) - 1);
        free(c);
        return -1;
    }
    strcpy(sa.sun_path, path);
    strcpy(c->path, path);
    unlink(path);
    c->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->lfd < 0 || bind(c->lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(c->lfd, 8) != 0 ||
        posix_loop_add(d->loop, c->lfd, true, false, accept_cb, c) != 0) {
        snprintf(err, err_len, "cannot listen on control socket %s: %s", path, strerror(errno));
        if (c->lfd >= 0)
            close(c->lfd);
        free(c);
        return -1;
    }
    *out = c;
    return 0;
}

void control_close(control_t *c)
{
    if (!c)
        return;
    for (int i = 0; i < CTL_MAX_CLIENTS; i++)
        if (c->clients[i].rfd >= 0)
            client_drop(c, &c->clients[i]);
    if (c->lfd >= 0) {
        posix_loop_del(c->d->loop, c->lfd);
        close(c->lfd);
        unlink(c->path);
    }
    free(c);
}
