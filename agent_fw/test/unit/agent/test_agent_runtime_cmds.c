/*
 * test_agent_runtime_cmds.c - the command parser against the contract
 * fixtures the Python service is tested with: every valid cmd-* fixture is
 * accepted, every invalid one refused with a reason naming the field that
 * fleet/contracts/mqtt/v1/fixtures/invalid/_expected_fields.json names.
 * config and ota are parsed as the agent does it: the envelope, then the body.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cJSON.h"
#include "fleet_agent/agent.h"
#include "fleet_agent/config.h"
#include "fleet_agent/err.h"
#include "fleet_agent/manifest.h"
#include "testlib.h"

#ifndef FLEET_CONTRACTS_DIR
#error "FLEET_CONTRACTS_DIR must name fleet/contracts/mqtt/v1"
#endif

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    *len = fread(buf, 1, (size_t)n, f);
    buf[*len] = 0;
    fclose(f);
    return buf;
}

/* The agent's whole parse of one command payload. */
static int parse(int kind, const char *doc, size_t len, fleet_cmd_t *c, char *reason, size_t rl)
{
    static fleet_config_t cfg;
    static fleet_manifest_t man;
    int rc = fleet_cmd_parse((fleet_cmd_kind_t)kind, doc, len, c, reason, rl);
    if (rc == FLEET_OK && kind == FLEET_CMD_CONFIG)
        rc = fleet_config_parse(doc, len, &cfg, reason, rl);
    if (rc == FLEET_OK && kind == FLEET_CMD_OTA)
        rc = fleet_manifest_parse(doc, len, &man, reason, rl);
    return rc;
}

/* "cmd-grant.case.json" -> kind of "grant"; -1 if not a command we parse. */
static int kind_of(const char *file)
{
    if (strncmp(file, "cmd-", 4) != 0)
        return -1;
    const char *dot = strchr(file, '.');
    if (!dot)
        return -1;
    char name[32];
    snprintf(name, sizeof(name), "%.*s", (int)(dot - file - 4), file + 4);
    return fleet_cmd_kind_from_name(name);
}

static void test_valid_fixtures(void)
{
    DIR *d = opendir(FLEET_CONTRACTS_DIR "/fixtures");
    TL_CHECK(d != NULL);
    if (!d)
        return;
    int seen[FLEET_CMD_COUNT] = {0};
    struct dirent *e;
    while ((e = readdir(d))) {
        int k = kind_of(e->d_name);
        if (k < 0)
            continue;
        char path[512];
        snprintf(path, sizeof(path), "%s/fixtures/%s", FLEET_CONTRACTS_DIR, e->d_name);
        size_t len = 0;
        char *doc = slurp(path, &len);
        fleet_cmd_t c;
        char reason[FLEET_REASON_MAX] = "";
        int rc = parse(k, doc, len, &c, reason, sizeof(reason));
        if (rc != FLEET_OK)
            fprintf(stderr, "  %s refused: %s\n", e->d_name, reason);
        TL_EQ_INT(rc, FLEET_OK);
        TL_CHECK(fleet_txt_is_uuid(c.request_id));
        seen[k]++;
        free(doc);
    }
    closedir(d);
    /* the fixtures of every schema that exists were really read */
    TL_CHECK(seen[FLEET_CMD_GRANT] >= 2);
    TL_CHECK(seen[FLEET_CMD_REVOKE] >= 2);
    TL_CHECK(seen[FLEET_CMD_REBOOT] >= 2);
    TL_CHECK(seen[FLEET_CMD_PORT_POWER] >= 2);
    TL_CHECK(seen[FLEET_CMD_CONFIG] >= 2);
    TL_CHECK(seen[FLEET_CMD_OTA] >= 2);
}

static void test_invalid_fixtures(void)
{
    size_t flen;
    char *fields_doc = slurp(FLEET_CONTRACTS_DIR "/fixtures/invalid/_expected_fields.json", &flen);
    TL_CHECK(fields_doc != NULL);
    cJSON *fields_root = cJSON_Parse(fields_doc ? fields_doc : "{}");
    cJSON *fields = cJSON_GetObjectItem(fields_root, "fields");
    DIR *d = opendir(FLEET_CONTRACTS_DIR "/fixtures/invalid");
    TL_CHECK(d != NULL);
    if (!d) {
        cJSON_Delete(fields_root);
        free(fields_doc);
        return;
    }
    int refused = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int k = kind_of(e->d_name);
        if (k < 0)
            continue;
        char path[512], stem[256];
        snprintf(path, sizeof(path), "%s/fixtures/invalid/%s", FLEET_CONTRACTS_DIR, e->d_name);
        snprintf(stem, sizeof(stem), "%.*s", (int)(strlen(e->d_name) - 5), e->d_name);
        size_t len = 0;
        char *doc = slurp(path, &len);
        fleet_cmd_t c;
        char reason[FLEET_REASON_MAX] = "";
        int rc = parse(k, doc, len, &c, reason, sizeof(reason));
        if (rc == FLEET_OK)
            fprintf(stderr, "  %s accepted but must be refused\n", e->d_name);
        TL_EQ_INT(rc, FLEET_ERR_INVALID);
        const cJSON *want = cJSON_GetObjectItem(fields, stem);
        TL_CHECK(cJSON_IsString(want));
        if (cJSON_IsString(want) && strncmp(reason, want->valuestring, strlen(want->valuestring)) != 0) {
            fprintf(stderr, "  %s: reason \"%s\" does not start with \"%s\"\n", e->d_name, reason,
                    want->valuestring);
            TL_CHECK(0);
        }
        refused++;
        free(doc);
    }
    closedir(d);
    TL_CHECK(refused >= 10);
    cJSON_Delete(fields_root);
    free(fields_doc);
}

static void test_text_checks(void)
{
    TL_CHECK(fleet_txt_is_ipv4("127.0.0.1"));
    TL_CHECK(fleet_txt_is_ipv4("255.255.255.255"));
    TL_CHECK(!fleet_txt_is_ipv4("256.0.0.1"));
    TL_CHECK(!fleet_txt_is_ipv4("127.0.0"));
    TL_CHECK(!fleet_txt_is_ipv4("127.0.0.01"));
    TL_CHECK(!fleet_txt_is_ipv4("127.0.0.1 "));
    TL_CHECK(fleet_txt_is_ipv6("::1"));
    TL_CHECK(fleet_txt_is_ipv6("::"));
    TL_CHECK(fleet_txt_is_ipv6("fe80::1:2"));
    TL_CHECK(fleet_txt_is_ipv6("1:2:3:4:5:6:7:8"));
    TL_CHECK(fleet_txt_is_ipv6("::ffff:127.0.0.1"));
    TL_CHECK(!fleet_txt_is_ipv6("1:2:3:4:5:6:7:8:9"));
    TL_CHECK(!fleet_txt_is_ipv6("1::2::3"));
    TL_CHECK(!fleet_txt_is_ipv6(":1"));
    TL_CHECK(!fleet_txt_is_ipv6("12345::"));
    TL_CHECK(!fleet_txt_is_ipv6("workstation.local"));
    TL_CHECK(fleet_txt_is_busid("1-1"));
    TL_CHECK(fleet_txt_is_busid("12-3.4.5"));
    TL_CHECK(!fleet_txt_is_busid("1-0"));
    TL_CHECK(!fleet_txt_is_busid("01-1"));
    TL_CHECK(!fleet_txt_is_busid("1-1."));
    TL_CHECK(!fleet_txt_is_busid("1.1-1"));
    TL_CHECK(!fleet_txt_is_busid("1"));
    TL_CHECK(fleet_txt_is_uuid("3f2b8c1e-5d4a-4e7b-9c6f-1a2b3c4d5e6f"));
    TL_CHECK(!fleet_txt_is_uuid("3F2B8C1E-5D4A-4E7B-9C6F-1A2B3C4D5E6F"));
    TL_CHECK(!fleet_txt_is_uuid("3f2b8c1e-5d4a-4e7b-9c6f-1a2b3c4d5e6"));
}

static void test_malformed_payloads(void)
{
    static const struct { const char *json; const char *field; } cases[] = {
        {"", "document"},
        {"[1,2]", "document"},
        {"{\"v\":1", "document"},
        {"{\"v\":1,\"request_id\":\"3f2b8c1e-5d4a-4e7b-9c6f-1a2b3c4d5e6f\",\"issued_at\":1} x", "document"},
        {"{\"v\":2,\"request_id\":\"3f2b8c1e-5d4a-4e7b-9c6f-1a2b3c4d5e6f\",\"issued_at\":1}", "v"},
        {"{\"v\":1,\"request_id\":\"3f2b8c1e-5d4a-4e7b-9c6f-1a2b3c4d5e6f\",\"issued_at\":\"now\"}", "issued_at"},
        {"{\"v\":1,\"request_id\":\"3f2b8c1e-5d4a-4e7b-9c6f-1a2b3c4d5e6f\",\"issued_at\":1,\"reason\":5}",
         "reason"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fleet_cmd_t c;
        char reason[FLEET_REASON_MAX] = "";
        TL_EQ_INT(fleet_cmd_parse(FLEET_CMD_REBOOT, cases[i].json, strlen(cases[i].json), &c, reason,
                                  sizeof(reason)),
                  FLEET_ERR_INVALID);
        TL_CHECK(strncmp(reason, cases[i].field, strlen(cases[i].field)) == 0);
    }
    /* a NUL in the middle must not hide the rest of the document */
    const char nul[] = "{\"v\":1,\"request_id\":\"3f2b8c1e-5d4a-4e7b-9c6f-1a2b3c4d5e6f\",\"issued_at\":1}\0junk";
    fleet_cmd_t c;
    char reason[FLEET_REASON_MAX] = "";
    TL_EQ_INT(fleet_cmd_parse(FLEET_CMD_REBOOT, nul, sizeof(nul) - 1, &c, reason, sizeof(reason)),
              FLEET_ERR_INVALID);
    /* more than 4 grant addresses is valid JSON the parser accepts (the
     * runtime then refuses it with the core's limit) */
    const char *five = "{\"v\":1,\"request_id\":\"3f2b8c1e-5d4a-4e7b-9c6f-1a2b3c4d5e6f\",\"issued_at\":1,"
                       "\"busid\":\"1-1\",\"clients\":[\"127.0.0.1\",\"127.0.0.2\",\"127.0.0.3\",\"127.0.0.4\","
                       "\"127.0.0.5\"],\"lease_id\":3,\"expires_at\":0}";
    TL_EQ_INT(fleet_cmd_parse(FLEET_CMD_GRANT, five, strlen(five), &c, reason, sizeof(reason)), FLEET_OK);
    TL_EQ_INT(c.n_clients, 5);
    TL_EQ_STR(c.lease_id, "3");
    TL_CHECK(c.lease_is_int);
    /* duplicate clients are refused (uniqueItems) */
    const char *dup = "{\"v\":1,\"request_id\":\"3f2b8c1e-5d4a-4e7b-9c6f-1a2b3c4d5e6f\",\"issued_at\":1,"
                      "\"busid\":\"1-1\",\"clients\":[\"127.0.0.1\",\"127.0.0.1\"],\"lease_id\":3,\"expires_at\":0}";
    TL_EQ_INT(fleet_cmd_parse(FLEET_CMD_GRANT, dup, strlen(dup), &c, reason, sizeof(reason)), FLEET_ERR_INVALID);
    TL_CHECK(strncmp(reason, "clients", 7) == 0);
}

static void test_descriptor_summary(void)
{
    /* a composite device: class 0, HID keyboard (alt 0) + CDC data with an alt 1 that must not count */
    const uint8_t dev[18] = {18, 1, 0x00, 0x02, 0, 0, 0, 64, 0x09, 0x12, 0x08, 0x00, 0x34, 0x12, 1, 2, 3, 1};
    const uint8_t cfg[] = {9, 2, 36, 0, 2, 1, 0, 0x80, 50,
                           9, 4, 0, 0, 1, 3, 1, 1, 0,
                           9, 4, 1, 0, 0, 0x0a, 0, 0, 0,
                           9, 4, 1, 1, 2, 0x0a, 0, 0, 0};
    fleet_agent_dev_desc_t d;
    TL_EQ_INT(fleet_agent_desc_parse(dev, cfg, sizeof(cfg), &d), FLEET_OK);
    TL_EQ_INT(d.bcd_device, 0x1234);
    TL_EQ_INT(d.n_ifaces, 2);
    TL_EQ_INT(d.ifaces[0].cls, 3);
    TL_EQ_INT(d.ifaces[0].protocol, 1);
    TL_EQ_INT(d.ifaces[1].cls, 0x0a);
    /* wTotalLength beyond the buffer, zero-length descriptors: no overrun, no hang */
    uint8_t bad[12] = {9, 2, 0xff, 0xff, 1, 1, 0, 0x80, 50, 0, 4, 0};
    TL_EQ_INT(fleet_agent_desc_parse(dev, bad, sizeof(bad), &d), FLEET_OK);
    TL_EQ_INT(d.n_ifaces, 0);
    const uint8_t notdev[18] = {18, 2};
    TL_EQ_INT(fleet_agent_desc_parse(notdev, NULL, 0, &d), FLEET_ERR_INVALID);
    const uint8_t str[] = {12, 3, 'D', 0, 'i', 0, 's', 0, 'k', 0, 0xe9, 0};
    char out[16];
    fleet_agent_desc_string(str, sizeof(str), out, sizeof(out));
    TL_EQ_STR(out, "Disk\xc3\xa9");
    char small[3];
    fleet_agent_desc_string(str, sizeof(str), small, sizeof(small));
    TL_EQ_STR(small, "Di");
    const uint8_t odd[] = {200, 3, 'x', 0};
    fleet_agent_desc_string(odd, sizeof(odd), out, sizeof(out)); /* bLength lies: the buffer bounds the read */
    TL_EQ_STR(out, "x");
}

int main(void)
{
    TL_RUN(test_descriptor_summary);
    TL_RUN(test_valid_fixtures);
    TL_RUN(test_invalid_fixtures);
    TL_RUN(test_text_checks);
    TL_RUN(test_malformed_payloads);
    return TL_RESULT();
}
