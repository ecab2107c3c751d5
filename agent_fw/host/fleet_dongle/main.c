/*
 * fleet-dongle - the simulated dongle: the USB/IP core on the posix port,
 * with virtual devices on a virtual ESP32 host controller, and with --mqtt
 * the fleet agent reporting it and obeying the service.
 *
 *   fleet-dongle --listen 127.0.0.1:3240 [--chip s3|p4] [--device SPEC]...
 *                [--enforce-grants] [--control PATH|-] [--buffer-budget BYTES]
 *                [--bus-timing] [--id esp-xxxxxxxxxxxx] [--keepalive-s N]
 *                [--log-level error|warn|info|debug]
 *                [--mqtt mqtt://HOST:PORT [--state-dir DIR] [--telemetry-interval S]
 *                 [--mqtt-keepalive S] [--mdns] [--ota-pubkey PEM] [--ota-rate BYTES_PER_S]]
 *   many dongles in one process, each on its own address, port 3240:
 *   fleet-dongle --dongles N --base-address 127.1.0.1 [--base-mac 02f1ee000001] ...
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "agent_runtime_posix.h"
#include "dongle.h"
#include "fleet_agent/text.h"

#define MAX_DEVICE_ARGS 64
#define MAX_DONGLES 5000
#define TICK_MS 100

typedef struct {
    const char *listen;
    const char *chip;
    const char *devices[MAX_DEVICE_ARGS];
    int ndevices;
    bool enforce;
    const char *control;
    long long budget;
    bool bus_timing;
    const char *id;
    int keepalive_s;
    const char *log_level;
    const char *mqtt;
    const char *state_dir;
    long long telemetry_s;
    long long mqtt_keepalive_s;
    bool mdns;
    const char *ota_pubkey;
    long long ota_rate;
    long long dongles;     /* 0: single-dongle mode */
    const char *base_address;
    const char *base_mac;
} args_t;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: fleet-dongle --listen HOST:PORT [--chip s3|p4] [--device SPEC]... [--enforce-grants]\n"
            "                    [--control PATH|-] [--buffer-budget BYTES] [--bus-timing] [--id ID]\n"
            "                    [--keepalive-s N] [--log-level error|warn|info|debug]\n"
            "                    [--mqtt mqtt://HOST:PORT [--state-dir DIR] [--telemetry-interval S] [--mdns]\n"
            "                     [--mqtt-keepalive S] [--ota-pubkey PEM] [--ota-rate BYTES_PER_S]]\n"
            "                    [--dongles N --base-address 127.X.Y.Z [--base-mac HEX12]]\n"
            "SPEC = model[:k=v,...], models msc, hid-keyboard, cdc-acm, probe, hub; port=1-2.3 picks the port\n");
}

static bool parse_ll(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s)
        return false;
    /* accept K/M suffixes for budgets */
    if (*end == 'K' || *end == 'k') {
        v *= 1024;
        end++;
    } else if (*end == 'M' || *end == 'm') {
        v *= 1024 * 1024;
        end++;
    }
    if (*end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static int parse_args(int argc, char **argv, args_t *a)
{
    *a = (args_t){.listen = "127.0.0.1:3240", .chip = "s3", .id = "esp-000000000000", .keepalive_s = 10,
                  .log_level = "info", .telemetry_s = 10, .mqtt_keepalive_s = 30, .base_mac = "02f1ee000001"};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes = strcmp(o, "--listen") == 0 || strcmp(o, "--chip") == 0 || strcmp(o, "--device") == 0 ||
                     strcmp(o, "--control") == 0 || strcmp(o, "--buffer-budget") == 0 ||
                     strcmp(o, "--id") == 0 || strcmp(o, "--keepalive-s") == 0 || strcmp(o, "--log-level") == 0 ||
                     strcmp(o, "--mqtt") == 0 || strcmp(o, "--state-dir") == 0 ||
                     strcmp(o, "--telemetry-interval") == 0 || strcmp(o, "--ota-pubkey") == 0 ||
                     strcmp(o, "--dongles") == 0 || strcmp(o, "--base-address") == 0 ||
                     strcmp(o, "--base-mac") == 0 || strcmp(o, "--mqtt-keepalive") == 0 ||
                     strcmp(o, "--ota-rate") == 0;
        if (takes && !v) {
            fprintf(stderr, "fleet-dongle: %s needs a value\n", o);
            return -1;
        }
        long long n;
        if (strcmp(o, "--help") == 0 || strcmp(o, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(o, "--listen") == 0) {
            a->listen = v;
        } else if (strcmp(o, "--chip") == 0) {
            if (strcmp(v, "s3") && strcmp(v, "p4")) {
                fprintf(stderr, "fleet-dongle: --chip must be s3 or p4, got '%s'\n", v);
                return -1;
            }
            a->chip = v;
        } else if (strcmp(o, "--device") == 0) {
            if (a->ndevices == MAX_DEVICE_ARGS) {
                fprintf(stderr, "fleet-dongle: at most %d --device options\n", MAX_DEVICE_ARGS);
                return -1;
            }
            a->devices[a->ndevices++] = v;
        } else if (strcmp(o, "--enforce-grants") == 0) {
            a->enforce = true;
            continue;
        } else if (strcmp(o, "--control") == 0) {
            a->control = v;
        } else if (strcmp(o, "--buffer-budget") == 0) {
            if (!parse_ll(v, 4096, 1LL << 30, &n)) {
                fprintf(stderr, "fleet-dongle: --buffer-budget must be 4096..1G bytes, got '%s'\n", v);
                return -1;
            }
            a->budget = n;
        } else if (strcmp(o, "--bus-timing") == 0) {
            a->bus_timing = true;
            continue;
        } else if (strcmp(o, "--id") == 0) {
            if (strlen(v) == 0 || strlen(v) >= 32) {
                fprintf(stderr, "fleet-dongle: --id must be 1..31 characters\n");
                return -1;
            }
            a->id = v;
        } else if (strcmp(o, "--keepalive-s") == 0) {
            if (!parse_ll(v, 0, 3600, &n)) {
                fprintf(stderr, "fleet-dongle: --keepalive-s must be 0..3600, got '%s'\n", v);
                return -1;
            }
            a->keepalive_s = (int)n;
        } else if (strcmp(o, "--log-level") == 0) {
            usbip_log_level_t l;
            if (posix_log_level_parse(v, &l) != 0) {
                fprintf(stderr, "fleet-dongle: --log-level must be error, warn, info or debug\n");
                return -1;
            }
            a->log_level = v;
        } else if (strcmp(o, "--mqtt") == 0) {
            char host[128], why[160];
            int port;
            if (!fleet_mqtt_url_split(v, host, sizeof(host), &port, why, sizeof(why))) {
                fprintf(stderr, "fleet-dongle: --mqtt %s: %s\n", v, why);
                return -1;
            }
            a->mqtt = v;
        } else if (strcmp(o, "--state-dir") == 0) {
            a->state_dir = v;
        } else if (strcmp(o, "--telemetry-interval") == 0) {
            if (!parse_ll(v, 1, 3600, &n)) {
                fprintf(stderr, "fleet-dongle: --telemetry-interval must be 1..3600 seconds, got '%s'\n", v);
                return -1;
            }
            a->telemetry_s = n;
        } else if (strcmp(o, "--mqtt-keepalive") == 0) {
            /* libmosquitto refuses a keepalive under 5 s */
            if (!parse_ll(v, 5, 3600, &n)) {
                fprintf(stderr, "fleet-dongle: --mqtt-keepalive must be 5..3600 seconds, got '%s'\n", v);
                return -1;
            }
            a->mqtt_keepalive_s = n;
        } else if (strcmp(o, "--ota-rate") == 0) {
            if (!parse_ll(v, 0, 1LL << 40, &n)) {
                fprintf(stderr, "fleet-dongle: --ota-rate must be 0 (no cap) or a rate in bytes per second "
                                "(K/M suffixes allowed), got '%s'\n", v);
                return -1;
            }
            a->ota_rate = n;
        } else if (strcmp(o, "--mdns") == 0) {
            a->mdns = true;
            continue;
        } else if (strcmp(o, "--ota-pubkey") == 0) {
            a->ota_pubkey = v;
        } else if (strcmp(o, "--dongles") == 0) {
            if (!parse_ll(v, 1, MAX_DONGLES, &n)) {
                fprintf(stderr, "fleet-dongle: --dongles must be 1..%d, got '%s'\n", MAX_DONGLES, v);
                return -1;
            }
            a->dongles = n;
        } else if (strcmp(o, "--base-address") == 0) {
            struct in_addr ia;
            if (inet_pton(AF_INET, v, &ia) != 1 || (ntohl(ia.s_addr) >> 24) != 127) {
                fprintf(stderr, "fleet-dongle: --base-address must be a loopback IPv4 address 127.x.y.z, got '%s'\n", v);
                return -1;
            }
            a->base_address = v;
        } else if (strcmp(o, "--base-mac") == 0) {
            uint8_t mac[6];
            if (strlen(v) != 12 || !fleet_hex_decode(v, mac, 6)) {
                fprintf(stderr, "fleet-dongle: --base-mac must be 12 hex digits, got '%s'\n", v);
                return -1;
            }
            a->base_mac = v;
        } else {
            fprintf(stderr, "fleet-dongle: unknown option '%s'\n", o);
            usage(stderr);
            return -1;
        }
        i++; /* skip the value */
    }
    if (a->ota_pubkey && !a->state_dir) {
        fprintf(stderr, "fleet-dongle: --ota-pubkey needs --state-dir (the OTA slots live there)\n");
        return -1;
    }
    if ((a->state_dir || a->mdns || a->ota_pubkey) && !a->mqtt) {
        fprintf(stderr, "fleet-dongle: --state-dir, --mdns and --ota-pubkey need --mqtt\n");
        return -1;
    }
    if (a->dongles && !a->base_address) {
        fprintf(stderr, "fleet-dongle: --dongles needs --base-address (each dongle gets the next address)\n");
        return -1;
    }
    if (a->base_address && !a->dongles) {
        fprintf(stderr, "fleet-dongle: --base-address is for --dongles N\n");
        return -1;
    }
    return 0;
}

/* "esp-a1b2c3d4e5f6" -> the MAC it was derived from. */
static bool mac_from_id(const char *id, uint8_t mac[6])
{
    return strncmp(id, "esp-", 4) == 0 && strlen(id) == 16 && fleet_hex_decode(id + 4, mac, 6) &&
           strspn(id + 4, "0123456789abcdef") == 12;
}

static void signal_cb(void *arg, int fd, unsigned ev)
{
    dongle_t *d = arg;
    (void)ev;
    struct signalfd_siginfo si;
    if (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
        d->quit = true;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *buf = malloc(8192);
    *len = buf ? fread(buf, 1, 8192, f) : 0;
    fclose(f);
    if (!*len) {
        free(buf);
        return NULL;
    }
    return buf;
}

static void big_lock(void *arg) { pthread_mutex_lock(arg); }
static void big_unlock(void *arg) { pthread_mutex_unlock(arg); }

static void raise_fd_limit(void)
{
    /* every dongle holds a listener, an MQTT socket and the vhc's descriptor */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    args_t a;
    if (parse_args(argc, argv, &a) != 0)
        return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    bool multi = a.dongles > 0;
    int n = multi ? (int)a.dongles : 1;

    dongle_opts_t opts = {.chip = a.chip, .enforce = a.enforce, .bus_timing = a.bus_timing, .budget = a.budget,
                          .keepalive_s = a.keepalive_s, .log_level = a.log_level, .mqtt_url = a.mqtt,
                          .state_dir = a.state_dir, .telemetry_s = (uint32_t)a.telemetry_s,
                          .mqtt_keepalive_s = (uint16_t)a.mqtt_keepalive_s, .ota_rate = a.ota_rate,
                          .ota_pubkey_file = a.ota_pubkey, .ndongles = n};
    if (a.ota_pubkey && !(opts.ota_pubkey = read_file(a.ota_pubkey, &opts.ota_pubkey_len))) {
        fprintf(stderr, "fleet-dongle: --ota-pubkey %s: cannot read it\n", a.ota_pubkey);
        return 2;
    }
    uint8_t mac0[6];
    if (!multi && a.mqtt && !mac_from_id(a.id, mac0)) {
        fprintf(stderr, "fleet-dongle: with --mqtt, --id must be esp- and 12 lowercase hex digits (the base MAC), "
                        "got '%s'\n", a.id);
        return 2;
    }
    if (multi)
        fleet_hex_decode(a.base_mac, mac0, 6);

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (multi)
        raise_fd_limit();

    posix_loop_t *loop = NULL;
    if (sfd < 0 || posix_loop_create(&loop) != 0) {
        fprintf(stderr, "fleet-dongle: cannot set up the event loop\n");
        return 1;
    }
    /* OTA downloads run on threads of their own; everything else runs here,
     * so this thread holds the lock except while the loop waits. */
    pthread_mutex_t big = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&big);
    opts.big_lock = (fleet_lock_hooks_t){big_lock, big_unlock, &big};
    posix_loop_set_wait_hooks(loop, big_unlock, big_lock, &big);
    char err[256];
    if (a.mdns && dongle_mdns_start(loop, &opts.mdns, err, sizeof(err)) != 0) {
        fprintf(stderr, "fleet-dongle: %s\n", err);
        return 1;
    }
    dongle_t **group = calloc((size_t)n, sizeof(*group));
    if (!group)
        return 1;
    struct in_addr base = {0};
    if (multi)
        inet_pton(AF_INET, a.base_address, &base);
    for (int i = 0; i < n; i++) {
        dongle_t *d = calloc(1, sizeof(*d));
        if (!d)
            return 1;
        group[i] = d;
        d->opts = &opts;
        d->loop = loop;
        d->group = group;
        d->ngroup = n;
        d->plugged_cap = multi ? 16 : DONGLE_MAX_PLUGGED;
        d->plugged = calloc((size_t)d->plugged_cap, sizeof(*d->plugged));
        if (!d->plugged)
            return 1;
        if (multi) {
            /* dongle i: base MAC + i, base address + i */
            uint64_t m = 0;
            for (int k = 0; k < 6; k++)
                m = m << 8 | mac0[k];
            m += (uint64_t)i;
            for (int k = 5; k >= 0; k--, m >>= 8)
                d->mac[k] = (uint8_t)m;
            fleet_agent_id_from_mac(d->mac, d->id);
            struct in_addr ip = {.s_addr = htonl(ntohl(base.s_addr) + (uint32_t)i)};
            inet_ntop(AF_INET, &ip, d->ip, sizeof(d->ip));
            snprintf(d->listen, sizeof(d->listen), "%s:3240", d->ip);
        } else {
            snprintf(d->id, sizeof(d->id), "%s", a.id);
            memcpy(d->mac, mac0, 6);
            snprintf(d->listen, sizeof(d->listen), "%s", a.listen);
            const char *colon = strrchr(a.listen, ':');
            snprintf(d->ip, sizeof(d->ip), "%.*s", colon ? (int)(colon - a.listen) : 0, a.listen);
        }
        int rc = dongle_start(d, a.devices, a.ndevices, err, sizeof(err));
        if (rc != 0) {
            fprintf(stderr, "fleet-dongle: %s%s\n", multi ? d->id : "", err);
            return rc == -2 ? 2 : 1;
        }
        if (dongle_agent_start(d, "power_on", err, sizeof(err)) != 0) {
            fprintf(stderr, "fleet-dongle: %s: %s\n", d->id, err);
            return 1;
        }
    }
    posix_loop_add(loop, sfd, true, false, signal_cb, group[0]);
    control_t *ctl = NULL;
    if (a.control && control_open(group[0], a.control, &ctl, err, sizeof(err)) != 0) {
        fprintf(stderr, "fleet-dongle: %s\n", err);
        return 1;
    }
    if (multi)
        for (int i = 0; i < n; i++)
            printf("dongle %s %s:%d\n", group[i]->id, group[i]->ip, group[i]->port);
    printf("listening on %s:%d\n", group[0]->ip, group[0]->port);

    usbip_clock_t clk = posix_clock();
    uint64_t next_tick = 0, next_second = 0;
    bool quit = false;
    while (!quit) {
        if (posix_loop_run_once(loop, TICK_MS) < 0 && errno != EINTR) {
            fprintf(stderr, "fleet-dongle: event loop failed: %s\n", strerror(errno));
            break;
        }
        uint64_t now = clk.now_us(clk.ctx);
        if (now >= next_tick) {
            next_tick = now + TICK_MS * 1000u;
            for (int i = 0; i < n; i++) {
                dongle_t *d = group[i];
                if (d->start_requested) {
                    /* here, not in the control callback: a boot runs the loop while devices enumerate */
                    d->start_requested = false;
                    if (dongle_power_on(d, "power_on", err, sizeof(err)) != 0)
                        fprintf(stderr, "fleet-dongle: %s: power on failed, still off: %s\n", d->id, err);
                }
                quit = quit || d->quit;
                if (d->off)
                    continue;
                usbip_server_tick(d->srv);
                char why[160];
                if (dongle_agent_tick(d, why, sizeof(why))) {
                    /* in-process reset: agent and core go, the bootloader picks the slot */
                    dongle_agent_stop(d, "reboot");
                    if (dongle_restart(d, err, sizeof(err)) != 0 || dongle_agent_start(d, why, err, sizeof(err)) != 0) {
                        fprintf(stderr, "fleet-dongle: %s: reboot failed: %s\n", d->id, err);
                        quit = true;
                    }
                }
            }
        }
        if (now >= next_second) {
            next_second = now + 1000000u;
            for (int i = 0; i < n; i++)
                dongle_agent_second(group[i]);
            dongle_mdns_tick(opts.mdns, now / 1000u);
        }
    }
    control_close(ctl);
    for (int i = 0; i < n; i++) {
        dongle_agent_stop(group[i], "shutdown");
        dongle_stop(group[i]);
        free(group[i]->plugged);
        free(group[i]);
    }
    dongle_mdns_stop(loop, opts.mdns);
    free(group);
    free(opts.ota_pubkey);
    posix_loop_destroy(loop);
    close(sfd);
    pthread_mutex_unlock(&big);
    return 0;
}
