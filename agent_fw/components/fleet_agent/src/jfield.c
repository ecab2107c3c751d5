/* jfield.c - see jfield.h. */
#include "jfield.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reason.h"

void fleet_reason(char *reason, size_t len, const char *fmt, ...)
{
    if (!reason || len == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, len, fmt, ap);
    va_end(ap);
}

void fleet_logf(const fleet_log_ops_t *ops, void *ctx, fleet_log_level_t level, const char *fmt, ...)
{
    if (!ops || !ops->write) return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    ops->write(ctx, level, line);
}

/* The biggest integer a double holds exactly. */
#define JF_EXACT_MAX 9007199254740992.0

int jf_int(const cJSON *obj, const char *name, const char *path, int64_t min, int64_t max,
           bool required, int64_t *out, char *reason, size_t rl)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!it) {
        if (!required) return 0;
        fleet_reason(reason, rl, "%s: is required", path);
        return -1;
    }
    double d = it->valuedouble;
    if (!cJSON_IsNumber(it) || d != d || d < -JF_EXACT_MAX || d > JF_EXACT_MAX ||
        d != (double)(int64_t)d || (int64_t)d < min || (int64_t)d > max) {
        fleet_reason(reason, rl, "%s: must be an integer from %lld to %lld", path, (long long)min,
                     (long long)max);
        return -1;
    }
    *out = (int64_t)d;
    return 1;
}

int jf_str(const cJSON *obj, const char *name, const char *path, size_t min, bool required,
           char *out, size_t cap, char *reason, size_t rl)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!it) {
        if (!required) return 0;
        fleet_reason(reason, rl, "%s: is required", path);
        return -1;
    }
    size_t n = cJSON_IsString(it) && it->valuestring ? strlen(it->valuestring) : 0;
    if (!cJSON_IsString(it) || !it->valuestring || n < min || n >= cap) {
        fleet_reason(reason, rl, "%s: must be a string of %zu to %zu characters", path, min,
                     cap - 1);
        return -1;
    }
    memcpy(out, it->valuestring, n + 1);
    return 1;
}

int jf_bool(const cJSON *obj, const char *name, const char *path, bool required, bool *out,
            char *reason, size_t rl)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!it) {
        if (!required) return 0;
        fleet_reason(reason, rl, "%s: is required", path);
        return -1;
    }
    if (!cJSON_IsBool(it)) {
        fleet_reason(reason, rl, "%s: must be true or false", path);
        return -1;
    }
    *out = cJSON_IsTrue(it);
    return 1;
}

cJSON *jf_parse_object(const char *json, size_t len, char *reason, size_t rl)
{
    if (!json) {
        fleet_reason(reason, rl, "document: missing");
        return NULL;
    }
    /* A NUL inside the payload would make cJSON silently ignore the rest. */
    if (memchr(json, '\0', len)) {
        fleet_reason(reason, rl, "document: contains a NUL byte");
        return NULL;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (root && end) {
        /* cJSON stops after the first value; anything but whitespace after it is an error */
        for (const char *p = end; p < json + len; p++) {
            if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
                cJSON_Delete(root);
                fleet_reason(reason, rl, "document: trailing data after the JSON object");
                return NULL;
            }
        }
    }
    if (!root) {
        fleet_reason(reason, rl, "document: not valid JSON");
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        fleet_reason(reason, rl, "document: must be a JSON object");
        return NULL;
    }
    return root;
}
