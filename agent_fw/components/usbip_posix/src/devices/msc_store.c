/*
 * msc_store.c - RAM and file backing for the virtual disk.
 */
#define _POSIX_C_SOURCE 200809L
#include "msc_store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model.h"

#define CHUNK (64u * 1024u)

struct msc_store {
    uint64_t size;
    int fd;            /* >= 0: file-backed */
    uint8_t **chunks;  /* RAM: size / CHUNK pointers, NULL = all zeros */
    uint64_t num_chunks;
    uint64_t resident;
};

msc_store_t *msc_store_ram(uint64_t size, char *err, size_t err_len)
{
    msc_store_t *s = calloc(1, sizeof *s);
    uint64_t n = (size + CHUNK - 1) / CHUNK;
    if (s)
        s->chunks = calloc((size_t)n, sizeof *s->chunks);
    if (!s || !s->chunks) {
        free(s);
        vdev_set_err(err, err_len, "msc: out of memory for a %llu-byte RAM disk",
                     (unsigned long long)size);
        return NULL;
    }
    s->size = size;
    s->fd = -1;
    s->num_chunks = n;
    return s;
}

msc_store_t *msc_store_file(const char *path, uint64_t size, bool readonly, char *err,
                            size_t err_len)
{
    int fd = open(path, readonly ? O_RDONLY | O_CLOEXEC : O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        vdev_set_err(err, err_len, "option 'file': cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        vdev_set_err(err, err_len, "option 'file': '%s' is not a regular file", path);
        close(fd);
        return NULL;
    }
    uint64_t have = (uint64_t)st.st_size;
    if (size == 0) {
        size = have - have % 512;
        if (size < 64 * 1024) {
            vdev_set_err(err, err_len,
                         "option 'file': '%s' holds %llu bytes, less than the 64K minimum (give "
                         "size= to extend it)",
                         path, (unsigned long long)have);
            close(fd);
            return NULL;
        }
    } else if (have < size) {
        if (readonly) {
            vdev_set_err(err, err_len,
                         "option 'file': '%s' holds %llu bytes, less than size=%llu, and "
                         "readonly=1 forbids extending it",
                         path, (unsigned long long)have, (unsigned long long)size);
            close(fd);
            return NULL;
        }
        if (ftruncate(fd, (off_t)size) != 0) {
            vdev_set_err(err, err_len, "option 'file': cannot extend '%s' to %llu bytes: %s",
                         path, (unsigned long long)size, strerror(errno));
            close(fd);
            return NULL;
        }
    }
    msc_store_t *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        vdev_set_err(err, err_len, "msc: out of memory");
        return NULL;
    }
    s->size = size;
    s->fd = fd;
    return s;
}

uint64_t msc_store_size(const msc_store_t *s)
{
    return s->size;
}

uint64_t msc_store_resident(const msc_store_t *s)
{
    return s->resident;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

int msc_store_read(msc_store_t *s, uint64_t off, uint8_t *buf, size_t len)
{
    if (off > s->size || len > s->size - off)
        return -1;
    if (s->fd >= 0) {
        while (len > 0) {
            ssize_t r = pread(s->fd, buf, len, (off_t)off);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0)
                return -1;
            if (r == 0) { /* file shrank under us: reads past EOF are zeros */
                memset(buf, 0, len);
                return 0;
            }
            buf += r;
            off += (uint64_t)r;
            len -= (size_t)r;
        }
        return 0;
    }
    while (len > 0) {
        uint64_t c = off / CHUNK;
        size_t in = (size_t)(off % CHUNK), n = CHUNK - in < len ? CHUNK - in : len;
        if (s->chunks[c])
            memcpy(buf, s->chunks[c] + in, n);
        else
            memset(buf, 0, n);
        buf += n;
        off += n;
        len -= n;
    }
    return 0;
}

int msc_store_write(msc_store_t *s, uint64_t off, const uint8_t *buf, size_t len)
{
    if (off > s->size || len > s->size - off)
        return -1;
    if (s->fd >= 0) {
        while (len > 0) {
            ssize_t w = pwrite(s->fd, buf, len, (off_t)off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                return -1;
            buf += w;
            off += (uint64_t)w;
            len -= (size_t)w;
        }
        return 0;
    }
    while (len > 0) {
        uint64_t c = off / CHUNK;
        size_t in = (size_t)(off % CHUNK), n = CHUNK - in < len ? CHUNK - in : len;
        if (!s->chunks[c] && !all_zero(buf, n)) {
            /* zeros into a never-written chunk need no memory (mkfs writes lots) */
            s->chunks[c] = calloc(1, CHUNK);
            if (!s->chunks[c])
                return -1;
            s->resident += CHUNK;
        }
        if (s->chunks[c])
            memcpy(s->chunks[c] + in, buf, n);
        buf += n;
        off += n;
        len -= n;
    }
    return 0;
}

int msc_store_sync(msc_store_t *s)
{
    if (s->fd >= 0 && fsync(s->fd) != 0 && errno != EINVAL)
        return -1;
    return 0;
}

void msc_store_close(msc_store_t *s)
{
    if (!s)
        return;
    if (s->fd >= 0)
        close(s->fd);
    if (s->chunks) {
        for (uint64_t i = 0; i < s->num_chunks; i++)
            free(s->chunks[i]);
        free(s->chunks);
    }
    free(s);
}
