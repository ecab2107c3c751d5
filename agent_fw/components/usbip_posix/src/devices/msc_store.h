/*
 * msc_store.h - backing store of the virtual disk: RAM (allocated lazily in
 * chunks, so a 1 GiB disk costs only what was written) or a file.
 */
#ifndef VDEV_MSC_STORE_H
#define VDEV_MSC_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct msc_store msc_store_t;

msc_store_t *msc_store_ram(uint64_t size, char *err, size_t err_len);
/* Opens (and, unless readonly, creates) `path`. size == 0 means "use the
 * file's size"; otherwise a smaller file is extended to `size` (sparse) and
 * a larger one is exposed only up to `size`. */
msc_store_t *msc_store_file(const char *path, uint64_t size, bool readonly, char *err,
                            size_t err_len);
uint64_t msc_store_size(const msc_store_t *s);
/* Bytes held in RAM (0 for files): what the lazy allocation saves is visible. */
uint64_t msc_store_resident(const msc_store_t *s);
int msc_store_read(msc_store_t *s, uint64_t off, uint8_t *buf, size_t len);
int msc_store_write(msc_store_t *s, uint64_t off, const uint8_t *buf, size_t len);
int msc_store_sync(msc_store_t *s);
void msc_store_close(msc_store_t *s);

#endif /* VDEV_MSC_STORE_H */
