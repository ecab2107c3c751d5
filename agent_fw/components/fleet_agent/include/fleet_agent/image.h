/*
 * image.h - what a firmware file must look like for the chip it targets.
 *
 * ESP chips: esp_image_header_t (magic 0xE9, chip_id at 12, min/max chip
 * revision at 15/17, all little-endian) followed at file offset 0x20 by
 * esp_app_desc_t (magic 0xABCD5432, secure_version at +4, version[32] at
 * +16). posix-sim: our own 64-byte header so the same checks run in
 * simulation:
 *   0  magic "FLEETSIM" (8 bytes)
 *   8  chip "posix-sim", NUL-padded to 16 bytes
 *   24 version, NUL-padded to 32 bytes
 *   56 secure_version, u32 little-endian
 *   60 min_rev, max_rev: u16 little-endian each
 * Anything after the header is payload and is only covered by the SHA-256.
 */
#ifndef FLEET_AGENT_IMAGE_H
#define FLEET_AGENT_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "fleet_agent/port/ota_store.h"

#define FLEET_IMAGE_PROBE_LEN 0x130 /* covers both header layouts */
#define FLEET_SIM_HEADER_LEN 64

typedef struct {
    uint16_t chip_id;
    uint16_t min_rev, max_rev;
    uint32_t secure_version;
    char version[FLEET_VERSION_MAX];
} fleet_image_info_t;

/* Parse the first len bytes of an image for chip. FLEET_OK or
 * FLEET_ERR_INTEGRITY + reason. */
int fleet_image_parse(const char *chip, const uint8_t *head, size_t len, fleet_image_info_t *out,
                      char *reason, size_t reason_len);

/* Write a posix-sim header (64 bytes) - used by tests, demos and the
 * service-side tooling's C twin. Returns FLEET_SIM_HEADER_LEN. */
size_t fleet_image_sim_header(uint8_t out[FLEET_SIM_HEADER_LEN], const char *version,
                              uint32_t secure_version, uint16_t min_rev, uint16_t max_rev);

#endif /* FLEET_AGENT_IMAGE_H */
