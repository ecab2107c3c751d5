/*
 * port/ota_store.h - two firmware slots and the record of which one boots.
 *
 * Mirrors ESP-IDF's app partitions ota_0/ota_1 plus the otadata partition:
 * otadata names the boot slot and keeps one image state per slot with the
 * same meaning as esp_ota_img_states_t. esp32: esp_ota_* / esp_partition_*;
 * posix: a directory with slot0.bin, slot1.bin and otadata.json.
 *
 * write_otadata must be atomic (a reset leaves the old or the new record).
 * Slot writes need not be: a torn slot is caught by the SHA-256 check and the
 * download journal only counts bytes the port has made durable (sync()).
 */
#ifndef FLEET_AGENT_PORT_OTA_STORE_H
#define FLEET_AGENT_PORT_OTA_STORE_H

#include <stddef.h>
#include <stdint.h>

#define FLEET_SLOT_COUNT 2
#define FLEET_VERSION_MAX 32 /* esp_app_desc_t.version[32], NUL included */

/* esp_ota_img_states_t, same order of meaning. */
typedef enum {
    FLEET_IMG_UNDEFINED = 0, /* flashed without OTA (factory); boots, no rollback */
    FLEET_IMG_NEW,           /* written by OTA, not booted yet */
    FLEET_IMG_PENDING_VERIFY,/* booted once, self-test not passed yet */
    FLEET_IMG_VALID,         /* confirmed */
    FLEET_IMG_INVALID,       /* self-test failed: never boot again */
    FLEET_IMG_ABORTED,       /* reset while pending verify: never boot again */
    FLEET_IMG_EMPTY,         /* nothing usable in the slot (not an ESP-IDF state:
                                ESP-IDF learns this by failing to load the image) */
} fleet_img_state_t;

typedef struct {
    fleet_img_state_t state;
    char version[FLEET_VERSION_MAX];
    uint32_t secure_version;
} fleet_slot_info_t;

typedef struct {
    uint32_t seq;      /* bumped on every write; diagnostics only */
    int boot_slot;     /* 0 or 1: the slot the (emulated) bootloader starts */
    fleet_slot_info_t slot[FLEET_SLOT_COUNT];
} fleet_otadata_t;

typedef struct {
    /* FLEET_OK or FLEET_ERR_IO. A store that never had otadata reports boot
     * slot 0 with its factory image (state UNDEFINED). */
    int (*read_otadata)(void *ctx, fleet_otadata_t *out);
    int (*write_otadata)(void *ctx, const fleet_otadata_t *od);
    /* The slot the running firmware was started from. */
    int (*running_slot)(void *ctx);
    /* Bytes a slot can hold. */
    uint64_t (*capacity)(void *ctx);
    /* Prepare slot for writing from offset: bytes before offset are kept,
     * everything from offset on is discarded (offset 0 = erase). At most one
     * slot is open for writing at a time. */
    int (*write_begin)(void *ctx, int slot, uint64_t offset);
    int (*write)(void *ctx, const uint8_t *data, size_t len);
    /* Make everything written so far durable (it survives a reset). */
    int (*sync)(void *ctx);
    /* sync() and close the slot. */
    int (*write_end)(void *ctx);
    /* Read len bytes at offset; FLEET_ERR_IO if the slot is shorter. */
    int (*read)(void *ctx, int slot, uint64_t offset, uint8_t *buf, size_t len);
} fleet_ota_store_ops_t;

const char *fleet_img_state_name(fleet_img_state_t s); /* "pending_verify", as in the state contract */

#endif /* FLEET_AGENT_PORT_OTA_STORE_H */
