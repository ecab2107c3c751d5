/* http_curl.c - the agent's HTTP port on libcurl: one GET, optional Range,
 * body streamed to the sink, final status reported once before the body.
 * With lock hooks the caller's lock is dropped for the whole transfer and
 * retaken only around the sink's callbacks. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "agent_posix.h"
#include "fleet_agent/err.h"

typedef struct {
    CURL *curl;
    const fleet_http_sink_t *sink;
    const fleet_lock_hooks_t *lock; /* held around sink calls only */
    int64_t rate;          /* bytes/s cap, 0 none */
    uint64_t t0_ns, got;   /* pacing: start of the transfer, body bytes since */
    bool reported;
    bool stopped; /* a sink callback asked to stop */
    uint64_t range_start;
    int64_t cr_total, content_length;
    bool have_cr;
} xfer_t;

/* Headers of every response in a redirect chain arrive here; keep only the
 * last response's (a new status line resets them). */
static size_t on_header(char *buf, size_t size, size_t n, void *arg)
{
    xfer_t *x = arg;
    size_t len = size * n;
    char line[256];
    size_t k = len < sizeof line - 1 ? len : sizeof line - 1;
    memcpy(line, buf, k);
    line[k] = '\0';
    if (strncmp(line, "HTTP/", 5) == 0) {
        x->have_cr = false;
        x->cr_total = x->content_length = -1;
        x->range_start = 0;
    } else if (strncasecmp(line, "Content-Range:", 14) == 0) {
        unsigned long long a, b, total;
        const char *p = line + 14;
        while (*p == ' ') p++;
        if (sscanf(p, "bytes %llu-%llu/%llu", &a, &b, &total) == 3) {
            x->have_cr = true;
            x->range_start = a;
            x->cr_total = (int64_t)total;
        } else if (sscanf(p, "bytes */%llu", &total) == 1) {
            x->cr_total = (int64_t)total; /* 416 tells the real size this way */
        }
    } else if (strncasecmp(line, "Content-Length:", 15) == 0) {
        x->content_length = strtoll(line + 15, NULL, 10);
    }
    return len;
}

static void relock(const xfer_t *x)
{
    if (x->lock && x->lock->lock) x->lock->lock(x->lock->arg);
}

static void unlock(const xfer_t *x)
{
    if (x->lock && x->lock->unlock) x->lock->unlock(x->lock->arg);
}

static bool stop_requested(const xfer_t *x)
{
    return x->sink->stop_requested && x->sink->stop_requested(x->sink->arg);
}

/* The thread of get() holds the lock only outside curl_easy_perform:
 * locked says on which side of it we are. */
static int report(xfer_t *x, bool locked)
{
    if (x->reported) return 0;
    x->reported = true;
    long status = 0;
    curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &status);
    fleet_http_response_t rsp = {
        .status = (int)status,
        .body_offset = status == 206 && x->have_cr ? x->range_start : 0,
        .total = x->cr_total >= 0 ? x->cr_total : (status == 200 ? x->content_length : -1),
    };
    int stop = 0;
    if (x->sink->on_response) {
        if (!locked) relock(x);
        stop = x->sink->on_response(x->sink->arg, &rsp);
        if (!locked) unlock(x);
    }
    if (stop) x->stopped = true;
    return stop ? 1 : 0;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#define PACE_SLICE_NS 50000000u /* a cancel waits at most this long for the pacing */

/* libcurl's own cap (CURLOPT_MAX_RECV_SPEED_LARGE) lets a loopback transfer
 * through in bursts far above the rate (seen with 7.88), so the body is also
 * paced here: a byte is taken no earlier than the cap allows. The sleep is
 * cut in slices so a stop request ends it early; false then. */
static bool pace(xfer_t *x, size_t len)
{
    x->got += len;
    uint64_t due_ns = (uint64_t)((double)x->got * 1e9 / (double)x->rate);
    for (;;) {
        if (stop_requested(x)) return false;
        uint64_t now = mono_ns() - x->t0_ns;
        if (due_ns <= now) return true;
        uint64_t wait = due_ns - now < PACE_SLICE_NS ? due_ns - now : PACE_SLICE_NS;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)wait};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
    }
}

static size_t on_body(char *buf, size_t size, size_t n, void *arg)
{
    xfer_t *x = arg;
    size_t len = size * n;
    if (report(x, false)) return 0;
    if (x->rate > 0 && !pace(x, len)) {
        x->stopped = true;
        return 0;
    }
    int stop = 0;
    if (x->sink->on_data) {
        relock(x);
        stop = x->sink->on_data(x->sink->arg, (const uint8_t *)buf, len);
        unlock(x);
    }
    if (stop) {
        x->stopped = true;
        return 0; /* curl turns a short write into CURLE_WRITE_ERROR */
    }
    return len;
}

/* libcurl calls this about once a second even while no byte arrives: a stop
 * request does not wait for the network. */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    xfer_t *x = arg;
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    if (!stop_requested(x)) return 0;
    x->stopped = true;
    return 1;
}

static int http_get(void *ctx, const char *url, uint64_t range_start, const fleet_http_sink_t *sink)
{
    const fleet_curl_http_t *cfg = ctx;
    if (!url || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0))
        return FLEET_ERR_INVALID;
    xfer_t x = {.sink = sink, .lock = cfg ? &cfg->lock : NULL, .cr_total = -1, .content_length = -1,
                .rate = cfg ? cfg->max_recv_bytes_per_s : 0, .t0_ns = mono_ns()};
    x.curl = curl_easy_init();
    if (!x.curl) return FLEET_ERR_NO_MEM;
    char range[32];
    snprintf(range, sizeof range, "%" PRIu64 "-", range_start);
    curl_easy_setopt(x.curl, CURLOPT_URL, url);
    curl_easy_setopt(x.curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(x.curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(x.curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(x.curl, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(x.curl, CURLOPT_NOSIGNAL, 1L); /* no SIGALRM games: many dongles, many threads */
    curl_easy_setopt(x.curl, CURLOPT_CONNECTTIMEOUT, cfg && cfg->connect_timeout_s ? cfg->connect_timeout_s : 10L);
    curl_easy_setopt(x.curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(x.curl, CURLOPT_LOW_SPEED_TIME, cfg && cfg->stall_timeout_s ? cfg->stall_timeout_s : 30L);
    if (cfg && cfg->ca_file) curl_easy_setopt(x.curl, CURLOPT_CAINFO, cfg->ca_file);
    if (x.rate > 0) {
        curl_easy_setopt(x.curl, CURLOPT_MAX_RECV_SPEED_LARGE, (curl_off_t)x.rate);
        /* small reads, so the pacing below is smooth even at a few KiB/s */
        curl_easy_setopt(x.curl, CURLOPT_BUFFERSIZE, x.rate < 16384 ? 1024L : 16384L);
    }
    if (range_start) curl_easy_setopt(x.curl, CURLOPT_RANGE, range);
    curl_easy_setopt(x.curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(x.curl, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(x.curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(x.curl, CURLOPT_WRITEDATA, &x);
    if (sink->stop_requested) {
        curl_easy_setopt(x.curl, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(x.curl, CURLOPT_XFERINFODATA, &x);
        curl_easy_setopt(x.curl, CURLOPT_NOPROGRESS, 0L);
    }
    unlock(&x); /* the network wait: others may use the agent meanwhile */
    CURLcode cc = curl_easy_perform(x.curl);
    relock(&x);
    int rc;
    if (x.stopped)
        rc = FLEET_ERR_ABORTED;
    else if (cc == CURLE_OK)
        rc = report(&x, true) ? FLEET_ERR_ABORTED : FLEET_OK; /* bodiless responses (416, 204) */
    else if (cc == CURLE_URL_MALFORMAT || cc == CURLE_UNSUPPORTED_PROTOCOL)
        rc = FLEET_ERR_INVALID;
    else
        rc = FLEET_ERR_NET; /* connect refused, reset, short body (PARTIAL_FILE), stall */
    curl_easy_cleanup(x.curl);
    return rc;
}

const fleet_http_ops_t fleet_curl_http_ops = {.get = http_get};
