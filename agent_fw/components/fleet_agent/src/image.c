/* image.c - header checks of ESP app images and posix-sim images. */
#include "fleet_agent/image.h"

#include <string.h>

#include "fleet_agent/err.h"
#include "fleet_agent/manifest.h"
#include "reason.h"

#define ESP_IMAGE_MAGIC 0xE9
#define ESP_APP_DESC_OFFSET 0x20
#define ESP_APP_DESC_MAGIC 0xABCD5432u
#define SIM_MAGIC "FLEETSIM"

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Copy a fixed-size NUL-padded field; false if it has no NUL (no terminator fits). */
static bool fixed_str(char *dst, const uint8_t *src, size_t n)
{
    const uint8_t *nul = memchr(src, 0, n);
    if (!nul || nul == src) return false;
    memcpy(dst, src, (size_t)(nul - src) + 1);
    return true;
}

static int parse_esp(uint16_t want_chip, const uint8_t *h, size_t len, fleet_image_info_t *out,
                     char *r, size_t rl)
{
    if (len < ESP_APP_DESC_OFFSET + 48) {
        fleet_reason(r, rl, "image: %zu bytes is too short for an ESP app header", len);
        return FLEET_ERR_INTEGRITY;
    }
    if (h[0] != ESP_IMAGE_MAGIC) {
        fleet_reason(r, rl, "image: header magic is 0x%02x, expected 0xe9", h[0]);
        return FLEET_ERR_INTEGRITY;
    }
    out->chip_id = le16(h + 12);
    out->min_rev = le16(h + 15);
    out->max_rev = le16(h + 17);
    if (out->chip_id != want_chip) {
        fleet_reason(r, rl, "image: header chip_id 0x%04x, expected 0x%04x", out->chip_id, want_chip);
        return FLEET_ERR_INTEGRITY;
    }
    const uint8_t *d = h + ESP_APP_DESC_OFFSET;
    if (le32(d) != ESP_APP_DESC_MAGIC) {
        fleet_reason(r, rl, "image: app descriptor magic is 0x%08x, expected 0xabcd5432",
                     (unsigned)le32(d));
        return FLEET_ERR_INTEGRITY;
    }
    out->secure_version = le32(d + 4);
    if (!fixed_str(out->version, d + 16, FLEET_VERSION_MAX)) {
        fleet_reason(r, rl, "image: app descriptor version is empty or unterminated");
        return FLEET_ERR_INTEGRITY;
    }
    return FLEET_OK;
}

static int parse_sim(const uint8_t *h, size_t len, fleet_image_info_t *out, char *r, size_t rl)
{
    char chip[16];
    if (len < FLEET_SIM_HEADER_LEN || memcmp(h, SIM_MAGIC, 8) != 0) {
        fleet_reason(r, rl, "image: no FLEETSIM header");
        return FLEET_ERR_INTEGRITY;
    }
    if (!fixed_str(chip, h + 8, sizeof chip) || strcmp(chip, "posix-sim") != 0) {
        fleet_reason(r, rl, "image: FLEETSIM header chip is not posix-sim");
        return FLEET_ERR_INTEGRITY;
    }
    if (!fixed_str(out->version, h + 24, FLEET_VERSION_MAX)) {
        fleet_reason(r, rl, "image: FLEETSIM header version is empty or unterminated");
        return FLEET_ERR_INTEGRITY;
    }
    out->chip_id = FLEET_CHIP_ID_POSIX_SIM;
    out->secure_version = le32(h + 56);
    out->min_rev = le16(h + 60);
    out->max_rev = le16(h + 62);
    return FLEET_OK;
}

int fleet_image_parse(const char *chip, const uint8_t *head, size_t len, fleet_image_info_t *out,
                      char *reason, size_t reason_len)
{
    memset(out, 0, sizeof *out);
    uint16_t id = fleet_chip_id_for(chip);
    if (id == FLEET_CHIP_ID_POSIX_SIM) return parse_sim(head, len, out, reason, reason_len);
    if (id == 0xFFFF) {
        fleet_reason(reason, reason_len, "image: unknown chip %s", chip ? chip : "(null)");
        return FLEET_ERR_INVALID;
    }
    return parse_esp(id, head, len, out, reason, reason_len);
}

size_t fleet_image_sim_header(uint8_t out[FLEET_SIM_HEADER_LEN], const char *version,
                              uint32_t secure_version, uint16_t min_rev, uint16_t max_rev)
{
    memset(out, 0, FLEET_SIM_HEADER_LEN);
    memcpy(out, SIM_MAGIC, 8);
    memcpy(out + 8, "posix-sim", 9);
    size_t n = strlen(version);
    memcpy(out + 24, version, n < FLEET_VERSION_MAX - 1 ? n : FLEET_VERSION_MAX - 1);
    put32(out + 56, secure_version);
    put16(out + 60, min_rev);
    put16(out + 62, max_rev);
    return FLEET_SIM_HEADER_LEN;
}
