/* worker_thread.c - the worker port on pthreads (see agent_posix.h). */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "agent_posix.h"
#include "fleet_agent/err.h"

struct fleet_thread_worker {
    fleet_lock_hooks_t big;
    pthread_t thread;
    bool unjoined;
    void (*fn)(void *arg);
    void *arg;
};

static void big_lock(const fleet_thread_worker_t *w)
{
    if (w->big.lock) w->big.lock(w->big.arg);
}

static void big_unlock(const fleet_thread_worker_t *w)
{
    if (w->big.unlock) w->big.unlock(w->big.arg);
}

static void *run(void *arg)
{
    fleet_thread_worker_t *w = arg;
    big_lock(w);
    w->fn(w->arg);
    big_unlock(w);
    return NULL;
}

static void join(void *ctx)
{
    fleet_thread_worker_t *w = ctx;
    if (!w->unjoined) return;
    big_unlock(w);
    pthread_join(w->thread, NULL);
    big_lock(w);
    w->unjoined = false;
}

static int start(void *ctx, void (*fn)(void *arg), void *arg)
{
    fleet_thread_worker_t *w = ctx;
    if (w->unjoined) return FLEET_ERR_STATE;
    w->fn = fn;
    w->arg = arg;
    if (pthread_create(&w->thread, NULL, run, w) != 0) return FLEET_ERR_NO_MEM;
    w->unjoined = true;
    return FLEET_OK;
}

const fleet_worker_ops_t fleet_thread_worker_ops = {.start = start, .join = join};

int fleet_thread_worker_create(fleet_thread_worker_t **out, const fleet_lock_hooks_t *big)
{
    *out = calloc(1, sizeof **out);
    if (!*out) return FLEET_ERR_NO_MEM;
    if (big) (*out)->big = *big;
    return FLEET_OK;
}

void fleet_thread_worker_destroy(fleet_thread_worker_t *w)
{
    if (!w) return;
    join(w);
    free(w);
}
