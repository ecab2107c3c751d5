/*
 * test_agent_runtime_mdns.c - the mDNS wire code: names round-trip with
 * compression, queries parse, and hostile packets (pointer loops, forward
 * pointers, truncation, oversize labels, random bytes) are refused without
 * reading out of bounds (run under -DFLEET_SANITIZE=ON to prove the latter).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdns_wire.h"
#include "testlib.h"

static void test_name_roundtrip_and_compression(void)
{
    uint8_t buf[512];
    mdns_writer_t w;
    mdns_w_init(&w, buf, sizeof(buf), 0, 0x8400);
    size_t first = w.len;
    mdns_w_name(&w, "esp-a1b2c3d4e5f6._usbip._tcp.local");
    size_t second = w.len;
    mdns_w_name(&w, "_usbip._tcp.local");  /* a suffix of the first: one pointer */
    TL_EQ_INT(w.len - second, 2);
    mdns_w_name(&w, "esp-a1b2c3d4e5f6.local"); /* one label + pointer to "local" */
    TL_EQ_INT(w.len - (second + 2), 1 + 16 + 2);
    TL_CHECK(!w.overflow);
    char out[MDNS_NAME_MAX];
    size_t off = first;
    TL_EQ_INT(mdns_name_read(buf, w.len, &off, out, sizeof(out)), 0);
    TL_EQ_STR(out, "esp-a1b2c3d4e5f6._usbip._tcp.local");
    TL_EQ_INT(off, second);
    TL_EQ_INT(mdns_name_read(buf, w.len, &off, out, sizeof(out)), 0);
    TL_EQ_STR(out, "_usbip._tcp.local");
    TL_EQ_INT(off, second + 2);
    TL_EQ_INT(mdns_name_read(buf, w.len, &off, out, sizeof(out)), 0);
    TL_EQ_STR(out, "esp-a1b2c3d4e5f6.local");
    /* a buffer too small is an overflow, never a write past it */
    uint8_t small[20];
    mdns_w_init(&w, small, sizeof(small), 0, 0);
    mdns_w_name(&w, "esp-a1b2c3d4e5f6._usbip._tcp.local");
    TL_CHECK(w.overflow);
}

static void test_query_parse(void)
{
    uint8_t buf[512];
    mdns_writer_t w;
    mdns_w_init(&w, buf, sizeof(buf), 0x1234, 0);
    mdns_w_question(&w, "_usbip._tcp.local", MDNS_T_PTR, MDNS_CLASS_IN | 0x8000u);
    mdns_w_question(&w, "esp-a1b2c3d4e5f6._usbip._tcp.local", MDNS_T_ANY, MDNS_CLASS_IN);
    mdns_w_counts(&w, 2, 0, 0, 0);
    mdns_question_t qs[4];
    uint16_t id = 0;
    TL_EQ_INT(mdns_parse_query(buf, w.len, &id, qs, 4), 2);
    TL_EQ_INT(id, 0x1234);
    TL_EQ_STR(qs[0].name, "_usbip._tcp.local");
    TL_EQ_INT(qs[0].type, MDNS_T_PTR);
    TL_EQ_INT(qs[0].qclass, 0x8001);
    TL_EQ_STR(qs[1].name, "esp-a1b2c3d4e5f6._usbip._tcp.local");
    /* every truncation is refused */
    for (size_t n = 0; n < w.len; n++)
        TL_EQ_INT(mdns_parse_query(buf, n, &id, qs, 4), -1);
    /* responses are not queries */
    buf[2] |= 0x80;
    TL_EQ_INT(mdns_parse_query(buf, w.len, &id, qs, 4), -1);
}

static void test_hostile_names(void)
{
    char out[MDNS_NAME_MAX];
    size_t off;
    /* pointer to itself */
    const uint8_t self[] = {0xC0, 0x00};
    off = 0;
    TL_EQ_INT(mdns_name_read(self, sizeof(self), &off, out, sizeof(out)), -1);
    /* two pointers to each other */
    const uint8_t pair[] = {0xC0, 0x02, 0xC0, 0x00};
    off = 2;
    TL_EQ_INT(mdns_name_read(pair, sizeof(pair), &off, out, sizeof(out)), -1);
    /* forward pointer */
    const uint8_t fwd[] = {0xC0, 0x03, 0x00, 0x01, 'a', 0x00};
    off = 0;
    TL_EQ_INT(mdns_name_read(fwd, sizeof(fwd), &off, out, sizeof(out)), -1);
    /* label running past the end */
    const uint8_t trunc[] = {0x05, 'a', 'b'};
    off = 0;
    TL_EQ_INT(mdns_name_read(trunc, sizeof(trunc), &off, out, sizeof(out)), -1);
    /* reserved label type */
    const uint8_t ext[] = {0x41, 'a', 0x00};
    off = 0;
    TL_EQ_INT(mdns_name_read(ext, sizeof(ext), &off, out, sizeof(out)), -1);
    /* a dot inside a label would change the name's meaning */
    const uint8_t dot[] = {0x03, 'a', '.', 'b', 0x00};
    off = 0;
    TL_EQ_INT(mdns_name_read(dot, sizeof(dot), &off, out, sizeof(out)), -1);
    /* a name longer than 255 through a chain of pointers */
    uint8_t longn[600];
    size_t n = 0;
    for (int i = 0; i < 8; i++) {
        longn[n++] = 63;
        memset(longn + n, 'x', 63);
        n += 63;
    }
    longn[n++] = 0;
    off = 0;
    TL_EQ_INT(mdns_name_read(longn, n, &off, out, sizeof(out)), -1);
    /* a small output buffer is respected */
    const uint8_t ok[] = {0x05, 'a', 'b', 'c', 'd', 'e', 0x00};
    char tiny[4];
    off = 0;
    TL_EQ_INT(mdns_name_read(ok, sizeof(ok), &off, tiny, sizeof(tiny)), -1);
}

static void test_random_packets(void)
{
    uint32_t x = 0x12345678u;
    uint8_t pkt[600];
    mdns_question_t qs[16];
    uint16_t id;
    int parsed = 0;
    for (int round = 0; round < 200000; round++) {
        size_t len = 12 + (size_t)(round % 200);
        for (size_t i = 0; i < len; i++) {
            x = x * 1103515245u + 12345u;
            pkt[i] = (uint8_t)(x >> 16);
        }
        /* make many of them plausible queries so the name code is reached */
        pkt[2] = 0;
        pkt[3] = 0;
        pkt[4] = 0;
        pkt[5] = (uint8_t)(1 + round % 4);
        if (round % 3 == 0)
            pkt[12] = (uint8_t)(0xC0 | (round & 1)); /* pointers into the header */
        int r = mdns_parse_query(pkt, len, &id, qs, 16);
        TL_CHECK(r >= -1 && r <= 16);
        if (r > 0)
            parsed++;
    }
    printf("  %d random packets parsed as queries\n", parsed);
}

int main(void)
{
    TL_RUN(test_name_roundtrip_and_compression);
    TL_RUN(test_query_parse);
    TL_RUN(test_hostile_names);
    TL_RUN(test_random_packets);
    return TL_RESULT();
}
