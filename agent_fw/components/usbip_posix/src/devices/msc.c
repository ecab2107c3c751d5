/*
 * msc.c - USB mass storage, Bulk-Only Transport (BOT 1.0) over scsi.c.
 *
 * Interface 08/06/50, bulk OUT 0x01 and bulk IN 0x81 (64 B at Full-Speed,
 * 512 B at High-Speed). The transport is a packet-level state machine:
 *
 *   CBW --valid--> DATA_IN / DATA_OUT --> CSW --> CBW
 *    \--invalid or not meaningful--> both endpoints STALL until Reset
 *       Recovery (class request 0xFF, then CLEAR_FEATURE(HALT) on each
 *       endpoint), BOT 6.6.1 — CLEAR_FEATURE alone does not lift it.
 *
 * The host's expectation (dCBWDataTransferLength + direction) and the
 * device's intent (from scsi_plan) are reconciled per BOT 6.7:
 *   case 1  Hn = Dn            good, residue 0
 *   case 2,3 Hn < Di/Do        phase error
 *   case 4  Hi > Dn            STALL IN, residue Hi
 *   case 5  Hi > Di            send Di, STALL IN unless a short packet ended it, residue Hi-Di
 *   case 6  Hi = Di            good
 *   case 7  Hi < Di            send Hi, phase error
 *   case 8  Hi <> Do           STALL IN, phase error
 *   case 9  Ho > Dn            STALL OUT, residue Ho
 *   case 10 Ho <> Di           STALL OUT, phase error
 *   case 11 Ho > Do            take Do, STALL OUT, residue Ho-Do
 *   case 12 Ho = Do            good
 *   case 13 Ho < Do            take Ho, phase error
 *
 * Options: size= (default 64M; multiple of 512, 64K..16G in RAM, up to 4T
 * with a file), file=/absolute/path (created or extended, sparse; without
 * size= an existing image keeps its own size), readonly=1 (WP bit in MODE
 * SENSE, writes fail with DATA PROTECT / WRITE PROTECTED), speed=full|high,
 * serial=. Command "stats": counters as JSON, "commands" keyed by opcode.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "scsi.h"

#define EP_OUT 0x01
#define EP_IN 0x81
#define CBW_SIGNATURE 0x43425355u
#define CSW_SIGNATURE 0x53425355u
#define CBW_LEN 31
#define CSW_LEN 13

enum { CSW_GOOD = 0, CSW_FAILED = 1, CSW_PHASE_ERROR = 2 };
typedef enum { BOT_CBW, BOT_DATA_IN, BOT_DATA_OUT, BOT_CSW } bot_state_t;

typedef struct {
    vdev_base_t base;
    scsi_lun_t lun;
    uint16_t mps;
    bot_state_t state;
    bool need_reset; /* invalid CBW seen: only Reset Recovery helps */
    /* current command */
    uint32_t tag;
    uint32_t host_len;
    bool host_in;
    scsi_plan_t plan;
    uint32_t limit;   /* bytes to move in the data phase */
    uint32_t pos;     /* bytes moved so far */
    bool phase_error;
    uint32_t residue;
    /* counters */
    uint64_t invalid_cbws, phase_errors, bot_resets, csws;
} msc_t;

static void build_config(desc_builder_t *b, vdev_speed_t speed, const void *model)
{
    (void)model;
    uint16_t mps = vdev_bulk_mps(speed);
    desc_interface(b, 0, 0, 2, 0x08, 0x06, 0x50, 0);
    desc_endpoint(b, EP_IN, EP_BULK, mps, 0);
    desc_endpoint(b, EP_OUT, EP_BULK, mps, 0);
}

static const vdev_identity_t identity = {
    .model = "msc",
    .pid = VDEV_PID_MSC,
    .product = "fleet Virtual Disk",
    .max_power_ma = 100,
    .build_config = build_config,
};

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* The host NAK-polls an endpoint with a growing back-off; a queued IN (or
 * the next CBW) must not sit that out once the device can answer it. */
static void enter_csw(msc_t *m)
{
    m->state = BOT_CSW;
    vdev_wake(&m->base.dev, EP_IN, 0);
}

static void invalid_cbw(msc_t *m)
{
    m->invalid_cbws++;
    m->need_reset = true;
    m->state = BOT_CBW;
    vdev_halt(&m->base, EP_IN);
    vdev_halt(&m->base, EP_OUT);
}

static void phase_error(msc_t *m)
{
    m->phase_error = true;
    m->phase_errors++;
}

static void start_command(msc_t *m, const uint8_t *cbw)
{
    m->tag = get32(cbw + 4);
    m->host_len = get32(cbw + 8);
    m->host_in = cbw[12] & 0x80;
    m->pos = 0;
    m->limit = 0;
    m->phase_error = false;
    m->residue = 0;
    scsi_plan(&m->lun, cbw + 15, cbw[14], &m->plan);
    const scsi_plan_t *p = &m->plan;
    uint32_t d = p->dir == SCSI_DIR_NONE ? 0 : p->length;

    if (m->host_len == 0) {
        if (p->dir != SCSI_DIR_NONE)
            phase_error(m); /* cases 2, 3 */
        enter_csw(m);       /* case 1 */
        return;
    }
    if (m->host_in) {
        if (p->dir == SCSI_DIR_IN) {
            m->limit = d < m->host_len ? d : m->host_len;
            m->residue = m->host_len - m->limit;
            m->state = BOT_DATA_IN; /* cases 5, 6, 7 */
            vdev_wake(&m->base.dev, EP_IN, 0);
            return;
        }
        if (p->dir == SCSI_DIR_OUT)
            phase_error(m); /* case 8 */
        else
            m->residue = m->host_len; /* case 4 */
        vdev_halt(&m->base, EP_IN);
        enter_csw(m);
        return;
    }
    if (p->dir == SCSI_DIR_OUT) {
        m->limit = d < m->host_len ? d : m->host_len;
        m->residue = m->host_len - m->limit;
        m->state = BOT_DATA_OUT; /* cases 11, 12, 13 */
        return;
    }
    if (p->dir == SCSI_DIR_IN)
        phase_error(m); /* case 10 */
    else
        m->residue = m->host_len; /* case 9 */
    vdev_halt(&m->base, EP_OUT);
    enter_csw(m);
}

/* The data phase moved `limit` bytes: decide how it ends. */
static void data_done(msc_t *m, uint8_t ep, bool ended_short)
{
    uint32_t d = m->plan.length;
    if (d > m->host_len)
        phase_error(m); /* case 7 / 13 */
    else if (d < m->host_len && !ended_short)
        vdev_halt(&m->base, ep); /* case 5 / 11: host still expects data */
    enter_csw(m);
}

static bool cbw_valid(const uint8_t *data, size_t len)
{
    return len == CBW_LEN && get32(data) == CBW_SIGNATURE;
}

/* BOT 6.2.2: reserved bits zero, LUN supported, CB length 1..16. */
static bool cbw_meaningful(const uint8_t *cbw)
{
    return (cbw[12] & 0x7f) == 0 && cbw[13] == 0 && cbw[14] >= 1 && cbw[14] <= 16;
}

static int msc_out(vdev_t *dev, uint8_t ep, const uint8_t *data, size_t len)
{
    msc_t *m = (msc_t *)dev;
    if (ep != EP_OUT)
        return VDEV_STALL;
    if (vdev_is_halted(&m->base, EP_OUT))
        return VDEV_STALL;
    switch (m->state) {
    case BOT_CBW:
        if (!cbw_valid(data, len) || !cbw_meaningful(data)) {
            invalid_cbw(m);
            return 0; /* the packet itself was received; the halt answers what follows */
        }
        start_command(m, data);
        return 0;
    case BOT_DATA_OUT: {
        uint32_t want = m->limit - m->pos;
        size_t take = len < want ? len : want;
        if (take)
            scsi_write_data(&m->lun, &m->plan, m->pos, data, take);
        m->pos += (uint32_t)take;
        if (m->pos == m->limit) {
            data_done(m, EP_OUT, len < m->mps);
        } else if (len < m->mps) {
            /* host ended its transfer before dCBWDataTransferLength: it broke the protocol */
            m->residue = m->host_len - m->pos;
            phase_error(m);
            enter_csw(m);
        }
        return 0;
    }
    case BOT_DATA_IN:
    case BOT_CSW:
        return VDEV_NAK; /* nothing armed on OUT until the CSW has been taken */
    }
    return VDEV_STALL;
}

static int msc_in(vdev_t *dev, uint8_t ep, uint8_t *buf, size_t mps)
{
    msc_t *m = (msc_t *)dev;
    if (ep != EP_IN)
        return VDEV_STALL;
    if (vdev_is_halted(&m->base, EP_IN))
        return VDEV_STALL;
    if (mps > m->mps)
        mps = m->mps;
    switch (m->state) {
    case BOT_DATA_IN: {
        uint32_t n = m->limit - m->pos;
        if (n > mps)
            n = (uint32_t)mps;
        if (m->plan.from_store)
            scsi_read_data(&m->lun, &m->plan, m->pos, buf, n);
        else
            memcpy(buf, m->plan.buf + m->pos, n);
        m->pos += n;
        if (m->pos == m->limit)
            data_done(m, EP_IN, n < m->mps);
        return (int)n;
    }
    case BOT_CSW: {
        if (mps < CSW_LEN)
            return VDEV_STALL;
        put32le(buf, CSW_SIGNATURE);
        put32le(buf + 4, m->tag);
        put32le(buf + 8, m->residue);
        buf[12] = m->phase_error ? CSW_PHASE_ERROR : m->plan.failed ? CSW_FAILED : CSW_GOOD;
        m->csws++;
        m->state = BOT_CBW;
        vdev_wake(&m->base.dev, EP_OUT, 0); /* a CBW queued behind this command */
        return CSW_LEN;
    }
    case BOT_CBW:
    case BOT_DATA_OUT:
        return VDEV_NAK;
    }
    return VDEV_STALL;
}

static int msc_control(vdev_t *dev, const vdev_setup_t *s, uint8_t *data)
{
    msc_t *m = (msc_t *)dev;
    int r;
    if (vdev_base_get_descriptor(&m->base, s, data, &r))
        return r;
    if (s->bmRequestType == 0xa1 && s->bRequest == 0xfe) { /* Get Max LUN */
        if (s->wValue != 0 || s->wIndex != 0 || s->wLength != 1)
            return VDEV_STALL;
        data[0] = 0;
        return 1;
    }
    if (s->bmRequestType == 0x21 && s->bRequest == 0xff) { /* Bulk-Only Mass Storage Reset */
        if (s->wValue != 0 || s->wIndex != 0 || s->wLength != 0)
            return VDEV_STALL;
        m->bot_resets++;
        m->need_reset = false;
        m->state = BOT_CBW;
        /* the halts stay until the host clears each endpoint (BOT 5.3.4) */
        return 0;
    }
    return VDEV_STALL;
}

static void msc_reset_endpoint(vdev_t *dev, uint8_t ep)
{
    msc_t *m = (msc_t *)dev;
    if (ep == 0xff) { /* bus reset / SET_CONFIGURATION: everything starts over */
        m->need_reset = false;
        m->state = BOT_CBW;
        vdev_unhalt(&m->base, 0xff);
        return;
    }
    if (!m->need_reset)
        vdev_unhalt(&m->base, ep);
}

static int msc_command(vdev_t *dev, const char *cmd, char *reply, size_t len)
{
    msc_t *m = (msc_t *)dev;
    if (strcmp(cmd, "stats") != 0) {
        vdev_set_err(reply, len, "unknown command '%s' for msc (expected: stats)", cmd);
        return -1;
    }
    const scsi_lun_t *l = &m->lun;
    /* "commands" maps each opcode seen (two hex digits) to its count */
    char ops[1024] = "";
    size_t used = 0;
    for (int op = 0; op < 256; op++) {
        if (!l->commands[op])
            continue;
        int w = snprintf(ops + used, sizeof ops - used, "%s\"%02x\":%" PRIu64, used ? "," : "",
                         op, l->commands[op]);
        if (w < 0 || (size_t)w >= sizeof ops - used)
            break;
        used += (size_t)w;
    }
    vdev_set_err(reply, len,
                 "{\"blocks\":%" PRIu64 ",\"bytes_read\":%" PRIu64 ",\"bytes_written\":%" PRIu64
                 ",\"resident\":%" PRIu64 ",\"csws\":%" PRIu64 ",\"check_conditions\":%" PRIu64
                 ",\"phase_errors\":%" PRIu64 ",\"invalid_cbws\":%" PRIu64
                 ",\"bot_resets\":%" PRIu64 ",\"commands\":{%s}}",
                 l->blocks, l->bytes_read, l->bytes_written, msc_store_resident(l->store), m->csws,
                 l->check_conditions, m->phase_errors, m->invalid_cbws, m->bot_resets, ops);
    return 0;
}

static void msc_destroy(vdev_t *dev)
{
    msc_t *m = (msc_t *)dev;
    msc_store_close(m->lun.store);
    vdev_base_release(&m->base);
    free(m);
}

static const vdev_ops_t msc_ops = {
    .control = msc_control,
    .out_packet = msc_out,
    .in_packet = msc_in,
    .reset_endpoint = msc_reset_endpoint,
    .command = msc_command,
    .destroy = msc_destroy,
};

#define RAM_MAX (16ull << 30)
#define FILE_MAX (4ull << 40)

vdev_t *vdev_msc_create(const vdev_spec_t *spec, char *err, size_t err_len)
{
    static const char *const allowed[] = {"size", "file", "readonly", "speed", "serial", NULL};
    if (vdev_opts_check(spec, allowed, err, err_len) != 0)
        return NULL;
    const char *file = vdev_opt(spec, "file");
    uint64_t size;
    bool readonly;
    vdev_speed_t speed;
    if (vdev_opt_size(spec, "size", 64ull << 20, 64ull << 10, file ? FILE_MAX : RAM_MAX, 512,
                      &size, err, err_len) != 0 ||
        vdev_opt_bool(spec, "readonly", false, &readonly, err, err_len) != 0 ||
        vdev_opt_speed(spec, VDEV_SPEED_FULL, false, true, &speed, err, err_len) != 0)
        return NULL;
    if (file && file[0] != '/') {
        vdev_set_err(err, err_len, "option 'file': '%s' is not an absolute path", file);
        return NULL;
    }
    msc_t *m = calloc(1, sizeof *m);
    if (!m) {
        vdev_set_err(err, err_len, "msc: out of memory");
        return NULL;
    }
    /* With a file and no size=, the file decides (so a disk image keeps its size). */
    m->lun.store = file ? msc_store_file(file, vdev_opt(spec, "size") ? size : 0, readonly, err,
                                         err_len)
                        : msc_store_ram(size, err, err_len);
    if (!m->lun.store) {
        free(m);
        return NULL;
    }
    if (vdev_opt_serial(spec, "MSC", m->base.serial, err, err_len) != 0 ||
        vdev_base_init(&m->base, &msc_ops, &identity, speed, m->base.serial, m, err, err_len) != 0) {
        msc_store_close(m->lun.store);
        free(m);
        return NULL;
    }
    m->lun.blocks = msc_store_size(m->lun.store) / SCSI_BLOCK;
    m->lun.readonly = readonly;
    m->lun.serial = m->base.serial;
    m->mps = vdev_bulk_mps(speed);
    m->state = BOT_CBW;
    return &m->base.dev;
}
