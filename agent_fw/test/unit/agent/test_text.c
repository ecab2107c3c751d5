/* test_text.c - hex, base64 and SemVer helpers. */
#include <string.h>

#include "fleet_agent/text.h"
#include "testlib.h"

static void test_hex(void)
{
    uint8_t b[4];
    char s[9];
    TL_CHECK(fleet_hex_decode("00fFa5E1", b, 4));
    TL_EQ_INT(b[1], 0xff);
    TL_EQ_INT(b[3], 0xe1);
    fleet_hex_encode(b, 4, s);
    TL_EQ_STR(s, "00ffa5e1");
    TL_CHECK(!fleet_hex_decode("00ffa5e", b, 4));   /* too short */
    TL_CHECK(!fleet_hex_decode("00ffa5e1a", b, 4)); /* too long */
    TL_CHECK(!fleet_hex_decode("00ffa5g1", b, 4));  /* not hex */
}

static void test_base64(void)
{
    /* RFC 4648 section 10 test vectors */
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char out[16];
        uint8_t dec[16];
        fleet_base64_encode((const uint8_t *)plain[i], strlen(plain[i]), out);
        TL_EQ_STR(out, enc[i]);
        int n = fleet_base64_decode(enc[i], dec, sizeof dec);
        TL_EQ_INT(n, (long long)strlen(plain[i]));
        TL_EQ_MEM(dec, plain[i], strlen(plain[i]));
    }
    uint8_t d[8];
    TL_EQ_INT(fleet_base64_decode("Zm9", d, sizeof d), -1);      /* length not a multiple of 4 */
    TL_EQ_INT(fleet_base64_decode("Zm9v\n", d, sizeof d), -1);   /* whitespace */
    TL_EQ_INT(fleet_base64_decode("Zm=v", d, sizeof d), -1);     /* padding in the middle */
    TL_EQ_INT(fleet_base64_decode("Zh==", d, sizeof d), -1);     /* stray bits under padding */
    TL_EQ_INT(fleet_base64_decode("Zm9-", d, sizeof d), -1);     /* URL-safe alphabet */
    TL_EQ_INT(fleet_base64_decode("Zm9vYmFy", d, 5), -1);        /* does not fit */
    TL_EQ_INT(fleet_base64_decode("Zg=====", d, sizeof d), -1);
}

static void test_semver_valid(void)
{
    TL_CHECK(fleet_semver_valid("0.4.0"));
    TL_CHECK(fleet_semver_valid("10.20.30"));
    TL_CHECK(fleet_semver_valid("1.0.0-alpha.1"));
    TL_CHECK(fleet_semver_valid("1.0.0-rc.1+build.5"));
    TL_CHECK(fleet_semver_valid("1.0.0+20130313144700"));
    TL_CHECK(!fleet_semver_valid("1.0"));
    TL_CHECK(!fleet_semver_valid("01.0.0"));
    TL_CHECK(!fleet_semver_valid("1.0.0-01"));
    TL_CHECK(!fleet_semver_valid("v1.0.0"));
    TL_CHECK(!fleet_semver_valid("1.0.0-"));
    TL_CHECK(!fleet_semver_valid("1.0.0-a..b"));
    TL_CHECK(!fleet_semver_valid("1.0.0 "));
    TL_CHECK(!fleet_semver_valid(""));
    TL_CHECK(!fleet_semver_valid(NULL));
    TL_CHECK(!fleet_semver_valid("1234567890.0.0"));
}

static void test_semver_order(void)
{
    /* the precedence chain from semver.org section 11 */
    static const char *const chain[] = {"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta",
                                        "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11",
                                        "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "2.0.0", "10.0.0"};
    int n = (int)(sizeof chain / sizeof chain[0]);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            int c = fleet_semver_cmp(chain[i], chain[j]);
            TL_EQ_INT(c, i < j ? -1 : (i > j ? 1 : 0));
        }
    TL_EQ_INT(fleet_semver_cmp("1.0.0+a", "1.0.0+b"), 0); /* build metadata ignored */
    TL_EQ_INT(fleet_semver_cmp("0.10.0", "0.9.9"), 1);    /* numeric, not lexical */
}

int main(void)
{
    TL_RUN(test_hex);
    TL_RUN(test_base64);
    TL_RUN(test_semver_valid);
    TL_RUN(test_semver_order);
    return TL_RESULT();
}
