/*
 * fuzz_codec.c - every unpack function of the wire codec on arbitrary bytes;
 * whatever unpacks must pack back to the same bytes.
 */
#include <stdlib.h>
#include <string.h>

#include "usbip/usbip_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    usbip_op_hdr_t op;
    if (usbip_unpack_op_hdr(data, size, &op) == USBIP_PROTO_OK) {
        (void)usbip_check_op_request(&op);
        uint8_t b[8];
        usbip_pack_op_hdr(b, op.code, op.status);
        if (op.version == USBIP_VERSION && memcmp(b, data, 8) != 0)
            abort();
    }
    char busid[USBIP_BUSID_LEN];
    if (usbip_unpack_import_busid(data, size, busid) == USBIP_PROTO_OK && strlen(busid) >= USBIP_BUSID_LEN)
        abort();
    usbip_dev_record_t rec;
    if (usbip_unpack_dev_record(data, size, &rec) == USBIP_PROTO_OK) {
        uint8_t b[USBIP_DEV_RECORD_LEN];
        usbip_pack_dev_record(b, &rec);
        usbip_dev_record_t again;
        if (usbip_unpack_dev_record(b, sizeof(b), &again) != USBIP_PROTO_OK || strcmp(rec.path, again.path) != 0 ||
            strcmp(rec.busid, again.busid) != 0 || rec.busnum != again.busnum || rec.devnum != again.devnum ||
            rec.speed != again.speed || rec.idVendor != again.idVendor || rec.idProduct != again.idProduct ||
            rec.bNumInterfaces != again.bNumInterfaces)
            abort();
    }
    usbip_urb_hdr_t h;
    if (usbip_unpack_urb_hdr(data, size, &h) == USBIP_PROTO_OK) {
        uint8_t b[USBIP_URB_HDR_LEN];
        usbip_pack_urb_hdr(b, &h);
        /* the parts the codec understands survive a round trip */
        if (memcmp(b, data, 0x14) != 0)
            abort();
        if (h.command == USBIP_CMD_SUBMIT && memcmp(b, data, USBIP_URB_HDR_LEN) != 0)
            abort();
        if (h.command == USBIP_CMD_SUBMIT &&
            (h.u.submit.transfer_buffer_length < 0 || h.ep > 15 || h.direction > 1))
            abort();
    }
    for (size_t off = 0; off + USBIP_ISO_DESC_LEN <= size && off < 256; off += USBIP_ISO_DESC_LEN) {
        usbip_iso_desc_t d;
        int32_t len = size > 4 ? (int32_t)(data[0] | (data[1] << 8)) : 0;
        if (usbip_unpack_iso_desc(data + off, size - off, len, &d) == USBIP_PROTO_OK &&
            ((uint64_t)d.offset + d.length > (uint64_t)len))
            abort();
    }
    return 0;
}
