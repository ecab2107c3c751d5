/* atomic_file.c - write-tmp/fsync/rename/fsync-dir, the one way the posix
 * ports replace a record. */
#include "atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fleet_agent/err.h"

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int fault_at(fleet_fault_fn fault, void *arg, const char *tag, const char *what)
{
    if (!fault) return 0;
    char point[64];
    snprintf(point, sizeof point, "%s:%s", tag, what);
    return fault(arg, point);
}

int fleet_atomic_write(const char *dir, const char *name, const void *data, size_t len,
                       const char *tag, fleet_fault_fn fault, void *fault_arg)
{
    char tmp[PATH_MAX], dst[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name) >= (int)sizeof tmp ||
        snprintf(dst, sizeof dst, "%s/%s", dir, name) >= (int)sizeof dst)
        return FLEET_ERR_IO;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return FLEET_ERR_IO;
    size_t half = len / 2;
    if (write_all(fd, data, half) || fault_at(fault, fault_arg, tag, "tmp-partial") ||
        write_all(fd, (const char *)data + half, len - half) || fsync(fd)) {
        close(fd);
        return FLEET_ERR_IO;
    }
    if (close(fd) || fault_at(fault, fault_arg, tag, "tmp-written")) return FLEET_ERR_IO;
    if (rename(tmp, dst)) return FLEET_ERR_IO;
    if (fault_at(fault, fault_arg, tag, "renamed")) return FLEET_ERR_IO;
    /* The rename itself is durable only once the directory is. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return FLEET_ERR_IO;
    int rc = fsync(dfd);
    close(dfd);
    return rc ? FLEET_ERR_IO : FLEET_OK;
}

int fleet_read_file(const char *dir, const char *name, void *buf, size_t cap, size_t *len)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) return FLEET_ERR_IO;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? FLEET_ERR_NOT_FOUND : FLEET_ERR_IO;
    struct stat sb;
    if (fstat(fd, &sb)) {
        close(fd);
        return FLEET_ERR_IO;
    }
    *len = (size_t)sb.st_size;
    if ((size_t)sb.st_size > cap) {
        close(fd);
        return FLEET_ERR_NO_MEM;
    }
    size_t got = 0;
    while (got < *len) {
        ssize_t r = read(fd, (char *)buf + got, *len - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    return got == *len ? FLEET_OK : FLEET_ERR_IO;
}

int fleet_ensure_dir(const char *dir)
{
    if (mkdir(dir, 0755) == 0 || errno == EEXIST) return FLEET_OK;
    return FLEET_ERR_IO;
}
