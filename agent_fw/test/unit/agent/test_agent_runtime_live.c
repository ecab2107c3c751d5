/*
 * test_agent_runtime_live.c - agent_live: N agents with their real posix
 * ports (libmosquitto to a real broker, the mDNS responder) over USB/IP
 * cores that run on the core's fakes (one fake test device each), in one
 * epoll loop. The end-to-end tests in tests/agent drive it until fleet-dongle
 * hosts the agent itself.
 *
 *   agent_live --mqtt mqtt://127.0.0.1:1883 [--dongles N] [--base-mac HEX12]
 *              [--base-address 127.1.0.1] [--telemetry-interval S] [--mdns]
 *              [--enforce-grants] [--state-dir DIR] [--ota-pubkey PEM]
 * With --ota-pubkey (needs --state-dir) each dongle has file-backed OTA slots
 * and a reboot boots the slot the emulated bootloader picks.
 * Prints "ready <n>" once every agent has been created, "online <id>" when
 * each first connects. SIGTERM/SIGINT: offline(shutdown) and exit 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "agent_posix.h"
#include "agent_runtime_posix.h"
#include "../core/fakes.h"
#include "fleet_agent/agent.h"
#include "fleet_agent/err.h"
#include "fleet_agent/text.h"

typedef struct live live_t;

typedef struct {
    live_t *L;
    int index;
    world_t w;
    int dev;                 /* fake device index */
    fleet_sim_sys_t sys;
    fleet_mosq_t *mosq;
    fleet_files_kv_t *kv;
    fleet_agent_t *agent;
    fleet_files_store_t *store;   /* OTA, when enabled */
    fleet_curl_http_t http;
    fleet_ota_t *ota;
    char running[FLEET_VERSION_MAX];
    bool was_online;
    bool reboot;
    char reboot_reason[160];
} sim_t;

struct live {
    int ep;
    sim_t **sims;
    int n;
    const char *url;
    uint32_t telemetry;
    bool enforce;
    fleet_mdns_t *mdns;
    const char *state_dir;
    int count;
    uint8_t *pubkey;
    size_t pubkey_len;
};

/* epoll data: pointer to one of these */
typedef struct {
    int kind; /* 0 mosq, 1 mdns, 2 signal */
    void *obj;
} watch_t;

static uint64_t now_ms(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
static const fleet_clock_ops_t k_clock = {now_ms};

/* fd -> watch record; descriptors are small integers */
static watch_t *g_watch[1 << 16];

static void ep_watch(live_t *L, int fd, bool ww, int kind, void *obj)
{
    if (fd < 0 || fd >= (1 << 16))
        return;
    struct epoll_event ev = {.events = EPOLLIN | (ww ? EPOLLOUT : 0u)};
    if (!g_watch[fd]) {
        g_watch[fd] = calloc(1, sizeof(watch_t));
        g_watch[fd]->kind = kind;
        g_watch[fd]->obj = obj;
        ev.data.ptr = g_watch[fd];
        epoll_ctl(L->ep, EPOLL_CTL_ADD, fd, &ev);
    } else {
        g_watch[fd]->kind = kind;
        g_watch[fd]->obj = obj;
        ev.data.ptr = g_watch[fd];
        epoll_ctl(L->ep, EPOLL_CTL_MOD, fd, &ev);
    }
}

static void ep_unwatch(live_t *L, int fd)
{
    if (fd < 0 || fd >= (1 << 16) || !g_watch[fd])
        return;
    epoll_ctl(L->ep, EPOLL_CTL_DEL, fd, NULL);
    free(g_watch[fd]);
    g_watch[fd] = NULL;
}

static void mosq_watch(void *arg, int fd, bool ww)
{
    sim_t *s = arg;
    ep_watch(s->L, fd, ww, 0, s);
}
static void mosq_unwatch(void *arg, int fd) { ep_unwatch(((sim_t *)arg)->L, fd); }
static void mdns_watch(void *arg, int fd, bool ww)
{
    live_t *L = arg;
    ep_watch(L, fd, ww, 1, L);
}
static void mdns_unwatch(void *arg, int fd) { ep_unwatch(arg, fd); }

static int h_describe(void *ctx, const char *busid, fleet_agent_dev_desc_t *out)
{
    (void)ctx;
    (void)busid;
    out->bcd_device = 0x0100;
    snprintf(out->serial, sizeof(out->serial), "LIVE0001");
    snprintf(out->product, sizeof(out->product), "Fake Test Device");
    out->n_ifaces = 2;
    out->ifaces[0].cls = 0xff;
    out->ifaces[1].cls = 0xff;
    return FLEET_OK;
}

static int h_port_power(void *ctx, const char *busid, const char *action, char *reason, size_t rl)
{
    sim_t *s = ctx;
    if (strcmp(busid, "1-1") != 0) {
        snprintf(reason, rl, "busid: no port %s on this dongle", busid);
        return FLEET_ERR_NOT_FOUND;
    }
    if (strcmp(action, "off") == 0 || strcmp(action, "cycle") == 0) {
        if (s->dev >= 0)
            fake_usb_unplug(&s->w.usb, s->dev);
        s->dev = -1;
        world_pump(&s->w);
    }
    if (strcmp(action, "on") == 0 || strcmp(action, "cycle") == 0) {
        if (s->dev < 0)
            s->dev = fake_usb_add_test_device(&s->w.usb, "1-1", 0x1209, 0x0008);
        world_pump(&s->w);
    }
    return FLEET_OK;
}

static void h_reboot(void *ctx, const char *reason)
{
    sim_t *s = ctx;
    s->reboot = true;
    snprintf(s->reboot_reason, sizeof(s->reboot_reason), "%s", reason);
}

static const fleet_agent_host_ops_t k_host = {h_describe, h_port_power, h_reboot, NULL, NULL};

/* A (simulated) reset: the bootloader picks the slot, OTA resumes its state. */
static int boot_ota(sim_t *s, const char **boot_reason)
{
    live_t *L = s->L;
    fleet_boot_t b;
    if (fleet_files_store_boot(s->store, &b) != FLEET_OK)
        return -1;
    if (b.rolled_back)
        *boot_reason = "rollback";
    fleet_otadata_t od;
    fleet_files_store_ops.read_otadata(s->store, &od);
    snprintf(s->running, sizeof(s->running), "%s", od.slot[b.slot].version);
    s->http = (fleet_curl_http_t){.connect_timeout_s = 5, .stall_timeout_s = 10};
    fleet_ota_config_t oc = {
        .store = &fleet_files_store_ops, .store_ctx = s->store,
        .http = &fleet_curl_http_ops, .http_ctx = &s->http,
        .kv = &fleet_files_kv_ops, .kv_ctx = s->kv,
        .clock = &k_clock,
        .on_event = fleet_agent_ota_event, .event_arg = &s->agent,
        .selftest = fleet_agent_selftest, .selftest_arg = &s->agent,
        .chip = "posix-sim", .chip_revision = 0, .running_version = s->running,
        .pubkey = L->pubkey, .pubkey_len = L->pubkey_len,
        .selftest_timeout_ms = 30000,
    };
    return fleet_ota_init(s->ota, &oc) == FLEET_OK ? 0 : -1;
}

static int start_agent(sim_t *s, const char *boot_reason)
{
    live_t *L = s->L;
    if (s->ota && boot_ota(s, &boot_reason) != 0) {
        fprintf(stderr, "agent_live: dongle %d: OTA storage unusable\n", s->index);
        return FLEET_ERR_IO;
    }
    fleet_agent_config_t ac = {.mqtt_url = L->url, .firmware_version = s->ota ? s->running : "0.3.1",
                               .chip = "posix-sim",
                               .usbip_port = 3240, .telemetry_interval_s = L->telemetry,
                               .boot_reason = boot_reason};
    static fleet_stderr_log_t log = {.level = FLEET_LOG_INFO, .prefix = "agent"};
    fleet_agent_ports_t p = {.mqtt = &fleet_mosq_ops, .mqtt_ctx = s->mosq, .sys = &fleet_sim_sys_ops,
                             .sys_ctx = &s->sys, .clock = &k_clock, .log = &fleet_stderr_log_ops,
                             .log_ctx = &log, .host = &k_host, .host_ctx = s};
    if (s->kv) {
        p.kv = &fleet_files_kv_ops;
        p.kv_ctx = s->kv;
    }
    if (L->mdns) {
        p.mdns = &fleet_mdns_ops;
        p.mdns_ctx = L->mdns;
    }
    if (s->ota) {
        p.ota = s->ota;
        p.store = &fleet_files_store_ops;
        p.store_ctx = s->store;
    }
    char reason[FLEET_REASON_MAX];
    int rc = fleet_agent_create(&ac, &p, s->w.srv, &s->agent, reason, sizeof(reason));
    if (rc != FLEET_OK)
        fprintf(stderr, "agent_live: dongle %d: %s\n", s->index, reason);
    return rc;
}

static sim_t *sim_new(live_t *L, int i, const uint8_t base_mac[6], struct in_addr base_ip)
{
    sim_t *s = calloc(1, sizeof(*s));
    s->L = L;
    s->index = i;
    usbip_server_config_t cfg = USBIP_SERVER_DEFAULT_CONFIG();
    cfg.enforce_grants = L->enforce;
    cfg.buffer_budget = 64u * 1024u; /* the fake world is small */
    world_init(&s->w, &cfg);
    s->dev = fake_usb_add_test_device(&s->w.usb, "1-1", 0x1209, 0x0008);
    world_pump(&s->w);
    memcpy(s->sys.mac, base_mac, 6);
    uint32_t tail = ((uint32_t)base_mac[3] << 16 | (uint32_t)base_mac[4] << 8 | base_mac[5]) + (uint32_t)i;
    s->sys.mac[3] = (uint8_t)(tail >> 16);
    s->sys.mac[4] = (uint8_t)(tail >> 8);
    s->sys.mac[5] = (uint8_t)tail;
    struct in_addr ip = {.s_addr = htonl(ntohl(base_ip.s_addr) + (uint32_t)i)};
    inet_ntop(AF_INET, &ip, s->sys.ip, sizeof(s->sys.ip));
    s->sys.dongles = &L->count;
    fleet_fd_watch_t w = {mosq_watch, mosq_unwatch, s};
    if (fleet_mosq_create(&w, s->sys.ip, &s->mosq) != FLEET_OK)
        return NULL;
    if (L->state_dir) {
        char dir[512], id[FLEET_AGENT_ID_LEN];
        fleet_agent_id_from_mac(s->sys.mac, id);
        snprintf(dir, sizeof(dir), "%s/%s", L->state_dir, id);
        if (fleet_files_kv_open(&s->kv, dir) != FLEET_OK) {
            fprintf(stderr, "agent_live: cannot open %s\n", dir);
            return NULL;
        }
        if (L->pubkey) {
            char ota_dir[600];
            snprintf(ota_dir, sizeof(ota_dir), "%s/ota", dir);
            s->ota = calloc(1, sizeof(*s->ota));
            if (!s->ota || fleet_files_store_open(&s->store, ota_dir, 4u << 20, "0.3.1") != FLEET_OK) {
                fprintf(stderr, "agent_live: cannot open %s\n", ota_dir);
                return NULL;
            }
        }
    }
    if (start_agent(s, "power_on") != FLEET_OK)
        return NULL;
    return s;
}

int main(int argc, char **argv)
{
    live_t L = {.url = NULL, .telemetry = 10};
    int n = 1;
    uint8_t mac[6] = {0x02, 0xf1, 0xee, 0x00, 0x00, 0x01};
    struct in_addr base;
    inet_pton(AF_INET, "127.0.0.1", &base);
    bool mdns = false;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--mdns")) {
            mdns = true;
            continue;
        }
        if (!strcmp(o, "--enforce-grants")) {
            L.enforce = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "agent_live: %s needs a value\n", o);
            return 2;
        }
        i++;
        if (!strcmp(o, "--mqtt")) {
            L.url = v;
        } else if (!strcmp(o, "--dongles")) {
            n = atoi(v);
        } else if (!strcmp(o, "--telemetry-interval")) {
            L.telemetry = (uint32_t)atoi(v);
        } else if (!strcmp(o, "--state-dir")) {
            L.state_dir = v;
        } else if (!strcmp(o, "--ota-pubkey")) {
            FILE *f = fopen(v, "rb");
            L.pubkey = malloc(4096);
            L.pubkey_len = f ? fread(L.pubkey, 1, 4096, f) : 0;
            if (f)
                fclose(f);
            if (!L.pubkey_len) {
                fprintf(stderr, "agent_live: cannot read %s\n", v);
                return 2;
            }
        } else if (!strcmp(o, "--base-address")) {
            if (inet_pton(AF_INET, v, &base) != 1 || (ntohl(base.s_addr) >> 24) != 127) {
                fprintf(stderr, "agent_live: --base-address must be a 127.x.y.z address\n");
                return 2;
            }
        } else if (!strcmp(o, "--base-mac")) {
            if (strlen(v) != 12 || !fleet_hex_decode(v, mac, 6)) {
                fprintf(stderr, "agent_live: --base-mac must be 12 hex digits\n");
                return 2;
            }
        } else {
            fprintf(stderr, "agent_live: unknown option %s\n", o);
            return 2;
        }
    }
    if (L.pubkey && !L.state_dir) {
        fprintf(stderr, "agent_live: --ota-pubkey needs --state-dir\n");
        return 2;
    }
    if (!L.url || n < 1 || n > 5000 || L.telemetry < 1 || L.telemetry > 3600) {
        fprintf(stderr, "agent_live: --mqtt URL required; --dongles 1..5000; --telemetry-interval 1..3600\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    L.ep = epoll_create1(EPOLL_CLOEXEC);
    ep_watch(&L, sfd, false, 2, NULL);
    if (mdns) {
        char err[256];
        fleet_fd_watch_t w = {mdns_watch, mdns_unwatch, &L};
        if (fleet_mdns_create(&w, "127.0.0.1", &L.mdns, err, sizeof(err)) != FLEET_OK) {
            fprintf(stderr, "agent_live: %s\n", err);
            return 1;
        }
    }
    L.sims = calloc((size_t)n, sizeof(*L.sims));
    L.count = n;
    for (int i = 0; i < n; i++) {
        L.sims[i] = sim_new(&L, i, mac, base);
        if (!L.sims[i])
            return 1;
        L.n++;
    }
    printf("ready %d\n", L.n);
    bool quit = false;
    uint64_t next_tick = 0, next_second = 0;
    while (!quit) {
        struct epoll_event evs[256];
        int k = epoll_wait(L.ep, evs, 256, 50);
        for (int e = 0; e < k; e++) {
            watch_t *wt = evs[e].data.ptr;
            if (wt->kind == 0) {
                fleet_mosq_on_events(((sim_t *)wt->obj)->mosq, (evs[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0,
                                     (evs[e].events & EPOLLOUT) != 0);
            } else if (wt->kind == 1) {
                fleet_mdns_on_readable(L.mdns);
            } else {
                quit = true;
            }
        }
        uint64_t now = now_ms(NULL);
        if (now >= next_tick) {
            next_tick = now + 100;
            for (int i = 0; i < L.n; i++) {
                sim_t *s = L.sims[i];
                world_pump(&s->w);
                usbip_server_tick(s->w.srv);
                fleet_agent_tick(s->agent);
                if (!s->was_online && fleet_agent_connected(s->agent)) {
                    s->was_online = true;
                    printf("online %s\n", fleet_agent_id(s->agent));
                }
                if (s->reboot) {
                    /* an in-process restart: the agent goes, comes back with a new boot */
                    s->reboot = false;
                    fleet_agent_destroy(s->agent, "reboot");
                    s->agent = NULL;
                    /* the core and its sessions go too; the device is found again */
                    usbip_server_config_t cfg = USBIP_SERVER_DEFAULT_CONFIG();
                    cfg.enforce_grants = L.enforce;
                    cfg.buffer_budget = 64u * 1024u;
                    world_fini(&s->w);
                    world_init(&s->w, &cfg);
                    s->dev = fake_usb_add_test_device(&s->w.usb, "1-1", 0x1209, 0x0008);
                    world_pump(&s->w);
                    if (start_agent(s, s->reboot_reason) != FLEET_OK)
                        return 1;
                    printf("rebooted %s\n", fleet_agent_id(s->agent));
                }
            }
        }
        if (now >= next_second) {
            next_second = now + 1000;
            for (int i = 0; i < L.n; i++)
                fleet_mosq_tick(L.sims[i]->mosq);
            if (L.mdns)
                fleet_mdns_tick(L.mdns, now);
        }
    }
    for (int i = 0; i < L.n; i++) {
        sim_t *s = L.sims[i];
        fleet_agent_destroy(s->agent, "shutdown");
        fleet_mosq_destroy(s->mosq);
        if (s->kv)
            fleet_files_kv_close(s->kv);
        if (s->store)
            fleet_files_store_close(s->store);
        free(s->ota);
        world_fini(&s->w);
        free(s);
    }
    fleet_mdns_destroy(L.mdns);
    free(L.sims);
    free(L.pubkey);
    return 0;
}
