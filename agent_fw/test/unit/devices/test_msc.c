/*
 * test_msc.c - the virtual disk as usb-storage and sd see it: descriptors,
 * class requests, SCSI commands, data integrity over several MiB, file
 * persistence, sense data, read-only media, lazy RAM.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_host.h"
#include "testlib.h"

#define HS 512
#define FS 64

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void rw10(uint8_t cdb[10], uint8_t op, uint32_t lba, uint16_t blocks)
{
    memset(cdb, 0, 10);
    cdb[0] = op;
    cdb[2] = (uint8_t)(lba >> 24);
    cdb[3] = (uint8_t)(lba >> 16);
    cdb[4] = (uint8_t)(lba >> 8);
    cdb[5] = (uint8_t)lba;
    cdb[7] = (uint8_t)(blocks >> 8);
    cdb[8] = (uint8_t)blocks;
}

/* REQUEST SENSE -> key/asc/ascq packed as 0xKKAAQQ */
static uint32_t sense(vdev_t *d, uint16_t mps)
{
    uint8_t cdb[6] = {0x03, 0, 0, 0, 18, 0}, buf[18] = {0};
    th_bot_t r = th_bot(d, mps, cdb, 6, true, 18, buf);
    if (!r.csw_ok || r.status != 0 || buf[0] != 0x70 || buf[7] != 10)
        return 0xffffffffu;
    return (uint32_t)(buf[2] & 0x0f) << 16 | (uint32_t)buf[12] << 8 | buf[13];
}

static long stat_field(vdev_t *d, const char *name)
{
    char reply[512], key[64];
    if (d->ops->command(d, "stats", reply, sizeof reply) != 0)
        return -1;
    snprintf(key, sizeof key, "\"%s\":", name);
    const char *p = strstr(reply, key);
    return p ? atol(p + strlen(key)) : -1;
}

static void test_descriptors(void)
{
    th_config_t c;
    vdev_t *fs = th_create("msc");
    TL_EQ_INT(fs->speed, VDEV_SPEED_FULL);
    TL_CHECK(th_check_config(fs->config_desc, VDEV_SPEED_FULL, 2, &c) == NULL);
    TL_EQ_INT(c.num_interfaces, 1);
    TL_EQ_MEM(c.intf_class[0], ((uint8_t[]){0x08, 0x06, 0x50}), 3);
    TL_EQ_INT(c.num_endpoints, 2);
    TL_EQ_INT(c.ep[0].mps, 64);
    TL_EQ_INT(fs->device_desc[7], 64);
    uint8_t buf[64];
    TL_EQ_INT(th_control(fs, 0x80, 6, 0x0600, 0, 10, buf), VDEV_STALL); /* FS: no qualifier */
    TL_EQ_INT(th_control(fs, 0x80, 6, 0x0700, 0, 64, buf), VDEV_STALL);
    th_destroy(fs);

    vdev_t *hs = th_create("msc:speed=high");
    TL_CHECK(th_check_config(hs->config_desc, VDEV_SPEED_HIGH, 2, &c) == NULL);
    TL_EQ_INT(c.ep[0].mps, 512);
    TL_EQ_INT(c.ep[1].mps, 512);
    TL_EQ_INT(th_control(hs, 0x80, 6, 0x0600, 0, 10, buf), 10);
    TL_EQ_INT(buf[1], 0x06);
    TL_EQ_INT(buf[7], 64);
    TL_EQ_INT(buf[8], 1);
    uint8_t other[256];
    int n = th_control(hs, 0x80, 6, 0x0700, 0, 255, other);
    TL_CHECK(n > 9);
    TL_EQ_INT(other[1], 0x07);
    TL_CHECK(th_check_config(other, VDEV_SPEED_FULL, 7, &c) == NULL); /* FS MPS inside */
    TL_EQ_INT(c.ep[0].mps, 64);
    th_destroy(hs);
}

static void test_class_requests(void)
{
    vdev_t *d = th_create("msc");
    uint8_t b[4] = {0xaa};
    TL_EQ_INT(th_control(d, 0xa1, 0xfe, 0, 0, 1, b), 1);
    TL_EQ_INT(b[0], 0);
    TL_EQ_INT(th_control(d, 0xa1, 0xfe, 0, 0, 2, b), VDEV_STALL); /* wLength must be 1 */
    TL_EQ_INT(th_control(d, 0xa1, 0xfe, 0, 1, 1, b), VDEV_STALL); /* no interface 1 */
    TL_EQ_INT(th_control(d, 0x21, 0xff, 0, 0, 0, b), 0);
    TL_EQ_INT(th_control(d, 0x21, 0xff, 1, 0, 0, b), VDEV_STALL);
    TL_EQ_INT(th_control(d, 0x21, 0x42, 0, 0, 0, b), VDEV_STALL); /* unknown class request */
    th_destroy(d);
}

static void test_inquiry(void)
{
    vdev_t *d = th_create("msc:serial=DISK42");
    uint8_t cdb[6] = {0x12, 0, 0, 0, 96, 0}, buf[96];
    th_bot_t r = th_bot(d, FS, cdb, 6, true, 96, buf);
    TL_CHECK(r.cbw_ok && r.csw_ok);
    TL_EQ_INT(r.status, 0);
    TL_EQ_INT(r.data.actual, 36);       /* a short packet ends the data (case 5) ... */
    TL_CHECK(!r.data_stalled);          /* ... so no stall is needed */
    TL_EQ_INT(r.residue, 96 - 36);
    TL_EQ_INT(buf[0], 0x00);
    TL_EQ_INT(buf[4], 31);
    TL_EQ_MEM(buf + 8, "fleet   ", 8);
    TL_EQ_MEM(buf + 16, "Virtual Disk    ", 16);

    uint8_t vpd80[6] = {0x12, 0x01, 0x80, 0, 64, 0};
    memset(buf, 0, sizeof buf);
    r = th_bot(d, FS, vpd80, 6, true, 64, buf);
    TL_EQ_INT(r.status, 0);
    TL_EQ_INT(buf[1], 0x80);
    TL_EQ_INT(buf[3], 6);
    TL_EQ_MEM(buf + 4, "DISK42", 6);

    uint8_t vpd00[6] = {0x12, 0x01, 0x00, 0, 64, 0};
    r = th_bot(d, FS, vpd00, 6, true, 64, buf);
    TL_EQ_INT(r.status, 0);
    TL_EQ_INT(r.data.actual, 7);
    TL_EQ_MEM(buf + 4, ((uint8_t[]){0x00, 0x80, 0x83}), 3);

    uint8_t vpd83[6] = {0x12, 0x01, 0x83, 0, 64, 0};
    r = th_bot(d, FS, vpd83, 6, true, 64, buf);
    TL_EQ_INT(r.status, 0);
    TL_EQ_INT(buf[1], 0x83);
    TL_EQ_MEM(buf + 8, "fleet   DISK42", 14);

    uint8_t bad_page[6] = {0x12, 0x01, 0x42, 0, 64, 0};
    r = th_bot(d, FS, bad_page, 6, true, 64, buf);
    TL_EQ_INT(r.status, 1);
    TL_CHECK(r.data_stalled);           /* case 4: host wanted data, device has none */
    TL_EQ_INT(r.residue, 64);
    TL_EQ_INT(sense(d, FS), 0x052400);  /* invalid field in CDB */
    TL_EQ_INT(sense(d, FS), 0x000000);  /* sense is consumed */
    th_destroy(d);
}

static void test_capacity(void)
{
    vdev_t *d = th_create("msc:size=64M");
    uint8_t cdb10[10] = {0x25}, buf[32];
    th_bot_t r = th_bot(d, FS, cdb10, 10, true, 8, buf);
    TL_EQ_INT(r.status, 0);
    TL_EQ_INT(r.residue, 0);
    TL_EQ_INT(be32(buf), (64u << 20) / 512 - 1);
    TL_EQ_INT(be32(buf + 4), 512);

    uint8_t cdb16[16] = {0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0};
    memset(buf, 0xee, sizeof buf);
    r = th_bot(d, FS, cdb16, 16, true, 32, buf);
    TL_EQ_INT(r.status, 0);
    TL_EQ_INT(r.data.actual, 32);
    TL_EQ_INT(be32(buf), 0);
    TL_EQ_INT(be32(buf + 4), (64u << 20) / 512 - 1);
    TL_EQ_INT(be32(buf + 8), 512);

    uint8_t rfc[10] = {0x23, 0, 0, 0, 0, 0, 0, 0, 252, 0};
    r = th_bot(d, FS, rfc, 10, true, 252, buf);
    TL_EQ_INT(r.status, 0);
    TL_EQ_INT(r.data.actual, 12);
    TL_EQ_INT(buf[3], 8);
    TL_EQ_INT(be32(buf + 4), (64u << 20) / 512);
    TL_EQ_INT(buf[8], 0x02);

    uint8_t luns[12] = {0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0};
    r = th_bot(d, FS, luns, 12, true, 16, buf);
    TL_EQ_INT(r.status, 0);
    TL_EQ_INT(be32(buf), 8);
    th_destroy(d);
}

/* Several MiB through WRITE(10)/READ(10)/READ(16) at High-Speed, compared by CRC. */
static void test_round_trip(void)
{
    vdev_t *d = th_create("msc:size=16M,speed=high");
    enum { CHUNK_BLOCKS = 128, CHUNKS = 48 }; /* 48 x 64 KiB = 3 MiB */
    static uint8_t data[CHUNK_BLOCKS * 512], back[CHUNK_BLOCKS * 512];
    uint32_t crc_written = 0, crc_read = 0;
    uint8_t cdb[16];
    for (int i = 0; i < CHUNKS; i++) {
        th_fill(data, sizeof data, (uint32_t)i);
        crc_written = th_crc32(data, sizeof data, crc_written);
        rw10(cdb, 0x2a, (uint32_t)(i * CHUNK_BLOCKS * 2), CHUNK_BLOCKS); /* every other chunk */
        th_bot_t r = th_bot(d, HS, cdb, 10, false, sizeof data, data);
        TL_CHECK(r.csw_ok && r.status == 0 && r.residue == 0 && r.data.actual == sizeof data);
    }
    for (int i = 0; i < CHUNKS; i++) {
        if (i % 2 == 0) {
            rw10(cdb, 0x28, (uint32_t)(i * CHUNK_BLOCKS * 2), CHUNK_BLOCKS);
            th_bot_t r = th_bot(d, HS, cdb, 10, true, sizeof back, back);
            TL_CHECK(r.csw_ok && r.status == 0 && r.residue == 0);
        } else { /* READ(16) for the other half */
            uint64_t lba = (uint64_t)i * CHUNK_BLOCKS * 2;
            memset(cdb, 0, 16);
            cdb[0] = 0x88;
            for (int k = 0; k < 8; k++)
                cdb[2 + k] = (uint8_t)(lba >> (56 - 8 * k));
            cdb[13] = CHUNK_BLOCKS;
            th_bot_t r = th_bot(d, HS, cdb, 16, true, sizeof back, back);
            TL_CHECK(r.csw_ok && r.status == 0 && r.residue == 0);
        }
        crc_read = th_crc32(back, sizeof back, crc_read);
    }
    TL_EQ_INT(crc_read, crc_written);
    /* the gaps between chunks were never written: zeros */
    rw10(cdb, 0x28, CHUNK_BLOCKS, 1);
    memset(back, 0xff, 512);
    th_bot(d, HS, cdb, 10, true, 512, back);
    static const uint8_t zeros[512];
    TL_EQ_MEM(back, zeros, 512);
    TL_EQ_INT(stat_field(d, "bytes_written"), CHUNKS * (long)sizeof data);
    TL_EQ_INT(stat_field(d, "bytes_read"), CHUNKS * (long)sizeof data + 512);
    TL_EQ_INT(stat_field(d, "2a"), CHUNKS);      /* WRITE(10) */
    TL_EQ_INT(stat_field(d, "28"), CHUNKS / 2 + 1); /* READ(10) */
    TL_EQ_INT(stat_field(d, "88"), CHUNKS / 2);     /* READ(16) */
    th_destroy(d);

    /* Full-Speed: same data in 64-byte packets */
    d = th_create("msc:size=1M");
    th_fill(data, 8192, 77);
    rw10(cdb, 0x2a, 100, 16);
    th_bot_t r = th_bot(d, FS, cdb, 10, false, 8192, data);
    TL_CHECK(r.status == 0 && r.data.packets == 128);
    rw10(cdb, 0x28, 100, 16);
    memset(back, 0, 8192);
    r = th_bot(d, FS, cdb, 10, true, 8192, back);
    TL_CHECK(r.status == 0 && r.data.packets == 128);
    TL_EQ_MEM(back, data, 8192);
    th_destroy(d);
}

static void test_file_backed(void)
{
    char path[64], spec[128];
    snprintf(path, sizeof path, "/tmp/fleet-msc-test-%d.img", (int)getpid());
    unlink(path);
    snprintf(spec, sizeof spec, "msc:file=%s,size=1M", path);
    vdev_t *d = th_create(spec);
    uint8_t data[4096], back[4096], cdb[10];
    th_fill(data, sizeof data, 9);
    rw10(cdb, 0x2a, 2040, 8); /* the last 8 blocks */
    th_bot_t r = th_bot(d, FS, cdb, 10, false, sizeof data, data);
    TL_EQ_INT(r.status, 0);
    uint8_t sync[10] = {0x35};
    r = th_bot(d, FS, sync, 10, false, 0, NULL);
    TL_EQ_INT(r.status, 0);
    th_destroy(d);

    FILE *f = fopen(path, "rb");
    TL_CHECK(f != NULL);
    if (f) {
        fseek(f, 0, SEEK_END);
        TL_EQ_INT(ftell(f), 1 << 20);
        fclose(f);
    }
    /* re-create without size=: the image keeps its size and content */
    snprintf(spec, sizeof spec, "msc:file=%s", path);
    d = th_create(spec);
    uint8_t cap[8], cdb_cap[10] = {0x25};
    th_bot(d, FS, cdb_cap, 10, true, 8, cap);
    TL_EQ_INT(be32(cap), 2047);
    rw10(cdb, 0x28, 2040, 8);
    r = th_bot(d, FS, cdb, 10, true, sizeof back, back);
    TL_EQ_INT(r.status, 0);
    TL_EQ_MEM(back, data, sizeof data);
    th_destroy(d);

    /* readonly over the same file: data readable, writes refused */
    snprintf(spec, sizeof spec, "msc:file=%s,readonly=1", path);
    d = th_create(spec);
    r = th_bot(d, FS, cdb, 10, true, sizeof back, back);
    TL_EQ_INT(r.status, 0);
    TL_EQ_MEM(back, data, sizeof data);
    rw10(cdb, 0x2a, 0, 1);
    r = th_bot(d, FS, cdb, 10, false, 512, data);
    TL_EQ_INT(r.status, 1);
    TL_EQ_INT(sense(d, FS), 0x072700);
    th_destroy(d);
    unlink(path);

    snprintf(spec, sizeof spec, "msc:file=%s,readonly=1", path);
    char expect[200];
    snprintf(expect, sizeof expect, "option 'file': cannot open '%s': No such file or directory",
             path);
    TL_EQ_STR(th_create_error(spec), expect);
    TL_EQ_STR(th_create_error("msc:file=relative.img"),
              "option 'file': 'relative.img' is not an absolute path");
}

static void test_readonly_and_mode_sense(void)
{
    vdev_t *d = th_create("msc:readonly=yes");
    uint8_t ms6[6] = {0x1a, 0, 0x3f, 0, 192, 0}, buf[192];
    th_bot_t r = th_bot(d, FS, ms6, 6, true, 192, buf);
    TL_EQ_INT(r.status, 0);
    TL_EQ_INT(r.data.actual, 24);
    TL_EQ_INT(buf[0], 23);
    TL_EQ_INT(buf[2] & 0x80, 0x80);   /* WP */
    TL_EQ_INT(buf[4], 0x08);          /* caching page */
    TL_EQ_INT(buf[5], 18);

    uint8_t ms10[10] = {0x5a, 0, 0x08, 0, 0, 0, 0, 0, 255, 0};
    r = th_bot(d, FS, ms10, 10, true, 255, buf);
    TL_EQ_INT(r.status, 0);
    TL_EQ_INT(r.data.actual, 28);
    TL_EQ_INT(buf[1], 26);
    TL_EQ_INT(buf[3] & 0x80, 0x80);
    TL_EQ_INT(buf[8], 0x08);

    uint8_t data[1024] = {0}, cdb[10];
    rw10(cdb, 0x2a, 0, 2);
    r = th_bot(d, FS, cdb, 10, false, sizeof data, data);
    TL_EQ_INT(r.status, 1);
    TL_CHECK(r.data_stalled);         /* case 9: the OUT data is refused */
    TL_EQ_INT(r.residue, 1024);
    TL_EQ_INT(sense(d, FS), 0x072700);
    TL_EQ_INT(stat_field(d, "bytes_written"), 0);
    th_destroy(d);

    d = th_create("msc");
    r = th_bot(d, FS, ms6, 6, true, 192, buf);
    TL_EQ_INT(buf[2] & 0x80, 0);      /* writable */
    uint8_t ms_bad[6] = {0x1a, 0, 0x1c, 0, 192, 0};
    r = th_bot(d, FS, ms_bad, 6, true, 192, buf);
    TL_EQ_INT(r.status, 1);
    TL_EQ_INT(sense(d, FS), 0x052400);
    uint8_t ms_saved[6] = {0x1a, 0, 0xc8, 0, 192, 0};
    r = th_bot(d, FS, ms_saved, 6, true, 192, buf);
    TL_EQ_INT(r.status, 1);
    TL_EQ_INT(sense(d, FS), 0x053900);
    uint8_t ms_short[6] = {0x1a, 0, 0x3f, 0, 4, 0}; /* allocation length truncates */
    r = th_bot(d, FS, ms_short, 6, true, 4, buf);
    TL_EQ_INT(r.status, 0);
    TL_EQ_INT(r.data.actual, 4);
    TL_EQ_INT(buf[0], 23);            /* still announces the full length */
    th_destroy(d);
}

static void test_errors_and_misc_commands(void)
{
    vdev_t *d = th_create("msc:size=64K");
    uint8_t buf[512];
    uint8_t tur[6] = {0};
    th_bot_t r = th_bot(d, FS, tur, 6, false, 0, NULL);
    TL_CHECK(r.csw_ok && r.status == 0 && r.residue == 0);

    uint8_t format_unit[6] = {0x04};
    r = th_bot(d, FS, format_unit, 6, false, 0, NULL);
    TL_EQ_INT(r.status, 1);
    TL_EQ_INT(sense(d, FS), 0x052000); /* invalid command operation code */

    uint8_t cdb[10];
    rw10(cdb, 0x28, 127, 2);          /* 128 blocks: 127 + 2 runs off the end */
    r = th_bot(d, FS, cdb, 10, true, 1024, buf);
    TL_EQ_INT(r.status, 1);
    TL_CHECK(r.data_stalled);
    TL_EQ_INT(r.residue, 1024);
    TL_EQ_INT(sense(d, FS), 0x052100);
    rw10(cdb, 0x28, 127, 1);          /* the last block is fine */
    r = th_bot(d, FS, cdb, 10, true, 512, buf);
    TL_EQ_INT(r.status, 0);

    uint8_t verify[10];
    rw10(verify, 0x2f, 0, 128);
    r = th_bot(d, FS, verify, 10, false, 0, NULL);
    TL_EQ_INT(r.status, 0);
    rw10(verify, 0x2f, 1, 128);
    r = th_bot(d, FS, verify, 10, false, 0, NULL);
    TL_EQ_INT(r.status, 1);
    TL_EQ_INT(sense(d, FS), 0x052100);
    verify[1] = 0x02;                 /* BYTCHK */
    rw10(verify, 0x2f, 0, 1);
    verify[1] = 0x02;
    r = th_bot(d, FS, verify, 10, false, 0, NULL);
    TL_EQ_INT(r.status, 1);
    TL_EQ_INT(sense(d, FS), 0x052400);

    uint8_t prevent[6] = {0x1e, 0, 0, 0, 1, 0}, start[6] = {0x1b, 0, 0, 0, 1, 0};
    TL_EQ_INT(th_bot(d, FS, prevent, 6, false, 0, NULL).status, 0);
    TL_EQ_INT(th_bot(d, FS, start, 6, false, 0, NULL).status, 0);
    uint8_t sync[10] = {0x35};
    TL_EQ_INT(th_bot(d, FS, sync, 10, false, 0, NULL).status, 0);

    uint8_t luns_short[12] = {0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0};
    r = th_bot(d, FS, luns_short, 12, true, 8, buf);
    TL_EQ_INT(r.status, 1);
    TL_EQ_INT(sense(d, FS), 0x052400);

    uint8_t read10_short_cdb[6] = {0x28, 0, 0, 0, 1, 0}; /* READ(10) in a 6-byte CB */
    r = th_bot(d, FS, read10_short_cdb, 6, true, 512, buf);
    TL_EQ_INT(r.status, 1);
    TL_EQ_INT(sense(d, FS), 0x052400);

    uint8_t sai_other[16] = {0x9e, 0x11};
    r = th_bot(d, FS, sai_other, 16, true, 32, buf);
    TL_EQ_INT(r.status, 1);
    TL_EQ_INT(sense(d, FS), 0x052000);

    TL_EQ_INT(stat_field(d, "check_conditions"), 7);
    char reply[128];
    TL_EQ_INT(d->ops->command(d, "frobnicate", reply, sizeof reply), -1);
    TL_EQ_STR(reply, "unknown command 'frobnicate' for msc (expected: stats)");
    th_destroy(d);
}

static void test_lazy_ram(void)
{
    vdev_t *d = th_create("msc:size=1G,speed=high");
    uint8_t cap[8], cdb_cap[10] = {0x25};
    th_bot(d, HS, cdb_cap, 10, true, 8, cap);
    TL_EQ_INT(be32(cap), (1u << 30) / 512 - 1);
    TL_EQ_INT(stat_field(d, "resident"), 0);
    uint8_t data[512], cdb[10];
    memset(data, 0, sizeof data);
    rw10(cdb, 0x2a, 1000000, 1);      /* zeros cost nothing */
    th_bot(d, HS, cdb, 10, false, 512, data);
    TL_EQ_INT(stat_field(d, "resident"), 0);
    data[0] = 1;
    th_bot(d, HS, cdb, 10, false, 512, data);
    TL_EQ_INT(stat_field(d, "resident"), 64 * 1024);
    uint8_t back[512];
    rw10(cdb, 0x28, 1000000, 1);
    th_bot(d, HS, cdb, 10, true, 512, back);
    TL_EQ_MEM(back, data, 512);
    th_destroy(d);
}

int main(void)
{
    TL_RUN(test_descriptors);
    TL_RUN(test_class_requests);
    TL_RUN(test_inquiry);
    TL_RUN(test_capacity);
    TL_RUN(test_round_trip);
    TL_RUN(test_file_backed);
    TL_RUN(test_readonly_and_mode_sense);
    TL_RUN(test_errors_and_misc_commands);
    TL_RUN(test_lazy_ram);
    return TL_RESULT();
}
