/*
 * vdev.h - the device side of the simulated USB bus (posix port only).
 *
 * A virtual device is what sits at the far end of a cable plugged into the
 * simulated dongle: it owns its descriptors and answers the bus at packet
 * level, the way real silicon does. The virtual host controller (vhc) drives
 * it: it splits a host transfer into max-packet-size packets, delivers OUT
 * packets, polls for IN packets, honours NAK / STALL, and decides when a
 * transfer ends (short packet, length reached, ZLP). Packet level is the
 * point: split-transfer and ZLP rules are only testable if the device sees
 * exactly the packets a real bus would carry.
 *
 * Threading: every vdev_ops call is made from the single thread that runs the
 * vhc's event loop, never concurrently for one device. Devices must not
 * block. A device that wants to be polled again later (data became ready,
 * processing delay elapsed) asks the host through vdev_host_t.
 *
 * Ownership: a device is created by its model's constructor (vdev_*_create)
 * and destroyed through ops->destroy, called by the vhc after unplug once no
 * transfer references it any more.
 */
#ifndef VDEV_VDEV_H
#define VDEV_VDEV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Linux enum usb_device_speed values, as USB/IP carries them. */
typedef enum {
    VDEV_SPEED_LOW = 1,
    VDEV_SPEED_FULL = 2,
    VDEV_SPEED_HIGH = 3,
} vdev_speed_t;

/* Handshake a device answers a packet with. Non-negative return values of
 * the packet calls are byte counts; these are the negative answers. */
enum {
    VDEV_NAK = -1,   /* not ready: the host retries later (after vdev_host.wake or a frame) */
    VDEV_STALL = -2, /* endpoint halted / request not supported */
};

/* Raw 8-byte SETUP packet, fields in host order after decoding. */
typedef struct {
    uint8_t bmRequestType;
    uint8_t bRequest;
    uint16_t wValue;
    uint16_t wIndex;
    uint16_t wLength;
} vdev_setup_t;

typedef struct vdev vdev_t;

/* Services the host offers a device (implemented by the vhc). */
typedef struct {
    /* Ask to be polled again on endpoint `ep_addr` (with direction bit),
     * after at least `delay_ns` nanoseconds (0 = as soon as possible). Used
     * when a NAKed IN endpoint has data, or a delayed command finished. */
    void (*wake)(void *host_ctx, vdev_t *dev, uint8_t ep_addr, uint64_t delay_ns);
    /* Monotonic clock of the simulation, nanoseconds. */
    uint64_t (*now_ns)(void *host_ctx);
    void *host_ctx;
} vdev_host_t;

typedef struct {
    /* Control transfer on EP0, whole-transfer granularity (the vhc handles
     * SETUP/DATA/STATUS staging and the standard requests it owns:
     * SET_ADDRESS, GET_DESCRIPTOR for device / configuration / string
     * descriptors from the tables below, SET_CONFIGURATION, GET_CONFIGURATION,
     * SET_INTERFACE, GET_INTERFACE, CLEAR_FEATURE / SET_FEATURE(ENDPOINT_HALT),
     * GET_STATUS). Everything else (class and vendor requests, HID
     * GET_REPORT, MSC Get Max LUN / reset, CDC line coding, ...) comes here.
     *
     * For IN requests the device writes at most setup->wLength bytes into
     * `data` and returns the count; for OUT requests `data` holds the
     * `setup->wLength` bytes of the data stage and the device returns 0.
     * Return VDEV_STALL to reject, VDEV_NAK to be asked again later. */
    int (*control)(vdev_t *dev, const vdev_setup_t *setup, uint8_t *data);

    /* One OUT (or PING'd) data packet of `len` <= MPS bytes on endpoint
     * `ep_addr` (bit 7 clear). len == 0 is a zero-length packet.
     * Returns 0 (ACK), VDEV_NAK (not accepted, host resends the same packet
     * later) or VDEV_STALL. */
    int (*out_packet)(vdev_t *dev, uint8_t ep_addr, const uint8_t *data, size_t len);

    /* Host asks for one IN packet on `ep_addr` (bit 7 set). The device writes
     * up to `mps` bytes to `buf` and returns the count (< mps = short packet,
     * which ends the host's transfer; 0 = ZLP), or VDEV_NAK / VDEV_STALL. */
    int (*in_packet)(vdev_t *dev, uint8_t ep_addr, uint8_t *buf, size_t mps);

    /* Bus reset, SET_CONFIGURATION or SET_INTERFACE changed endpoint state:
     * the device drops partial state on `ep_addr` (0xff = all endpoints) and
     * resets its data toggles. Optional (may be NULL). */
    void (*reset_endpoint)(vdev_t *dev, uint8_t ep_addr);

    /* Alternate setting selected for an interface (after the vhc validated
     * it against the configuration descriptor). Optional. */
    void (*set_interface)(vdev_t *dev, uint8_t intf, uint8_t alt);

    /* Text command from the control channel addressed to this device, e.g.
     * "type hello" for the keyboard. Writes a one-line reply. Optional. */
    int (*command)(vdev_t *dev, const char *cmd, char *reply, size_t reply_len);

    void (*destroy)(vdev_t *dev);
} vdev_ops_t;

/* A device as the vhc sees it. Models embed this as their first member and
 * fill every field in their constructor. Descriptor bytes are exactly what
 * the device answers on the bus (little-endian, USB 2.0 chapter 9 layout). */
struct vdev {
    const vdev_ops_t *ops;
    vdev_speed_t speed;
    const uint8_t *device_desc;      /* 18 bytes */
    const uint8_t *config_desc;      /* wTotalLength bytes, one configuration */
    /* String descriptors by index (index 0 = language ids); NULL entries
     * and indices >= num_strings STALL. Stored as ready-made descriptors. */
    const uint8_t *const *strings;
    uint8_t num_strings;
    bool is_hub;                     /* hub models: ports live in the vhc topology */
    uint8_t hub_ports;               /* number of downstream ports if is_hub */
    const vdev_host_t *host;         /* set by the vhc when plugged */
    char model[16];                  /* "msc", "hid-keyboard", "cdc-acm", "probe", "hub" */
};

/* Device specification parsed from the command line / control channel:
 * "msc:size=64M,speed=high,file=/tmp/d.img,serial=ABC", "hid-keyboard",
 * "cdc-acm", "probe:delay_ms=2", "hub:ports=4". Keys a model does not know
 * are an error. */
typedef struct {
    char model[16];
    /* key=value options, already split; values are NUL-terminated */
    struct { char key[24]; char value[232]; } opt[12];
    int num_opts;
} vdev_spec_t;

/* Parse "model[:k=v[,k=v...]]". Returns 0, or -1 with a message in `err`. */
int vdev_spec_parse(const char *text, vdev_spec_t *spec, char *err, size_t err_len);

/* Create a device from a spec. Returns NULL with a message in `err`
 * (unknown model, unknown option, bad value). */
vdev_t *vdev_create(const vdev_spec_t *spec, char *err, size_t err_len);

/* Model constructors (vdev_create dispatches on spec->model). */
vdev_t *vdev_msc_create(const vdev_spec_t *spec, char *err, size_t err_len);
vdev_t *vdev_hid_keyboard_create(const vdev_spec_t *spec, char *err, size_t err_len);
vdev_t *vdev_cdc_acm_create(const vdev_spec_t *spec, char *err, size_t err_len);
vdev_t *vdev_probe_create(const vdev_spec_t *spec, char *err, size_t err_len);
vdev_t *vdev_hub_create(const vdev_spec_t *spec, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif
#endif /* VDEV_VDEV_H */
