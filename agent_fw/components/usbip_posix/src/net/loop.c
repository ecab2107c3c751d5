#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4, TCP_USER_TIMEOUT, clock_gettime */
#endif
/* loop.c - a small epoll loop: one callback per fd, level-triggered. */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "usbip_posix/posix_port.h"

typedef struct {
    posix_fd_cb_t cb;
    void *arg;
    bool used;
} slot_t;

struct posix_loop {
    int ep;
    slot_t *slots;
    int nslots;
};

int posix_loop_create(posix_loop_t **out)
{
    posix_loop_t *l = calloc(1, sizeof(*l));
    if (!l)
        return -1;
    l->ep = epoll_create1(EPOLL_CLOEXEC);
    if (l->ep < 0) {
        free(l);
        return -1;
    }
    *out = l;
    return 0;
}

void posix_loop_destroy(posix_loop_t *loop)
{
    if (!loop)
        return;
    close(loop->ep);
    free(loop->slots);
    free(loop);
}

static uint32_t ev_mask(bool rd, bool wr)
{
    uint32_t e = 0;
    if (rd)
        e |= EPOLLIN;
    if (wr)
        e |= EPOLLOUT;
    /* With nothing wanted, HUP/ERR would fire on every wait (they cannot be
     * masked): edge-trigger them so a stalled socket cannot spin the loop. */
    if (!rd && !wr)
        e |= EPOLLET;
    return e;
}

int posix_loop_add(posix_loop_t *loop, int fd, bool rd, bool wr, posix_fd_cb_t cb, void *arg)
{
    if (fd < 0 || !cb)
        return -1;
    if (fd >= loop->nslots) {
        int n = loop->nslots ? loop->nslots : 64;
        while (n <= fd)
            n *= 2;
        slot_t *s = realloc(loop->slots, (size_t)n * sizeof(*s));
        if (!s)
            return -1;
        for (int i = loop->nslots; i < n; i++)
            s[i] = (slot_t){0};
        loop->slots = s;
        loop->nslots = n;
    }
    struct epoll_event ev = {.events = ev_mask(rd, wr), .data.fd = fd};
    if (epoll_ctl(loop->ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        return -1;
    loop->slots[fd] = (slot_t){.cb = cb, .arg = arg, .used = true};
    return 0;
}

int posix_loop_mod(posix_loop_t *loop, int fd, bool rd, bool wr)
{
    struct epoll_event ev = {.events = ev_mask(rd, wr), .data.fd = fd};
    return epoll_ctl(loop->ep, EPOLL_CTL_MOD, fd, &ev);
}

void posix_loop_del(posix_loop_t *loop, int fd)
{
    if (fd < 0 || fd >= loop->nslots || !loop->slots[fd].used)
        return;
    epoll_ctl(loop->ep, EPOLL_CTL_DEL, fd, NULL);
    loop->slots[fd].used = false;
}

int posix_loop_run_once(posix_loop_t *loop, int timeout_ms)
{
    struct epoll_event evs[32];
    int n = epoll_wait(loop->ep, evs, 32, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -1;
    for (int i = 0; i < n; i++) {
        int fd = evs[i].data.fd;
        /* an earlier callback of this batch may have closed it */
        if (fd < 0 || fd >= loop->nslots || !loop->slots[fd].used)
            continue;
        unsigned e = 0;
        if (evs[i].events & EPOLLIN)
            e |= POSIX_EV_READ;
        if (evs[i].events & EPOLLOUT)
            e |= POSIX_EV_WRITE;
        if (evs[i].events & (EPOLLHUP | EPOLLERR))
            e |= POSIX_EV_HUP;
        loop->slots[fd].cb(loop->slots[fd].arg, fd, e);
    }
    return n;
}
