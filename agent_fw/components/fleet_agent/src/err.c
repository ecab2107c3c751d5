/* err.c - names of result codes and image states. */
#include "fleet_agent/err.h"
#include "fleet_agent/port/ota_store.h"

const char *fleet_err_name(int err)
{
    switch (err) {
    case FLEET_OK: return "ok";
    case FLEET_ERR_INVALID: return "invalid";
    case FLEET_ERR_REFUSED: return "refused";
    case FLEET_ERR_STATE: return "state";
    case FLEET_ERR_IO: return "io";
    case FLEET_ERR_NET: return "net";
    case FLEET_ERR_NO_MEM: return "no_mem";
    case FLEET_ERR_NOT_FOUND: return "not_found";
    case FLEET_ERR_ABORTED: return "aborted";
    case FLEET_ERR_INTEGRITY: return "integrity";
    default: return "unknown";
    }
}

const char *fleet_img_state_name(fleet_img_state_t s)
{
    switch (s) {
    case FLEET_IMG_UNDEFINED: return "undefined";
    case FLEET_IMG_NEW: return "new";
    case FLEET_IMG_PENDING_VERIFY: return "pending_verify";
    case FLEET_IMG_VALID: return "valid";
    case FLEET_IMG_INVALID: return "invalid";
    case FLEET_IMG_ABORTED: return "aborted";
    case FLEET_IMG_EMPTY: return "empty";
    }
    return "undefined";
}
