/*
 * text.h - hex, base64 and semantic-version helpers used by the manifest
 * and config parsers. Pure functions, no allocation.
 */
#ifndef FLEET_AGENT_TEXT_H
#define FLEET_AGENT_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Decode exactly 2*n hex digits (either case) into n bytes. Returns false on
 * a wrong length or a non-hex character. */
bool fleet_hex_decode(const char *hex, uint8_t *out, size_t n);
/* Lowercase hex of n bytes into out (2n+1 bytes, NUL-terminated). */
void fleet_hex_encode(const uint8_t *in, size_t n, char *out);

/* Standard alphabet with '=' padding (RFC 4648 section 4); no whitespace,
 * no URL-safe alphabet, padding required. Returns the decoded length, or -1
 * if the text is malformed or does not fit in cap bytes. */
int fleet_base64_decode(const char *text, uint8_t *out, size_t cap);
/* Encode n bytes; out needs 4*((n+2)/3)+1 bytes. Returns the text length. */
size_t fleet_base64_encode(const uint8_t *in, size_t n, char *out);

/* Semantic Versioning 2.0.0: MAJOR.MINOR.PATCH[-prerelease][+build], numeric
 * parts without leading zeros. */
bool fleet_semver_valid(const char *v);
/* <0, 0, >0 like strcmp, by SemVer precedence (build metadata ignored,
 * a prerelease sorts before its release). Both must be valid. */
int fleet_semver_cmp(const char *a, const char *b);

#endif /* FLEET_AGENT_TEXT_H */
