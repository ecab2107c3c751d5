/*
 * fleet-dongle - the simulated dongle: the USB/IP core on the posix port,
 * with virtual devices on a virtual ESP32 host controller.
 *
 *   fleet-dongle --listen 127.0.0.1:3240 [--chip s3|p4] [--device SPEC]...
 *                [--enforce-grants] [--control PATH|-] [--buffer-budget BYTES]
 *                [--bus-timing] [--id esp-xxxxxxxxxxxx] [--keepalive-s N]
 *                [--log-level error|warn|info|debug]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "dongle.h"

#define MAX_DEVICE_ARGS 64
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
} args_t;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: fleet-dongle --listen HOST:PORT [--chip s3|p4] [--device SPEC]... [--enforce-grants]\n"
            "                    [--control PATH|-] [--buffer-budget BYTES] [--bus-timing] [--id ID]\n"
            "                    [--keepalive-s N] [--log-level error|warn|info|debug]\n"
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
                  .log_level = "info"};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes = strcmp(o, "--listen") == 0 || strcmp(o, "--chip") == 0 || strcmp(o, "--device") == 0 ||
                     strcmp(o, "--control") == 0 || strcmp(o, "--buffer-budget") == 0 ||
                     strcmp(o, "--id") == 0 || strcmp(o, "--keepalive-s") == 0 || strcmp(o, "--log-level") == 0;
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
        } else {
            fprintf(stderr, "fleet-dongle: unknown option '%s'\n", o);
            usage(stderr);
            return -1;
        }
        i++; /* skip the value */
    }
    return 0;
}

static void vhc_cb(void *arg, int fd, unsigned ev)
{
    (void)fd;
    (void)ev;
    vhc_process(arg);
}

static void signal_cb(void *arg, int fd, unsigned ev)
{
    dongle_t *d = arg;
    (void)ev;
    struct signalfd_siginfo si;
    if (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
        d->quit = true;
}

int main(int argc, char **argv)
{
    args_t a;
    if (parse_args(argc, argv, &a) != 0)
        return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);

    static dongle_t dongle; /* large; lives for the whole process */
    dongle_t *d = &dongle;
    snprintf(d->id, sizeof(d->id), "%s", a.id);
    posix_log_level_parse(a.log_level, &d->log_cfg.max_level);

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);

    bool p4 = strcmp(a.chip, "p4") == 0;
    vhc_config_t vcfg = p4 ? VHC_CONFIG_ESP32P4() : VHC_CONFIG_ESP32S3();
    vcfg.bus_timing = a.bus_timing;
    usbip_server_config_t scfg = USBIP_SERVER_DEFAULT_CONFIG();
    scfg.tag = d->id;
    if (p4) {
        scfg.block_size = 64u * 1024u;
        scfg.buffer_budget = 1024u * 1024u;
    }
    if (a.budget)
        scfg.buffer_budget = (size_t)a.budget;
    if (scfg.buffer_budget < scfg.block_size)
        scfg.block_size = scfg.buffer_budget;
    scfg.keepalive_idle_s = a.keepalive_s;
    scfg.enforce_grants = a.enforce;

    char err[256];
    if (sfd < 0 || posix_loop_create(&d->loop) != 0 || vhc_create(&vcfg, &d->vhc) != 0) {
        fprintf(stderr, "fleet-dongle: cannot set up the event loop / host controller\n");
        return 1;
    }
    if (posix_net_listen(d->loop, a.listen, &d->net, err, sizeof(err)) != 0) {
        fprintf(stderr, "fleet-dongle: %s\n", err);
        return 1;
    }
    usbip_server_ports_t ports = {
        .usb = vhc_uhp_ops(),
        .usb_ctx = d->vhc,
        .net = posix_net_ops(),
        .net_ctx = d->net,
        .clock = posix_clock(),
        .log = posix_log(&d->log_cfg),
    };
    usbip_err_t e = usbip_server_create(&scfg, &ports, &d->srv);
    if (e != USBIP_OK) {
        fprintf(stderr, "fleet-dongle: cannot start the USB/IP server: %s\n", usbip_strerror(e));
        return 1;
    }
    posix_net_attach(d->net, d->srv);
    posix_loop_add(d->loop, vhc_fd(d->vhc), true, false, vhc_cb, d->vhc);
    posix_loop_add(d->loop, sfd, true, false, signal_cb, d);

    for (int i = 0; i < a.ndevices; i++) {
        char busid[32];
        if (dongle_plug(d, a.devices[i], busid, sizeof(busid), err, sizeof(err)) != 0) {
            fprintf(stderr, "fleet-dongle: --device %s: %s\n", a.devices[i], err);
            return 2;
        }
    }
    control_t *ctl = NULL;
    if (a.control && control_open(d, a.control, &ctl, err, sizeof(err)) != 0) {
        fprintf(stderr, "fleet-dongle: %s\n", err);
        return 1;
    }
    /* Let the initial devices enumerate before announcing the port, so a
     * client that connects right after the banner sees them. */
    for (int i = 0; i < 50; i++) {
        posix_loop_run_once(d->loop, 0);
        if (usbip_server_list_devices(d->srv, NULL, 0) >= a.ndevices)
            break;
        posix_loop_run_once(d->loop, 10);
    }
    const char *colon = strrchr(a.listen, ':');
    printf("listening on %.*s:%d\n", (int)(colon - a.listen), a.listen, posix_net_bound_port(d->net));

    usbip_clock_t clk = posix_clock();
    uint64_t next_tick = 0;
    while (!d->quit) {
        if (posix_loop_run_once(d->loop, TICK_MS) < 0) {
            fprintf(stderr, "fleet-dongle: event loop failed: %s\n", strerror(errno));
            break;
        }
        uint64_t now = clk.now_us(clk.ctx);
        if (now >= next_tick) {
            usbip_server_tick(d->srv);
            next_tick = now + TICK_MS * 1000u;
        }
    }
    control_close(ctl);
    usbip_server_destroy(d->srv);
    posix_net_destroy(d->net);
    vhc_destroy(d->vhc);
    posix_loop_destroy(d->loop);
    close(sfd);
    return 0;
}
