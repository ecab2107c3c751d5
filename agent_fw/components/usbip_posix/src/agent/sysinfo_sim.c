/*
 * sysinfo_sim.c - what a simulated dongle reports about itself. The heap it
 * reports is a simulated chip heap minus its share of what the process's
 * resident memory grew by since this dongle first asked, so a leak shows up
 * as falling free heap, as it would on the chip.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent_runtime_posix.h"
#include "fleet_agent/err.h"

uint64_t fleet_process_rss(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    unsigned long size = 0, resident = 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    return n == 2 ? (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
}

static void sim_mac(void *ctx, uint8_t mac[6])
{
    memcpy(mac, ((fleet_sim_sys_t *)ctx)->mac, 6);
}

static int sim_ip(void *ctx, char *buf, size_t len)
{
    fleet_sim_sys_t *s = ctx;
    if (!s->ip[0])
        return FLEET_ERR_NOT_FOUND;
    snprintf(buf, len, "%s", s->ip);
    return FLEET_OK;
}

static void sim_heap(void *ctx, fleet_heap_info_t *out)
{
    fleet_sim_sys_t *s = ctx;
    int n = s->dongles && *s->dongles > 0 ? *s->dongles : 1;
    uint64_t rss = fleet_process_rss();
    if (!s->rss_base)
        s->rss_base = rss;
    uint64_t share = rss > s->rss_base ? (rss - s->rss_base) / (uint64_t)n : 0;
    uint64_t total = s->heap_total ? s->heap_total : 8u * 1024u * 1024u; /* an S3 with 8 MiB PSRAM */
    out->free = share < total ? total - share : 0;
    if (s->min_free == 0 || out->free < s->min_free)
        s->min_free = out->free;
    out->min_free = s->min_free;
    out->have_dma = false;
}

static bool sim_rssi(void *ctx, int *dbm)
{
    (void)ctx;
    (void)dbm;
    return false; /* no radio */
}

static int64_t sim_unix_now(void *ctx)
{
    (void)ctx;
    return (int64_t)time(NULL);
}

const fleet_sysinfo_ops_t fleet_sim_sys_ops = {sim_mac, sim_ip, sim_heap, sim_rssi, sim_unix_now};
