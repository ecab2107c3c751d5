/*
 * pool.c - the transfer-buffer pool: budget / block_size equal blocks, each a
 * uhp_xfer_t allocated once at start-up (DMA-capable RAM on the chip). Equal
 * sizes mean the pool never fragments; an URB takes a chain of blocks, one
 * per USB transfer of its split.
 */
#include <stdlib.h>

#include "server_priv.h"

int pool_init(usbip_server_t *srv)
{
    pool_t *pool = &srv->pool;
    pool->block_size = srv->cfg.block_size;
    pool->nblocks = (int)(srv->cfg.buffer_budget / srv->cfg.block_size);
    if (pool->nblocks < 1 || pool->nblocks > 4096)
        return -1;
    pool->blk = calloc((size_t)pool->nblocks, sizeof(*pool->blk));
    pool->next = calloc((size_t)pool->nblocks, sizeof(*pool->next));
    if (!pool->blk || !pool->next)
        return -1;
    for (int i = 0; i < pool->nblocks; i++) {
        if (srv->p.usb->xfer_alloc(srv->p.usb_ctx, pool->block_size, srv->cfg.max_iso_packets,
                                   &pool->blk[i]) != UHP_OK ||
            !pool->blk[i] || pool->blk[i]->capacity < pool->block_size)
            return -1;
        pool->next[i] = (int16_t)(i + 1 < pool->nblocks ? i + 1 : -1);
    }
    pool->free_head = 0;
    pool->nfree = pool->nblocks;
    return 0;
}

void pool_deinit(usbip_server_t *srv)
{
    pool_t *pool = &srv->pool;
    if (pool->blk)
        for (int i = 0; i < pool->nblocks; i++)
            if (pool->blk[i])
                srv->p.usb->xfer_free(srv->p.usb_ctx, pool->blk[i]);
    free(pool->blk);
    free(pool->next);
    pool->blk = NULL;
    pool->next = NULL;
}

int pool_alloc(pool_t *pool, int n)
{
    if (n < 1 || n > pool->nfree)
        return -1;
    int head = pool->free_head, last = head;
    for (int i = 1; i < n; i++)
        last = pool->next[last];
    pool->free_head = pool->next[last];
    pool->next[last] = -1;
    pool->nfree -= n;
    int used = pool->nblocks - pool->nfree;
    if (used > pool->peak_used)
        pool->peak_used = used;
    return head;
}

void pool_free(pool_t *pool, int head)
{
    while (head >= 0) {
        int nx = pool->next[head];
        pool->next[head] = (int16_t)pool->free_head;
        pool->free_head = head;
        pool->nfree++;
        head = nx;
    }
}

uhp_xfer_t *pool_block(const pool_t *pool, int head, int i)
{
    while (i-- > 0 && head >= 0)
        head = pool->next[head];
    return head >= 0 ? pool->blk[head] : NULL;
}
