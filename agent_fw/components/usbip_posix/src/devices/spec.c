/*
 * spec.c - device specifications: "model[:key=value[,key=value...]]".
 *
 * Identities (VID 0x1209 = pid.codes; PIDs from its low test range, for the
 * simulation only, never to be flashed on real silicon). Keep them stable:
 * the service and the tests recognise models by them.
 *
 *   model         PID     class (device / interface)        product string
 *   msc           0x0001  00 / 08 06 50 (BOT, SCSI)          fleet Virtual Disk
 *   hid-keyboard  0x0002  00 / 03 01 01 (boot keyboard)      fleet Virtual Keyboard
 *   cdc-acm       0x0003  EF 02 01 (IAD) / 02 02 01 + 0A     fleet Virtual Serial
 *   probe         0x0004  00 / FF 00 00 (CMSIS-DAP v2 style) fleet Virtual Probe (CMSIS-DAP)
 *   hub           0x0005  09 / 09                            fleet Virtual Hub
 *
 * Manufacturer "fleet", bcdDevice 1.00, one configuration.
 *
 * Serial numbers: serial= (1-32 characters of A-Z a-z 0-9 . _ -), or by
 * default "<PREFIX>-<port>" when the spec carries port= (e.g. "MSC-1-2.3"),
 * which stays the same across re-plugs on that port, else "<PREFIX>-NNNN"
 * with a per-model creation counter of this process starting at 0001
 * (deterministic for a given command line). Prefixes: MSC, KBD, ACM, DAP, HUB.
 *
 * Common keys: speed= (low|full|high as the model allows), serial=, and
 * port=, which belongs to fleet-dongle / the vhc (where to plug): models
 * accept it and ignore it. Any other key a model does not know is an error.
 */
#include "model.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_OPTS ((int)(sizeof ((vdev_spec_t *)0)->opt / sizeof ((vdev_spec_t *)0)->opt[0]))
#define KEY_MAX (sizeof ((vdev_spec_t *)0)->opt[0].key - 1)
#define VALUE_MAX (sizeof ((vdev_spec_t *)0)->opt[0].value - 1)
#define MODEL_MAX (sizeof ((vdev_spec_t *)0)->model - 1)

typedef vdev_t *(*model_ctor_t)(const vdev_spec_t *, char *, size_t);

static const struct {
    const char *name;
    model_ctor_t create;
} models[] = {
    {"msc", vdev_msc_create},
    {"hid-keyboard", vdev_hid_keyboard_create},
    {"cdc-acm", vdev_cdc_acm_create},
    {"probe", vdev_probe_create},
    {"hub", vdev_hub_create},
};

#define MODEL_LIST "msc, hid-keyboard, cdc-acm, probe or hub"

static model_ctor_t find_model(const char *name)
{
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
        if (strcmp(models[i].name, name) == 0)
            return models[i].create;
    return NULL;
}

static bool key_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

int vdev_spec_parse(const char *text, vdev_spec_t *spec, char *err, size_t err_len)
{
    memset(spec, 0, sizeof *spec);
    if (!text || !*text) {
        vdev_set_err(err, err_len, "empty device spec (expected model[:key=value,...])");
        return -1;
    }
    for (const char *p = text; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (isspace(c)) {
            vdev_set_err(err, err_len, "device spec must not contain whitespace (at offset %zu)",
                         (size_t)(p - text));
            return -1;
        }
        if (c < 0x20 || c >= 0x7f) {
            vdev_set_err(err, err_len,
                         "device spec contains a non-printable character (at offset %zu)",
                         (size_t)(p - text));
            return -1;
        }
    }
    const char *colon = strchr(text, ':');
    size_t mlen = colon ? (size_t)(colon - text) : strlen(text);
    if (mlen == 0) {
        vdev_set_err(err, err_len, "missing model name before ':' (expected %s)", MODEL_LIST);
        return -1;
    }
    if (mlen > MODEL_MAX) {
        vdev_set_err(err, err_len, "unknown model '%.*s' (expected %s)", (int)mlen, text,
                     MODEL_LIST);
        return -1;
    }
    memcpy(spec->model, text, mlen);
    spec->model[mlen] = '\0';
    if (!find_model(spec->model)) {
        vdev_set_err(err, err_len, "unknown model '%s' (expected %s)", spec->model, MODEL_LIST);
        return -1;
    }
    if (!colon)
        return 0;
    const char *p = colon + 1;
    if (!*p) {
        vdev_set_err(err, err_len, "empty option list after '%s:' (expected key=value,...)",
                     spec->model);
        return -1;
    }
    for (int n = 1;; n++) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0) {
            vdev_set_err(err, err_len, "empty option #%d (stray ',')", n);
            return -1;
        }
        const char *eq = memchr(p, '=', len);
        size_t klen = eq ? (size_t)(eq - p) : len;
        if (klen == 0) {
            vdev_set_err(err, err_len, "option #%d has an empty name (expected key=value)", n);
            return -1;
        }
        if (klen > KEY_MAX) {
            vdev_set_err(err, err_len, "option name '%.*s...' is too long (max %zu characters)",
                         (int)KEY_MAX, p, KEY_MAX);
            return -1;
        }
        for (size_t i = 0; i < klen; i++) {
            if (!key_char_ok(p[i])) {
                vdev_set_err(err, err_len,
                             "option name '%.*s' has an invalid character '%c' (expected a-z, 0-9, _)",
                             (int)klen, p, p[i]);
                return -1;
            }
        }
        if (!eq) {
            vdev_set_err(err, err_len, "option '%.*s' has no value (expected %.*s=value)",
                         (int)klen, p, (int)klen, p);
            return -1;
        }
        size_t vlen = len - klen - 1;
        if (vlen == 0) {
            vdev_set_err(err, err_len, "option '%.*s' has an empty value", (int)klen, p);
            return -1;
        }
        if (vlen > VALUE_MAX) {
            vdev_set_err(err, err_len, "value of option '%.*s' is too long (max %zu characters)",
                         (int)klen, p, VALUE_MAX);
            return -1;
        }
        for (int i = 0; i < spec->num_opts; i++) {
            if (strlen(spec->opt[i].key) == klen && memcmp(spec->opt[i].key, p, klen) == 0) {
                vdev_set_err(err, err_len, "duplicate option '%.*s'", (int)klen, p);
                return -1;
            }
        }
        if (spec->num_opts == MAX_OPTS) {
            vdev_set_err(err, err_len, "too many options (max %d)", MAX_OPTS);
            return -1;
        }
        memcpy(spec->opt[spec->num_opts].key, p, klen);
        memcpy(spec->opt[spec->num_opts].value, eq + 1, vlen);
        spec->num_opts++;
        if (!end)
            return 0;
        p = end + 1;
        if (!*p) {
            vdev_set_err(err, err_len, "empty option #%d (trailing ',')", n + 1);
            return -1;
        }
    }
}

vdev_t *vdev_create(const vdev_spec_t *spec, char *err, size_t err_len)
{
    if (!spec) {
        vdev_set_err(err, err_len, "no device spec");
        return NULL;
    }
    model_ctor_t create = find_model(spec->model);
    if (!create) {
        vdev_set_err(err, err_len, "unknown model '%s' (expected %s)", spec->model, MODEL_LIST);
        return NULL;
    }
    return create(spec, err, err_len);
}

/* ---- option helpers ------------------------------------------------------- */

const char *vdev_opt(const vdev_spec_t *spec, const char *key)
{
    for (int i = 0; i < spec->num_opts && i < MAX_OPTS; i++)
        if (strcmp(spec->opt[i].key, key) == 0)
            return spec->opt[i].value;
    return NULL;
}

int vdev_opts_check(const vdev_spec_t *spec, const char *const *allowed, char *err, size_t err_len)
{
    if (spec->num_opts < 0 || spec->num_opts > MAX_OPTS) {
        vdev_set_err(err, err_len, "%s: invalid option count %d", spec->model, spec->num_opts);
        return -1;
    }
    for (int i = 0; i < spec->num_opts; i++) {
        const char *key = spec->opt[i].key;
        bool ok = strcmp(key, "port") == 0;
        for (const char *const *a = allowed; !ok && *a; a++)
            ok = strcmp(key, *a) == 0;
        if (!ok) {
            char list[160] = "";
            size_t used = 0;
            for (const char *const *a = allowed; *a; a++) {
                int w = snprintf(list + used, sizeof list - used, "%s, ", *a);
                if (w < 0 || (size_t)w >= sizeof list - used)
                    break;
                used += (size_t)w;
            }
            vdev_set_err(err, err_len, "unknown option '%s' for model %s (accepted: %sport)", key,
                         spec->model, list);
            return -1;
        }
    }
    return 0;
}

static bool parse_u64(const char *s, uint64_t *out, const char **rest)
{
    if (!isdigit((unsigned char)*s))
        return false;
    uint64_t v = 0;
    for (; isdigit((unsigned char)*s); s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    *rest = s;
    return true;
}

static void format_size(uint64_t v, char *buf, size_t len)
{
    static const char suffix[] = {'T', 'G', 'M', 'K'};
    for (int i = 0; i < 4; i++) {
        uint64_t unit = 1ull << (10 * (4 - i));
        if (v >= unit && v % unit == 0) {
            snprintf(buf, len, "%" PRIu64 "%c", v / unit, suffix[i]);
            return;
        }
    }
    snprintf(buf, len, "%" PRIu64, v);
}

int vdev_opt_size(const vdev_spec_t *spec, const char *key, uint64_t def, uint64_t min,
                  uint64_t max, uint64_t multiple_of, uint64_t *out, char *err, size_t err_len)
{
    const char *v = vdev_opt(spec, key);
    if (!v) {
        *out = def;
        return 0;
    }
    uint64_t n, mult = 1;
    const char *rest;
    bool ok = parse_u64(v, &n, &rest);
    if (ok && *rest) {
        switch (*rest) {
        case 'K': case 'k': mult = 1ull << 10; break;
        case 'M': case 'm': mult = 1ull << 20; break;
        case 'G': case 'g': mult = 1ull << 30; break;
        case 'T': case 't': mult = 1ull << 40; break;
        default: ok = false; break;
        }
        ok = ok && rest[1] == '\0';
    }
    if (!ok) {
        vdev_set_err(err, err_len,
                     "option '%s': '%s' is not a size (expected bytes with an optional K, M, G "
                     "or T suffix, e.g. 64M)",
                     key, v);
        return -1;
    }
    char lo[32], hi[32];
    format_size(min, lo, sizeof lo);
    format_size(max, hi, sizeof hi);
    if (n > max / mult || n * mult < min || n * mult > max) {
        vdev_set_err(err, err_len, "option '%s': %s is out of range (expected %s..%s)", key, v, lo,
                     hi);
        return -1;
    }
    n *= mult;
    if (multiple_of > 1 && n % multiple_of != 0) {
        vdev_set_err(err, err_len, "option '%s': %s is not a multiple of %" PRIu64, key, v,
                     multiple_of);
        return -1;
    }
    *out = n;
    return 0;
}

int vdev_opt_bool(const vdev_spec_t *spec, const char *key, bool def, bool *out, char *err,
                  size_t err_len)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    const char *v = vdev_opt(spec, key);
    *out = def;
    if (!v)
        return 0;
    for (int i = 0; i < 4; i++) {
        if (strcmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    vdev_set_err(err, err_len,
                 "option '%s': '%s' is not a boolean (expected 1, 0, true, false, yes, no, on or off)",
                 key, v);
    return -1;
}

int vdev_opt_uint(const vdev_spec_t *spec, const char *key, uint32_t def, uint32_t min,
                  uint32_t max, uint32_t *out, char *err, size_t err_len)
{
    const char *v = vdev_opt(spec, key);
    if (!v) {
        *out = def;
        return 0;
    }
    uint64_t n;
    const char *rest;
    if (!parse_u64(v, &n, &rest) || *rest || n < min || n > max) {
        vdev_set_err(err, err_len, "option '%s': '%s' is not an integer in %" PRIu32 "..%" PRIu32,
                     key, v, min, max);
        return -1;
    }
    *out = (uint32_t)n;
    return 0;
}

int vdev_opt_speed(const vdev_spec_t *spec, vdev_speed_t def, bool allow_low, bool allow_high,
                   vdev_speed_t *out, char *err, size_t err_len)
{
    const char *v = vdev_opt(spec, "speed");
    *out = def;
    if (!v)
        return 0;
    if (strcmp(v, "full") == 0) {
        *out = VDEV_SPEED_FULL;
        return 0;
    }
    if (allow_low && strcmp(v, "low") == 0) {
        *out = VDEV_SPEED_LOW;
        return 0;
    }
    if (allow_high && strcmp(v, "high") == 0) {
        *out = VDEV_SPEED_HIGH;
        return 0;
    }
    vdev_set_err(err, err_len, "option 'speed': '%s' is not a speed %s supports (expected %s)", v,
                 spec->model,
                 allow_low ? (allow_high ? "low, full or high" : "low or full")
                           : (allow_high ? "full or high" : "full"));
    return -1;
}

/* Creation counters for default serials, per model. Process-wide on
 * purpose: two simulated dongles in one process still get distinct serials. */
static atomic_uint serial_counters[8];

static unsigned next_counter(const char *prefix)
{
    static const char *const prefixes[] = {"MSC", "KBD", "ACM", "DAP", "HUB"};
    size_t slot = 7;
    for (size_t i = 0; i < 5; i++)
        if (strcmp(prefixes[i], prefix) == 0)
            slot = i;
    return atomic_fetch_add(&serial_counters[slot], 1u) + 1u;
}

static bool serial_char_ok(char c)
{
    return isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-';
}

int vdev_opt_serial(const vdev_spec_t *spec, const char *prefix, char out[33], char *err,
                    size_t err_len)
{
    const char *v = vdev_opt(spec, "serial");
    if (v) {
        size_t n = strlen(v);
        bool ok = n >= 1 && n <= 32;
        for (size_t i = 0; ok && i < n; i++)
            ok = serial_char_ok(v[i]);
        if (!ok) {
            vdev_set_err(err, err_len,
                         "option 'serial': '%s' is not a serial number (expected 1-32 characters "
                         "of A-Z a-z 0-9 . _ -)",
                         v);
            return -1;
        }
        memcpy(out, v, n + 1);
        return 0;
    }
    const char *port = vdev_opt(spec, "port");
    size_t plen = port ? strlen(port) : 0, xlen = strlen(prefix);
    if (port && xlen + 1 + plen <= 32) {
        bool ok = true;
        for (const char *p = port; ok && *p; p++)
            ok = serial_char_ok(*p);
        if (ok) { /* lengths checked above; memcpy keeps gcc's truncation analysis quiet */
            memcpy(out, prefix, xlen);
            out[xlen] = '-';
            memcpy(out + xlen + 1, port, plen + 1);
            return 0;
        }
    }
    snprintf(out, 33, "%s-%04u", prefix, next_counter(prefix) % 10000u);
    return 0;
}
