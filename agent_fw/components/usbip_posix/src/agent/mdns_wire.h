/*
 * mdns_wire.h - DNS message encoding for the mDNS responder (RFC 1035
 * section 4 with RFC 6762's cache-flush and unicast-response bits). Private
 * to the posix port; pure functions over buffers so they can be fuzzed.
 */
#ifndef FLEET_MDNS_WIRE_H
#define FLEET_MDNS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { MDNS_T_A = 1, MDNS_T_PTR = 12, MDNS_T_TXT = 16, MDNS_T_SRV = 33, MDNS_T_ANY = 255 };
#define MDNS_CLASS_IN 1u
#define MDNS_CACHE_FLUSH 0x8000u
#define MDNS_NAME_MAX 256 /* dotted text, NUL included */

/* Read the (possibly compressed) name at *off into dotted text without the
 * final dot; *off moves past it. -1 on anything malformed: out of bounds,
 * pointer loops (more jumps than the packet could hold), labels over 63,
 * names over 255, or a NUL/dot inside a label. */
int mdns_name_read(const uint8_t *pkt, size_t len, size_t *off, char *out, size_t cap);

typedef struct {
    uint8_t *buf;
    size_t cap, len;
    bool overflow;         /* something did not fit: the packet is unusable */
    uint16_t names[64];    /* offsets of names written (compression targets) */
    int n_names;
} mdns_writer_t;

void mdns_w_init(mdns_writer_t *w, uint8_t *buf, size_t cap, uint16_t id, uint16_t flags);
/* Header counts are patched at the end. */
void mdns_w_counts(mdns_writer_t *w, uint16_t qd, uint16_t an, uint16_t ns, uint16_t ar);
void mdns_w_name(mdns_writer_t *w, const char *dotted);
void mdns_w_question(mdns_writer_t *w, const char *name, uint16_t type, uint16_t qclass);
/* One resource record; rdata builders below write the RDATA after rr_begin. */
size_t mdns_w_rr_begin(mdns_writer_t *w, const char *name, uint16_t type, uint16_t rclass, uint32_t ttl);
void mdns_w_rr_end(mdns_writer_t *w, size_t mark);
void mdns_w_u16(mdns_writer_t *w, uint16_t v);
void mdns_w_bytes(mdns_writer_t *w, const void *p, size_t n);

typedef struct {
    char name[MDNS_NAME_MAX];
    uint16_t type, qclass;
} mdns_question_t;

/* Parse a query's questions (at most max). Returns the count, or -1 if the
 * packet is not a well-formed query (responses are -1 too: we only answer). */
int mdns_parse_query(const uint8_t *pkt, size_t len, uint16_t *id, mdns_question_t *qs, int max);

#endif
