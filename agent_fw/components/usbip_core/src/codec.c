/* codec.c - USB/IP wire format (see usbip_proto.h). */
#include <string.h>

#include "usbip/usbip_proto.h"

const char *usbip_proto_strerror(usbip_proto_err_t err)
{
    switch (err) {
    case USBIP_PROTO_OK: return "ok";
    case USBIP_PROTO_SHORT: return "truncated PDU";
    case USBIP_PROTO_BAD_VERSION: return "unsupported protocol version";
    case USBIP_PROTO_BAD_CODE: return "unknown operation code";
    case USBIP_PROTO_BAD_STATUS: return "request status must be 0";
    case USBIP_PROTO_BAD_COMMAND: return "unknown URB command";
    case USBIP_PROTO_BAD_DIRECTION: return "direction must be 0 (out) or 1 (in)";
    case USBIP_PROTO_BAD_EP: return "endpoint number must be 0..15";
    case USBIP_PROTO_BAD_LENGTH: return "transfer_buffer_length out of range";
    case USBIP_PROTO_BAD_PACKETS: return "number_of_packets out of range";
    case USBIP_PROTO_BAD_BUSID: return "busid not NUL-terminated";
    case USBIP_PROTO_BAD_ISO_DESC: return "ISO packet descriptor outside the buffer";
    case USBIP_PROTO_BAD_FIELD: return "reserved field not zero";
    }
    return "unknown protocol error";
}

void usbip_pack_op_hdr(uint8_t out[USBIP_OP_HDR_LEN], uint16_t code, uint32_t status)
{
    usbip_put_be16(out, USBIP_VERSION);
    usbip_put_be16(out + 2, code);
    usbip_put_be32(out + 4, status);
}

usbip_proto_err_t usbip_unpack_op_hdr(const uint8_t *buf, size_t len, usbip_op_hdr_t *out)
{
    if (len < USBIP_OP_HDR_LEN)
        return USBIP_PROTO_SHORT;
    out->version = usbip_get_be16(buf);
    out->code = usbip_get_be16(buf + 2);
    out->status = usbip_get_be32(buf + 4);
    return USBIP_PROTO_OK;
}

usbip_proto_err_t usbip_check_op_request(const usbip_op_hdr_t *hdr)
{
    if (hdr->version != USBIP_VERSION && hdr->version != 0)
        return USBIP_PROTO_BAD_VERSION;
    if (hdr->code != USBIP_OP_REQ_DEVLIST && hdr->code != USBIP_OP_REQ_IMPORT)
        return USBIP_PROTO_BAD_CODE;
    if (hdr->status != 0)
        return USBIP_PROTO_BAD_STATUS;
    return USBIP_PROTO_OK;
}

usbip_proto_err_t usbip_unpack_import_busid(const uint8_t *buf, size_t len, char busid[USBIP_BUSID_LEN])
{
    if (len < USBIP_BUSID_LEN)
        return USBIP_PROTO_SHORT;
    if (memchr(buf, 0, USBIP_BUSID_LEN) == NULL)
        return USBIP_PROTO_BAD_BUSID;
    memcpy(busid, buf, USBIP_BUSID_LEN);
    return USBIP_PROTO_OK;
}

static void put_str(uint8_t *out, const char *s, size_t field)
{
    size_t n = usbip_strnlen(s, field - 1);
    memset(out, 0, field);
    memcpy(out, s, n);
}

void usbip_pack_dev_record(uint8_t out[USBIP_DEV_RECORD_LEN], const usbip_dev_record_t *rec)
{
    put_str(out, rec->path, USBIP_PATH_LEN);
    put_str(out + 0x100, rec->busid, USBIP_BUSID_LEN);
    usbip_put_be32(out + 0x120, rec->busnum);
    usbip_put_be32(out + 0x124, rec->devnum);
    usbip_put_be32(out + 0x128, rec->speed);
    usbip_put_be16(out + 0x12C, rec->idVendor);
    usbip_put_be16(out + 0x12E, rec->idProduct);
    usbip_put_be16(out + 0x130, rec->bcdDevice);
    out[0x132] = rec->bDeviceClass;
    out[0x133] = rec->bDeviceSubClass;
    out[0x134] = rec->bDeviceProtocol;
    out[0x135] = rec->bConfigurationValue;
    out[0x136] = rec->bNumConfigurations;
    out[0x137] = rec->bNumInterfaces;
}

usbip_proto_err_t usbip_unpack_dev_record(const uint8_t *buf, size_t len, usbip_dev_record_t *out)
{
    if (len < USBIP_DEV_RECORD_LEN)
        return USBIP_PROTO_SHORT;
    if (memchr(buf, 0, USBIP_PATH_LEN) == NULL || memchr(buf + 0x100, 0, USBIP_BUSID_LEN) == NULL)
        return USBIP_PROTO_BAD_BUSID;
    memcpy(out->path, buf, USBIP_PATH_LEN);
    memcpy(out->busid, buf + 0x100, USBIP_BUSID_LEN);
    out->busnum = usbip_get_be32(buf + 0x120);
    out->devnum = usbip_get_be32(buf + 0x124);
    out->speed = usbip_get_be32(buf + 0x128);
    out->idVendor = usbip_get_be16(buf + 0x12C);
    out->idProduct = usbip_get_be16(buf + 0x12E);
    out->bcdDevice = usbip_get_be16(buf + 0x130);
    out->bDeviceClass = buf[0x132];
    out->bDeviceSubClass = buf[0x133];
    out->bDeviceProtocol = buf[0x134];
    out->bConfigurationValue = buf[0x135];
    out->bNumConfigurations = buf[0x136];
    out->bNumInterfaces = buf[0x137];
    return USBIP_PROTO_OK;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

usbip_proto_err_t usbip_unpack_urb_hdr(const uint8_t *buf, size_t len, usbip_urb_hdr_t *out)
{
    if (len < USBIP_URB_HDR_LEN)
        return USBIP_PROTO_SHORT;
    memset(out, 0, sizeof(*out));
    out->command = usbip_get_be32(buf);
    out->seqnum = usbip_get_be32(buf + 4);
    out->devid = usbip_get_be32(buf + 8);
    out->direction = usbip_get_be32(buf + 12);
    out->ep = usbip_get_be32(buf + 16);
    switch (out->command) {
    case USBIP_CMD_SUBMIT: {
        if (out->direction > USBIP_DIR_IN)
            return USBIP_PROTO_BAD_DIRECTION;
        if (out->ep > 15)
            return USBIP_PROTO_BAD_EP;
        out->u.submit.transfer_flags = usbip_get_be32(buf + 0x14);
        out->u.submit.transfer_buffer_length = (int32_t)usbip_get_be32(buf + 0x18);
        out->u.submit.start_frame = (int32_t)usbip_get_be32(buf + 0x1C);
        int32_t np = (int32_t)usbip_get_be32(buf + 0x20);
        out->u.submit.raw_number_of_packets = np;
        out->u.submit.interval = (int32_t)usbip_get_be32(buf + 0x24);
        memcpy(out->u.submit.setup, buf + 0x28, 8);
        int32_t tbl = out->u.submit.transfer_buffer_length;
        if (tbl < 0 || tbl > USBIP_MAX_TRANSFER_LEN)
            return USBIP_PROTO_BAD_LENGTH;
        /* Linux vhci sends 0 for non-ISO, the .rst and usbip-win2 send -1. */
        if (np < -1 || np > USBIP_MAX_ISO_PACKETS_WIRE)
            return USBIP_PROTO_BAD_PACKETS;
        out->u.submit.iso = np > 0;
        out->u.submit.number_of_packets = np > 0 ? np : 0;
        return USBIP_PROTO_OK;
    }
    case USBIP_CMD_UNLINK:
        /* Direction and ep are 0 for UNLINK; Linux fills them from the
         * target URB in some versions, so they are not checked. */
        out->u.unlink.unlink_seqnum = usbip_get_be32(buf + 0x14);
        if (!all_zero(buf + 0x18, 24))
            return USBIP_PROTO_BAD_FIELD;
        return USBIP_PROTO_OK;
    case USBIP_RET_SUBMIT:
        out->u.ret_submit.status = (int32_t)usbip_get_be32(buf + 0x14);
        out->u.ret_submit.actual_length = (int32_t)usbip_get_be32(buf + 0x18);
        out->u.ret_submit.start_frame = (int32_t)usbip_get_be32(buf + 0x1C);
        out->u.ret_submit.number_of_packets = (int32_t)usbip_get_be32(buf + 0x20);
        out->u.ret_submit.error_count = (int32_t)usbip_get_be32(buf + 0x24);
        if (out->u.ret_submit.actual_length < 0)
            return USBIP_PROTO_BAD_LENGTH;
        return USBIP_PROTO_OK;
    case USBIP_RET_UNLINK:
        out->u.ret_unlink.status = (int32_t)usbip_get_be32(buf + 0x14);
        return USBIP_PROTO_OK;
    default:
        return USBIP_PROTO_BAD_COMMAND;
    }
}

void usbip_pack_urb_hdr(uint8_t out[USBIP_URB_HDR_LEN], const usbip_urb_hdr_t *hdr)
{
    memset(out, 0, USBIP_URB_HDR_LEN);
    usbip_put_be32(out, hdr->command);
    usbip_put_be32(out + 4, hdr->seqnum);
    usbip_put_be32(out + 8, hdr->devid);
    usbip_put_be32(out + 12, hdr->direction);
    usbip_put_be32(out + 16, hdr->ep);
    switch (hdr->command) {
    case USBIP_CMD_SUBMIT:
        usbip_put_be32(out + 0x14, hdr->u.submit.transfer_flags);
        usbip_put_be32(out + 0x18, (uint32_t)hdr->u.submit.transfer_buffer_length);
        usbip_put_be32(out + 0x1C, (uint32_t)hdr->u.submit.start_frame);
        usbip_put_be32(out + 0x20, (uint32_t)hdr->u.submit.raw_number_of_packets);
        usbip_put_be32(out + 0x24, (uint32_t)hdr->u.submit.interval);
        memcpy(out + 0x28, hdr->u.submit.setup, 8);
        break;
    case USBIP_CMD_UNLINK:
        usbip_put_be32(out + 0x14, hdr->u.unlink.unlink_seqnum);
        break;
    case USBIP_RET_SUBMIT:
        usbip_put_be32(out + 0x14, (uint32_t)hdr->u.ret_submit.status);
        usbip_put_be32(out + 0x18, (uint32_t)hdr->u.ret_submit.actual_length);
        usbip_put_be32(out + 0x1C, (uint32_t)hdr->u.ret_submit.start_frame);
        usbip_put_be32(out + 0x20, (uint32_t)hdr->u.ret_submit.number_of_packets);
        usbip_put_be32(out + 0x24, (uint32_t)hdr->u.ret_submit.error_count);
        break;
    case USBIP_RET_UNLINK:
        usbip_put_be32(out + 0x14, (uint32_t)hdr->u.ret_unlink.status);
        break;
    default:
        break;
    }
}

void usbip_pack_ret_submit(uint8_t out[USBIP_URB_HDR_LEN], uint32_t seqnum, int32_t status,
                           int32_t actual_length, int32_t start_frame, int32_t number_of_packets,
                           int32_t error_count)
{
    memset(out, 0, USBIP_URB_HDR_LEN);
    usbip_put_be32(out, USBIP_RET_SUBMIT);
    usbip_put_be32(out + 4, seqnum);
    usbip_put_be32(out + 0x14, (uint32_t)status);
    usbip_put_be32(out + 0x18, (uint32_t)actual_length);
    usbip_put_be32(out + 0x1C, (uint32_t)start_frame);
    usbip_put_be32(out + 0x20, (uint32_t)number_of_packets);
    usbip_put_be32(out + 0x24, (uint32_t)error_count);
}

void usbip_pack_ret_unlink(uint8_t out[USBIP_URB_HDR_LEN], uint32_t seqnum, int32_t status)
{
    memset(out, 0, USBIP_URB_HDR_LEN);
    usbip_put_be32(out, USBIP_RET_UNLINK);
    usbip_put_be32(out + 4, seqnum);
    usbip_put_be32(out + 0x14, (uint32_t)status);
}

void usbip_pack_iso_desc(uint8_t out[USBIP_ISO_DESC_LEN], const usbip_iso_desc_t *d)
{
    usbip_put_be32(out, d->offset);
    usbip_put_be32(out + 4, d->length);
    usbip_put_be32(out + 8, d->actual_length);
    usbip_put_be32(out + 12, (uint32_t)d->status);
}

usbip_proto_err_t usbip_unpack_iso_desc(const uint8_t *buf, size_t len, int32_t buffer_length,
                                        usbip_iso_desc_t *out)
{
    if (len < USBIP_ISO_DESC_LEN)
        return USBIP_PROTO_SHORT;
    out->offset = usbip_get_be32(buf);
    out->length = usbip_get_be32(buf + 4);
    out->actual_length = usbip_get_be32(buf + 8);
    out->status = (int32_t)usbip_get_be32(buf + 12);
    if (buffer_length < 0 || out->offset > (uint32_t)buffer_length ||
        out->length > (uint32_t)buffer_length - out->offset)
        return USBIP_PROTO_BAD_ISO_DESC;
    return USBIP_PROTO_OK;
}
