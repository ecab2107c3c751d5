/*
 * test_host.h - a tiny USB host for the device-model tests.
 *
 * It drives a vdev_t the way the vhc does: control requests at transfer
 * level, bulk/interrupt transfers split into max-packet-size packets, a
 * transfer ends on a short packet or when the length is reached, NAK and
 * STALL are reported to the caller. The clock is fake and every wake the
 * device asks for is recorded, so timing rules are tested deterministically.
 */
#ifndef TEST_HOST_H
#define TEST_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vdev/vdev.h"

typedef struct {
    vdev_host_t host;
    uint64_t now_ns;
    int wakes;
    uint8_t last_wake_ep;
    uint64_t last_wake_delay_ns;
} th_host_t;

/* Parse + create; aborts the test program on failure (a precondition). */
vdev_t *th_create(const char *spec_text);
/* Parse + create expecting failure; returns the error text (static buffer). */
const char *th_create_error(const char *spec_text);
void th_attach(th_host_t *h, vdev_t *dev);
void th_destroy(vdev_t *dev);

int th_control(vdev_t *dev, uint8_t bm_request_type, uint8_t b_request, uint16_t w_value,
               uint16_t w_index, uint16_t w_length, uint8_t *data);

enum { TH_OK = 0, TH_OVERFLOW = -3 }; /* besides VDEV_NAK / VDEV_STALL */

typedef struct {
    int status;     /* TH_OK, VDEV_NAK (stopped on a NAK), VDEV_STALL, TH_OVERFLOW */
    size_t actual;  /* bytes moved before the transfer ended */
    int packets;
} th_xfer_t;

/* OUT transfer; `zlp` appends a zero-length packet when len is a multiple of
 * mps (URB_ZERO_PACKET); len == 0 always sends one ZLP. */
th_xfer_t th_out(vdev_t *dev, uint8_t ep, uint16_t mps, const uint8_t *data, size_t len, bool zlp);
/* IN transfer of up to len bytes. */
th_xfer_t th_in(vdev_t *dev, uint8_t ep, uint16_t mps, uint8_t *buf, size_t len);
/* CLEAR_FEATURE(ENDPOINT_HALT) as the vhc does it: through reset_endpoint. */
void th_clear_halt(vdev_t *dev, uint8_t ep);

/* Configuration descriptor walk. */
typedef struct {
    uint8_t address, attributes, interval;
    uint16_t mps;
} th_ep_t;

typedef struct {
    int num_interfaces;     /* distinct interface numbers */
    uint8_t intf_class[4][3];
    int num_endpoints;
    th_ep_t ep[8];
    int num_iads;
    int class_descs;        /* class-specific descriptors seen */
} th_config_t;

/* Returns NULL if the configuration is consistent (wTotalLength = sum of
 * bLengths, bNumInterfaces, bNumEndpoints per interface, endpoint MPS legal
 * for the speed), else a description of the first inconsistency. */
const char *th_check_config(const uint8_t *cfg, vdev_speed_t speed, uint8_t expect_type,
                            th_config_t *out);
/* ASCII of string descriptor `index` (via GET_DESCRIPTOR), "" if it stalls. */
const char *th_string(vdev_t *dev, uint8_t index, char *buf, size_t len);

/* One Bulk-Only Transport command the way Linux usb-storage runs it: CBW,
 * data phase of `host_len` bytes in the CBW's direction (a STALL there is
 * cleared and the transfer ends), CSW (cleared and retried once on STALL). */
typedef struct {
    bool cbw_ok;             /* CBW packet accepted */
    th_xfer_t data;          /* data phase result */
    bool data_stalled;
    bool csw_stalled;        /* CSW read stalled even after one clear */
    bool csw_ok;             /* 13 bytes, signature and tag right */
    uint32_t residue;
    uint8_t status;
} th_bot_t;

th_bot_t th_bot(vdev_t *dev, uint16_t mps, const uint8_t *cdb, uint8_t cdb_len, bool dir_in,
                uint32_t host_len, uint8_t *data);
/* Raw CBW bytes, for tests that break them on purpose. */
void th_cbw(uint8_t cbw[31], uint32_t tag, uint32_t host_len, bool dir_in, const uint8_t *cdb,
            uint8_t cdb_len);

/* Deterministic test data. */
void th_fill(uint8_t *buf, size_t len, uint32_t seed);
uint32_t th_crc32(const uint8_t *buf, size_t len, uint32_t crc);

#endif /* TEST_HOST_H */
