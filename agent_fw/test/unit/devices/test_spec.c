/*
 * test_spec.c - device specs and option validation (exact messages: they
 * are what a person sees on the control channel), identities and
 * descriptor consistency of every model at every speed it supports.
 */
#include <stdio.h>
#include <string.h>

#include "test_host.h"
#include "testlib.h"

static const char *parse_error(const char *text)
{
    static char err[256];
    vdev_spec_t spec;
    err[0] = '\0';
    if (vdev_spec_parse(text, &spec, err, sizeof err) == 0)
        return "(parsed)";
    return err;
}

static void test_parse_good(void)
{
    vdev_spec_t s;
    char err[256];
    TL_EQ_INT(vdev_spec_parse("hid-keyboard", &s, err, sizeof err), 0);
    TL_EQ_STR(s.model, "hid-keyboard");
    TL_EQ_INT(s.num_opts, 0);
    TL_EQ_INT(vdev_spec_parse("msc:size=64M,speed=high,file=/tmp/d=1.img,serial=ABC", &s, err,
                              sizeof err),
              0);
    TL_EQ_STR(s.model, "msc");
    TL_EQ_INT(s.num_opts, 4);
    TL_EQ_STR(s.opt[0].key, "size");
    TL_EQ_STR(s.opt[0].value, "64M");
    TL_EQ_STR(s.opt[2].key, "file");
    TL_EQ_STR(s.opt[2].value, "/tmp/d=1.img"); /* '=' after the first belongs to the value */
    TL_EQ_STR(s.opt[3].value, "ABC");
    TL_EQ_INT(vdev_spec_parse("probe:delay_ms=2,port=1-2.3", &s, err, sizeof err), 0);
    TL_EQ_STR(s.opt[1].value, "1-2.3");
}

static void test_parse_bad(void)
{
    TL_EQ_STR(parse_error(""), "empty device spec (expected model[:key=value,...])");
    TL_EQ_STR(parse_error("msc: size=1M"), "device spec must not contain whitespace (at offset 4)");
    TL_EQ_STR(parse_error("msc\t"), "device spec must not contain whitespace (at offset 3)");
    TL_EQ_STR(parse_error("msc:serial=\x01"),
              "device spec contains a non-printable character (at offset 11)");
    TL_EQ_STR(parse_error(":size=1M"),
              "missing model name before ':' (expected msc, hid-keyboard, cdc-acm, probe or hub)");
    TL_EQ_STR(parse_error("floppy"),
              "unknown model 'floppy' (expected msc, hid-keyboard, cdc-acm, probe or hub)");
    TL_EQ_STR(parse_error("a-very-long-model-name"),
              "unknown model 'a-very-long-model-name' (expected msc, hid-keyboard, cdc-acm, probe "
              "or hub)");
    TL_EQ_STR(parse_error("msc:"), "empty option list after 'msc:' (expected key=value,...)");
    TL_EQ_STR(parse_error("msc:size=1M,,speed=high"), "empty option #2 (stray ',')");
    TL_EQ_STR(parse_error("msc:size=1M,"), "empty option #2 (trailing ',')");
    TL_EQ_STR(parse_error("msc:=1M"), "option #1 has an empty name (expected key=value)");
    TL_EQ_STR(parse_error("msc:readonly"), "option 'readonly' has no value (expected readonly=value)");
    TL_EQ_STR(parse_error("msc:size="), "option 'size' has an empty value");
    TL_EQ_STR(parse_error("msc:Size=1M"),
              "option name 'Size' has an invalid character 'S' (expected a-z, 0-9, _)");
    TL_EQ_STR(parse_error("msc:size=1M,size=2M"), "duplicate option 'size'");
    TL_EQ_STR(parse_error("msc:abcdefghijklmnopqrstuvwxyz=1"),
              "option name 'abcdefghijklmnopqrstuvw...' is too long (max 23 characters)");
    char text[400];
    snprintf(text, sizeof text, "msc:file=/%0240d", 0);
    TL_EQ_STR(parse_error(text), "value of option 'file' is too long (max 231 characters)");
    TL_EQ_STR(parse_error("msc:a=1,b=1,c=1,d=1,e=1,f=1,g=1,h=1,i=1,j=1,k=1,l=1,m=1"),
              "too many options (max 12)");
    vdev_spec_t s;
    char small[16];
    TL_EQ_INT(vdev_spec_parse(NULL, &s, small, sizeof small), -1);
    TL_EQ_STR(small, "empty device sp"); /* truncated, still terminated */
}

static void test_create_errors(void)
{
    TL_EQ_STR(th_create_error("msc:colour=red"),
              "unknown option 'colour' for model msc (accepted: size, file, readonly, speed, "
              "serial, port)");
    TL_EQ_STR(th_create_error("hub:delay_ms=1"),
              "unknown option 'delay_ms' for model hub (accepted: ports, speed, serial, port)");
    TL_EQ_STR(th_create_error("msc:size=12X"),
              "option 'size': '12X' is not a size (expected bytes with an optional K, M, G or T "
              "suffix, e.g. 64M)");
    TL_EQ_STR(th_create_error("msc:size=1MB"),
              "option 'size': '1MB' is not a size (expected bytes with an optional K, M, G or T "
              "suffix, e.g. 64M)");
    TL_EQ_STR(th_create_error("msc:size=-1M"),
              "option 'size': '-1M' is not a size (expected bytes with an optional K, M, G or T "
              "suffix, e.g. 64M)");
    TL_EQ_STR(th_create_error("msc:size=32K"), "option 'size': 32K is out of range (expected 64K..16G)");
    TL_EQ_STR(th_create_error("msc:size=17G"), "option 'size': 17G is out of range (expected 64K..16G)");
    TL_EQ_STR(th_create_error("msc:size=99999999999999999999"),
              "option 'size': '99999999999999999999' is not a size (expected bytes with an optional "
              "K, M, G or T suffix, e.g. 64M)");
    TL_EQ_STR(th_create_error("msc:size=65537"), "option 'size': 65537 is not a multiple of 512");
    TL_EQ_STR(th_create_error("msc:readonly=maybe"),
              "option 'readonly': 'maybe' is not a boolean (expected 1, 0, true, false, yes, no, on "
              "or off)");
    TL_EQ_STR(th_create_error("msc:speed=low"),
              "option 'speed': 'low' is not a speed msc supports (expected full or high)");
    TL_EQ_STR(th_create_error("hid-keyboard:speed=high"),
              "option 'speed': 'high' is not a speed hid-keyboard supports (expected low or full)");
    TL_EQ_STR(th_create_error("probe:delay_ms=-3"),
              "option 'delay_ms': '-3' is not an integer in 0..10000");
    TL_EQ_STR(th_create_error("probe:delay_ms=10001"),
              "option 'delay_ms': '10001' is not an integer in 0..10000");
    TL_EQ_STR(th_create_error("hub:ports=0"), "option 'ports': '0' is not an integer in 1..7");
    TL_EQ_STR(th_create_error("hub:ports=8"), "option 'ports': '8' is not an integer in 1..7");
    TL_EQ_STR(th_create_error("cdc-acm:serial=has/slash"),
              "option 'serial': 'has/slash' is not a serial number (expected 1-32 characters of "
              "A-Z a-z 0-9 . _ -)");
    TL_EQ_STR(th_create_error("cdc-acm:serial=123456789012345678901234567890123"),
              "option 'serial': '123456789012345678901234567890123' is not a serial number "
              "(expected 1-32 characters of A-Z a-z 0-9 . _ -)");
    vdev_spec_t s = {.model = "tape"};
    char err[128];
    TL_CHECK(vdev_create(&s, err, sizeof err) == NULL);
    TL_EQ_STR(err, "unknown model 'tape' (expected msc, hid-keyboard, cdc-acm, probe or hub)");
}

static void test_sizes(void)
{
    static const struct { const char *spec; unsigned long long bytes; } cases[] = {
        {"msc:size=512K", 512ull << 10}, {"msc:size=64m", 64ull << 20},
        {"msc:size=1G", 1ull << 30},     {"msc:size=65536", 65536},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vdev_t *d = th_create(cases[i].spec);
        char reply[512];
        d->ops->command(d, "stats", reply, sizeof reply);
        char expect[64];
        snprintf(expect, sizeof expect, "{\"blocks\":%llu,", cases[i].bytes / 512);
        TL_CHECK(strncmp(reply, expect, strlen(expect)) == 0);
        th_destroy(d);
    }
}

static void test_serials(void)
{
    char buf[64];
    vdev_t *a = th_create("cdc-acm:serial=LAB-7.x_1");
    TL_EQ_STR(th_string(a, 3, buf, sizeof buf), "LAB-7.x_1");
    th_destroy(a);
    a = th_create("cdc-acm:port=1-2.3");
    TL_EQ_STR(th_string(a, 3, buf, sizeof buf), "ACM-1-2.3");
    th_destroy(a);
    /* without port=: a per-model counter, so two devices never share a serial */
    vdev_t *b = th_create("hub");
    vdev_t *c = th_create("hub");
    char sb[64], sc[64];
    th_string(b, 3, sb, sizeof sb);
    th_string(c, 3, sc, sizeof sc);
    TL_EQ_STR(sb, "HUB-0001");
    TL_EQ_STR(sc, "HUB-0002");
    th_destroy(b);
    th_destroy(c);
    vdev_t *k = th_create("hid-keyboard");
    TL_EQ_STR(th_string(k, 3, buf, sizeof buf), "KBD-0001");
    th_destroy(k);
}

static void test_identities(void)
{
    static const struct {
        const char *spec, *model, *product;
        uint16_t pid;
        vdev_speed_t speed;
        uint8_t cls;
    } cases[] = {
        {"msc", "msc", "fleet Virtual Disk", 0x0001, VDEV_SPEED_FULL, 0x00},
        {"msc:speed=high", "msc", "fleet Virtual Disk", 0x0001, VDEV_SPEED_HIGH, 0x00},
        {"hid-keyboard", "hid-keyboard", "fleet Virtual Keyboard", 0x0002, VDEV_SPEED_FULL, 0x00},
        {"hid-keyboard:speed=low", "hid-keyboard", "fleet Virtual Keyboard", 0x0002, VDEV_SPEED_LOW, 0x00},
        {"cdc-acm", "cdc-acm", "fleet Virtual Serial", 0x0003, VDEV_SPEED_FULL, 0xef},
        {"cdc-acm:speed=high", "cdc-acm", "fleet Virtual Serial", 0x0003, VDEV_SPEED_HIGH, 0xef},
        {"probe", "probe", "fleet Virtual Probe (CMSIS-DAP)", 0x0004, VDEV_SPEED_FULL, 0x00},
        {"probe:speed=high", "probe", "fleet Virtual Probe (CMSIS-DAP)", 0x0004, VDEV_SPEED_HIGH, 0x00},
        {"hub", "hub", "fleet Virtual Hub", 0x0005, VDEV_SPEED_FULL, 0x09},
        {"hub:speed=high,ports=7", "hub", "fleet Virtual Hub", 0x0005, VDEV_SPEED_HIGH, 0x09},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vdev_t *d = th_create(cases[i].spec);
        const uint8_t *dd = d->device_desc;
        char buf[64];
        TL_EQ_STR(d->model, cases[i].model);
        TL_EQ_INT(d->speed, cases[i].speed);
        TL_EQ_INT(dd[0], 18);
        TL_EQ_INT(dd[1], 1);
        TL_EQ_INT(dd[2] | dd[3] << 8, 0x0200);
        TL_EQ_INT(dd[4], cases[i].cls);
        TL_EQ_INT(dd[7], cases[i].speed == VDEV_SPEED_LOW ? 8 : 64);
        TL_EQ_INT(dd[8] | dd[9] << 8, 0x1209);
        TL_EQ_INT(dd[10] | dd[11] << 8, cases[i].pid);
        TL_EQ_INT(dd[17], 1);
        TL_EQ_STR(th_string(d, dd[14], buf, sizeof buf), "fleet");
        TL_EQ_STR(th_string(d, dd[15], buf, sizeof buf), cases[i].product);
        TL_CHECK(strlen(th_string(d, dd[16], buf, sizeof buf)) > 0);
        uint8_t lang[4];
        TL_EQ_INT(th_control(d, 0x80, 6, 0x0300, 0, 4, lang), 4);
        TL_EQ_INT(lang[2] | lang[3] << 8, 0x0409);
        TL_EQ_INT(th_control(d, 0x80, 6, 0x0309, 0x0409, 255, lang), VDEV_STALL);
        th_config_t c;
        const char *why = th_check_config(d->config_desc, d->speed, 2, &c);
        TL_CHECK(why == NULL);
        if (why)
            fprintf(stderr, "  %s: %s\n", cases[i].spec, why);
        /* the vhc serves these tables directly: they must agree with control() */
        uint8_t cfg[256];
        int n = th_control(d, 0x80, 6, 0x0200, 0, 255, cfg);
        TL_EQ_INT(n, d->config_desc[2] | d->config_desc[3] << 8);
        TL_EQ_MEM(cfg, d->config_desc, (size_t)(n > 0 ? n : 0));
        uint8_t q[10];
        int qn = th_control(d, 0x80, 6, 0x0600, 0, 10, q);
        if (cases[i].speed == VDEV_SPEED_HIGH) {
            TL_EQ_INT(qn, 10);
            TL_EQ_INT(q[4], cases[i].cls);
            n = th_control(d, 0x80, 6, 0x0700, 0, 255, cfg);
            TL_CHECK(n > 9 && th_check_config(cfg, VDEV_SPEED_FULL, 7, &c) == NULL);
        } else {
            TL_EQ_INT(qn, VDEV_STALL);
        }
        TL_EQ_INT(d->is_hub, strcmp(cases[i].model, "hub") == 0);
        th_destroy(d);
    }
}

static void test_port_accepted_everywhere(void)
{
    const char *specs[] = {"msc:port=1-1", "hid-keyboard:port=1-2", "cdc-acm:port=1-3",
                           "probe:port=1-4", "hub:port=1-5"};
    for (size_t i = 0; i < 5; i++)
        TL_EQ_STR(th_create_error(specs[i]), "(created)");
}

int main(void)
{
    TL_RUN(test_parse_good);
    TL_RUN(test_parse_bad);
    TL_RUN(test_create_errors);
    TL_RUN(test_sizes);
    TL_RUN(test_serials);
    TL_RUN(test_identities);
    TL_RUN(test_port_accepted_everywhere);
    return TL_RESULT();
}
