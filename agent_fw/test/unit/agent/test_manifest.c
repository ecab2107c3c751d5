/* test_manifest.c - manifest parsing, the signature and every policy refusal,
 * and the image header checks (ESP and posix-sim). */
#include <stdio.h>
#include <string.h>

#include "fleet_agent/err.h"
#include "fleet_agent/image.h"
#include "fleet_agent/manifest.h"
#include "testlib.h"
#include "testutil.h"

static tu_key_t key, other_key;
static uint8_t image[4096];
static size_t image_len;

static fleet_ota_policy_t policy(void)
{
    return (fleet_ota_policy_t){
        .chip = "posix-sim", .chip_revision = 3, .running_version = "0.3.1",
        .min_secure_version = 2, .pubkey = key.pub, .pubkey_len = key.pub_len,
        .slot_capacity = 1 << 20,
    };
}

static fleet_manifest_t signed_manifest(void)
{
    fleet_manifest_t m;
    tu_manifest_init(&m, "0.4.0", "http://127.0.0.1:8080/fw/a.bin", image, image_len);
    m.secure_version = 2;
    tu_manifest_sign(&m, &key);
    return m;
}

static int check(const fleet_manifest_t *m, const fleet_ota_policy_t *p, char *why)
{
    why[0] = '\0';
    return fleet_manifest_check(m, p, why, FLEET_REASON_MAX);
}

static void test_signed_string_is_canonical(void)
{
    fleet_manifest_t m = signed_manifest();
    char s[256];
    size_t n = fleet_manifest_signed_string(&m, s, sizeof s);
    char hex[65];
    for (int i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", m.sha256[i]);
    char want[256];
    snprintf(want, sizeof want, "fleet-ota-v1\n0.4.0\n%zu\n%s\nposix-sim\n32343\n0\n99\n2\n0\n",
             image_len, hex);
    TL_EQ_STR(s, want);
    TL_EQ_INT(n, (long long)strlen(want));
}

static void test_parse_roundtrip(void)
{
    fleet_manifest_t m = signed_manifest(), back;
    char json[1024], why[FLEET_REASON_MAX] = "";
    tu_manifest_json(&m, json, sizeof json);
    TL_EQ_INT(fleet_manifest_parse(json, strlen(json), &back, why, sizeof why), FLEET_OK);
    TL_EQ_STR(why, "");
    TL_EQ_STR(back.version, "0.4.0");
    TL_EQ_INT(back.size, (long long)image_len);
    TL_EQ_MEM(back.sha256, m.sha256, 32);
    TL_EQ_INT(back.signature_len, (long long)m.signature_len);
    TL_EQ_MEM(back.signature, m.signature, m.signature_len);
    TL_EQ_INT(check(&back, &(fleet_ota_policy_t){0}, why) != FLEET_OK, 1); /* no key: refused */
    fleet_ota_policy_t p = policy();
    TL_EQ_INT(check(&back, &p, why), FLEET_OK);
}

/* Replace the first occurrence of from in json with to and parse. */
static void parse_bad(const char *from, const char *to, const char *want_reason)
{
    fleet_manifest_t m = signed_manifest(), out;
    char json[1024], bad[1100], why[FLEET_REASON_MAX] = "";
    tu_manifest_json(&m, json, sizeof json);
    char *p = strstr(json, from);
    TL_CHECK(p != NULL);
    if (!p) return;
    snprintf(bad, sizeof bad, "%.*s%s%s", (int)(p - json), json, to, p + strlen(from));
    TL_EQ_INT(fleet_manifest_parse(bad, strlen(bad), &out, why, sizeof why), FLEET_ERR_INVALID);
    TL_EQ_STR(why, want_reason);
}

static void test_parse_rejects_each_field(void)
{
    parse_bad("\"v\":1", "\"v\":2", "v: must be an integer from 1 to 1");
    parse_bad("\"version\":\"0.4.0\"", "\"version\":\"0.4\"", "version: must be a semantic version like 1.2.3");
    parse_bad("\"url\":\"http://", "\"url\":\"ftp://x", "url: must start with http:// or https://");
    parse_bad("\"size\":", "\"size\":-", "size: must be an integer from 1 to 9007199254740992");
    parse_bad("\"sha256\":\"", "\"sha256\":\"zz", "sha256: must be 64 hexadecimal digits");
    parse_bad("\"chip\":\"posix-sim\"", "\"chip\":\"esp8266\"", "chip: must be one of esp32s3, esp32p4, posix-sim");
    parse_bad("\"chip_id\":32343", "\"chip_id\":9", "chip_id: 9 does not match chip posix-sim (32343)");
    parse_bad("\"min_rev\":0", "\"min_rev\":100", "max_rev: must not be below min_rev");
    parse_bad("\"max_rev\":99", "\"max_rev\":65536", "max_rev: must be an integer from 0 to 65535");
    parse_bad("\"secure_version\":2", "\"secure_version\":1.5", "secure_version: must be an integer from 0 to 4294967295");
    parse_bad("\"allow_downgrade\":false", "\"allow_downgrade\":\"no\"", "allow_downgrade: must be true or false");
    parse_bad("\"signature\":\"", "\"signature\":\"!!", "signature: must be base64 of a DER ECDSA signature (at most 80 bytes)");
    parse_bad("\"request_id\":", "\"request\":", "request_id: is required");
    parse_bad("\"request_id\":\"0b7e6d2a", "\"request_id\":\"0B7E6D2A", "request_id: must be a lowercase UUID");
    parse_bad("\"issued_at\":1764000000", "\"issued_at\":\"now\"", "issued_at: must be a non-negative number (unix seconds)");
    parse_bad("{", "[", "document: not valid JSON");
    parse_bad("\"}", "\"} x", "document: trailing data after the JSON object");

    fleet_manifest_t out;
    char why[FLEET_REASON_MAX];
    TL_EQ_INT(fleet_manifest_parse("[1,2]", 5, &out, why, sizeof why), FLEET_ERR_INVALID);
    TL_EQ_STR(why, "document: must be a JSON object");
    TL_EQ_INT(fleet_manifest_parse("{\"v\":1}\0{", 9, &out, why, sizeof why), FLEET_ERR_INVALID);
    TL_EQ_STR(why, "document: contains a NUL byte");
}

static void test_signature(void)
{
    fleet_ota_policy_t p = policy();
    char why[FLEET_REASON_MAX];
    fleet_manifest_t m = signed_manifest();
    TL_EQ_INT(check(&m, &p, why), FLEET_OK);

    /* tampering with any signed field breaks it */
    fleet_manifest_t t = m;
    t.size++;
    TL_EQ_INT(check(&t, &p, why), FLEET_ERR_REFUSED);
    TL_EQ_STR(why, "signature: does not verify with the dongle's public key");
    t = m;
    t.sha256[5] ^= 1;
    TL_EQ_INT(check(&t, &p, why), FLEET_ERR_REFUSED);
    t = m;
    t.allow_downgrade = true;
    TL_EQ_INT(check(&t, &p, why), FLEET_ERR_REFUSED);
    t = m;
    strcpy(t.version, "0.4.1");
    TL_EQ_INT(check(&t, &p, why), FLEET_ERR_REFUSED);
    t = m;
    t.signature[t.signature_len - 1] ^= 0x40;
    TL_EQ_INT(check(&t, &p, why), FLEET_ERR_REFUSED);

    /* signed by someone else */
    t = m;
    tu_manifest_sign(&t, &other_key);
    TL_EQ_INT(check(&t, &p, why), FLEET_ERR_REFUSED);
    TL_EQ_STR(why, "signature: does not verify with the dongle's public key");

    /* the URL is not signed: moving the file does not need a new signature */
    t = m;
    strcpy(t.url, "http://127.0.0.2/elsewhere.bin");
    TL_EQ_INT(check(&t, &p, why), FLEET_OK);

    /* a garbage key is a configuration error, and still a refusal */
    p.pubkey = (const uint8_t *)"not a key";
    p.pubkey_len = 9;
    TL_EQ_INT(check(&m, &p, why), FLEET_ERR_REFUSED);
    TL_EQ_STR(why, "signature: the dongle has no usable P-256 public key");
}

static void test_policy_refusals(void)
{
    char why[FLEET_REASON_MAX];
    fleet_ota_policy_t p = policy();
    fleet_manifest_t m;

    /* wrong chip: a correctly signed esp32p4 manifest on a posix-sim dongle */
    m = signed_manifest();
    strcpy(m.chip, "esp32p4");
    m.chip_id = FLEET_CHIP_ID_ESP32P4;
    tu_manifest_sign(&m, &key);
    TL_EQ_INT(check(&m, &p, why), FLEET_ERR_REFUSED);
    TL_EQ_STR(why, "chip: image is for esp32p4, this dongle is posix-sim");

    m = signed_manifest();
    m.min_rev = 100;
    m.max_rev = 199;
    tu_manifest_sign(&m, &key);
    TL_EQ_INT(check(&m, &p, why), FLEET_ERR_REFUSED);
    TL_EQ_STR(why, "chip revision 3 is outside the image's range 100..199");

    m = signed_manifest();
    strcpy(m.version, "0.3.0");
    tu_manifest_sign(&m, &key);
    TL_EQ_INT(check(&m, &p, why), FLEET_ERR_REFUSED);
    TL_EQ_STR(why, "version: 0.3.0 is not newer than the running 0.3.1");
    strcpy(m.version, "0.3.1"); /* same version: nothing to do */
    tu_manifest_sign(&m, &key);
    TL_EQ_INT(check(&m, &p, why), FLEET_ERR_REFUSED);
    strcpy(m.version, "0.3.1-rc.1"); /* a prerelease of the running version is older */
    tu_manifest_sign(&m, &key);
    TL_EQ_INT(check(&m, &p, why), FLEET_ERR_REFUSED);
    m.allow_downgrade = true; /* an explicit, signed downgrade is allowed */
    tu_manifest_sign(&m, &key);
    TL_EQ_INT(check(&m, &p, why), FLEET_OK);

    m = signed_manifest();
    m.secure_version = 1;
    tu_manifest_sign(&m, &key);
    TL_EQ_INT(check(&m, &p, why), FLEET_ERR_REFUSED);
    TL_EQ_STR(why, "secure_version: 1 is below the dongle's minimum 2");
    m.allow_downgrade = true; /* anti-rollback holds even for downgrades */
    tu_manifest_sign(&m, &key);
    TL_EQ_INT(check(&m, &p, why), FLEET_ERR_REFUSED);

    m = signed_manifest();
    m.size = (1 << 20) + 1;
    tu_manifest_sign(&m, &key);
    TL_EQ_INT(check(&m, &p, why), FLEET_ERR_REFUSED);
    TL_EQ_STR(why, "size: 1048577 bytes exceed the slot capacity 1048576");
}

static void esp_image(uint8_t *h, uint16_t chip_id, const char *version)
{
    memset(h, 0, FLEET_IMAGE_PROBE_LEN);
    h[0] = 0xE9;
    h[12] = (uint8_t)chip_id, h[13] = (uint8_t)(chip_id >> 8);
    h[15] = 0, h[16] = 0;             /* min rev 0 */
    h[17] = 0x8f, h[18] = 0x01;       /* max rev 399 */
    uint8_t *d = h + 0x20;
    d[0] = 0x32, d[1] = 0x54, d[2] = 0xcd, d[3] = 0xab;
    d[4] = 5;                          /* secure_version */
    strcpy((char *)d + 16, version);
}

static void test_image_headers(void)
{
    uint8_t h[FLEET_IMAGE_PROBE_LEN];
    fleet_image_info_t info;
    char why[FLEET_REASON_MAX];

    esp_image(h, 0x0009, "0.4.0");
    TL_EQ_INT(fleet_image_parse("esp32s3", h, sizeof h, &info, why, sizeof why), FLEET_OK);
    TL_EQ_INT(info.chip_id, 9);
    TL_EQ_INT(info.max_rev, 399);
    TL_EQ_INT(info.secure_version, 5);
    TL_EQ_STR(info.version, "0.4.0");
    /* an S3 image offered to a P4 */
    TL_EQ_INT(fleet_image_parse("esp32p4", h, sizeof h, &info, why, sizeof why), FLEET_ERR_INTEGRITY);
    TL_EQ_STR(why, "image: header chip_id 0x0009, expected 0x0012");
    esp_image(h, 0x0012, "0.4.0");
    TL_EQ_INT(fleet_image_parse("esp32p4", h, sizeof h, &info, why, sizeof why), FLEET_OK);
    h[0] = 0xE8;
    TL_EQ_INT(fleet_image_parse("esp32p4", h, sizeof h, &info, why, sizeof why), FLEET_ERR_INTEGRITY);
    TL_EQ_STR(why, "image: header magic is 0xe8, expected 0xe9");
    esp_image(h, 0x0012, "0.4.0");
    h[0x20] = 0;
    TL_EQ_INT(fleet_image_parse("esp32p4", h, sizeof h, &info, why, sizeof why), FLEET_ERR_INTEGRITY);
    TL_EQ_STR(why, "image: app descriptor magic is 0xabcd5400, expected 0xabcd5432");
    esp_image(h, 0x0012, "0.4.0");
    memset(h + 0x30, 'x', 32); /* version without terminator */
    TL_EQ_INT(fleet_image_parse("esp32p4", h, sizeof h, &info, why, sizeof why), FLEET_ERR_INTEGRITY);
    TL_EQ_INT(fleet_image_parse("esp32p4", h, 40, &info, why, sizeof why), FLEET_ERR_INTEGRITY);

    uint8_t sim[FLEET_SIM_HEADER_LEN];
    fleet_image_sim_header(sim, "1.2.3", 7, 1, 50);
    TL_EQ_MEM(sim, "FLEETSIM", 8);
    TL_EQ_INT(fleet_image_parse("posix-sim", sim, sizeof sim, &info, why, sizeof why), FLEET_OK);
    TL_EQ_STR(info.version, "1.2.3");
    TL_EQ_INT(info.secure_version, 7);
    TL_EQ_INT(info.min_rev, 1);
    TL_EQ_INT(info.max_rev, 50);
    sim[3] = 'X';
    TL_EQ_INT(fleet_image_parse("posix-sim", sim, sizeof sim, &info, why, sizeof why), FLEET_ERR_INTEGRITY);
    TL_EQ_STR(why, "image: no FLEETSIM header");
    /* an ESP image is not a posix-sim image */
    esp_image(h, 0x0009, "0.4.0");
    TL_EQ_INT(fleet_image_parse("posix-sim", h, sizeof h, &info, why, sizeof why), FLEET_ERR_INTEGRITY);
}

static size_t slurp(const char *name, void *buf, size_t cap)
{
    char path[512];
    snprintf(path, sizeof path, "%s/fixtures/%s", AGENT_TEST_DIR, name);
    FILE *f = fopen(path, "rb");
    TL_CHECK(f != NULL);
    if (!f) return 0;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    ((char *)buf)[n] = '\0';
    return n;
}

/* The shared test vector (fixtures/README.md): what the service signs is
 * what the dongle verifies, byte for byte. */
static void test_shared_fixture(void)
{
    char json[2048], want[512], got[512], why[FLEET_REASON_MAX] = "";
    uint8_t pub[512], img[2048], digest[32];
    size_t jn = slurp("ota-manifest.posix-sim.json", json, sizeof json);
    slurp("ota-manifest.posix-sim.signed.txt", want, sizeof want);
    size_t pn = slurp("TEST-ONLY-ota-signing-key.pub.pem", pub, sizeof pub);
    size_t in = slurp("fw-posix-sim-0.4.0.bin", img, sizeof img);
    fleet_manifest_t m;
    TL_EQ_INT(fleet_manifest_parse(json, jn, &m, why, sizeof why), FLEET_OK);
    fleet_manifest_signed_string(&m, got, sizeof got);
    TL_EQ_STR(got, want);
    fleet_ota_policy_t p = {.chip = "posix-sim", .chip_revision = 0, .running_version = "0.3.9",
                            .min_secure_version = 1, .pubkey = pub, .pubkey_len = pn,
                            .slot_capacity = 4096};
    TL_EQ_INT(fleet_manifest_check(&m, &p, why, sizeof why), FLEET_OK);
    TL_EQ_STR(why, "");
    p.pubkey = other_key.pub;
    p.pubkey_len = other_key.pub_len;
    TL_EQ_INT(fleet_manifest_check(&m, &p, why, sizeof why), FLEET_ERR_REFUSED);
    tu_sha256(img, in, digest);
    TL_EQ_INT(in, (long long)m.size);
    TL_EQ_MEM(digest, m.sha256, 32);
    fleet_image_info_t info;
    TL_EQ_INT(fleet_image_parse("posix-sim", img, in, &info, why, sizeof why), FLEET_OK);
    TL_EQ_STR(info.version, m.version);
    TL_EQ_INT(info.secure_version, m.secure_version);
}

/* Random byte edits of a valid manifest: each result is either accepted or
 * refused with a reason; never a crash (run under ASan/UBSan in CI). */
static void test_mutations_are_refused_cleanly(void)
{
    fleet_manifest_t m = signed_manifest(), out;
    char json[1024], buf[1024], why[FLEET_REASON_MAX];
    tu_manifest_json(&m, json, sizeof json);
    size_t n = strlen(json);
    uint32_t x = 12345;
    int refused = 0;
    for (int i = 0; i < 3000; i++) {
        memcpy(buf, json, n);
        for (int k = 0; k < 1 + i % 4; k++) {
            x = x * 1103515245u + 12345u;
            buf[(x >> 8) % n] = (char)(x >> 20);
        }
        why[0] = '\0';
        int rc = fleet_manifest_parse(buf, n, &out, why, sizeof why);
        TL_CHECK(rc == FLEET_OK || (rc == FLEET_ERR_INVALID && why[0] != '\0'));
        refused += rc != FLEET_OK;
    }
    TL_CHECK(refused > 2000);
}

int main(void)
{
    tu_key_gen(&key);
    tu_key_gen(&other_key);
    image_len = tu_sim_image(image, sizeof image, "0.4.0", 2, 1000, 1);
    TL_RUN(test_signed_string_is_canonical);
    TL_RUN(test_parse_roundtrip);
    TL_RUN(test_parse_rejects_each_field);
    TL_RUN(test_signature);
    TL_RUN(test_policy_refusals);
    TL_RUN(test_image_headers);
    TL_RUN(test_shared_fixture);
    TL_RUN(test_mutations_are_refused_cleanly);
    tu_key_free(&key);
    tu_key_free(&other_key);
    return TL_RESULT();
}
