/*
 * usbip_proto.h - USB/IP wire format: constants, decoded PDUs, pack/unpack.
 *
 * Pure functions over byte buffers (big-endian fields; the setup packet is
 * raw). Unpack functions validate every field the server depends on and
 * return a usbip_proto_err_t naming the first problem found, so the session
 * can log exactly what was wrong. See shared docs usbip-protocol.md.
 */
#ifndef USBIP_USBIP_PROTO_H
#define USBIP_USBIP_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define USBIP_VERSION 0x0111u
#define USBIP_OP_HDR_LEN 8
#define USBIP_OP_IMPORT_REQ_LEN 40
#define USBIP_DEV_RECORD_LEN 312
#define USBIP_INTF_RECORD_LEN 4
#define USBIP_URB_HDR_LEN 48
#define USBIP_ISO_DESC_LEN 16
#define USBIP_BUSID_LEN 32
#define USBIP_PATH_LEN 256

enum {
    USBIP_OP_REQ_DEVLIST = 0x8005,
    USBIP_OP_REP_DEVLIST = 0x0005,
    USBIP_OP_REQ_IMPORT = 0x8003,
    USBIP_OP_REP_IMPORT = 0x0003,
};

/* op_common.status (tools/usb/usbip/libsrc/usbip_common.h) */
enum {
    USBIP_ST_OK = 0,
    USBIP_ST_NA = 1,
    USBIP_ST_DEV_BUSY = 2,
    USBIP_ST_DEV_ERR = 3,
    USBIP_ST_NODEV = 4,
    USBIP_ST_ERROR = 5,
};

enum {
    USBIP_CMD_SUBMIT = 1,
    USBIP_CMD_UNLINK = 2,
    USBIP_RET_SUBMIT = 3,
    USBIP_RET_UNLINK = 4,
};

enum { USBIP_DIR_OUT = 0, USBIP_DIR_IN = 1 };

/* Linux URB transfer_flags */
#define USBIP_URB_SHORT_NOT_OK 0x0001u
#define USBIP_URB_ISO_ASAP 0x0002u
#define USBIP_URB_NO_TRANSFER_DMA_MAP 0x0004u
#define USBIP_URB_ZERO_PACKET 0x0040u
#define USBIP_URB_NO_INTERRUPT 0x0080u
#define USBIP_URB_FREE_BUFFER 0x0100u
#define USBIP_URB_DIR_IN 0x0200u

/* Negative errno values as Linux uses them on the wire (fixed numbers: the
 * core must not depend on the build host's errno.h). */
enum {
    USBIP_ENOENT = -2,
    USBIP_ENOMEM = -12,
    USBIP_EBUSY = -16,
    USBIP_EXDEV = -18,
    USBIP_ENODEV = -19,
    USBIP_EINVAL = -22,
    USBIP_ENOSPC = -28,
    USBIP_EPIPE = -32,
    USBIP_ETIME = -62,
    USBIP_EPROTO = -71,
    USBIP_EOVERFLOW = -75,
    USBIP_EILSEQ = -84,
    USBIP_ECONNRESET = -104,
    USBIP_ESHUTDOWN = -108,
    USBIP_ETIMEDOUT = -110,
    USBIP_EREMOTEIO = -121,
};

/* Limits the server enforces on requests. */
#define USBIP_MAX_TRANSFER_LEN (16 * 1024 * 1024) /* sanity bound before the budget check */
#define USBIP_MAX_ISO_PACKETS_WIRE 1024

typedef enum {
    USBIP_PROTO_OK = 0,
    USBIP_PROTO_SHORT,          /* fewer bytes than the PDU needs */
    USBIP_PROTO_BAD_VERSION,
    USBIP_PROTO_BAD_CODE,
    USBIP_PROTO_BAD_STATUS,     /* requests carry status 0 */
    USBIP_PROTO_BAD_COMMAND,
    USBIP_PROTO_BAD_DIRECTION,
    USBIP_PROTO_BAD_EP,
    USBIP_PROTO_BAD_LENGTH,     /* negative or oversize transfer_buffer_length */
    USBIP_PROTO_BAD_PACKETS,    /* number_of_packets out of range */
    USBIP_PROTO_BAD_BUSID,      /* not NUL-terminated */
    USBIP_PROTO_BAD_ISO_DESC,
    USBIP_PROTO_BAD_FIELD,      /* a field that must be zero is not */
} usbip_proto_err_t;

const char *usbip_proto_strerror(usbip_proto_err_t err);

typedef struct {
    uint16_t version;
    uint16_t code;
    uint32_t status;
} usbip_op_hdr_t;

/* Basic header + the command-specific part of a 48-byte URB PDU. */
typedef struct {
    uint32_t command;
    uint32_t seqnum;
    uint32_t devid;
    uint32_t direction;
    uint32_t ep;
    union {
        struct {
            uint32_t transfer_flags;
            int32_t transfer_buffer_length;
            int32_t start_frame;
            int32_t number_of_packets; /* normalised: -1 and 0 both mean "not ISO" -> 0 */
            int32_t interval;
            uint8_t setup[8];
            bool iso;                  /* number_of_packets > 0 on the wire */
            int32_t raw_number_of_packets;
        } submit;
        struct {
            uint32_t unlink_seqnum;
        } unlink;
        struct {
            int32_t status;
            int32_t actual_length;
            int32_t start_frame;
            int32_t number_of_packets;
            int32_t error_count;
        } ret_submit;
        struct {
            int32_t status;
        } ret_unlink;
    } u;
} usbip_urb_hdr_t;

typedef struct {
    uint32_t offset;
    uint32_t length;
    uint32_t actual_length;
    int32_t status;
} usbip_iso_desc_t;

/* Device record (struct usbip_usb_device) as the server describes a device. */
typedef struct {
    char path[USBIP_PATH_LEN];
    char busid[USBIP_BUSID_LEN];
    uint32_t busnum, devnum, speed;
    uint16_t idVendor, idProduct, bcdDevice;
    uint8_t bDeviceClass, bDeviceSubClass, bDeviceProtocol;
    uint8_t bConfigurationValue, bNumConfigurations, bNumInterfaces;
} usbip_dev_record_t;

/* Management phase. */
void usbip_pack_op_hdr(uint8_t out[USBIP_OP_HDR_LEN], uint16_t code, uint32_t status);
usbip_proto_err_t usbip_unpack_op_hdr(const uint8_t *buf, size_t len, usbip_op_hdr_t *out);
/* Validates a request header: version 0x0111 (or 0), a request code, status 0. */
usbip_proto_err_t usbip_check_op_request(const usbip_op_hdr_t *hdr);
/* busid field of OP_REQ_IMPORT (32 bytes after the op header). */
usbip_proto_err_t usbip_unpack_import_busid(const uint8_t *buf, size_t len, char busid[USBIP_BUSID_LEN]);
void usbip_pack_dev_record(uint8_t out[USBIP_DEV_RECORD_LEN], const usbip_dev_record_t *rec);
usbip_proto_err_t usbip_unpack_dev_record(const uint8_t *buf, size_t len, usbip_dev_record_t *out);

/* URB phase. Unpack validates the generic header (command 1 or 2,
 * direction 0/1, ep 0..15, lengths, packet counts); it does not know the
 * device (devid, endpoint existence are the server's checks). */
usbip_proto_err_t usbip_unpack_urb_hdr(const uint8_t *buf, size_t len, usbip_urb_hdr_t *out);
void usbip_pack_urb_hdr(uint8_t out[USBIP_URB_HDR_LEN], const usbip_urb_hdr_t *hdr);
void usbip_pack_ret_submit(uint8_t out[USBIP_URB_HDR_LEN], uint32_t seqnum, int32_t status,
                           int32_t actual_length, int32_t start_frame, int32_t number_of_packets,
                           int32_t error_count);
void usbip_pack_ret_unlink(uint8_t out[USBIP_URB_HDR_LEN], uint32_t seqnum, int32_t status);
void usbip_pack_iso_desc(uint8_t out[USBIP_ISO_DESC_LEN], const usbip_iso_desc_t *d);
/* Validates one descriptor against the URB buffer length. */
usbip_proto_err_t usbip_unpack_iso_desc(const uint8_t *buf, size_t len, int32_t buffer_length,
                                        usbip_iso_desc_t *out);

/* strnlen is POSIX, not C11. */
static inline size_t usbip_strnlen(const char *s, size_t max)
{
    size_t n = 0;
    while (n < max && s[n])
        n++;
    return n;
}

/* Big-endian helpers shared with the server. */
static inline void usbip_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline void usbip_put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v;
}
static inline uint32_t usbip_get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint16_t usbip_get_be16(const uint8_t *p)
{
    return (uint16_t)(((unsigned)p[0] << 8) | p[1]);
}

#ifdef __cplusplus
}
#endif
#endif /* USBIP_USBIP_PROTO_H */
