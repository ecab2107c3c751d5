/*
 * commands.c - the control channel's commands (see the brief / README):
 * plug, unplug, grant, revoke, enforce, list, stats, dev, quit; the faults a
 * lab has: crash (power cut), start (power on), net off|on (network cut);
 * "@<id> ..." sends one to another dongle of a multi-dongle process.
 */
#include <errno.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_runtime_posix.h"
#include "dongle.h"
#include "vdev/vdev.h"

typedef struct {
    char *buf;
    size_t len, pos;
    bool overflow;
} out_t;

static void outf(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void outf(out_t *o, const char *fmt, ...)
{
    if (o->pos >= o->len) {
        o->overflow = true;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->pos, o->len - o->pos, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= o->len - o->pos) {
        o->overflow = true;
        o->pos = o->len;
    } else {
        o->pos += (size_t)n;
    }
}

static void out_json_str(out_t *o, const char *s)
{
    outf(o, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            outf(o, "\\%c", c);
        else if (c < 0x20)
            outf(o, "\\u%04x", c);
        else
            outf(o, "%c", c);
    }
    outf(o, "\"");
}

static const char *speed_name(int s)
{
    switch (s) {
    case 1: return "low";
    case 2: return "full";
    case 3: return "high";
    default: return "unknown";
    }
}

static dongle_plugged_t *plugged_find(dongle_t *d, const char *busid)
{
    for (int i = 0; i < d->plugged_cap; i++)
        if (d->plugged[i].used && strcmp(d->plugged[i].busid, busid) == 0)
            return &d->plugged[i];
    return NULL;
}

/* Serial number from the device's own string descriptor (UTF-16LE, ASCII kept). */
static void serial_of(const vdev_t *v, char *out, size_t len)
{
    out[0] = 0;
    uint8_t idx = v->device_desc ? v->device_desc[16] : 0;
    if (!idx || idx >= v->num_strings || !v->strings || !v->strings[idx])
        return;
    const uint8_t *s = v->strings[idx];
    size_t n = 0;
    for (size_t i = 2; i + 1 < s[0] && n + 1 < len; i += 2)
        out[n++] = (s[i + 1] == 0 && s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
    out[n] = 0;
}

int dongle_plug(dongle_t *d, const char *text, char *busid, size_t busid_len, char *err, size_t err_len)
{
    vdev_spec_t spec;
    if (vdev_spec_parse(text, &spec, err, err_len) != 0)
        return -1;
    char path[32] = "";
    for (int i = 0; i < spec.num_opts; i++)
        if (strcmp(spec.opt[i].key, "port") == 0) {
            if (strlen(spec.opt[i].value) >= sizeof(path)) {
                snprintf(err, err_len, "port path too long");
                return -1;
            }
            strcpy(path, spec.opt[i].value);
        }
    if (!path[0] && vhc_next_free_port(d->vhc, path, sizeof(path)) != 0) {
        snprintf(err, err_len, "no free root port");
        return -1;
    }
    dongle_plugged_t *slot = NULL;
    for (int i = 0; i < d->plugged_cap && !slot; i++)
        if (!d->plugged[i].used)
            slot = &d->plugged[i];
    if (!slot) {
        snprintf(err, err_len, "too many devices plugged (max %d)", d->plugged_cap);
        return -1;
    }
    vdev_t *v = vdev_create(&spec, err, err_len);
    if (!v)
        return -1;
    char model[16], serial[64];
    snprintf(model, sizeof(model), "%s", v->model);
    uint16_t vid = v->device_desc ? (uint16_t)(v->device_desc[8] | v->device_desc[9] << 8) : 0;
    uint16_t pid = v->device_desc ? (uint16_t)(v->device_desc[10] | v->device_desc[11] << 8) : 0;
    int speed = (int)v->speed;
    serial_of(v, serial, sizeof(serial));
    /* the agent reports a descriptor summary; read it while we hold the device */
    fleet_agent_dev_desc_t desc;
    bool have_desc = fleet_agent_desc_parse(v->device_desc, v->config_desc,
                                            v->config_desc ? (size_t)(v->config_desc[2] | v->config_desc[3] << 8) : 0,
                                            &desc) == 0;
    if (have_desc && v->device_desc) {
        static const struct { int at; size_t off; } strs[3] = {
            {14, offsetof(fleet_agent_dev_desc_t, manufacturer)},
            {15, offsetof(fleet_agent_dev_desc_t, product)},
            {16, offsetof(fleet_agent_dev_desc_t, serial)},
        };
        for (int k = 0; k < 3; k++) {
            uint8_t idx = v->device_desc[strs[k].at];
            if (idx && idx < v->num_strings && v->strings && v->strings[idx])
                fleet_agent_desc_string(v->strings[idx], v->strings[idx][0], (char *)&desc + strs[k].off,
                                        sizeof(desc.serial));
        }
    }
    if (vhc_plug(d->vhc, path, v, err, err_len) != 0) /* takes v, also on failure */
        return -1;
    memset(slot, 0, sizeof(*slot));
    slot->used = true;
    slot->have_desc = have_desc;
    slot->desc = desc;
    slot->vid = vid;
    slot->pid = pid;
    slot->speed = speed;
    /* kept with its port and serial number, so power-on and reboot plug the
     * same hardware back where it was (a default serial would follow a counter) */
    bool has_port = strstr(text, "port=") != NULL;
    snprintf(slot->spec, sizeof(slot->spec), "%s%s%s", text, has_port ? "" : strchr(text, ':') ? ",port=" : ":port=",
             has_port ? "" : path);
    if (!strstr(text, "serial=") && serial[0] && strspn(serial, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                                                 "0123456789._-") == strlen(serial)) {
        size_t l = strlen(slot->spec);
        snprintf(slot->spec + l, sizeof(slot->spec) - l, ",serial=%s", serial);
    }
    snprintf(slot->busid, sizeof(slot->busid), "%s", path);
    memcpy(slot->model, model, sizeof(model));
    memcpy(slot->serial, serial, sizeof(serial));
    snprintf(busid, busid_len, "%s", path);
    dongle_agent_devices_changed(d);
    return 0;
}

int dongle_unplug(dongle_t *d, const char *busid, char *err, size_t err_len)
{
    if (vhc_unplug(d->vhc, busid, err, err_len) != 0)
        return -1;
    /* a hub takes everything below it along */
    size_t bl = strlen(busid);
    for (int i = 0; i < d->plugged_cap; i++) {
        dongle_plugged_t *p = &d->plugged[i];
        if (p->used && (strcmp(p->busid, busid) == 0 ||
                        (strncmp(p->busid, busid, bl) == 0 && p->busid[bl] == '.')))
            p->used = false;
    }
    dongle_agent_devices_changed(d);
    return 0;
}

static int list_devices(dongle_t *d, usbip_device_info_t **out)
{
    int n = usbip_server_list_devices(d->srv, NULL, 0);
    *out = calloc((size_t)(n > 0 ? n : 1), sizeof(**out));
    if (!*out)
        return -1;
    return usbip_server_list_devices(d->srv, *out, n);
}

/* A list entry up to its serial: what identifies the device. */
static void out_dev_id(out_t *o, bool first, const char *busid, unsigned vid, unsigned pid, int speed,
                       const char *model, const char *serial)
{
    outf(o, "%s{\"busid\":", first ? "" : ",");
    out_json_str(o, busid);
    outf(o, ",\"vid\":\"%04x\",\"pid\":\"%04x\",\"speed\":\"%s\",\"model\":", vid, pid, speed_name(speed));
    out_json_str(o, model);
    outf(o, ",\"serial\":");
    out_json_str(o, serial);
}

/* Powered off, nothing exports the devices: the plugged hardware is listed
 * as it sits in its ports. */
static void cmd_list_off(dongle_t *d, out_t *o)
{
    outf(o, "ok [");
    bool first = true;
    for (int i = 0; i < d->plugged_cap; i++) {
        const dongle_plugged_t *p = &d->plugged[i];
        if (!p->used)
            continue;
        out_dev_id(o, first, p->busid, p->vid, p->pid, p->speed, p->model, p->serial);
        outf(o, ",\"attached_to\":null,\"granted_to\":[]}");
        first = false;
    }
    outf(o, "]");
}

static void cmd_list(dongle_t *d, out_t *o)
{
    if (d->off) {
        cmd_list_off(d, o);
        return;
    }
    usbip_device_info_t *devs;
    int n = list_devices(d, &devs);
    if (n < 0) {
        outf(o, "err out of memory");
        return;
    }
    outf(o, "ok [");
    for (int i = 0; i < n; i++) {
        usbip_device_info_t *v = &devs[i];
        dongle_plugged_t *p = plugged_find(d, v->busid);
        out_dev_id(o, i == 0, v->busid, v->vid, v->pid, v->speed, p ? p->model : "", p ? p->serial : "");
        outf(o, ",\"attached_to\":");
        if (v->attached_to[0])
            out_json_str(o, v->attached_to);
        else
            outf(o, "null");
        outf(o, ",\"granted_to\":[");
        for (int j = 0; j < v->num_granted; j++) {
            outf(o, "%s", j ? "," : "");
            out_json_str(o, v->granted_to[j]);
        }
        outf(o, "]}");
    }
    outf(o, "]");
    free(devs);
}

static void out_process(dongle_t *d, out_t *o)
{
    uint64_t rss = fleet_process_rss();
    int nd = d->ngroup > 0 ? d->ngroup : 1;
    outf(o, "\"process\":{\"rss\":%" PRIu64 ",\"dongles\":%d,\"rss_per_dongle\":%" PRIu64
            ",\"agent_bytes\":%zu}}",
         rss, nd, rss / (uint64_t)nd, dongle_agent_footprint(d));
}

static void cmd_stats(dongle_t *d, out_t *o)
{
    outf(o, "ok {\"power\":\"%s\",\"link\":\"%s\",", d->off ? "off" : "on", d->link_down ? "down" : "up");
    if (d->off) {
        out_process(d, o);
        return;
    }
    usbip_device_info_t *devs;
    int n = list_devices(d, &devs);
    if (n < 0) {
        snprintf(o->buf, o->len, "err out of memory");
        o->pos = strlen(o->buf);
        return;
    }
    usbip_buffer_stats_t b;
    usbip_server_buffer_stats(d->srv, &b);
    outf(o,
         "\"buffers\":{\"budget\":%zu,\"block_size\":%zu,\"used\":%zu,\"peak\":%zu,\"waits\":%" PRIu64
         ",\"too_big\":%" PRIu64 "},\"copies\":%" PRIu64 ",\"devices\":[",
         b.budget, b.block_size, b.used, b.peak, b.waits, b.too_big, usbip_server_copies(d->srv));
    for (int i = 0; i < n; i++) {
        const usbip_dev_stats_t *s = &devs[i].stats;
        outf(o, "%s{\"busid\":", i ? "," : "");
        out_json_str(o, devs[i].busid);
        outf(o,
             ",\"urbs\":%" PRIu64 ",\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64 ",\"unlinks\":%" PRIu64
             ",\"queue_depth\":%u,\"errors\":{\"stall\":%" PRIu64 ",\"proto\":%" PRIu64 ",\"overflow\":%" PRIu64
             ",\"nodev\":%" PRIu64 ",\"timeout\":%" PRIu64 ",\"other\":%" PRIu64
             "},\"latency_us\":{\"p50\":%u,\"p99\":%u,\"max\":%u}}",
             s->urbs, s->bytes_in, s->bytes_out, s->unlinks, s->queue_depth, s->errors.stall, s->errors.proto,
             s->errors.overflow, s->errors.nodev, s->errors.timeout, s->errors.other, s->latency_p50_us,
             s->latency_p99_us, s->latency_max_us);
    }
    outf(o, "],");
    out_process(d, o);
    free(devs);
}

/* Next whitespace-separated word; NULL at the end. */
static char *word(char **p)
{
    while (**p == ' ' || **p == '\t')
        (*p)++;
    if (!**p)
        return NULL;
    char *w = *p;
    while (**p && **p != ' ' && **p != '\t')
        (*p)++;
    if (**p)
        *(*p)++ = 0;
    return w;
}

static bool parse_i64(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || end == s || v < 0)
        return false;
    *out = v;
    return true;
}

static void cmd_grant(dongle_t *d, char *rest, out_t *o)
{
    char *busid = word(&rest), *addrs = word(&rest), *lease = word(&rest), *exp = word(&rest);
    if (!busid || !addrs || word(&rest)) {
        outf(o, "err usage: grant BUSID ADDR[,ADDR...] [LEASE_ID] [EXPIRES_UNIX]");
        return;
    }
    const char *list[USBIP_MAX_GRANT_ADDRS];
    int n = 0;
    for (char *a = strtok(addrs, ","); a; a = strtok(NULL, ",")) {
        if (n == USBIP_MAX_GRANT_ADDRS) {
            outf(o, "err at most %d addresses per grant", USBIP_MAX_GRANT_ADDRS);
            return;
        }
        list[n++] = a;
    }
    int64_t expires = 0;
    if (exp && !parse_i64(exp, &expires)) {
        outf(o, "err EXPIRES_UNIX must be a non-negative integer, got '%s'", exp);
        return;
    }
    usbip_err_t e = usbip_grant(d->srv, busid, list, n, lease, expires);
    if (e != USBIP_OK)
        outf(o, "err grant failed: %s", usbip_strerror(e));
    else
        outf(o, "ok");
    dongle_agent_devices_changed(d);
}

void dongle_command(dongle_t *d, const char *line_in, char *reply, size_t reply_len)
{
    out_t o = {.buf = reply, .len = reply_len};
    char line[2048];
    if (strlen(line_in) >= sizeof(line)) {
        snprintf(reply, reply_len, "err command line too long");
        return;
    }
    strcpy(line, line_in);
    char *rest = line;
    if (*rest == '@') {
        char *id = word(&rest) + 1;
        for (int i = 0; i < d->ngroup; i++)
            if (strcmp(d->group[i]->id, id) == 0) {
                while (*rest == ' ' || *rest == '\t')
                    rest++;
                dongle_command(d->group[i], rest, reply, reply_len);
                return;
            }
        if (strcmp(id, d->id) == 0) { /* single-dongle process: its own id works too */
            while (*rest == ' ' || *rest == '\t')
                rest++;
            dongle_command(d, rest, reply, reply_len);
            return;
        }
        snprintf(reply, reply_len, "err no dongle '%s' in this process", id);
        return;
    }
    char *cmd = word(&rest);
    char err[256] = "";
    /* powered off, only the power switch and the read-only views work (quit
     * stops the whole process) */
    if (cmd && d->off && strcmp(cmd, "start") && strcmp(cmd, "list") && strcmp(cmd, "stats") &&
        strcmp(cmd, "quit")) {
        outf(&o, "err %s is powered off (start powers it on)", d->id);
    } else if (!cmd) {
        outf(&o, "err empty command");
    } else if (strcmp(cmd, "crash") == 0) {
        if (word(&rest))
            outf(&o, "err usage: crash");
        else {
            dongle_crash(d);
            outf(&o, "ok");
        }
    } else if (strcmp(cmd, "start") == 0) {
        if (word(&rest))
            outf(&o, "err usage: start");
        else if (!d->off)
            outf(&o, "err %s is already running", d->id);
        else if (d->start_requested)
            outf(&o, "err %s is already powering on", d->id);
        else {
            d->start_requested = true;
            outf(&o, "ok");
        }
    } else if (strcmp(cmd, "net") == 0) {
        char *v = word(&rest);
        if (!v || word(&rest) || (strcmp(v, "on") && strcmp(v, "off")))
            outf(&o, "err usage: net on|off");
        else {
            dongle_set_link(d, strcmp(v, "on") == 0);
            outf(&o, "ok");
        }
    } else if (strcmp(cmd, "plug") == 0) {
        char *spec = word(&rest), busid[32];
        if (!spec || word(&rest))
            outf(&o, "err usage: plug SPEC");
        else if (dongle_plug(d, spec, busid, sizeof(busid), err, sizeof(err)) != 0)
            outf(&o, "err %s", err);
        else
            outf(&o, "ok %s", busid);
    } else if (strcmp(cmd, "unplug") == 0) {
        char *busid = word(&rest);
        if (!busid || word(&rest))
            outf(&o, "err usage: unplug BUSID");
        else if (dongle_unplug(d, busid, err, sizeof(err)) != 0)
            outf(&o, "err %s", err);
        else
            outf(&o, "ok");
    } else if (strcmp(cmd, "grant") == 0) {
        cmd_grant(d, rest, &o);
    } else if (strcmp(cmd, "revoke") == 0) {
        char *busid = word(&rest);
        if (!busid || word(&rest))
            outf(&o, "err usage: revoke BUSID");
        else {
            usbip_err_t e = usbip_revoke(d->srv, busid);
            if (e != USBIP_OK)
                outf(&o, "err revoke %s: %s", busid, e == USBIP_ERR_NOT_FOUND ? "no such busid or grant" : usbip_strerror(e));
            else
                outf(&o, "ok");
            dongle_agent_devices_changed(d);
        }
    } else if (strcmp(cmd, "enforce") == 0) {
        char *v = word(&rest);
        if (!v || word(&rest) || (strcmp(v, "on") && strcmp(v, "off")))
            outf(&o, "err usage: enforce on|off");
        else {
            usbip_set_enforce(d->srv, strcmp(v, "on") == 0);
            outf(&o, "ok");
            dongle_agent_devices_changed(d);
        }
    } else if (strcmp(cmd, "list") == 0) {
        cmd_list(d, &o);
    } else if (strcmp(cmd, "stats") == 0) {
        cmd_stats(d, &o);
    } else if (strcmp(cmd, "dev") == 0) {
        char *busid = word(&rest);
        while (*rest == ' ' || *rest == '\t')
            rest++;
        char r[1024] = "";
        if (!busid || !*rest)
            outf(&o, "err usage: dev BUSID TEXT...");
        else if (vhc_device_command(d->vhc, busid, rest, r, sizeof(r)) != 0)
            outf(&o, "err %s", r[0] ? r : "device command failed");
        else if (strncmp(r, "ok", 2) == 0 && (r[2] == 0 || r[2] == ' '))
            outf(&o, "%s", r);
        else
            outf(&o, "ok%s%s", r[0] ? " " : "", r);
    } else if (strcmp(cmd, "quit") == 0) {
        d->quit = true;
        outf(&o, "ok");
    } else {
        outf(&o, "err unknown command '%s' (plug, unplug, grant, revoke, enforce, list, stats, dev, crash, start, "
                 "net, quit)", cmd);
    }
    if (o.overflow)
        snprintf(reply, reply_len, "err reply too long");
}
