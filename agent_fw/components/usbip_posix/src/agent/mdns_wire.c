/* mdns_wire.c - see mdns_wire.h. Every read is bounds-checked. */
#include "mdns_wire.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

int mdns_name_read(const uint8_t *pkt, size_t len, size_t *off, char *out, size_t cap)
{
    size_t pos = *off, n = 0;
    bool jumped = false;
    int jumps = 0;
    if (cap == 0)
        return -1;
    for (;;) {
        if (pos >= len)
            return -1;
        uint8_t l = pkt[pos];
        if ((l & 0xC0) == 0xC0) {
            if (pos + 1 >= len || ++jumps > 64)
                return -1;
            size_t target = ((size_t)(l & 0x3F) << 8) | pkt[pos + 1];
            if (!jumped)
                *off = pos + 2;
            jumped = true;
            if (target >= pos) /* pointers go backwards only: no loops */
                return -1;
            pos = target;
            continue;
        }
        if (l & 0xC0)
            return -1; /* 0x40/0x80: extended label types, unused */
        if (l == 0) {
            if (!jumped)
                *off = pos + 1;
            out[n] = 0;
            return 0;
        }
        if (pos + 1 + l > len || n + l + 2 > cap || n + l + 1 > 255)
            return -1;
        if (n > 0)
            out[n++] = '.';
        for (size_t i = 0; i < l; i++) {
            uint8_t c = pkt[pos + 1 + i];
            if (c == 0 || c == '.')
                return -1;
            out[n++] = (char)c;
        }
        pos += 1u + l;
    }
}

static void put(mdns_writer_t *w, const void *p, size_t n)
{
    if (w->overflow || w->len + n > w->cap) {
        w->overflow = true;
        return;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

void mdns_w_u16(mdns_writer_t *w, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    put(w, b, 2);
}

static void put_u32(mdns_writer_t *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put(w, b, 4);
}

void mdns_w_bytes(mdns_writer_t *w, const void *p, size_t n) { put(w, p, n); }

void mdns_w_init(mdns_writer_t *w, uint8_t *buf, size_t cap, uint16_t id, uint16_t flags)
{
    memset(w, 0, sizeof(*w));
    w->buf = buf;
    w->cap = cap;
    mdns_w_u16(w, id);
    mdns_w_u16(w, flags);
    for (int i = 0; i < 4; i++)
        mdns_w_u16(w, 0);
}

void mdns_w_counts(mdns_writer_t *w, uint16_t qd, uint16_t an, uint16_t ns, uint16_t ar)
{
    if (w->cap < 12)
        return;
    uint16_t v[4] = {qd, an, ns, ar};
    for (int i = 0; i < 4; i++) {
        w->buf[4 + 2 * i] = (uint8_t)(v[i] >> 8);
        w->buf[5 + 2 * i] = (uint8_t)v[i];
    }
}

/* Offset of a name already in the packet equal to dotted (case-insensitive), or -1. */
static int find_name(const mdns_writer_t *w, const char *dotted)
{
    for (int i = 0; i < w->n_names; i++) {
        char seen[MDNS_NAME_MAX];
        size_t off = w->names[i];
        if (mdns_name_read(w->buf, w->len, &off, seen, sizeof(seen)) == 0 && strcasecmp(seen, dotted) == 0)
            return w->names[i];
    }
    return -1;
}

void mdns_w_name(mdns_writer_t *w, const char *dotted)
{
    const char *s = dotted;
    while (*s) {
        int at = find_name(w, s);
        if (at >= 0) {
            mdns_w_u16(w, (uint16_t)(0xC000u | (unsigned)at));
            return;
        }
        if (w->len < 0x3FFF && w->n_names < 64)
            w->names[w->n_names++] = (uint16_t)w->len;
        const char *dot = strchr(s, '.');
        size_t l = dot ? (size_t)(dot - s) : strlen(s);
        if (l == 0 || l > 63) {
            w->overflow = true;
            return;
        }
        uint8_t lb = (uint8_t)l;
        put(w, &lb, 1);
        put(w, s, l);
        s += l + (dot ? 1 : 0);
    }
    uint8_t z = 0;
    put(w, &z, 1);
}

void mdns_w_question(mdns_writer_t *w, const char *name, uint16_t type, uint16_t qclass)
{
    mdns_w_name(w, name);
    mdns_w_u16(w, type);
    mdns_w_u16(w, qclass);
}

size_t mdns_w_rr_begin(mdns_writer_t *w, const char *name, uint16_t type, uint16_t rclass, uint32_t ttl)
{
    mdns_w_name(w, name);
    mdns_w_u16(w, type);
    mdns_w_u16(w, rclass);
    put_u32(w, ttl);
    size_t mark = w->len;
    mdns_w_u16(w, 0); /* RDLENGTH, patched by rr_end */
    return mark;
}

void mdns_w_rr_end(mdns_writer_t *w, size_t mark)
{
    if (w->overflow)
        return;
    size_t rdlen = w->len - mark - 2;
    w->buf[mark] = (uint8_t)(rdlen >> 8);
    w->buf[mark + 1] = (uint8_t)rdlen;
}

int mdns_parse_query(const uint8_t *pkt, size_t len, uint16_t *id, mdns_question_t *qs, int max)
{
    if (len < 12)
        return -1;
    uint16_t flags = (uint16_t)(pkt[2] << 8 | pkt[3]);
    if (flags & 0x8000u)      /* QR: a response */
        return -1;
    if ((flags >> 11) & 0xF)  /* opcode must be QUERY */
        return -1;
    *id = (uint16_t)(pkt[0] << 8 | pkt[1]);
    int qd = pkt[4] << 8 | pkt[5];
    size_t off = 12;
    int n = 0;
    for (int i = 0; i < qd; i++) {
        mdns_question_t q;
        if (mdns_name_read(pkt, len, &off, q.name, sizeof(q.name)) != 0 || off + 4 > len)
            return -1;
        q.type = (uint16_t)(pkt[off] << 8 | pkt[off + 1]);
        q.qclass = (uint16_t)(pkt[off + 2] << 8 | pkt[off + 3]);
        off += 4;
        if (n < max)
            qs[n++] = q;
    }
    return n;
}
