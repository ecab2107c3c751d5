/*
 * port/http.h - a streaming HTTP(S) GET with an optional Range start.
 *
 * One blocking call per request; the owner runs OTA on a task/thread of its
 * own. The port follows redirects and then reports the final response
 * exactly once through on_response() before any on_data(); a response with
 * no body still gets its on_response(). Either callback returning non-zero
 * stops the transfer and get() returns FLEET_ERR_ABORTED.
 *
 * esp32: esp_http_client (open/fetch_headers/read) with "Range: bytes=N-";
 * posix: libcurl.
 */
#ifndef FLEET_AGENT_PORT_HTTP_H
#define FLEET_AGENT_PORT_HTTP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int status;            /* final HTTP status: 200, 206, 416, 404, ... */
    uint64_t body_offset;  /* offset in the resource of the first body byte:
                              the Content-Range start for 206, else 0 */
    int64_t total;         /* size of the whole resource if known (Content-Range
                              total, or Content-Length of a 200), else -1 */
} fleet_http_response_t;

typedef struct {
    int (*on_response)(void *arg, const fleet_http_response_t *rsp);
    int (*on_data)(void *arg, const uint8_t *data, size_t len);
    void *arg;
    /* Optional: non-zero stops the transfer too. The port asks it while it
     * waits (network, rate pacing), possibly from the job's task without
     * the owner's lock, so it may only read state that is safe to read
     * from anywhere (an atomic cancel flag). */
    int (*stop_requested)(void *arg);
} fleet_http_sink_t;

typedef struct {
    /* GET url; range_start > 0 sends "Range: bytes=<range_start>-".
     * Returns FLEET_OK when the body ended as the server framed it (the caller
     * still checks the byte count: a server may close early), FLEET_ERR_NET on
     * connect/transport failure or stall, FLEET_ERR_ABORTED if a callback
     * stopped it, FLEET_ERR_INVALID for an unusable URL. */
    int (*get)(void *ctx, const char *url, uint64_t range_start, const fleet_http_sink_t *sink);
} fleet_http_ops_t;

#endif /* FLEET_AGENT_PORT_HTTP_H */
