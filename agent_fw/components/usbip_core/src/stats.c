/*
 * stats.c - per-device counters. Latency is kept in a fixed log2 histogram
 * (bucket b holds [2^b, 2^(b+1)) microseconds) so percentiles cost no memory
 * per URB; a percentile is reported as its bucket's upper bound.
 */
#include "server_priv.h"

static int bucket_of(uint64_t us)
{
    int b = 0;
    while (us > 1 && b < USBIP_LAT_BUCKETS - 1) {
        us >>= 1;
        b++;
    }
    return b;
}

void stats_complete(usbip_server_t *srv, device_t *d, const urb_t *u, int32_t status)
{
    if (!d)
        return;
    dev_stats_t *st = &d->st;
    st->urbs++;
    if (u->dir == USBIP_DIR_IN)
        st->bytes_in += u->done;
    else
        st->bytes_out += u->done;
    switch (status) {
    case 0:
    case USBIP_ECONNRESET:
        break;
    case USBIP_EPIPE: st->errors.stall++; break;
    case USBIP_EPROTO:
    case USBIP_EILSEQ:
    case USBIP_ETIME: st->errors.proto++; break;
    case USBIP_EOVERFLOW: st->errors.overflow++; break;
    case USBIP_ENODEV:
    case USBIP_ESHUTDOWN: st->errors.nodev++; break;
    case USBIP_ETIMEDOUT: st->errors.timeout++; break;
    default: st->errors.other++; break;
    }
    uint64_t now = srv_now(srv);
    uint64_t lat = now > u->t_submit_us ? now - u->t_submit_us : 0;
    st->hist[bucket_of(lat)]++;
    if (lat > st->lat_max)
        st->lat_max = lat > UINT32_MAX ? UINT32_MAX : (uint32_t)lat;
}

static uint32_t percentile(const dev_stats_t *st, uint64_t total, unsigned pct)
{
    if (total == 0)
        return 0;
    uint64_t want = (total * pct + 99) / 100, seen = 0;
    for (int b = 0; b < USBIP_LAT_BUCKETS; b++) {
        seen += st->hist[b];
        if (seen >= want) {
            uint64_t upper = (b + 1 >= 32) ? UINT32_MAX : ((uint64_t)1 << (b + 1));
            return upper > st->lat_max ? st->lat_max : (uint32_t)upper;
        }
    }
    return st->lat_max;
}

void stats_fill(const device_t *d, usbip_dev_stats_t *out)
{
    const dev_stats_t *st = &d->st;
    out->urbs = st->urbs;
    out->bytes_in = st->bytes_in;
    out->bytes_out = st->bytes_out;
    out->unlinks = st->unlinks;
    out->queue_depth = d->queued;
    out->errors = st->errors;
    uint64_t total = 0;
    for (int b = 0; b < USBIP_LAT_BUCKETS; b++)
        total += st->hist[b];
    out->latency_p50_us = percentile(st, total, 50);
    out->latency_p99_us = percentile(st, total, 99);
    out->latency_max_us = st->lat_max;
}
