/*
 * err.h - result codes shared by the agent modules (prefix FLEET_).
 *
 * Functions that can refuse input also fill a caller-supplied reason buffer
 * with a human sentence; the code says what kind of failure it was, the
 * reason says why, and the agent copies the reason into cmd-result.error.
 */
#ifndef FLEET_AGENT_ERR_H
#define FLEET_AGENT_ERR_H

typedef enum {
    FLEET_OK = 0,
    FLEET_ERR_INVALID = -1,   /* malformed input: wrong type, range, syntax */
    FLEET_ERR_REFUSED = -2,   /* well-formed but not allowed: bad signature, older version */
    FLEET_ERR_STATE = -3,     /* not allowed in the current state (e.g. OTA pending verify) */
    FLEET_ERR_IO = -4,        /* storage failed */
    FLEET_ERR_NET = -5,       /* transport failed or the server answered an error */
    FLEET_ERR_NO_MEM = -6,
    FLEET_ERR_NOT_FOUND = -7,
    FLEET_ERR_ABORTED = -8,   /* cancelled by the owner */
    FLEET_ERR_INTEGRITY = -9, /* downloaded data does not match what was signed */
} fleet_err_t;

/* Stable lowercase name of a code ("refused"), for logs and cmd-result detail. */
const char *fleet_err_name(int err);

/* Size every reason buffer with this; longer reasons are truncated, never overflowed. */
#define FLEET_REASON_MAX 160

#endif /* FLEET_AGENT_ERR_H */
