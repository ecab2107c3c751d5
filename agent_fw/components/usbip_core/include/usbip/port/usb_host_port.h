/*
 * usb_host_port.h - the USB host contract the USB/IP core calls (prefix uhp_).
 *
 * It mirrors the ESP-IDF v5.5 USB Host Library closely enough that the esp32
 * port is a direct mapping (usb_host_transfer_alloc, usb_host_transfer_submit,
 * usb_host_interface_claim, usb_host_endpoint_halt/flush/clear, ...), and the
 * posix port (vhc) implements the same rules so the core is tested under the
 * constraints of the real chip. See ../../../../../docs and
 * shared esp-idf-facts.md section 2.
 *
 * Instances: every op takes the port context first; one process may run many
 * hosts (one per simulated dongle).
 *
 * Threading (one door, task context): the port never calls back from inside
 * an op. Transfer callbacks and device events are delivered from the port's
 * event processing, which the owner guarantees runs on the same task/thread
 * that calls into the USB/IP server (posix: vhc_process() from the epoll
 * loop; esp32: the client task posts to the server task's queue). The core
 * therefore needs no locks around port state.
 *
 * Return codes: 0 (UHP_OK) or a negative uhp_err_t. None of the ops block
 * for bus activity.
 */
#ifndef USBIP_PORT_USB_HOST_PORT_H
#define USBIP_PORT_USB_HOST_PORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    UHP_OK = 0,
    UHP_ERR_INVALID_ARG = -1,    /* violates a submit rule (see uhp_ops_t.submit) */
    UHP_ERR_INVALID_STATE = -2,  /* e.g. flush on an endpoint that is not halted */
    UHP_ERR_NO_MEM = -3,
    UHP_ERR_NOT_FOUND = -4,      /* endpoint not part of a claimed interface, unknown intf/alt */
    UHP_ERR_NOT_FINISHED = -5,   /* transfer already in flight / URBs still in flight */
    UHP_ERR_NOT_SUPPORTED = -6,  /* e.g. halting EP0 */
    UHP_ERR_NO_CHANNEL = -7,     /* host channels exhausted (8 on S3, 16 on P4) */
    UHP_ERR_GONE = -8,           /* device was removed */
    UHP_ERR_TOO_BIG = -9,        /* transfer larger than max_transfer_bytes (ESP-IDF does not
                                    check this and corrupts data; the posix port refuses loudly) */
} uhp_err_t;

/* Linux enum usb_device_speed values, as USB/IP carries them. */
typedef enum {
    UHP_SPEED_LOW = 1,
    UHP_SPEED_FULL = 2,
    UHP_SPEED_HIGH = 3,
} uhp_speed_t;

/* usb_transfer_status_t */
typedef enum {
    UHP_STATUS_COMPLETED = 0, /* may be short: actual_num_bytes < num_bytes */
    UHP_STATUS_ERROR,         /* transaction error (CRC, bit stuffing, no response) */
    UHP_STATUS_TIMED_OUT,
    UHP_STATUS_CANCELED,      /* flushed by ep_flush */
    UHP_STATUS_STALL,
    UHP_STATUS_OVERFLOW,      /* babble: device sent more than requested */
    UHP_STATUS_SKIPPED,       /* isochronous packet not transmitted */
    UHP_STATUS_NO_DEVICE,
} uhp_status_t;

typedef struct uhp_dev *uhp_dev_handle_t; /* opaque, port-owned */

/* usb_transfer_t: allocated by the port (DMA-capable buffer on the chip),
 * reused by the core for many USB transfers. */
typedef struct uhp_xfer uhp_xfer_t;
typedef void (*uhp_xfer_cb_t)(uhp_xfer_t *xfer);

typedef struct {
    int num_bytes;        /* expected bytes of this packet */
    int actual_num_bytes; /* set by the port */
    uhp_status_t status;  /* set by the port */
} uhp_iso_packet_t;

#define UHP_XFER_FLAG_ZERO_PACK 0x01u /* bulk/interrupt OUT: append a ZLP when num_bytes % MPS == 0 */

struct uhp_xfer {
    /* Fixed at allocation; the core must not change them. */
    uint8_t *data;        /* control: 8-byte SETUP followed by the data stage */
    size_t capacity;      /* usable bytes at data (>= the size asked for) */
    int num_iso_packets;  /* capacity of iso[] */
    /* Set by the core before submit. */
    uhp_dev_handle_t dev;
    uint8_t ep_addr;      /* bEndpointAddress with direction bit; 0 for control */
    int num_bytes;        /* control: 8 + wLength; IN: multiple of MPS */
    uint32_t flags;       /* UHP_XFER_FLAG_* */
    int iso_count;        /* isochronous packets used (<= num_iso_packets) */
    uhp_xfer_cb_t callback;
    void *context;        /* the core's */
    /* Set by the port before the callback. Control: actual_num_bytes
     * INCLUDES the 8 setup bytes (as ESP-IDF reports it). */
    int actual_num_bytes;
    uhp_status_t status;
    uhp_iso_packet_t *iso; /* num_iso_packets entries, or NULL */
};

/* What the port reports for a device it has enumerated and opened. */
typedef struct {
    uhp_dev_handle_t handle;
    char port_path[24];      /* stable busid: "1-1", "1-2.3" (root port 1-N, hub ports .N) */
    uhp_speed_t speed;
    uint8_t dev_addr;        /* USB address: NOT stable across re-plug */
    uint8_t bMaxPacketSize0;
    uint8_t bConfigurationValue;
    /* Cached string descriptors (raw, bLength/bDescriptorType first) or NULL. */
    const uint8_t *str_manufacturer;
    const uint8_t *str_product;
    const uint8_t *str_serial;
} uhp_dev_info_t;

/* Upcalls, registered by the core at install. Called only from the port's
 * event processing (see the threading note at the top). */
typedef struct {
    /* A device finished enumeration and is open. `info` is valid only during
     * the call (copy what you keep). Hubs are consumed by the port and never
     * reported, as with ESP-IDF. */
    void (*dev_added)(void *core_ctx, const uhp_dev_info_t *info);
    /* The device is gone. Every transfer callback for it has already been
     * delivered (status NO_DEVICE for those in flight). The core releases
     * its interfaces and calls dev_close; the handle is invalid after that. */
    void (*dev_gone)(void *core_ctx, uhp_dev_handle_t dev);
} uhp_event_cbs_t;

typedef struct {
    /* Register the upcalls; the port reports already present devices from
     * its next event processing on. */
    int (*install)(void *port_ctx, const uhp_event_cbs_t *cbs, void *core_ctx);
    void (*uninstall)(void *port_ctx);

    /* usb_host_transfer_alloc / _free. Only at pool set-up: never on the data
     * path. Free only when not in flight. */
    int (*xfer_alloc)(void *port_ctx, size_t size, int num_iso_packets, uhp_xfer_t **out);
    void (*xfer_free)(void *port_ctx, uhp_xfer_t *xfer);

    /* Cached descriptors of an open device (valid until dev_close). */
    int (*get_device_desc)(void *port_ctx, uhp_dev_handle_t dev, const uint8_t **desc18);
    int (*get_config_desc)(void *port_ctx, uhp_dev_handle_t dev, const uint8_t **desc, size_t *len);

    /* Claim allocates a pipe (host channel) per endpoint of that alternate
     * setting; it does NOT send SET_INTERFACE. Release requires no transfer
     * in flight on its endpoints (UHP_ERR_NOT_FINISHED otherwise). */
    int (*interface_claim)(void *port_ctx, uhp_dev_handle_t dev, uint8_t intf, uint8_t alt);
    int (*interface_release)(void *port_ctx, uhp_dev_handle_t dev, uint8_t intf);

    /* Submit rules (ESP-IDF usbh transfer checks), violations return
     * UHP_ERR_INVALID_ARG: callback set; num_bytes <= capacity; bulk and
     * interrupt IN: num_bytes % MPS == 0; isochronous: sum of packets ==
     * num_bytes, IN packets multiples of MPS. num_bytes > max_transfer_bytes
     * returns UHP_ERR_TOO_BIG. The endpoint must belong to a claimed
     * interface (UHP_ERR_NOT_FOUND). Transfers on one endpoint complete in
     * submission order; any number may be queued, two are loaded in the
     * controller at a time. */
    int (*submit)(void *port_ctx, uhp_xfer_t *xfer);
    /* EP0. data[0..7] is the SETUP packet. OUT: num_bytes == 8 + wLength;
     * IN: num_bytes >= 8 + wLength. A control transfer cannot be cancelled:
     * it ends when the device answers or disappears. */
    int (*submit_control)(void *port_ctx, uhp_xfer_t *xfer);

    /* The only way to cancel: halt the endpoint, flush it (every queued and
     * in-flight transfer completes with UHP_STATUS_CANCELED, possibly after
     * moving part of its data), clear it to resume. Halt on EP0 returns
     * UHP_ERR_NOT_SUPPORTED; flush requires halted (UHP_ERR_INVALID_STATE).
     * ep_clear also resets the host side data toggle to DATA0. */
    int (*ep_halt)(void *port_ctx, uhp_dev_handle_t dev, uint8_t ep_addr);
    int (*ep_flush)(void *port_ctx, uhp_dev_handle_t dev, uint8_t ep_addr);
    int (*ep_clear)(void *port_ctx, uhp_dev_handle_t dev, uint8_t ep_addr);

    /* Largest num_bytes one transfer may carry on an endpoint with this
     * max packet size: MIN(65535, 127 * mps) on S3 and on P4 before rev 3,
     * MIN(524287, 1023 * mps) on P4 HS rev >= 3. */
    size_t (*max_transfer_bytes)(void *port_ctx, uhp_dev_handle_t dev, uint16_t mps);

    /* Recovery for a control transfer that never ends (the watchdog's last
     * resort): reset the port the device sits on. The device is reported
     * gone (and added again if it re-enumerates). Optional (NULL = none). */
    int (*port_reset)(void *port_ctx, uhp_dev_handle_t dev);

    /* Close an open device after dev_gone, or when the core stops. Requires
     * every interface released. */
    int (*dev_close)(void *port_ctx, uhp_dev_handle_t dev);
} uhp_ops_t;

#ifdef __cplusplus
}
#endif
#endif /* USBIP_PORT_USB_HOST_PORT_H */
