/*
 * test_msc_bot.c - Bulk-Only Transport rules: invalid CBWs and Reset
 * Recovery (BOT 6.6.1, 5.3.4), the thirteen host/device cases (6.7),
 * NAK where a real device has nothing armed.
 */
#include <string.h>

#include "test_host.h"
#include "testlib.h"

#define FS 64

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

static bool works(vdev_t *d)
{
    uint8_t tur[6] = {0};
    th_bot_t r = th_bot(d, FS, tur, 6, false, 0, NULL);
    return r.cbw_ok && r.csw_ok && r.status == 0 && !r.csw_stalled;
}

static bool both_stalled(vdev_t *d)
{
    uint8_t pkt[64] = {0};
    return d->ops->in_packet(d, 0x81, pkt, FS) == VDEV_STALL &&
           d->ops->out_packet(d, 0x01, pkt, 31) == VDEV_STALL;
}

static void reset_recovery(vdev_t *d)
{
    uint8_t none[1];
    TL_EQ_INT(th_control(d, 0x21, 0xff, 0, 0, 0, none), 0);
    th_clear_halt(d, 0x81);
    th_clear_halt(d, 0x01);
}

static void check_invalid_cbw(const uint8_t *cbw, size_t len)
{
    vdev_t *d = th_create("msc");
    TL_CHECK(works(d));
    TL_EQ_INT(d->ops->out_packet(d, 0x01, cbw, len), 0);
    TL_CHECK(both_stalled(d));
    /* CLEAR_FEATURE(HALT) alone does not lift it */
    th_clear_halt(d, 0x81);
    th_clear_halt(d, 0x01);
    TL_CHECK(both_stalled(d));
    /* the BOT reset alone neither: the halts wait for their clears */
    uint8_t none[1];
    TL_EQ_INT(th_control(d, 0x21, 0xff, 0, 0, 0, none), 0);
    TL_CHECK(both_stalled(d));
    th_clear_halt(d, 0x81);
    th_clear_halt(d, 0x01);
    TL_CHECK(works(d));
    TL_EQ_INT(d->ops->out_packet(d, 0x01, cbw, len), 0);
    TL_CHECK(both_stalled(d));
    d->ops->reset_endpoint(d, 0xff);  /* a bus reset also recovers */
    TL_CHECK(works(d));
    th_destroy(d);
}

static void test_invalid_cbws(void)
{
    uint8_t cbw[32], tur[6] = {0};
    th_cbw(cbw, 1, 0, false, tur, 6);
    check_invalid_cbw(cbw, 30);      /* too short */
    cbw[31] = 0;
    check_invalid_cbw(cbw, 32);      /* too long */
    cbw[0] ^= 0xff;
    check_invalid_cbw(cbw, 31);      /* bad signature */
    th_cbw(cbw, 1, 0, false, tur, 6);
    cbw[13] = 1;
    check_invalid_cbw(cbw, 31);      /* LUN 1 does not exist */
    th_cbw(cbw, 1, 0, false, tur, 6);
    cbw[14] = 0;
    check_invalid_cbw(cbw, 31);      /* CB length 0 */
    cbw[14] = 17;
    check_invalid_cbw(cbw, 31);      /* CB length 17 */
    th_cbw(cbw, 1, 0, false, tur, 6);
    cbw[12] = 0x40;
    check_invalid_cbw(cbw, 31);      /* reserved flag bit */
    /* counters */
    vdev_t *d = th_create("msc");
    d->ops->out_packet(d, 0x01, cbw, 31);
    char reply[512];
    d->ops->command(d, "stats", reply, sizeof reply);
    TL_CHECK(strstr(reply, "\"invalid_cbws\":1") != NULL);
    reset_recovery(d);
    d->ops->command(d, "stats", reply, sizeof reply);
    TL_CHECK(strstr(reply, "\"bot_resets\":1") != NULL);
    TL_CHECK(works(d));
    th_destroy(d);
}

static void test_naks_between_phases(void)
{
    vdev_t *d = th_create("msc");
    uint8_t pkt[64];
    TL_EQ_INT(d->ops->in_packet(d, 0x81, pkt, FS), VDEV_NAK); /* no CBW yet */
    uint8_t cbw[31], tur[6] = {0};
    th_cbw(cbw, 7, 0, false, tur, 6);
    TL_EQ_INT(d->ops->out_packet(d, 0x01, cbw, 31), 0);
    TL_EQ_INT(d->ops->out_packet(d, 0x01, cbw, 31), VDEV_NAK); /* CSW not taken yet */
    TL_EQ_INT(d->ops->in_packet(d, 0x81, pkt, FS), 13);
    TL_EQ_INT(pkt[4], 7);                                        /* tag echoed */
    TL_EQ_INT(d->ops->out_packet(d, 0x02, cbw, 31), VDEV_STALL); /* no such endpoint */
    th_destroy(d);
}

/* cases 1-3: host expects no data */
static void test_cases_hn(void)
{
    vdev_t *d = th_create("msc");
    uint8_t tur[6] = {0}, cdb[10];
    th_bot_t r = th_bot(d, FS, tur, 6, false, 0, NULL);            /* case 1 */
    TL_CHECK(r.csw_ok && r.status == 0 && r.residue == 0);
    rw10(cdb, 0x28, 0, 1);
    r = th_bot(d, FS, cdb, 10, true, 0, NULL);                      /* case 2 */
    TL_CHECK(r.csw_ok && !r.csw_stalled);
    TL_EQ_INT(r.status, 2);
    rw10(cdb, 0x2a, 0, 1);
    r = th_bot(d, FS, cdb, 10, false, 0, NULL);                     /* case 3 */
    TL_EQ_INT(r.status, 2);
    reset_recovery(d);
    TL_CHECK(works(d));
    th_destroy(d);
}

/* cases 4-8: host expects IN data */
static void test_cases_hi(void)
{
    vdev_t *d = th_create("msc");
    uint8_t buf[4096], tur[6] = {0}, cdb[10];
    th_bot_t r = th_bot(d, FS, tur, 6, true, 512, buf);             /* case 4 */
    TL_CHECK(r.data_stalled && r.data.actual == 0);
    TL_CHECK(r.csw_ok);
    TL_EQ_INT(r.status, 0);
    TL_EQ_INT(r.residue, 512);

    rw10(cdb, 0x28, 0, 2);                                          /* case 5, Di % mps == 0 */
    r = th_bot(d, FS, cdb, 10, true, 2048, buf);
    TL_EQ_INT(r.data.actual, 1024);
    TL_CHECK(r.data_stalled);           /* no short packet could end it: the device stalls */
    TL_EQ_INT(r.status, 0);
    TL_EQ_INT(r.residue, 1024);

    rw10(cdb, 0x28, 0, 2);                                          /* case 6 */
    r = th_bot(d, FS, cdb, 10, true, 1024, buf);
    TL_CHECK(!r.data_stalled && r.data.actual == 1024 && r.status == 0 && r.residue == 0);

    rw10(cdb, 0x28, 0, 8);                                          /* case 7 */
    r = th_bot(d, FS, cdb, 10, true, 1024, buf);
    TL_EQ_INT(r.data.actual, 1024);
    TL_EQ_INT(r.status, 2);
    TL_EQ_INT(r.residue, 0);
    reset_recovery(d);

    rw10(cdb, 0x2a, 0, 1);                                          /* case 8 */
    r = th_bot(d, FS, cdb, 10, true, 512, buf);
    TL_CHECK(r.data_stalled);
    TL_EQ_INT(r.status, 2);
    reset_recovery(d);
    TL_CHECK(works(d));
    th_destroy(d);
}

/* cases 9-13: host sends OUT data */
static void test_cases_ho(void)
{
    vdev_t *d = th_create("msc");
    uint8_t data[2048], back[2048], tur[6] = {0}, cdb[10];
    th_fill(data, sizeof data, 3);
    th_bot_t r = th_bot(d, FS, tur, 6, false, 512, data);           /* case 9 */
    TL_CHECK(r.data_stalled && r.data.actual == 0);
    TL_EQ_INT(r.status, 0);
    TL_EQ_INT(r.residue, 512);

    rw10(cdb, 0x28, 0, 1);                                          /* case 10 */
    r = th_bot(d, FS, cdb, 10, false, 512, data);
    TL_CHECK(r.data_stalled);
    TL_EQ_INT(r.status, 2);
    reset_recovery(d);

    rw10(cdb, 0x2a, 4, 1);                                          /* case 11 */
    r = th_bot(d, FS, cdb, 10, false, 1024, data);
    TL_EQ_INT(r.data.actual, 512);      /* the device took what it wanted, then stalled */
    TL_CHECK(r.data_stalled);
    TL_EQ_INT(r.status, 0);
    TL_EQ_INT(r.residue, 512);
    rw10(cdb, 0x28, 4, 1);
    th_bot(d, FS, cdb, 10, true, 512, back);
    TL_EQ_MEM(back, data, 512);

    rw10(cdb, 0x2a, 8, 2);                                          /* case 12 */
    r = th_bot(d, FS, cdb, 10, false, 1024, data);
    TL_CHECK(!r.data_stalled && r.status == 0 && r.residue == 0);

    rw10(cdb, 0x2a, 16, 4);                                         /* case 13 */
    r = th_bot(d, FS, cdb, 10, false, 1024, data);
    TL_EQ_INT(r.data.actual, 1024);
    TL_EQ_INT(r.status, 2);
    reset_recovery(d);
    TL_CHECK(works(d));

    char reply[512];
    d->ops->command(d, "stats", reply, sizeof reply);
    TL_CHECK(strstr(reply, "\"phase_errors\":2") != NULL);
    th_destroy(d);
}

static void test_short_out_transfer_is_phase_error(void)
{
    vdev_t *d = th_create("msc");
    uint8_t cbw[31], cdb[10], data[100] = {0}, csw[64];
    rw10(cdb, 0x2a, 0, 1);
    th_cbw(cbw, 9, 512, false, cdb, 10);
    TL_EQ_INT(d->ops->out_packet(d, 0x01, cbw, 31), 0);
    TL_EQ_INT(d->ops->out_packet(d, 0x01, data, 64), 0);
    TL_EQ_INT(d->ops->out_packet(d, 0x01, data, 36), 0); /* short: host gave up after 100 */
    TL_EQ_INT(d->ops->in_packet(d, 0x81, csw, FS), 13);
    TL_EQ_INT(csw[12], 2);
    TL_EQ_INT(csw[8] | csw[9] << 8, 412);
    th_destroy(d);
}

int main(void)
{
    TL_RUN(test_invalid_cbws);
    TL_RUN(test_naks_between_phases);
    TL_RUN(test_cases_hn);
    TL_RUN(test_cases_hi);
    TL_RUN(test_cases_ho);
    TL_RUN(test_short_out_transfer_is_phase_error);
    return TL_RESULT();
}
