/*
 * jfield.h - typed field access on cJSON objects with field-first reasons
 * ("mqtt.url: must be a string of 1 to 127 characters"). Private.
 *
 * Each getter returns 1 (present and valid, *out set), 0 (absent and not
 * required, *out untouched) or -1 (reason filled).
 */
#ifndef FLEET_JFIELD_H
#define FLEET_JFIELD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cJSON.h"

/* Integers up to 2^53 (exact in a JSON double); a fraction is refused. */
int jf_int(const cJSON *obj, const char *name, const char *path, int64_t min, int64_t max,
           bool required, int64_t *out, char *reason, size_t rl);
/* Strings of min..cap-1 bytes, no NUL inside. */
int jf_str(const cJSON *obj, const char *name, const char *path, size_t min, bool required,
           char *out, size_t cap, char *reason, size_t rl);
int jf_bool(const cJSON *obj, const char *name, const char *path, bool required, bool *out,
            char *reason, size_t rl);
/* Parse len bytes (not necessarily NUL-terminated) into an object. */
cJSON *jf_parse_object(const char *json, size_t len, char *reason, size_t rl);

#endif
