/* test_codec.c - USB/IP wire format: every PDU, boundaries, malformed input. */
#include <string.h>

#include "testlib.h"
#include "usbip/usbip_proto.h"

static void test_op_header(void)
{
    uint8_t b[8];
    usbip_pack_op_hdr(b, USBIP_OP_REP_DEVLIST, 0);
    const uint8_t want[8] = {0x01, 0x11, 0x00, 0x05, 0, 0, 0, 0};
    TL_EQ_MEM(b, want, 8);
    usbip_op_hdr_t h;
    TL_EQ_INT(usbip_unpack_op_hdr(b, 7, &h), USBIP_PROTO_SHORT);
    const uint8_t req[8] = {0x01, 0x11, 0x80, 0x05, 0, 0, 0, 0};
    TL_EQ_INT(usbip_unpack_op_hdr(req, 8, &h), USBIP_PROTO_OK);
    TL_EQ_INT(h.code, USBIP_OP_REQ_DEVLIST);
    TL_EQ_INT(usbip_check_op_request(&h), USBIP_PROTO_OK);
    h.version = 0; /* tolerated */
    TL_EQ_INT(usbip_check_op_request(&h), USBIP_PROTO_OK);
    h.version = 0x0106;
    TL_EQ_INT(usbip_check_op_request(&h), USBIP_PROTO_BAD_VERSION);
    h.version = USBIP_VERSION;
    h.code = USBIP_OP_REP_IMPORT; /* a reply is not a request */
    TL_EQ_INT(usbip_check_op_request(&h), USBIP_PROTO_BAD_CODE);
    h.code = USBIP_OP_REQ_IMPORT;
    h.status = 1;
    TL_EQ_INT(usbip_check_op_request(&h), USBIP_PROTO_BAD_STATUS);
}

static void test_import_busid(void)
{
    uint8_t b[32] = "1-2.3";
    char busid[32];
    TL_EQ_INT(usbip_unpack_import_busid(b, 32, busid), USBIP_PROTO_OK);
    TL_EQ_STR(busid, "1-2.3");
    TL_EQ_INT(usbip_unpack_import_busid(b, 31, busid), USBIP_PROTO_SHORT);
    memset(b, 'A', 32);
    TL_EQ_INT(usbip_unpack_import_busid(b, 32, busid), USBIP_PROTO_BAD_BUSID);
}

static void test_dev_record(void)
{
    usbip_dev_record_t r = {.busnum = 1, .devnum = 5, .speed = 3, .idVendor = 0x1209, .idProduct = 0xabcd,
                            .bcdDevice = 0x0102, .bDeviceClass = 0xef, .bDeviceSubClass = 2,
                            .bDeviceProtocol = 1, .bConfigurationValue = 1, .bNumConfigurations = 1,
                            .bNumInterfaces = 3};
    strcpy(r.path, "/fleet/x/1-1");
    strcpy(r.busid, "1-1");
    uint8_t b[312];
    usbip_pack_dev_record(b, &r);
    /* offsets from usbip-protocol.md, relative to the record */
    TL_EQ_STR((char *)b + 0x100, "1-1");
    TL_EQ_INT(usbip_get_be32(b + 0x120), 1);
    TL_EQ_INT(usbip_get_be32(b + 0x124), 5);
    TL_EQ_INT(usbip_get_be32(b + 0x128), 3);
    TL_EQ_INT(usbip_get_be16(b + 0x12C), 0x1209);
    TL_EQ_INT(usbip_get_be16(b + 0x12E), 0xabcd);
    TL_EQ_INT(usbip_get_be16(b + 0x130), 0x0102);
    TL_EQ_INT(b[0x132], 0xef);
    TL_EQ_INT(b[0x135], 1);
    TL_EQ_INT(b[0x137], 3);
    TL_EQ_INT(b[0x100 + 3], 0); /* zero padded */
    TL_EQ_INT(b[0x11F], 0);
    usbip_dev_record_t back;
    TL_EQ_INT(usbip_unpack_dev_record(b, 312, &back), USBIP_PROTO_OK);
    TL_EQ_STR(back.busid, "1-1");
    TL_EQ_STR(back.path, "/fleet/x/1-1");
    TL_EQ_INT(back.idProduct, 0xabcd);
    TL_EQ_INT(usbip_unpack_dev_record(b, 311, &back), USBIP_PROTO_SHORT);
    /* an overlong busid is truncated, still NUL-terminated */
    memset(r.busid, 'x', sizeof(r.busid));
    r.busid[31] = 0;
    usbip_pack_dev_record(b, &r);
    TL_EQ_INT(b[0x11F], 0);
}

static void hdr_submit(uint8_t b[48], uint32_t dir, uint32_t ep, int32_t tbl, int32_t np)
{
    memset(b, 0, 48);
    usbip_put_be32(b, 1);
    usbip_put_be32(b + 4, 77);
    usbip_put_be32(b + 8, 0x10002);
    usbip_put_be32(b + 12, dir);
    usbip_put_be32(b + 16, ep);
    usbip_put_be32(b + 0x14, 0x200);
    usbip_put_be32(b + 0x18, (uint32_t)tbl);
    usbip_put_be32(b + 0x1C, 0xffffffffu);
    usbip_put_be32(b + 0x20, (uint32_t)np);
    usbip_put_be32(b + 0x24, 10);
    for (int i = 0; i < 8; i++)
        b[0x28 + i] = (uint8_t)(0x80 + i);
}

static void test_cmd_submit(void)
{
    uint8_t b[48];
    usbip_urb_hdr_t h;
    hdr_submit(b, 1, 2, 512, 0);
    TL_EQ_INT(usbip_unpack_urb_hdr(b, 48, &h), USBIP_PROTO_OK);
    TL_EQ_INT(h.command, USBIP_CMD_SUBMIT);
    TL_EQ_INT(h.seqnum, 77);
    TL_EQ_INT(h.devid, 0x10002);
    TL_EQ_INT(h.direction, 1);
    TL_EQ_INT(h.ep, 2);
    TL_EQ_INT(h.u.submit.transfer_flags, 0x200);
    TL_EQ_INT(h.u.submit.transfer_buffer_length, 512);
    TL_EQ_INT(h.u.submit.interval, 10);
    TL_EQ_INT(h.u.submit.setup[0], 0x80); /* raw, not swapped */
    TL_EQ_INT(h.u.submit.setup[7], 0x87);
    TL_CHECK(!h.u.submit.iso);
    /* number_of_packets -1 (doc / usbip-win2) and 0 (Linux) both mean non-ISO */
    hdr_submit(b, 1, 2, 512, -1);
    TL_EQ_INT(usbip_unpack_urb_hdr(b, 48, &h), USBIP_PROTO_OK);
    TL_CHECK(!h.u.submit.iso);
    TL_EQ_INT(h.u.submit.number_of_packets, 0);
    TL_EQ_INT(h.u.submit.raw_number_of_packets, -1);
    hdr_submit(b, 1, 2, 512, 8);
    TL_EQ_INT(usbip_unpack_urb_hdr(b, 48, &h), USBIP_PROTO_OK);
    TL_CHECK(h.u.submit.iso);
    TL_EQ_INT(h.u.submit.number_of_packets, 8);
    /* round trip */
    uint8_t b2[48];
    usbip_pack_urb_hdr(b2, &h);
    TL_EQ_MEM(b, b2, 48);
    /* malformed */
    TL_EQ_INT(usbip_unpack_urb_hdr(b, 47, &h), USBIP_PROTO_SHORT);
    hdr_submit(b, 2, 2, 512, 0);
    TL_EQ_INT(usbip_unpack_urb_hdr(b, 48, &h), USBIP_PROTO_BAD_DIRECTION);
    hdr_submit(b, 0, 16, 512, 0);
    TL_EQ_INT(usbip_unpack_urb_hdr(b, 48, &h), USBIP_PROTO_BAD_EP);
    hdr_submit(b, 0, 1, -5, 0);
    TL_EQ_INT(usbip_unpack_urb_hdr(b, 48, &h), USBIP_PROTO_BAD_LENGTH);
    hdr_submit(b, 0, 1, USBIP_MAX_TRANSFER_LEN + 1, 0);
    TL_EQ_INT(usbip_unpack_urb_hdr(b, 48, &h), USBIP_PROTO_BAD_LENGTH);
    hdr_submit(b, 0, 1, USBIP_MAX_TRANSFER_LEN, 0);
    TL_EQ_INT(usbip_unpack_urb_hdr(b, 48, &h), USBIP_PROTO_OK);
    hdr_submit(b, 0, 1, 64, -2);
    TL_EQ_INT(usbip_unpack_urb_hdr(b, 48, &h), USBIP_PROTO_BAD_PACKETS);
    hdr_submit(b, 0, 1, 64, USBIP_MAX_ISO_PACKETS_WIRE + 1);
    TL_EQ_INT(usbip_unpack_urb_hdr(b, 48, &h), USBIP_PROTO_BAD_PACKETS);
    usbip_put_be32(b, 9);
    TL_EQ_INT(usbip_unpack_urb_hdr(b, 48, &h), USBIP_PROTO_BAD_COMMAND);
    usbip_put_be32(b, 0);
    TL_EQ_INT(usbip_unpack_urb_hdr(b, 48, &h), USBIP_PROTO_BAD_COMMAND);
}

static void test_unlink(void)
{
    uint8_t b[48] = {0};
    usbip_put_be32(b, 2);
    usbip_put_be32(b + 4, 9);
    usbip_put_be32(b + 0x14, 7);
    usbip_urb_hdr_t h;
    TL_EQ_INT(usbip_unpack_urb_hdr(b, 48, &h), USBIP_PROTO_OK);
    TL_EQ_INT(h.u.unlink.unlink_seqnum, 7);
    b[0x2F] = 1; /* padding must be zero */
    TL_EQ_INT(usbip_unpack_urb_hdr(b, 48, &h), USBIP_PROTO_BAD_FIELD);
}

static void test_ret_pdus(void)
{
    uint8_t b[48];
    usbip_pack_ret_submit(b, 0x11223344, -32, 13, 0, -1, 0);
    TL_EQ_INT(usbip_get_be32(b), 3);
    TL_EQ_INT(usbip_get_be32(b + 4), 0x11223344);
    TL_EQ_INT(usbip_get_be32(b + 8), 0); /* devid, direction, ep are 0 in replies */
    TL_EQ_INT(usbip_get_be32(b + 12), 0);
    TL_EQ_INT(usbip_get_be32(b + 16), 0);
    TL_EQ_INT(usbip_get_be32(b + 0x14), 0xFFFFFFE0u);
    TL_EQ_INT(usbip_get_be32(b + 0x18), 13);
    TL_EQ_INT(usbip_get_be32(b + 0x20), 0xFFFFFFFFu);
    for (int i = 0x28; i < 48; i++)
        TL_EQ_INT(b[i], 0);
    usbip_urb_hdr_t h;
    TL_EQ_INT(usbip_unpack_urb_hdr(b, 48, &h), USBIP_PROTO_OK);
    TL_EQ_INT(h.u.ret_submit.status, -32);
    TL_EQ_INT(h.u.ret_submit.actual_length, 13);
    usbip_pack_ret_unlink(b, 5, USBIP_ECONNRESET);
    TL_EQ_INT(usbip_get_be32(b), 4);
    TL_EQ_INT(usbip_get_be32(b + 0x14), 0xFFFFFF98u);
    for (int i = 0x18; i < 48; i++)
        TL_EQ_INT(b[i], 0);
    TL_EQ_INT(usbip_unpack_urb_hdr(b, 48, &h), USBIP_PROTO_OK);
    TL_EQ_INT(h.u.ret_unlink.status, -104);
}

static void test_iso_desc(void)
{
    usbip_iso_desc_t d = {.offset = 192, .length = 192, .actual_length = 100, .status = USBIP_EXDEV};
    uint8_t b[16];
    usbip_pack_iso_desc(b, &d);
    TL_EQ_INT(usbip_get_be32(b), 192);
    TL_EQ_INT(usbip_get_be32(b + 12), 0xFFFFFFEEu);
    usbip_iso_desc_t o;
    TL_EQ_INT(usbip_unpack_iso_desc(b, 16, 384, &o), USBIP_PROTO_OK);
    TL_EQ_INT(o.actual_length, 100);
    TL_EQ_INT(o.status, USBIP_EXDEV);
    TL_EQ_INT(usbip_unpack_iso_desc(b, 16, 383, &o), USBIP_PROTO_BAD_ISO_DESC);
    TL_EQ_INT(usbip_unpack_iso_desc(b, 15, 384, &o), USBIP_PROTO_SHORT);
    /* offset + length overflowing 32 bits must not wrap into "inside" */
    usbip_put_be32(b, 0xFFFFFFF0u);
    usbip_put_be32(b + 4, 0x20);
    TL_EQ_INT(usbip_unpack_iso_desc(b, 16, 384, &o), USBIP_PROTO_BAD_ISO_DESC);
}

static void test_strerror(void)
{
    for (int e = USBIP_PROTO_OK; e <= USBIP_PROTO_BAD_FIELD; e++)
        TL_CHECK(strcmp(usbip_proto_strerror((usbip_proto_err_t)e), "unknown protocol error") != 0);
}

int main(void)
{
    TL_RUN(test_op_header);
    TL_RUN(test_import_busid);
    TL_RUN(test_dev_record);
    TL_RUN(test_cmd_submit);
    TL_RUN(test_unlink);
    TL_RUN(test_ret_pdus);
    TL_RUN(test_iso_desc);
    TL_RUN(test_strerror);
    return TL_RESULT();
}
