/*
 * test_robustness.c - every model survives a storm of malformed traffic
 * (random packets of any length on any endpoint, random control requests,
 * random commands) and afterwards, once the host resets it the way a real
 * host would, serves correctly again. Run under -DFLEET_SANITIZE=ON this
 * also proves no out-of-bounds access on hostile input.
 */
#include <stdio.h>
#include <string.h>

#include "test_host.h"
#include "testlib.h"

static uint32_t rng_state = 12345;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static void storm(vdev_t *d, th_host_t *h, int rounds)
{
    static const uint8_t eps[] = {0x01, 0x02, 0x81, 0x82, 0x83, 0x0f, 0x8f};
    static uint8_t data[70000];
    uint8_t pkt[1024];
    for (int i = 0; i < rounds; i++) {
        uint8_t ep = eps[rnd() % sizeof eps];
        h->now_ns += rnd() % 3000000;
        switch (rnd() % 6) {
        case 0:
        case 1: { /* OUT packet, sometimes shaped like a CBW or a DAP command */
            size_t len = rnd() % 2 ? rnd() % 65 : (rnd() % 2 ? 31 : 512);
            for (size_t k = 0; k < len; k++)
                pkt[k] = (uint8_t)rnd();
            if (len >= 4 && rnd() % 2)
                memcpy(pkt, "USBC", 4);
            d->ops->out_packet(d, ep & 0x0f, pkt, len);
            break;
        }
        case 2:
        case 3:
            d->ops->in_packet(d, (uint8_t)(ep | 0x80), pkt, rnd() % 2 ? 64 : 512);
            break;
        case 4: { /* any control request, data stage of wLength */
            vdev_setup_t s = {(uint8_t)rnd(), (uint8_t)(rnd() % 2 ? rnd() : rnd() % 12),
                              (uint16_t)rnd(), (uint16_t)(rnd() % 4), (uint16_t)(rnd() % 300)};
            if (rnd() % 2)
                s.bmRequestType = (uint8_t)(0x21 | (rnd() % 2 ? 0x80 : 0));
            for (size_t k = 0; k < s.wLength; k++)
                data[k] = (uint8_t)rnd();
            int r = d->ops->control(d, &s, data);
            if ((s.bmRequestType & 0x80) && r > (int)s.wLength) {
                TL_CHECK(r <= (int)s.wLength); /* never more than asked for */
                return;
            }
            break;
        }
        case 5: {
            static const char *const cmds[] = {"stats", "type ~!@#$%", "press", "press e0 zz",
                                               "release", "type \\", "", "x", "type \x7f"};
            char reply[64];
            if (d->ops->command)
                d->ops->command(d, cmds[rnd() % 9], reply, sizeof reply);
            break;
        }
        }
    }
}

static void recover(vdev_t *d)
{
    uint8_t none[1];
    th_control(d, 0x21, 0xff, 0, 0, 0, none); /* BOT reset where it means something */
    d->ops->reset_endpoint(d, 0xff);          /* what SET_CONFIGURATION does */
}

static void test_msc(void)
{
    static const char *const specs[] = {"msc:size=64K", "msc:size=1M,speed=high"};
    for (int s = 0; s < 2; s++) {
        vdev_t *d = th_create(specs[s]);
        uint16_t mps = s ? 512 : 64;
        th_host_t h;
        th_attach(&h, d);
        uint8_t cdb[10] = {0x2a, 0, 0, 0, 0, 5, 0, 0, 1, 0}, data[512], back[512];
        th_fill(data, sizeof data, 1);
        th_bot(d, mps, cdb, 10, false, 512, data);
        storm(d, &h, 20000);
        recover(d);
        uint8_t tur[6] = {0};
        th_bot_t r = th_bot(d, mps, tur, 6, false, 0, NULL);
        TL_CHECK(r.csw_ok && r.status == 0);
        /* the storm wrote random blocks maybe, but block 5 is rewritten and read back */
        th_bot(d, mps, cdb, 10, false, 512, data);
        cdb[0] = 0x28;
        r = th_bot(d, mps, cdb, 10, true, 512, back);
        TL_CHECK(r.csw_ok && r.status == 0);
        TL_EQ_MEM(back, data, 512);
        th_destroy(d);
    }
}

static void test_probe(void)
{
    vdev_t *d = th_create("probe:delay_ms=1");
    th_host_t h;
    th_attach(&h, d);
    storm(d, &h, 20000);
    recover(d);
    uint8_t r[64];
    TL_EQ_INT(th_out(d, 0x01, 64, (uint8_t[]){0x80, 0x42}, 2, false).status, TH_OK);
    h.now_ns += 1000000;
    th_xfer_t x = th_in(d, 0x81, 64, r, 64);
    TL_EQ_INT(x.actual, 2);
    TL_EQ_INT(r[1], 0x42);
    th_destroy(d);
}

static void test_cdc(void)
{
    vdev_t *d = th_create("cdc-acm");
    th_host_t h;
    th_attach(&h, d);
    storm(d, &h, 20000);
    recover(d);
    uint8_t drain[4096 + 64];
    for (int i = 0; i < 200 && th_in(d, 0x81, 64, drain, sizeof drain).actual > 0; i++)
        ;
    uint8_t msg[10] = "loopback!", back[64];
    TL_EQ_INT(th_out(d, 0x01, 64, msg, 10, false).actual, 10);
    TL_EQ_INT(th_in(d, 0x81, 64, back, 64).actual, 10);
    TL_EQ_MEM(back, msg, 10);
    th_destroy(d);
}

static void test_keyboard_and_hub(void)
{
    vdev_t *d = th_create("hid-keyboard");
    th_host_t h;
    th_attach(&h, d);
    storm(d, &h, 20000);
    recover(d);
    uint8_t r[8];
    for (int i = 0; i < 2000 && d->ops->in_packet(d, 0x81, r, 8) == 8; i++)
        ; /* drain what the storm typed */
    char reply[64];
    TL_EQ_INT(d->ops->command(d, "type q", reply, sizeof reply), 0);
    TL_EQ_INT(d->ops->in_packet(d, 0x81, r, 8), 8);
    TL_EQ_INT(r[2], 0x14);
    th_destroy(d);

    d = th_create("hub:ports=3");
    th_attach(&h, d);
    storm(d, &h, 5000);
    recover(d);
    uint8_t b[16];
    TL_EQ_INT(th_control(d, 0xa0, 0x06, 0x2900, 0, 16, b), 9);
    TL_EQ_INT(b[2], 3);
    th_destroy(d);
}

int main(void)
{
    TL_RUN(test_msc);
    TL_RUN(test_probe);
    TL_RUN(test_cdc);
    TL_RUN(test_keyboard_and_hub);
    return TL_RESULT();
}
