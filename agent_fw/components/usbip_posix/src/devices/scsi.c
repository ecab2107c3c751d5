/*
 * scsi.c - SCSI commands Linux's sd / usb-storage use (SBC-3 / SPC-4
 * subset): everything else is CHECK CONDITION, ILLEGAL REQUEST, INVALID
 * COMMAND OPERATION CODE, the way real disks answer.
 */
#include "scsi.h"

#include <stdio.h>
#include <string.h>

enum {
    OP_TEST_UNIT_READY = 0x00,
    OP_REQUEST_SENSE = 0x03,
    OP_INQUIRY = 0x12,
    OP_MODE_SENSE6 = 0x1a,
    OP_START_STOP_UNIT = 0x1b,
    OP_PREVENT_ALLOW = 0x1e,
    OP_READ_FORMAT_CAPACITIES = 0x23,
    OP_READ_CAPACITY10 = 0x25,
    OP_READ10 = 0x28,
    OP_WRITE10 = 0x2a,
    OP_VERIFY10 = 0x2f,
    OP_SYNCHRONIZE_CACHE10 = 0x35,
    OP_MODE_SENSE10 = 0x5a,
    OP_READ16 = 0x88,
    OP_WRITE16 = 0x8a,
    OP_SERVICE_ACTION_IN16 = 0x9e,
    OP_REPORT_LUNS = 0xa0,
};

#define SA_READ_CAPACITY16 0x10
#define PAGE_CACHING 0x08
#define PAGE_ALL 0x3f

static uint32_t be16(const uint8_t *p) { return (uint32_t)(p[0] << 8 | p[1]); }
static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t be64(const uint8_t *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }
static void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

static void fail(scsi_lun_t *lun, scsi_plan_t *plan, uint8_t key, uint8_t asc, uint8_t ascq)
{
    lun->sense = (scsi_sense_t){key, asc, ascq};
    lun->check_conditions++;
    plan->failed = true;
    plan->dir = SCSI_DIR_NONE;
    plan->length = 0;
}

static void invalid_field(scsi_lun_t *lun, scsi_plan_t *plan)
{
    fail(lun, plan, SENSE_ILLEGAL_REQUEST, 0x24, 0x00);
}

/* An IN response from plan->buf, truncated to the allocation length. */
static void respond(scsi_plan_t *plan, size_t len, uint32_t alloc)
{
    plan->dir = SCSI_DIR_IN;
    plan->length = (uint32_t)(len < alloc ? len : alloc);
    if (plan->length == 0)
        plan->dir = SCSI_DIR_NONE;
}

static void pad_ascii(uint8_t *dst, const char *src, size_t n)
{
    memset(dst, ' ', n);
    size_t l = strlen(src);
    memcpy(dst, src, l < n ? l : n);
}

static void inquiry(scsi_lun_t *lun, const uint8_t *cdb, scsi_plan_t *plan)
{
    uint8_t *b = plan->buf;
    uint32_t alloc = be16(cdb + 3);
    bool evpd = cdb[1] & 0x01;
    if (cdb[1] & 0xfe || (!evpd && cdb[2] != 0)) {
        invalid_field(lun, plan);
        return;
    }
    if (!evpd) {
        b[0] = 0x00; /* peripheral: direct-access block device, connected */
        b[1] = 0x00; /* not removable: saves the host's media-change polling */
        b[2] = 0x06; /* SPC-4 */
        b[3] = 0x02; /* response data format 2 */
        b[4] = 36 - 5;
        pad_ascii(b + 8, "fleet", 8);
        pad_ascii(b + 16, "Virtual Disk", 16);
        pad_ascii(b + 32, "1.00", 4);
        respond(plan, 36, alloc);
        return;
    }
    size_t slen = strlen(lun->serial);
    switch (cdb[2]) {
    case 0x00: /* supported VPD pages */
        b[1] = 0x00;
        b[3] = 3;
        b[4] = 0x00;
        b[5] = 0x80;
        b[6] = 0x83;
        respond(plan, 7, alloc);
        return;
    case 0x80: /* unit serial number */
        b[1] = 0x80;
        b[3] = (uint8_t)slen;
        memcpy(b + 4, lun->serial, slen);
        respond(plan, 4 + slen, alloc);
        return;
    case 0x83: { /* device identification: one T10 vendor id designator */
        b[1] = 0x83;
        uint8_t *d = b + 4;
        d[0] = 0x02; /* code set: ASCII */
        d[1] = 0x01; /* association: LU, type: T10 vendor id */
        d[3] = (uint8_t)(8 + slen);
        pad_ascii(d + 4, "fleet", 8);
        memcpy(d + 12, lun->serial, slen);
        put16(b + 2, (uint32_t)(4 + 8 + slen));
        respond(plan, 4 + 4 + 8 + slen, alloc);
        return;
    }
    default:
        invalid_field(lun, plan);
        return;
    }
}

static size_t caching_page(uint8_t *p, bool changeable)
{
    memset(p, 0, 20);
    p[0] = PAGE_CACHING;
    p[1] = 18;
    (void)changeable; /* nothing is changeable: WCE=0 (writes go straight to the store) */
    return 20;
}

static void mode_sense(scsi_lun_t *lun, const uint8_t *cdb, bool ten, scsi_plan_t *plan)
{
    uint8_t pc = cdb[2] >> 6, page = cdb[2] & 0x3f, subpage = cdb[3];
    uint32_t alloc = ten ? be16(cdb + 7) : cdb[4];
    if (pc == 3) { /* saved values */
        fail(lun, plan, SENSE_ILLEGAL_REQUEST, 0x39, 0x00); /* saving parameters not supported */
        return;
    }
    if ((page != PAGE_CACHING && page != PAGE_ALL) || (subpage != 0 && subpage != 0xff) ||
        (subpage == 0xff && page != PAGE_ALL)) {
        invalid_field(lun, plan);
        return;
    }
    uint8_t *b = plan->buf;
    size_t hdr = ten ? 8 : 4;
    size_t len = hdr + caching_page(b + hdr, pc == 1);
    uint8_t wp = lun->readonly ? 0x80 : 0x00;
    if (ten) {
        put16(b, (uint32_t)(len - 2));
        b[3] = wp;
    } else {
        b[0] = (uint8_t)(len - 1);
        b[2] = wp;
    }
    respond(plan, len, alloc);
}

/* Checks the LBA range of a READ / WRITE / VERIFY; false = CHECK CONDITION set. */
static bool range_ok(scsi_lun_t *lun, scsi_plan_t *plan, uint64_t lba, uint32_t blocks)
{
    if (lba > lun->blocks || blocks > lun->blocks - lba) {
        fail(lun, plan, SENSE_ILLEGAL_REQUEST, 0x21, 0x00); /* LBA out of range */
        return false;
    }
    return true;
}

static void rw(scsi_lun_t *lun, scsi_plan_t *plan, uint64_t lba, uint32_t blocks, bool write)
{
    if (write && lun->readonly) {
        fail(lun, plan, SENSE_DATA_PROTECT, 0x27, 0x00); /* write protected */
        return;
    }
    if (!range_ok(lun, plan, lba, blocks))
        return;
    /* BOT's dCBWDataTransferLength is 32-bit: larger requests cannot be meant */
    if ((uint64_t)blocks * SCSI_BLOCK > UINT32_MAX) {
        invalid_field(lun, plan);
        return;
    }
    plan->from_store = true;
    plan->offset = lba * SCSI_BLOCK;
    plan->length = blocks * SCSI_BLOCK;
    plan->dir = blocks == 0 ? SCSI_DIR_NONE : write ? SCSI_DIR_OUT : SCSI_DIR_IN;
}

static uint8_t cdb_length(uint8_t op)
{
    switch (op >> 5) { /* SCSI group code */
    case 0: return 6;
    case 1: case 2: return 10;
    case 4: return 16;
    case 5: return 12;
    default: return 6;
    }
}

void scsi_plan(scsi_lun_t *lun, const uint8_t *cdb, uint8_t cdb_len, scsi_plan_t *plan)
{
    memset(plan, 0, sizeof *plan);
    uint8_t op = cdb[0];
    lun->commands[op]++;
    if (op != OP_REQUEST_SENSE)
        lun->sense = (scsi_sense_t){0, 0, 0};
    if (cdb_len < cdb_length(op)) {
        invalid_field(lun, plan);
        return;
    }
    uint8_t *b = plan->buf;
    switch (op) {
    case OP_TEST_UNIT_READY:
    case OP_PREVENT_ALLOW:
        if (op == OP_PREVENT_ALLOW)
            lun->prevent_removal = cdb[4] & 0x01;
        return;
    case OP_START_STOP_UNIT:
        lun->stopped = !(cdb[4] & 0x01);
        return;
    case OP_REQUEST_SENSE:
        if (cdb[1] & 0x01) { /* descriptor format: we only speak fixed format */
            invalid_field(lun, plan);
            return;
        }
        b[0] = 0x70; /* current error, fixed format */
        b[2] = lun->sense.key;
        b[7] = 10;
        b[12] = lun->sense.asc;
        b[13] = lun->sense.ascq;
        lun->sense = (scsi_sense_t){0, 0, 0};
        respond(plan, 18, cdb[4]);
        return;
    case OP_INQUIRY:
        inquiry(lun, cdb, plan);
        return;
    case OP_MODE_SENSE6:
    case OP_MODE_SENSE10:
        mode_sense(lun, cdb, op == OP_MODE_SENSE10, plan);
        return;
    case OP_READ_FORMAT_CAPACITIES:
        b[3] = 8; /* capacity list length: one descriptor */
        put32(b + 4, lun->blocks > UINT32_MAX ? UINT32_MAX : (uint32_t)lun->blocks);
        b[8] = 0x02; /* formatted media */
        b[9] = 0;
        put16(b + 10, SCSI_BLOCK);
        respond(plan, 12, be16(cdb + 7));
        return;
    case OP_READ_CAPACITY10:
        put32(b, lun->blocks - 1 > UINT32_MAX ? UINT32_MAX : (uint32_t)(lun->blocks - 1));
        put32(b + 4, SCSI_BLOCK);
        respond(plan, 8, 8);
        return;
    case OP_SERVICE_ACTION_IN16:
        if ((cdb[1] & 0x1f) != SA_READ_CAPACITY16) {
            fail(lun, plan, SENSE_ILLEGAL_REQUEST, 0x20, 0x00);
            return;
        }
        put64(b, lun->blocks - 1);
        put32(b + 8, SCSI_BLOCK);
        respond(plan, 32, be32(cdb + 10));
        return;
    case OP_READ10:
    case OP_WRITE10:
        rw(lun, plan, be32(cdb + 2), be16(cdb + 7), op == OP_WRITE10);
        return;
    case OP_READ16:
    case OP_WRITE16:
        rw(lun, plan, be64(cdb + 2), be32(cdb + 10), op == OP_WRITE16);
        return;
    case OP_VERIFY10:
        if (cdb[1] & 0x06) { /* BYTCHK: compare against data we would have to receive */
            invalid_field(lun, plan);
            return;
        }
        range_ok(lun, plan, be32(cdb + 2), be16(cdb + 7));
        return;
    case OP_SYNCHRONIZE_CACHE10:
        if (!range_ok(lun, plan, be32(cdb + 2), be16(cdb + 7)))
            return;
        if (msc_store_sync(lun->store) != 0)
            fail(lun, plan, SENSE_MEDIUM_ERROR, 0x0c, 0x00); /* write error */
        return;
    case OP_REPORT_LUNS: {
        uint32_t alloc = be32(cdb + 6);
        if (alloc < 16) { /* SPC-4: allocation length below 16 is an invalid field */
            invalid_field(lun, plan);
            return;
        }
        put32(b, 8); /* one LUN: 0 */
        respond(plan, 16, alloc);
        return;
    }
    default:
        fail(lun, plan, SENSE_ILLEGAL_REQUEST, 0x20, 0x00); /* invalid command operation code */
        return;
    }
}

void scsi_read_data(scsi_lun_t *lun, scsi_plan_t *plan, uint32_t pos, uint8_t *buf, size_t len)
{
    if (plan->failed || msc_store_read(lun->store, plan->offset + pos, buf, len) != 0) {
        /* data already on the wire cannot be taken back: pad, then fail the CSW */
        memset(buf, 0, len);
        if (!plan->failed) {
            lun->sense = (scsi_sense_t){SENSE_MEDIUM_ERROR, 0x11, 0x00}; /* unrecovered read error */
            lun->check_conditions++;
            plan->failed = true;
        }
        return;
    }
    lun->bytes_read += len;
}

void scsi_write_data(scsi_lun_t *lun, scsi_plan_t *plan, uint32_t pos, const uint8_t *buf,
                     size_t len)
{
    if (plan->failed)
        return;
    if (msc_store_write(lun->store, plan->offset + pos, buf, len) != 0) {
        lun->sense = (scsi_sense_t){SENSE_MEDIUM_ERROR, 0x0c, 0x00}; /* write error */
        lun->check_conditions++;
        plan->failed = true;
        return;
    }
    lun->bytes_written += len;
}
