/* boot.c - ESP-IDF bootloader slot choice with rollback, as a pure function. */
#include "fleet_agent/boot.h"

#include "fleet_agent/err.h"

static bool confirmed(fleet_img_state_t s)
{
    return s == FLEET_IMG_UNDEFINED || s == FLEET_IMG_VALID;
}

int fleet_boot_decide(fleet_otadata_t *od, fleet_boot_t *out)
{
    out->rolled_back = false;
    out->abandoned = FLEET_IMG_UNDEFINED;
    if (od->boot_slot < 0 || od->boot_slot >= FLEET_SLOT_COUNT) od->boot_slot = 0;
    int s = od->boot_slot;
    fleet_slot_info_t *cur = &od->slot[s];
    if (cur->state == FLEET_IMG_NEW) {
        cur->state = FLEET_IMG_PENDING_VERIFY; /* the trial boot */
        out->slot = s;
        return FLEET_OK;
    }
    if (cur->state == FLEET_IMG_PENDING_VERIFY) cur->state = FLEET_IMG_ABORTED;
    if (confirmed(cur->state)) {
        out->slot = s;
        return FLEET_OK;
    }
    /* The boot slot is unusable: fall back to the other one if it can run.
     * A NEW or PENDING_VERIFY fallback would mean an unconfirmed image becomes
     * the safety net, so only confirmed/factory images qualify. */
    int o = 1 - s;
    out->rolled_back = true;
    out->abandoned = cur->state;
    if (!confirmed(od->slot[o].state)) return FLEET_ERR_NOT_FOUND;
    od->boot_slot = o;
    out->slot = o;
    return FLEET_OK;
}
