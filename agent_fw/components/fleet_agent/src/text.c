/* text.c - hex, base64, SemVer. */
#include "fleet_agent/text.h"

#include <string.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool fleet_hex_decode(const char *hex, uint8_t *out, size_t n)
{
    if (!hex || strlen(hex) != 2 * n) return false;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

void fleet_hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64val(char c)
{
    const char *p = c ? strchr(b64, c) : NULL;
    return p ? (int)(p - b64) : -1;
}

int fleet_base64_decode(const char *text, uint8_t *out, size_t cap)
{
    if (!text) return -1;
    size_t len = strlen(text);
    if (len % 4 != 0) return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        bool last = i + 4 == len;
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            char c = text[i + (size_t)k];
            /* '=' only at the end of the last quantum, at most two of them */
            if (c == '=' && last && k >= 2 && (k == 3 || text[i + 3] == '=')) {
                v[k] = 0;
                pad++;
                continue;
            }
            v[k] = b64val(c);
            if (v[k] < 0) return -1;
        }
        uint32_t q = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        uint8_t bytes[3] = {(uint8_t)(q >> 16), (uint8_t)(q >> 8), (uint8_t)q};
        /* Non-canonical encodings (stray bits under the padding) are refused so
         * one signature has exactly one text form. */
        if ((pad == 1 && bytes[2] != 0) || (pad == 2 && bytes[1] != 0)) return -1;
        for (int k = 0; k < 3 - pad; k++) {
            if (o >= cap) return -1;
            out[o++] = bytes[k];
        }
    }
    return (int)o;
}

size_t fleet_base64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t q = (uint32_t)in[i] << 16;
        if (i + 1 < n) q |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n) q |= in[i + 2];
        out[o++] = b64[q >> 18 & 63];
        out[o++] = b64[q >> 12 & 63];
        out[o++] = i + 1 < n ? b64[q >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? b64[q & 63] : '=';
    }
    out[o] = '\0';
    return o;
}

/* --- SemVer --- */

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_ident_char(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-';
}

/* Numeric field without leading zeros; advances *p. */
static bool numeric(const char **p)
{
    const char *s = *p;
    if (!is_digit(*s)) return false;
    if (*s == '0' && is_digit(s[1])) return false;
    while (is_digit(*s)) s++;
    if (s - *p > 9) return false; /* keeps every field inside uint32 */
    *p = s;
    return true;
}

/* Dot-separated identifiers up to end or stop; numeric ones without leading zeros
 * when numeric_rule. */
static bool idents(const char **p, char stop, bool numeric_rule)
{
    const char *s = *p;
    for (;;) {
        const char *start = s;
        bool all_digits = true;
        while (is_ident_char(*s)) {
            if (!is_digit(*s)) all_digits = false;
            s++;
        }
        if (s == start) return false;
        if (numeric_rule && all_digits && *start == '0' && s - start > 1) return false;
        if (*s != '.') break;
        s++;
    }
    if (*s != '\0' && *s != stop) return false;
    *p = s;
    return true;
}

bool fleet_semver_valid(const char *v)
{
    if (!v) return false;
    const char *p = v;
    for (int i = 0; i < 3; i++) {
        if (!numeric(&p)) return false;
        if (i < 2 && *p++ != '.') return false;
    }
    if (*p == '-') {
        p++;
        if (!idents(&p, '+', true)) return false;
    }
    if (*p == '+') {
        p++;
        if (!idents(&p, '\0', false)) return false;
    }
    return *p == '\0';
}

static unsigned long num(const char **p)
{
    unsigned long n = 0;
    while (is_digit(**p)) n = n * 10 + (unsigned long)(*(*p)++ - '0');
    return n;
}

static size_t ident_len(const char *s)
{
    size_t n = 0;
    while (s[n] && s[n] != '.' && s[n] != '+') n++;
    return n;
}

static bool all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_digit(s[i])) return false;
    return true;
}

int fleet_semver_cmp(const char *a, const char *b)
{
    for (int i = 0; i < 3; i++) {
        unsigned long x = num(&a), y = num(&b);
        if (x != y) return x < y ? -1 : 1;
        if (*a == '.') a++;
        if (*b == '.') b++;
    }
    bool pa = *a == '-', pb = *b == '-';
    if (!pa || !pb) return pa == pb ? 0 : (pa ? -1 : 1);
    a++, b++;
    for (;;) {
        bool ea = *a == '\0' || *a == '+', eb = *b == '\0' || *b == '+';
        if (ea || eb) return ea == eb ? 0 : (ea ? -1 : 1);
        size_t la = ident_len(a), lb = ident_len(b);
        bool na = all_digits(a, la), nb = all_digits(b, lb);
        int c;
        if (na && nb)
            c = la != lb ? (la < lb ? -1 : 1) : memcmp(a, b, la); /* no leading zeros */
        else if (na != nb)
            c = na ? -1 : 1; /* numeric identifiers sort first */
        else {
            c = memcmp(a, b, la < lb ? la : lb);
            if (c == 0 && la != lb) c = la < lb ? -1 : 1;
        }
        if (c) return c < 0 ? -1 : 1;
        a += la, b += lb;
        if (*a == '.') a++;
        if (*b == '.') b++;
    }
}
