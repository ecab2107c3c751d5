/*
 * loadgen.c - a fast USB/IP client for bench/usbip.py, so wall-clock numbers
 * measure the server and not a Python client. bench/usbip.py compiles it with
 * one cc call; it talks plain USB/IP over TCP (OP_REQ_IMPORT, then
 * CMD_SUBMIT / RET_SUBMIT) and checks every reply, so a server that gets a
 * URB wrong fails the benchmark instead of looking fast.
 *
 *   loadgen echo-rate HOST PORT BUSID SECONDS DEPTH [PID]
 *       64-byte vendor echo (0x80...) URBs, OUT then IN, DEPTH outstanding.
 *   loadgen echo-lat  HOST PORT BUSID COUNT [PID]
 *       one URB at a time; per-URB submit -> RET_SUBMIT times.
 *   loadgen msc-read  HOST PORT BUSID SECONDS BLOCKS DEPTH [PID]
 *       SCSI READ(10) of BLOCKS x 512 B per command, CBW + data IN + CSW
 *       queued together. DEPTH 1: the next command when the CSW is back,
 *       as usb-storage does (Bulk-Only runs one command at a time); DEPTH
 *       2..4: that many commands queued, the device NAKs each CBW until
 *       the command before it has ended.
 *   loadgen relay TARGET_PORT DELAY_US
 *       a TCP relay to 127.0.0.1:TARGET_PORT that delays every byte by DELAY_US
 *       in each direction without limiting bandwidth (chunks are stamped on
 *       arrival and forwarded when due), i.e. a long link. Prints
 *       "listening on 127.0.0.1:PORT"; one forked child per connection.
 *   loadgen null-server
 *       the least a USB/IP server can do: answers IMPORT, then every
 *       CMD_SUBMIT at once (an IN returns the last OUT's bytes), no device
 *       behind it. Prints "listening on 127.0.0.1:PORT"; serves one
 *       connection at a time until killed. Its echo latency is the floor
 *       loopback TCP and this client set on the machine.
 *
 * With PID, the server's CPU time (utime + stime from /proc/PID/stat) over
 * the timed part is reported too. Output: one JSON object on stdout.
 * Only numeric 127.x addresses are accepted: benchmarks stay on loopback.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HDR 48
#define IO_TIMEOUT_MS 10000
#define MAX_DEPTH 1024

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(long pid)
{
    if (pid <= 0)
        return 0;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        die("cannot read %s", path);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        die("unexpected %s", path);
    unsigned long ut = 0, st = 0;
    /* fields after ")": state(3) ... utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %lu %lu", &ut, &st) != 2)
        die("unexpected %s", path);
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- a connection with a receive buffer --------------------------------- */

typedef struct {
    int fd;
    uint8_t *rbuf;
    size_t roff, rlen, rcap;
    uint32_t devid;
    uint32_t seq;
} conn_t;

static void wait_fd(int fd, short ev)
{
    struct pollfd p = {.fd = fd, .events = ev};
    int r = poll(&p, 1, IO_TIMEOUT_MS);
    if (r == 0)
        die("server did not answer within %d ms", IO_TIMEOUT_MS);
    if (r < 0 && errno != EINTR)
        die("poll: %s", strerror(errno));
}

static void send_all(conn_t *c, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            wait_fd(c->fd, POLLOUT);
            continue;
        }
        if (w <= 0)
            die("send: %s", w < 0 ? strerror(errno) : "closed");
        p += w;
        n -= (size_t)w;
    }
}

/* Makes n bytes available at c->rbuf + c->roff. */
static const uint8_t *need(conn_t *c, size_t n)
{
    if (c->rlen - c->roff >= n) {
        const uint8_t *p = c->rbuf + c->roff;
        c->roff += n;
        return p;
    }
    if (c->roff > 0) {
        memmove(c->rbuf, c->rbuf + c->roff, c->rlen - c->roff);
        c->rlen -= c->roff;
        c->roff = 0;
    }
    if (n > c->rcap) {
        size_t cap = c->rcap;
        while (cap < n)
            cap *= 2;
        c->rbuf = realloc(c->rbuf, cap);
        if (!c->rbuf)
            die("out of memory");
        c->rcap = cap;
    }
    while (c->rlen < n) {
        ssize_t r = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, MSG_DONTWAIT);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
            wait_fd(c->fd, POLLIN);
            continue;
        }
        if (r <= 0)
            die("server closed the connection (%s)", r < 0 ? strerror(errno) : "EOF");
        c->rlen += (size_t)r;
    }
    c->roff = n;
    return c->rbuf;
}

static void connect_import(conn_t *c, const char *host, int port, const char *busid)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1 || (ntohl(a.sin_addr.s_addr) >> 24) != 127)
        die("host must be a numeric 127.x address, got '%s'", host);
    if (strlen(busid) >= 32)
        die("busid too long: '%s'", busid);
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0)
        die("cannot connect to %s:%d: %s", host, port, strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->rcap = 1 << 20;
    c->rbuf = malloc(c->rcap);
    if (!c->rbuf)
        die("out of memory");
    uint8_t req[40] = {0x01, 0x11, 0x80, 0x03};
    memcpy(req + 8, busid, strlen(busid));
    send_all(c, req, sizeof req);
    const uint8_t *h = need(c, 8);
    if (h[0] != 0x01 || h[1] != 0x11 || h[2] != 0x00 || h[3] != 0x03)
        die("bad OP_REP_IMPORT header");
    uint32_t st = get32(h + 4);
    if (st != 0)
        die("import of %s refused, status %u", busid, st);
    const uint8_t *rec = need(c, 312);
    if (strncmp((const char *)rec + 0x100, busid, 32) != 0)
        die("import reply names another busid");
    c->devid = get32(rec + 0x120) << 16 | (get32(rec + 0x124) & 0xffff);
}

/* Appends a CMD_SUBMIT to out; returns its seqnum. */
static uint32_t submit(conn_t *c, uint8_t *out, size_t *len, uint32_t ep, uint32_t dir,
                       const uint8_t *data, uint32_t tbl, const uint8_t setup[8])
{
    uint8_t *h = out + *len;
    memset(h, 0, HDR);
    uint32_t seq = ++c->seq;
    put32(h, 1);
    put32(h + 4, seq);
    put32(h + 8, c->devid);
    put32(h + 12, dir);
    put32(h + 16, ep);
    put32(h + 20, dir ? 0x200 : 0);
    put32(h + 24, tbl);
    if (setup)
        memcpy(h + 40, setup, 8);
    *len += HDR;
    if (!dir && tbl) {
        memcpy(out + *len, data, tbl);
        *len += tbl;
    }
    return seq;
}

typedef struct {
    uint32_t seq;
    int32_t status;
    uint32_t actual;
    int in;
    const uint8_t *data; /* IN data, valid until the next need() */
} ret_t;

/* Reads one RET_SUBMIT; `dir_of` tells whether its seqnum was an IN URB. */
static ret_t recv_ret(conn_t *c, int (*dir_of)(uint32_t seq, void *ctx), void *ctx)
{
    const uint8_t *h = need(c, HDR);
    ret_t r = {.seq = get32(h + 4), .status = (int32_t)get32(h + 20), .actual = get32(h + 24)};
    if (get32(h) != 3)
        die("expected RET_SUBMIT (3), got command %u", get32(h));
    int in = dir_of(r.seq, ctx);
    if (in < 0)
        die("RET_SUBMIT for seqnum %u, which is not pending", r.seq);
    r.in = in;
    if (in && r.actual)
        r.data = need(c, r.actual);
    return r;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- echo --------------------------------------------------------------- */

typedef struct {
    uint8_t dir[MAX_DEPTH * 2 + 8]; /* by seqnum % size: 0 OUT, 1 IN, 2 free */
} pend_t;

static int pend_dir(uint32_t seq, void *ctx)
{
    pend_t *p = ctx;
    size_t i = seq % sizeof p->dir;
    int d = p->dir[i];
    if (d == 2)
        return -1;
    p->dir[i] = 2;
    return d;
}

static uint8_t g_payload[64];

static void echo_check(ret_t r, int in)
{
    if (r.status != 0)
        die("echo URB %u failed with status %d", r.seq, r.status);
    if (in && (r.actual != 64 || memcmp(r.data, g_payload, 64) != 0))
        die("echo URB %u: %u bytes, not the 64 bytes sent", r.seq, r.actual);
}

static int echo_rate(conn_t *c, double seconds, int depth, long pid)
{
    pend_t *p = malloc(sizeof *p);
    uint8_t *out = malloc((size_t)depth * (HDR + 64));
    if (!p || !out)
        die("out of memory");
    memset(p->dir, 2, sizeof p->dir);
    if (depth > MAX_DEPTH || depth < 2 || depth % 2)
        die("depth must be an even number 2..%d", MAX_DEPTH);
    int outstanding = 0;
    uint64_t done = 0, counted = 0;
    double t0 = 0, c0 = 0, t1 = 0;
    const uint64_t warmup = 2000;
    for (;;) {
        size_t len = 0;
        /* OUT/IN pairs, so the device always has a command to answer */
        while (outstanding + 2 <= depth && (t0 == 0 || now_s() - t0 < seconds)) {
            uint32_t s1 = submit(c, out, &len, 1, 0, g_payload, 64, NULL);
            uint32_t s2 = submit(c, out, &len, 1, 1, NULL, 64, NULL);
            p->dir[s1 % sizeof p->dir] = 0;
            p->dir[s2 % sizeof p->dir] = 1;
            outstanding += 2;
        }
        if (len)
            send_all(c, out, len);
        if (outstanding == 0)
            break;
        /* take what has arrived (at least one) before refilling */
        do {
            ret_t r = recv_ret(c, pend_dir, p);
            echo_check(r, r.in);
            outstanding--;
            done++;
            if (done == warmup) {
                t0 = now_s();
                c0 = cpu_s(pid);
            }
            if (t0 && t1 == 0)
                counted++;
        } while (outstanding > 0 && c->rlen - c->roff >= HDR);
        if (t0 && t1 == 0 && now_s() - t0 >= seconds) {
            t1 = now_s();
        }
    }
    double cpu = cpu_s(pid) - c0;
    double dt = t1 - t0;
    printf("{\"urbs\": %llu, \"seconds\": %.6f, \"server_cpu_s\": %.4f}\n", (unsigned long long)counted,
           dt, pid > 0 ? cpu : -1.0);
    free(p);
    free(out);
    return 0;
}

static int echo_lat(conn_t *c, int count, long pid)
{
    double *lat = malloc(sizeof(double) * (size_t)count * 2);
    pend_t *p = malloc(sizeof *p);
    if (!lat || !p)
        die("out of memory");
    memset(p->dir, 2, sizeof p->dir);
    uint8_t out[HDR + 64];
    int n = 0;
    double c0 = 0, t0 = 0;
    for (int i = 0; i < count + 50; i++) {
        if (i == 50) {
            c0 = cpu_s(pid);
            t0 = now_s();
        }
        for (int in = 0; in < 2; in++) {
            size_t len = 0;
            uint32_t s = submit(c, out, &len, 1, (uint32_t)in, g_payload, 64, NULL);
            p->dir[s % sizeof p->dir] = (uint8_t)in;
            double a = now_s();
            send_all(c, out, len);
            ret_t r = recv_ret(c, pend_dir, p);
            double b = now_s();
            if (r.seq != s)
                die("reply for seqnum %u, expected %u", r.seq, s);
            echo_check(r, in);
            if (i >= 50)
                lat[n++] = b - a;
        }
    }
    double dt = now_s() - t0, cpu = cpu_s(pid) - c0;
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    printf("{\"urbs\": %d, \"p50_ms\": %.4f, \"p99_ms\": %.4f, \"max_ms\": %.4f, \"seconds\": %.6f, "
           "\"server_cpu_s\": %.4f}\n",
           n, lat[n / 2] * 1e3, lat[(n * 99) / 100] * 1e3, lat[n - 1] * 1e3, dt, pid > 0 ? cpu : -1.0);
    free(lat);
    free(p);
    return 0;
}

/* ---- mass storage ------------------------------------------------------- */

static int any_in(uint32_t seq, void *ctx)
{
    const uint32_t *in_seqs = ctx;
    if (seq == in_seqs[0])
        return 0;
    if (seq == in_seqs[1] || seq == in_seqs[2])
        return 1;
    return -1;
}

/* One control transfer; returns the IN data length (data in c's buffer). */
static ret_t control(conn_t *c, const uint8_t setup[8], uint32_t len)
{
    uint8_t out[HDR];
    size_t n = 0;
    uint32_t s = submit(c, out, &n, 0, (setup[0] & 0x80) ? 1 : 0, NULL, len, setup);
    send_all(c, out, n);
    uint32_t seqs[3] = {0, 0, 0};
    if (setup[0] & 0x80)
        seqs[1] = s;
    else
        seqs[0] = s;
    ret_t r = recv_ret(c, any_in, seqs);
    if (r.status != 0)
        die("control request 0x%02x failed with status %d", setup[1], r.status);
    return r;
}

#define MSC_MAX_DEPTH 4

typedef struct {
    uint32_t tag, seq[3]; /* CBW, data, CSW */
    int left;             /* replies still due */
} cmd_t;

typedef struct {
    cmd_t q[MSC_MAX_DEPTH];
    int head, n;
} cmdq_t;

static int cmd_dir(uint32_t seq, void *ctx)
{
    cmdq_t *q = ctx;
    for (int k = 0; k < q->n; k++) {
        cmd_t *m = &q->q[(q->head + k) % MSC_MAX_DEPTH];
        for (int j = 0; j < 3; j++)
            if (m->seq[j] == seq)
                return j == 0 ? 0 : 1;
    }
    return -1;
}

static void msc_issue(conn_t *c, cmdq_t *q, int ep_out, int ep_in, uint32_t tag, uint32_t lba, int blocks)
{
    uint32_t nbytes = (uint32_t)blocks * 512u;
    uint8_t cbw[31] = {0x55, 0x53, 0x42, 0x43};
    for (int i = 0; i < 4; i++) {
        cbw[4 + i] = (uint8_t)(tag >> (8 * i));
        cbw[8 + i] = (uint8_t)(nbytes >> (8 * i));
    }
    cbw[12] = 0x80;
    cbw[14] = 10;
    uint8_t *cdb = cbw + 15;
    cdb[0] = 0x28;
    cdb[2] = (uint8_t)(lba >> 24);
    cdb[3] = (uint8_t)(lba >> 16);
    cdb[4] = (uint8_t)(lba >> 8);
    cdb[5] = (uint8_t)lba;
    cdb[7] = (uint8_t)(blocks >> 8);
    cdb[8] = (uint8_t)blocks;
    uint8_t out[3 * HDR + 31];
    size_t n = 0;
    cmd_t *m = &q->q[(q->head + q->n) % MSC_MAX_DEPTH];
    m->tag = tag;
    m->seq[0] = submit(c, out, &n, (uint32_t)ep_out, 0, cbw, 31, NULL);
    m->seq[1] = submit(c, out, &n, (uint32_t)ep_in, 1, NULL, nbytes, NULL);
    m->seq[2] = submit(c, out, &n, (uint32_t)ep_in, 1, NULL, 13, NULL);
    m->left = 3;
    q->n++;
    send_all(c, out, n);
}

static int msc_read(conn_t *c, double seconds, int blocks, int depth, long pid)
{
    if (depth < 1 || depth > MSC_MAX_DEPTH || blocks < 1 || blocks > 65535)
        die("msc-read: depth 1..%d, blocks 1..65535", MSC_MAX_DEPTH);
    /* endpoints from the configuration descriptor */
    uint8_t gd[8] = {0x80, 0x06, 0x00, 0x02, 0x00, 0x00, 0xff, 0x00};
    ret_t r = control(c, gd, 255);
    uint8_t cfg[255];
    memcpy(cfg, r.data, r.actual);
    int ep_in = -1, ep_out = -1;
    for (uint32_t o = 0; o + 2 <= r.actual && cfg[o] >= 2; o += cfg[o])
        if (cfg[o + 1] == 5 && o + 7 <= r.actual && (cfg[o + 3] & 3) == 2) {
            if ((cfg[o + 2] & 0x80) && ep_in < 0)
                ep_in = cfg[o + 2] & 0x0f;
            if (!(cfg[o + 2] & 0x80) && ep_out < 0)
                ep_out = cfg[o + 2] & 0x0f;
        }
    if (ep_in < 0 || ep_out < 0)
        die("the device has no bulk IN/OUT pair");
    uint8_t sc[8] = {0x00, 0x09, cfg[5], 0, 0, 0, 0, 0};
    control(c, sc, 0);
    uint32_t nbytes = (uint32_t)blocks * 512u, tag = 0, lba = 0;
    uint64_t bytes = 0;
    double t0 = 0, c0 = 0;
    int cmds = 0;
    bool stop = false;
    cmdq_t q = {0};
    for (;;) {
        /* keep `depth` commands queued: the device runs one at a time and
         * NAKs the next CBW until the running command's CSW is taken */
        while (!stop && q.n < depth) {
            msc_issue(c, &q, ep_out, ep_in, ++tag, lba, blocks);
            lba += (uint32_t)blocks;
            if (lba + (uint32_t)blocks > 65536)
                lba = 0; /* wrap within the first 32 MiB: both disks are at least that big */
        }
        if (q.n == 0)
            break;
        ret_t x = recv_ret(c, cmd_dir, &q);
        cmd_t *m = NULL;
        int which = -1;
        for (int k = 0; k < q.n && !m; k++) {
            cmd_t *mk = &q.q[(q.head + k) % MSC_MAX_DEPTH];
            for (int j = 0; j < 3; j++)
                if (mk->seq[j] == x.seq) {
                    m = mk;
                    which = j;
                }
        }
        if (!m)
            die("reply %u belongs to no queued command", x.seq);
        if (x.status != 0)
            die("READ(10) tag %u: URB %u failed with status %d", m->tag, x.seq, x.status);
        m->seq[which] = 0; /* each reply is taken once */
        if (which == 1) {
            if (x.actual != nbytes)
                die("READ(10) tag %u: %u of %u bytes", m->tag, x.actual, nbytes);
            if (t0)
                bytes += x.actual;
        } else if (which == 2 && (x.actual != 13 || le32(x.data) != 0x53425355u || le32(x.data + 4) != m->tag ||
                                  x.data[12] != 0)) {
            die("READ(10) tag %u: bad CSW", m->tag);
        }
        m->left--;
        while (q.n > 0 && q.q[q.head].left == 0) {
            q.head = (q.head + 1) % MSC_MAX_DEPTH;
            q.n--;
            if (++cmds == 3) { /* the first commands pay for the configuration */
                t0 = now_s();
                c0 = cpu_s(pid);
            }
            if (t0 && now_s() - t0 >= seconds)
                stop = true;
        }
    }
    double dt = now_s() - t0, cpu = cpu_s(pid) - c0;
    printf("{\"bytes\": %llu, \"seconds\": %.6f, \"server_cpu_s\": %.4f}\n", (unsigned long long)bytes, dt,
           pid > 0 ? cpu : -1.0);
    return 0;
}

/* ---- null server -------------------------------------------------------- */

static void read_exact(int fd, uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = recv(fd, p, n, 0);
        if (r <= 0)
            exit(0); /* the client is gone: this forked session ends */
        p += r;
        n -= (size_t)r;
    }
}

static void write_exact(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            exit(0);
        p += w;
        n -= (size_t)w;
    }
}

static void null_session(int fd)
{
    uint8_t req[40], rep[8 + 312] = {0x01, 0x11, 0x00, 0x03};
    read_exact(fd, req, sizeof req);
    memcpy(rep + 8 + 0x100, req + 8, 32);
    put32(rep + 8 + 0x120, 1);
    put32(rep + 8 + 0x124, 2);
    put32(rep + 8 + 0x128, 2); /* full speed */
    write_exact(fd, rep, sizeof rep);
    static uint8_t last[65536 + HDR];
    uint32_t last_len = 0;
    for (;;) {
        uint8_t h[HDR];
        read_exact(fd, h, HDR);
        uint32_t seq = get32(h + 4), dir = get32(h + 12), tbl = get32(h + 24);
        if (get32(h) != 1 || tbl > 65536)
            exit(0);
        uint8_t *r = last; /* header goes right before the IN data */
        if (!dir && tbl)
            read_exact(fd, last + HDR, tbl), last_len = tbl;
        memset(r, 0, HDR);
        put32(r, 3);
        put32(r + 4, seq);
        uint32_t actual = dir ? (tbl < last_len ? tbl : last_len) : tbl;
        put32(r + 24, actual);
        write_exact(fd, r, HDR + (dir ? actual : 0));
    }
}

static int listen_loopback(void);

static int null_server(void)
{
    int lfd = listen_loopback();
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pid_t child = fork();
        if (child == 0) {
            close(lfd);
            null_session(fd);
            exit(0);
        }
        close(fd);
    }
}

/* ---- delay relay --------------------------------------------------------- */

typedef struct chunk {
    struct chunk *next;
    double due;
    size_t len, off;
    uint8_t data[];
} chunk_t;

typedef struct {
    int from, to;
    chunk_t *head, *tail;
    bool eof, shut;
} dir_t;

static int listen_loopback(void)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t al = sizeof a;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 4) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &al) != 0)
        die("cannot listen: %s", strerror(errno));
    signal(SIGCHLD, SIG_IGN); /* sessions are forked children: no zombies */
    printf("listening on 127.0.0.1:%d\n", ntohs(a.sin_port));
    fflush(stdout);
    return lfd;
}

static void relay_session(int client, int target_port, double delay)
{
    int server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)target_port)};
    a.sin_addr.s_addr = htonl(0x7f000001);
    if (server < 0 || connect(server, (struct sockaddr *)&a, sizeof a) != 0)
        exit(1);
    int one = 1;
    setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    dir_t d[2] = {{.from = client, .to = server}, {.from = server, .to = client}};
    static uint8_t buf[1 << 18];
    for (;;) {
        double now = now_s(), next = -1;
        struct pollfd p[2];
        for (int i = 0; i < 2; i++) {
            /* forward what is due, in order */
            while (d[i].head && d[i].head->due <= now) {
                chunk_t *c = d[i].head;
                ssize_t w = send(d[i].to, c->data + c->off, c->len - c->off, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (w < 0 && (errno == EAGAIN || errno == EINTR))
                    break;
                if (w < 0)
                    exit(0);
                c->off += (size_t)w;
                if (c->off < c->len)
                    break;
                d[i].head = c->next;
                if (!d[i].head)
                    d[i].tail = NULL;
                free(c);
            }
            if (d[i].eof && !d[i].head && !d[i].shut) {
                shutdown(d[i].to, SHUT_WR);
                d[i].shut = true;
            }
            if (d[i].head && (next < 0 || d[i].head->due < next))
                next = d[i].head->due;
            p[i] = (struct pollfd){.fd = d[i].from, .events = d[i].eof ? 0 : POLLIN};
        }
        if (d[0].shut && d[1].shut)
            exit(0);
        int timeout = -1;
        if (next >= 0) {
            double ms = (next - now) * 1e3;
            /* a write the peer refused is retried every millisecond */
            timeout = ms <= 0 ? 1 : (int)(ms + 0.999);
        }
        if (poll(p, 2, timeout) < 0 && errno != EINTR)
            exit(1);
        for (int i = 0; i < 2; i++) {
            if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t r = recv(d[i].from, buf, sizeof buf, MSG_DONTWAIT);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (r <= 0) {
                d[i].eof = true;
                continue;
            }
            chunk_t *c = malloc(sizeof *c + (size_t)r);
            if (!c)
                exit(1);
            c->next = NULL;
            c->due = now_s() + delay;
            c->len = (size_t)r;
            c->off = 0;
            memcpy(c->data, buf, (size_t)r);
            if (d[i].tail)
                d[i].tail->next = c;
            else
                d[i].head = c;
            d[i].tail = c;
        }
    }
}

static int relay(int target_port, long delay_us)
{
    if (target_port <= 0 || target_port > 65535 || delay_us < 0 || delay_us > 10000000)
        die("relay: bad target port or delay");
    int lfd = listen_loopback();
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            continue;
        if (fork() == 0) {
            close(lfd);
            relay_session(fd, target_port, (double)delay_us / 1e6);
            exit(0);
        }
        close(fd);
    }
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "null-server") == 0)
        return null_server();
    if (argc == 4 && strcmp(argv[1], "relay") == 0)
        return relay(atoi(argv[2]), atol(argv[3]));
    if (argc < 6)
        die("usage: loadgen echo-rate|echo-lat|msc-read HOST PORT BUSID ARGS... (see the source)");
    const char *mode = argv[1];
    int port = atoi(argv[3]);
    if (port <= 0 || port > 65535)
        die("bad port '%s'", argv[3]);
    g_payload[0] = 0x80;
    for (int i = 1; i < 64; i++)
        g_payload[i] = (uint8_t)i;
    conn_t c;
    connect_import(&c, argv[2], port, argv[4]);
    if (strcmp(mode, "echo-rate") == 0 && argc >= 7)
        return echo_rate(&c, atof(argv[5]), atoi(argv[6]), argc > 7 ? atol(argv[7]) : 0);
    if (strcmp(mode, "echo-lat") == 0)
        return echo_lat(&c, atoi(argv[5]), argc > 6 ? atol(argv[6]) : 0);
    if (strcmp(mode, "msc-read") == 0 && argc >= 8)
        return msc_read(&c, atof(argv[5]), atoi(argv[6]), atoi(argv[7]), argc > 8 ? atol(argv[8]) : 0);
    die("unknown mode or missing arguments: %s", mode);
}
