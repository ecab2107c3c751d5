/*
 * vhc.h - virtual USB host controller of the posix port.
 *
 * Implements the core's USB host port (usbip/port/usb_host_port.h) on top of
 * virtual devices (vdev/vdev.h), enforcing the rules ESP-IDF's USB Host
 * Library and the DWC controller impose, so the USB/IP core is exercised
 * under the constraints of the real chip:
 *   - IN transfers a multiple of MPS, at most max_transfer_bytes per transfer
 *     (an oversize transfer fails loudly with UHP_ERR_TOO_BIG and is counted,
 *     never silently truncated);
 *   - cancel only by halt -> flush -> clear of a whole endpoint, EP0 never;
 *   - two transfers loaded per pipe, the rest queued in order;
 *   - host channels: 8 (S3) or 16 (P4); EP0 of every device costs one,
 *     every claimed endpoint one, a hub two; out of channels -> enumeration
 *     or claim refused with a clear log line;
 *   - hubs are consumed by the host and never reported to the core;
 *   - S3 is Full-Speed only: a High-Speed device is refused at plug time
 *     (the real device would fall back, our models do not carry two speeds).
 * Optional bus-timing model: Full-Speed 19 x 64 B bulk packets per 1 ms
 * frame, High-Speed 13 x 512 B per 125 us micro-frame, so benchmarks see a
 * realistic bus.
 *
 * Single-threaded: every call, including vhc_process, from one thread.
 */
#ifndef VHC_VHC_H
#define VHC_VHC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "usbip/port/usb_host_port.h"
#include "vdev/vdev.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vhc vhc_t;

typedef enum { VHC_CHIP_ESP32S3, VHC_CHIP_ESP32P4 } vhc_chip_t;

typedef struct {
    vhc_chip_t chip;
    int num_channels;          /* 8 on S3, 16 on P4 */
    bool high_speed;           /* root port can run High-Speed (P4) */
    int chip_revision;         /* P4: >= 300 enables the 1023 x MPS transfer limit on HS */
    bool bus_timing;           /* pace packets like a real bus */
    uint64_t enum_delay_ns;    /* plug -> dev_added (debounce + reset + enumeration) */
    int root_ports;            /* simulated root ports 1-1..1-N; 0 = 4 (a real chip has one;
                                  more let demos plug several devices without a hub) */
} vhc_config_t;

#define VHC_CONFIG_ESP32S3() \
    ((vhc_config_t){.chip = VHC_CHIP_ESP32S3, .num_channels = 8, .high_speed = false, \
                    .chip_revision = 2, .bus_timing = false, .enum_delay_ns = 0})
#define VHC_CONFIG_ESP32P4() \
    ((vhc_config_t){.chip = VHC_CHIP_ESP32P4, .num_channels = 16, .high_speed = true, \
                    .chip_revision = 301, .bus_timing = false, .enum_delay_ns = 0})

typedef struct {
    uint64_t transfers;         /* completed transfers */
    uint64_t packets;           /* bus packets moved */
    uint64_t rule_violations;   /* submits refused for breaking an ESP-IDF rule */
    uint64_t channel_refusals;  /* enumerations / claims refused for lack of channels */
    int channels_in_use;
    uint64_t toggle_mismatches; /* packets dropped by a receiver because DATA0/1 disagreed */
    uint64_t naks;              /* NAK handshakes seen */
    uint64_t stalls;            /* STALL handshakes seen (EP0 included) */
    uint64_t enum_refusals;     /* devices not enumerated (bad descriptors, channels, ...) */
    uint64_t frames;            /* bus (micro)frames that carried a packet (without bus timing:
                                   vhc_process calls that moved one) */
    uint64_t max_packets_per_frame; /* bus timing only: most bulk/control packets in one frame */
} vhc_stats_t;

int vhc_create(const vhc_config_t *cfg, vhc_t **out);
void vhc_destroy(vhc_t *vhc);

/* The USB host port implemented by this controller; pass vhc as port_ctx. */
const uhp_ops_t *vhc_uhp_ops(void);

/* Plug `dev` at `port_path` ("1-1" = root port 1, "1-2.3" = port 3 of the
 * hub at 1-2). Takes ownership of dev (also on failure). The device is
 * reported to the core from a later vhc_process() after cfg.enum_delay_ns. */
int vhc_plug(vhc_t *vhc, const char *port_path, vdev_t *dev, char *err, size_t err_len);
/* Unplug the device (and, for a hub, everything below it). In-flight
 * transfers complete with UHP_STATUS_NO_DEVICE, then dev_gone is reported. */
int vhc_unplug(vhc_t *vhc, const char *port_path, char *err, size_t err_len);
/* First free root port path ("1-1", "1-2", ...) for plugging without a path. */
int vhc_next_free_port(vhc_t *vhc, char *path, size_t len);
/* Forward a text command to the device at port_path (vdev_ops.command). */
int vhc_device_command(vhc_t *vhc, const char *port_path, const char *cmd, char *reply, size_t len);

/* Event integration: fd becomes readable when vhc_process has work due
 * (timerfd/eventfd); the loop calls vhc_process, which moves bus packets,
 * completes transfers and delivers the port upcalls. */
int vhc_fd(const vhc_t *vhc);
void vhc_process(vhc_t *vhc);

void vhc_get_stats(const vhc_t *vhc, vhc_stats_t *out);

/* Where log lines go (default: stderr, prefixed "vhc: "). Every refusal
 * (rule broken, channels exhausted, descriptor rejected) is one line. */
typedef void (*vhc_log_fn)(void *ctx, const char *line);
void vhc_set_log(vhc_t *vhc, vhc_log_fn fn, void *ctx);

#ifdef __cplusplus
}
#endif
#endif /* VHC_VHC_H */
