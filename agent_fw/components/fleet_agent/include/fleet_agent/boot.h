/*
 * boot.h - the slot choice ESP-IDF's bootloader makes with
 * CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE, as a pure function.
 *
 * On the chip the real bootloader does this before the app runs; the posix
 * port calls it on every (simulated) reset so the simulated dongle rolls
 * back under the same rules.
 *   boot slot NEW            -> PENDING_VERIFY, boot it (first trial boot)
 *   boot slot PENDING_VERIFY -> ABORTED (reset before confirmation), boot the other
 *   boot slot INVALID/ABORTED/EMPTY -> boot the other
 *   boot slot VALID/UNDEFINED -> boot it
 */
#ifndef FLEET_AGENT_BOOT_H
#define FLEET_AGENT_BOOT_H

#include <stdbool.h>

#include "fleet_agent/port/ota_store.h"

typedef struct {
    int slot;                     /* slot to start */
    bool rolled_back;             /* the boot slot was abandoned */
    fleet_img_state_t abandoned;  /* its state then (ABORTED/INVALID/EMPTY) */
} fleet_boot_t;

/* Updates od in place (state and boot_slot changes the bootloader would write;
 * the caller persists od if it changed). Returns FLEET_OK, or
 * FLEET_ERR_NOT_FOUND when neither slot can boot. */
int fleet_boot_decide(fleet_otadata_t *od, fleet_boot_t *out);

#endif /* FLEET_AGENT_BOOT_H */
