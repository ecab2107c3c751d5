/* atomic_file.h - durable whole-file replacement for the posix ports. Private. */
#ifndef FLEET_ATOMIC_FILE_H
#define FLEET_ATOMIC_FILE_H

#include <stddef.h>

#include "agent_posix.h"

/* Replace dir/name with data: write dir/.name.tmp, fsync, rename, fsync dir.
 * tag names the fault points ("<tag>:tmp-partial", "<tag>:tmp-written",
 * "<tag>:renamed"). FLEET_OK or FLEET_ERR_IO. */
int fleet_atomic_write(const char *dir, const char *name, const void *data, size_t len,
                       const char *tag, fleet_fault_fn fault, void *fault_arg);

/* Read the whole file into buf (cap bytes). FLEET_OK, FLEET_ERR_NOT_FOUND,
 * FLEET_ERR_NO_MEM (*len = real size) or FLEET_ERR_IO. */
int fleet_read_file(const char *dir, const char *name, void *buf, size_t cap, size_t *len);

/* mkdir -p for one level; FLEET_OK if it exists. */
int fleet_ensure_dir(const char *dir);

#endif
