#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4, TCP_USER_TIMEOUT, clock_gettime */
#endif
/*
 * loop.c - a small epoll loop: one callback per fd, level-triggered.
 *
 * Two additions for the data path (see net_internal.h): fds marked ready in
 * user space are dispatched without blocking, and flush hooks run once per
 * round so the sockets' corked replies go out together.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "net_internal.h"

typedef struct {
    posix_fd_cb_t cb;
    void *arg;
    bool used;
    bool ready; /* in the user-space ready list */
} slot_t;

typedef struct {
    posix_flush_fn_t fn;
    void *arg;
} flush_t;

struct posix_loop {
    int ep;
    slot_t *slots;
    int nslots;
    int *ready, nready, cap_ready;
    flush_t *flush;
    int nflush, cap_flush;
    void (*before_wait)(void *arg), (*after_wait)(void *arg);
    void *wait_arg;
};

void posix_loop_set_wait_hooks(posix_loop_t *loop, void (*before)(void *arg), void (*after)(void *arg), void *arg)
{
    loop->before_wait = before;
    loop->after_wait = after;
    loop->wait_arg = arg;
}

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
    free(loop->ready);
    free(loop->flush);
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
    /* a ready-list entry for it is skipped: the slot is no longer used */
    loop->slots[fd].used = false;
    loop->slots[fd].ready = false;
}

void posix_loop_mark_ready(posix_loop_t *loop, int fd)
{
    if (fd < 0 || fd >= loop->nslots || !loop->slots[fd].used || loop->slots[fd].ready)
        return;
    if (loop->nready == loop->cap_ready) {
        int cap = loop->cap_ready ? loop->cap_ready * 2 : 16;
        int *r = realloc(loop->ready, (size_t)cap * sizeof(*r));
        if (!r)
            return; /* the fd is served when the kernel reports it again */
        loop->ready = r;
        loop->cap_ready = cap;
    }
    loop->slots[fd].ready = true;
    loop->ready[loop->nready++] = fd;
}

int posix_loop_add_flush(posix_loop_t *loop, posix_flush_fn_t fn, void *arg)
{
    if (loop->nflush == loop->cap_flush) {
        int cap = loop->cap_flush ? loop->cap_flush * 2 : 4;
        flush_t *f = realloc(loop->flush, (size_t)cap * sizeof(*f));
        if (!f)
            return -1;
        loop->flush = f;
        loop->cap_flush = cap;
    }
    loop->flush[loop->nflush++] = (flush_t){.fn = fn, .arg = arg};
    return 0;
}

void posix_loop_del_flush(posix_loop_t *loop, posix_flush_fn_t fn, void *arg)
{
    for (int i = 0; i < loop->nflush; i++)
        if (loop->flush[i].fn == fn && loop->flush[i].arg == arg) {
            loop->flush[i] = loop->flush[--loop->nflush];
            return;
        }
}

static void run_flush(posix_loop_t *loop)
{
    for (int i = 0; i < loop->nflush; i++)
        loop->flush[i].fn(loop->flush[i].arg);
}

/* Dispatch the fds marked ready before this call; marks made meanwhile wait
 * for the next round, so one busy connection cannot hold the loop. */
static int dispatch_ready(posix_loop_t *loop)
{
    int n = loop->nready, done = 0;
    for (int i = 0; i < n; i++) {
        int fd = loop->ready[i];
        if (fd < 0 || fd >= loop->nslots || !loop->slots[fd].used || !loop->slots[fd].ready)
            continue;
        loop->slots[fd].ready = false;
        loop->slots[fd].cb(loop->slots[fd].arg, fd, POSIX_EV_READ);
        done++;
    }
    /* keep the marks added by the callbacks above */
    for (int i = n; i < loop->nready; i++)
        loop->ready[i - n] = loop->ready[i];
    loop->nready -= n;
    return done;
}

int posix_loop_run_once(posix_loop_t *loop, int timeout_ms)
{
    struct epoll_event evs[32];
    /* Replies sent outside a round (timers, control commands) leave before
     * we block. */
    run_flush(loop);
    if (loop->before_wait)
        loop->before_wait(loop->wait_arg);
    int n = epoll_wait(loop->ep, evs, 32, loop->nready ? 0 : timeout_ms);
    int wait_errno = errno;
    if (loop->after_wait)
        loop->after_wait(loop->wait_arg);
    if (n < 0) {
        errno = wait_errno; /* for the caller's message */
        return wait_errno == EINTR ? 0 : -1;
    }
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
    n += dispatch_ready(loop);
    run_flush(loop);
    return n;
}
