/* test_http_curl.c - the libcurl HTTP port against a real Range-capable
 * server on 127.0.0.1 (range_server.py). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent_posix.h"
#include "fleet_agent/err.h"
#include "testlib.h"
#include "testutil.h"

#define FILE_LEN 50000

static uint8_t file[FILE_LEN];

typedef struct {
    int responses;
    fleet_http_response_t rsp;
    uint8_t body[FILE_LEN + 100];
    size_t len;
    size_t stop_after; /* on_data returns 1 once this many bytes arrived (0 = never) */
    const bool *must_hold; /* the caller's lock, which every sink call must hold (NULL: none) */
} sink_state_t;

static int on_response(void *arg, const fleet_http_response_t *rsp)
{
    sink_state_t *s = arg;
    if (s->must_hold) TL_CHECK(*s->must_hold);
    s->responses++;
    s->rsp = *rsp;
    return rsp->status >= 400; /* mimic the OTA machine: no body for errors */
}

static int on_data(void *arg, const uint8_t *data, size_t len)
{
    sink_state_t *s = arg;
    TL_CHECK(s->responses == 1); /* the response always comes first */
    if (s->must_hold) TL_CHECK(*s->must_hold);
    if (s->len + len > sizeof s->body) return 1;
    memcpy(s->body + s->len, data, len);
    s->len += len;
    return s->stop_after && s->len >= s->stop_after;
}

static tu_server_t srv;
static fleet_curl_http_t http = {.connect_timeout_s = 5, .stall_timeout_s = 5};

static int get(const char *path, uint64_t start, sink_state_t *s)
{
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", srv.port, path);
    fleet_http_sink_t sink = {.on_response = on_response, .on_data = on_data, .arg = s};
    return fleet_curl_http_ops.get(&http, url, start, &sink);
}

static void test_full_and_range(void)
{
    sink_state_t *s = calloc(1, sizeof *s);
    TL_EQ_INT(get("/fw/img.bin", 0, s), FLEET_OK);
    TL_EQ_INT(s->responses, 1);
    TL_EQ_INT(s->rsp.status, 200);
    TL_EQ_INT(s->rsp.body_offset, 0);
    TL_EQ_INT(s->rsp.total, FILE_LEN);
    TL_EQ_INT(s->len, FILE_LEN);
    TL_EQ_MEM(s->body, file, FILE_LEN);

    memset(s, 0, sizeof *s);
    TL_EQ_INT(get("/fw/img.bin", 12345, s), FLEET_OK);
    TL_EQ_INT(s->rsp.status, 206);
    TL_EQ_INT(s->rsp.body_offset, 12345);
    TL_EQ_INT(s->rsp.total, FILE_LEN);
    TL_EQ_INT(s->len, FILE_LEN - 12345);
    TL_EQ_MEM(s->body, file + 12345, FILE_LEN - 12345);
    TL_EQ_INT(tu_server_count(&srv, "range=bytes=12345- 206"), 1);
    free(s);
}

static void test_server_without_range(void)
{
    sink_state_t *s = calloc(1, sizeof *s);
    TL_EQ_INT(get("/ignore-range/img.bin", 12345, s), FLEET_OK);
    TL_EQ_INT(s->rsp.status, 200);
    TL_EQ_INT(s->rsp.body_offset, 0); /* the body starts at byte 0, whatever was asked */
    TL_EQ_INT(s->len, FILE_LEN);
    TL_EQ_INT(tu_server_count(&srv, "/ignore-range/img.bin range=bytes=12345- 200"), 1);
    free(s);
}

static void test_416_and_errors(void)
{
    sink_state_t *s = calloc(1, sizeof *s);
    TL_EQ_INT(get("/fw/img.bin", FILE_LEN, s), FLEET_ERR_ABORTED); /* sink refuses >= 400 */
    TL_EQ_INT(s->responses, 1);
    TL_EQ_INT(s->rsp.status, 416);
    TL_EQ_INT(s->rsp.total, FILE_LEN); /* from "Content-Range: bytes *\/N" */
    TL_EQ_INT(s->len, 0);

    memset(s, 0, sizeof *s);
    TL_EQ_INT(get("/fw/missing.bin", 0, s), FLEET_ERR_ABORTED);
    TL_EQ_INT(s->rsp.status, 404);

    /* the server drops the connection after 20000 bytes */
    memset(s, 0, sizeof *s);
    TL_EQ_INT(get("/cut/20000/img.bin", 0, s), FLEET_ERR_NET);
    TL_EQ_INT(s->rsp.status, 200);
    TL_EQ_INT(s->len, 20000);
    TL_EQ_MEM(s->body, file, 20000);

    /* the sink stops the transfer */
    memset(s, 0, sizeof *s);
    s->stop_after = 8000;
    TL_EQ_INT(get("/fw/img.bin", 0, s), FLEET_ERR_ABORTED);
    TL_CHECK(s->len >= 8000 && s->len < FILE_LEN);

    /* nobody listening */
    memset(s, 0, sizeof *s);
    fleet_http_sink_t sink = {.on_response = on_response, .on_data = on_data, .arg = s};
    TL_EQ_INT(fleet_curl_http_ops.get(&http, "http://127.0.0.1:1/fw/img.bin", 0, &sink), FLEET_ERR_NET);
    TL_EQ_INT(s->responses, 0);
    TL_EQ_INT(fleet_curl_http_ops.get(&http, "file:///etc/passwd", 0, &sink), FLEET_ERR_INVALID);
    TL_EQ_INT(fleet_curl_http_ops.get(&http, "http://", 0, &sink), FLEET_ERR_INVALID);
    free(s);
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* --ota-rate: the simulated Wi-Fi link. 50000 bytes at 100000 B/s take half a
 * second, not the millisecond loopback would. */
static void test_rate_cap(void)
{
    sink_state_t *s = calloc(1, sizeof *s);
    fleet_curl_http_t slow = http;
    slow.max_recv_bytes_per_s = 100000;
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/fw/img.bin", srv.port);
    fleet_http_sink_t sink = {.on_response = on_response, .on_data = on_data, .arg = s};
    double t0 = mono_s();
    TL_EQ_INT(fleet_curl_http_ops.get(&slow, url, 0, &sink), FLEET_OK);
    double took = mono_s() - t0;
    TL_EQ_INT(s->len, FILE_LEN);
    TL_EQ_MEM(s->body, file, FILE_LEN);
    TL_CHECK(took >= 0.45);
    TL_CHECK(took < 3.0);
    free(s);
}

/* The big lock of fleet-dongle, as a flag that catches double locks and
 * unlocks; the thread calling get() holds it. */
static bool held;
static int lock_calls;
static void t_lock(void *arg)
{
    (void)arg;
    TL_CHECK(!held);
    held = true;
    lock_calls++;
}
static void t_unlock(void *arg)
{
    (void)arg;
    TL_CHECK(held);
    held = false;
}

static atomic_int stop_flag;
static int stop_requested(void *arg)
{
    (void)arg;
    return atomic_load(&stop_flag);
}
static void *stop_later(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 300 * 1000000L};
    nanosleep(&ts, NULL);
    atomic_store(&stop_flag, 1);
    return NULL;
}

/* The OTA job's view: the lock is dropped while the transfer waits and held
 * in every sink call; a stop request from another thread ends a slow paced
 * download within a pacing slice, not after the whole file (6 s here). */
static void test_lock_hooks_and_stop(void)
{
    sink_state_t *s = calloc(1, sizeof *s);
    s->must_hold = &held;
    fleet_curl_http_t slow = http;
    slow.max_recv_bytes_per_s = 8000;
    slow.lock = (fleet_lock_hooks_t){t_lock, t_unlock, NULL};
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/fw/img.bin", srv.port);
    fleet_http_sink_t sink = {.on_response = on_response, .on_data = on_data, .arg = s,
                              .stop_requested = stop_requested};
    atomic_store(&stop_flag, 0);
    held = true;
    lock_calls = 0;
    pthread_t th;
    TL_EQ_INT(pthread_create(&th, NULL, stop_later, NULL), 0);
    double t0 = mono_s();
    TL_EQ_INT(fleet_curl_http_ops.get(&slow, url, 0, &sink), FLEET_ERR_ABORTED);
    double took = mono_s() - t0;
    pthread_join(th, NULL);
    TL_CHECK(held); /* given back as it was taken */
    TL_CHECK(lock_calls >= 2); /* retaken for the response and the data */
    TL_EQ_INT(s->responses, 1);
    TL_CHECK(s->len > 0 && s->len < FILE_LEN);
    TL_EQ_MEM(s->body, file, s->len);
    TL_CHECK(took >= 0.25);
    TL_CHECK(took < 1.5);
    held = false;
    free(s);
}

int main(void)
{
    char dir[64];
    tu_tmpdir(dir, sizeof dir);
    for (int i = 0; i < FILE_LEN; i++) file[i] = (uint8_t)(i * 31 + (i >> 8));
    tu_write_file(dir, "img.bin", file, FILE_LEN);
    if (!tu_server_start(&srv, dir)) {
        fprintf(stderr, "range_server.py did not start\n");
        return 1;
    }
    TL_RUN(test_full_and_range);
    TL_RUN(test_server_without_range);
    TL_RUN(test_416_and_errors);
    TL_RUN(test_rate_cap);
    TL_RUN(test_lock_hooks_and_stop);
    tu_server_stop(&srv);
    tu_rmrf(dir);
    return TL_RESULT();
}
