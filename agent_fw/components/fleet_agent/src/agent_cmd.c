/*
 * agent_cmd.c - strict validation of cmd/<name> payloads.
 *
 * The rules are those of fleet/contracts/mqtt/v1/cmd-*.schema.json, checked
 * by hand because the dongle has no JSON Schema engine; the C unit tests run
 * every valid and invalid fixture through here so the two cannot drift.
 * Reasons start with the field, like the config and manifest parsers.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cJSON.h"
#include "fleet_agent/agent.h"
#include "fleet_agent/err.h"
#include "jfield.h"
#include "reason.h"

static const char *const k_names[FLEET_CMD_COUNT] = {"grant", "revoke", "config", "ota", "reboot", "port-power"};

const char *fleet_cmd_name(fleet_cmd_kind_t k)
{
    return (unsigned)k < FLEET_CMD_COUNT ? k_names[k] : "?";
}

int fleet_cmd_kind_from_name(const char *name)
{
    for (int i = 0; name && i < FLEET_CMD_COUNT; i++)
        if (strcmp(name, k_names[i]) == 0)
            return i;
    return -1;
}

static bool is_lhex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_xdigit(char c) { return is_lhex(c) || (c >= 'A' && c <= 'F'); }

bool fleet_txt_is_uuid(const char *s)
{
    static const int groups[5] = {8, 4, 4, 4, 12};
    for (int g = 0; g < 5; g++) {
        for (int i = 0; i < groups[g]; i++, s++)
            if (!is_lhex(*s))
                return false;
        if (g < 4 && *s++ != '-')
            return false;
    }
    return *s == 0;
}

/* [1-9][0-9]* - [1-9][0-9]* (. [1-9][0-9]*)*, at most 31 characters */
bool fleet_txt_is_busid(const char *s)
{
    if (strlen(s) > 31)
        return false;
    int part = 0;
    for (;;) {
        if (*s < '1' || *s > '9')
            return false;
        while (is_digit(*s))
            s++;
        if (*s == 0)
            return part >= 1;
        if (*s == '-' && part == 0) {
            part = 1;
        } else if (*s == '.' && part >= 1) {
            part++;
        } else {
            return false;
        }
        s++;
    }
}

/* Dotted quad, each 0..255 without leading zeros (what Python's ipaddress,
 * and so the service's schema check, accepts). */
static const char *ipv4_prefix(const char *s)
{
    for (int i = 0; i < 4; i++) {
        if (i > 0 && *s++ != '.')
            return NULL;
        if (!is_digit(*s))
            return NULL;
        int v = 0, n = 0;
        const char *start = s;
        while (is_digit(*s) && n < 4) {
            v = v * 10 + (*s - '0');
            s++;
            n++;
        }
        if (n > 3 || v > 255 || (n > 1 && *start == '0'))
            return NULL;
    }
    return s;
}

bool fleet_txt_is_ipv4(const char *s)
{
    const char *e = ipv4_prefix(s);
    return e && *e == 0;
}

/* RFC 4291 text form: up to 8 groups of 1-4 hex digits, at most one "::",
 * optionally ending in a dotted quad that counts as two groups. No zone id. */
bool fleet_txt_is_ipv6(const char *s)
{
    if (strlen(s) > 45)
        return false;
    int groups = 0;
    bool gap = false;
    if (s[0] == ':') {
        if (s[1] != ':')
            return false;
        gap = true;
        s += 2;
        if (*s == 0)
            return true;
    }
    for (;;) {
        const char *v4 = ipv4_prefix(s);
        if (v4 && *v4 == 0) {
            groups += 2;
            break;
        }
        int n = 0;
        while (is_xdigit(s[n]))
            n++;
        if (n == 0 || n > 4)
            return false;
        groups++;
        s += n;
        if (*s == 0)
            break;
        if (*s != ':')
            return false;
        s++;
        if (*s == ':') {
            if (gap)
                return false;
            gap = true;
            s++;
            if (*s == 0)
                break;
        }
    }
    return gap ? groups <= 7 : groups == 8;
}

/* Length in code points (JSON Schema's maxLength), or -1 for invalid UTF-8. */
static int utf8_len(const char *s)
{
    int n = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int extra = *p < 0x80 ? 0 : (*p & 0xE0) == 0xC0 ? 1 : (*p & 0xF0) == 0xE0 ? 2 : (*p & 0xF8) == 0xF0 ? 3 : -1;
        if (extra < 0)
            return -1;
        p++;
        for (int i = 0; i < extra; i++, p++)
            if ((*p & 0xC0) != 0x80)
                return -1;
        n++;
    }
    return n;
}

static bool is_lease_token(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != ':' && c != '-')))
            return false;
    }
    return true;
}

static int get_busid(const cJSON *root, fleet_cmd_t *out, char *reason, size_t rl)
{
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(root, "busid");
    if (!b) {
        fleet_reason(reason, rl, "busid: required");
        return -1;
    }
    if (!cJSON_IsString(b) || !fleet_txt_is_busid(b->valuestring)) {
        fleet_reason(reason, rl, "busid: must be a port path like \"1-2\" or \"1-2.3\" (at most 31 characters)");
        return -1;
    }
    snprintf(out->busid, sizeof(out->busid), "%s", b->valuestring);
    return 0;
}

static int get_lease(const cJSON *root, fleet_cmd_t *out, char *reason, size_t rl)
{
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(root, "lease_id");
    if (!l) {
        fleet_reason(reason, rl, "lease_id: required");
        return -1;
    }
    if (cJSON_IsNumber(l)) {
        double d = l->valuedouble;
        if (d < 1 || d > 9007199254740992.0 || floor(d) != d) {
            fleet_reason(reason, rl, "lease_id: must be a positive integer or a token of [A-Za-z0-9._:-]");
            return -1;
        }
        snprintf(out->lease_id, sizeof(out->lease_id), "%.0f", d);
        out->lease_is_int = true;
        return 0;
    }
    if (!cJSON_IsString(l) || !is_lease_token(l->valuestring)) {
        fleet_reason(reason, rl, "lease_id: must be a positive integer or a token of 1-64 [A-Za-z0-9._:-] "
                                 "starting with a letter or digit");
        return -1;
    }
    snprintf(out->lease_id, sizeof(out->lease_id), "%s", l->valuestring);
    out->lease_is_int = false;
    return 0;
}

static int get_text(const cJSON *root, const char *name, bool required, int min, int max, char *dst, size_t cap,
                    char *reason, size_t rl)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!t) {
        if (required)
            fleet_reason(reason, rl, "%s: required", name);
        return required ? -1 : 0;
    }
    int n = cJSON_IsString(t) ? utf8_len(t->valuestring) : -1;
    if (n < min || n > max || strlen(t->valuestring) >= cap) {
        fleet_reason(reason, rl, "%s: must be a string of %d to %d characters", name, min, max);
        return -1;
    }
    snprintf(dst, cap, "%s", t->valuestring);
    return 1;
}

static int parse_grant(const cJSON *root, fleet_cmd_t *out, char *reason, size_t rl)
{
    if (get_busid(root, out, reason, rl))
        return -1;
    const cJSON *cl = cJSON_GetObjectItemCaseSensitive(root, "clients");
    if (!cl) {
        fleet_reason(reason, rl, "clients: required");
        return -1;
    }
    int n = cJSON_IsArray(cl) ? cJSON_GetArraySize(cl) : -1;
    if (n < 1 || n > FLEET_CMD_MAX_CLIENTS) {
        fleet_reason(reason, rl, "clients: must be an array of 1 to %d IP addresses", FLEET_CMD_MAX_CLIENTS);
        return -1;
    }
    out->n_clients = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cl)
    {
        if (!cJSON_IsString(c) || !(fleet_txt_is_ipv4(c->valuestring) || fleet_txt_is_ipv6(c->valuestring))) {
            fleet_reason(reason, rl, "clients[%d]: must be an IPv4 or IPv6 address", out->n_clients);
            return -1;
        }
        for (int i = 0; i < out->n_clients; i++) {
            if (strcmp(out->clients[i], c->valuestring) == 0) {
                fleet_reason(reason, rl, "clients: \"%s\" is listed twice", c->valuestring);
                return -1;
            }
        }
        snprintf(out->clients[out->n_clients++], sizeof(out->clients[0]), "%s", c->valuestring);
    }
    if (get_lease(root, out, reason, rl))
        return -1;
    int64_t exp;
    if (jf_int(root, "expires_at", "expires_at", 0, INT64_C(9007199254740992), true, &exp, reason, rl) != 1)
        return -1;
    out->expires_at = exp;
    return 0;
}

static int parse_revoke(const cJSON *root, fleet_cmd_t *out, char *reason, size_t rl)
{
    if (get_busid(root, out, reason, rl) || get_lease(root, out, reason, rl))
        return -1;
    return get_text(root, "reason", true, 1, 128, out->reason, sizeof(out->reason), reason, rl) < 0 ? -1 : 0;
}

static int parse_port_power(const cJSON *root, fleet_cmd_t *out, char *reason, size_t rl)
{
    if (get_busid(root, out, reason, rl))
        return -1;
    snprintf(out->action, sizeof(out->action), "cycle");
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, "action");
    if (!a)
        return 0;
    if (!cJSON_IsString(a) || (strcmp(a->valuestring, "on") && strcmp(a->valuestring, "off") &&
                               strcmp(a->valuestring, "cycle"))) {
        fleet_reason(reason, rl, "action: must be \"on\", \"off\" or \"cycle\"");
        return -1;
    }
    snprintf(out->action, sizeof(out->action), "%s", a->valuestring);
    return 0;
}

int fleet_cmd_parse(fleet_cmd_kind_t kind, const char *json, size_t len, fleet_cmd_t *out, char *reason,
                    size_t rl)
{
    memset(out, 0, sizeof(*out));
    out->kind = kind;
    if ((unsigned)kind >= FLEET_CMD_COUNT) {
        fleet_reason(reason, rl, "command: unknown");
        return FLEET_ERR_INVALID;
    }
    if (len > FLEET_AGENT_MAX_PAYLOAD) {
        fleet_reason(reason, rl, "document: larger than %d bytes", FLEET_AGENT_MAX_PAYLOAD);
        return FLEET_ERR_INVALID;
    }
    cJSON *root = jf_parse_object(json, len, reason, rl);
    if (!root)
        return FLEET_ERR_INVALID;
    int rc = -1;
    /* request_id first: every later refusal can then be answered. */
    const cJSON *rid = cJSON_GetObjectItemCaseSensitive(root, "request_id");
    if (!rid) {
        fleet_reason(reason, rl, "request_id: required");
        goto done;
    }
    if (!cJSON_IsString(rid) || !fleet_txt_is_uuid(rid->valuestring)) {
        fleet_reason(reason, rl, "request_id: must be a lowercase UUID");
        goto done;
    }
    snprintf(out->request_id, sizeof(out->request_id), "%s", rid->valuestring);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "v");
    if (!v || !cJSON_IsNumber(v) || v->valuedouble != 1.0) {
        fleet_reason(reason, rl, "v: must be 1");
        goto done;
    }
    const cJSON *ia = cJSON_GetObjectItemCaseSensitive(root, "issued_at");
    if (!ia) {
        fleet_reason(reason, rl, "issued_at: required");
        goto done;
    }
    if (!cJSON_IsNumber(ia) || !(ia->valuedouble >= 0) || !isfinite(ia->valuedouble)) {
        fleet_reason(reason, rl, "issued_at: must be a number >= 0 (unix seconds)");
        goto done;
    }
    out->issued_at = ia->valuedouble;
    switch (kind) {
    case FLEET_CMD_GRANT: rc = parse_grant(root, out, reason, rl); break;
    case FLEET_CMD_REVOKE: rc = parse_revoke(root, out, reason, rl); break;
    case FLEET_CMD_PORT_POWER: rc = parse_port_power(root, out, reason, rl); break;
    case FLEET_CMD_REBOOT:
        rc = get_text(root, "reason", false, 0, 128, out->reason, sizeof(out->reason), reason, rl) < 0 ? -1 : 0;
        break;
    case FLEET_CMD_CONFIG: /* the body is fleet_config_parse's business */
    case FLEET_CMD_OTA:    /* and this one fleet_manifest's */
    default: rc = 0; break;
    }
done:
    cJSON_Delete(root);
    return rc == 0 ? FLEET_OK : FLEET_ERR_INVALID;
}
