"""Every USB/IP PDU round-trips through fleet.usbip.codec, byte-exact against the
layout in docs/usbip-protocol.md, and malformed input is refused with a message
naming the field."""

from __future__ import annotations

import struct

import pytest

from fleet.usbip import codec
from fleet.usbip.codec import (
    CmdSubmit,
    CmdUnlink,
    DeviceRecord,
    Interface,
    IsoPacket,
    ProtocolError,
    RetSubmit,
    RetUnlink,
)
from fleet.usbip.constants import (
    CMD_SUBMIT,
    DIR_IN,
    DIR_OUT,
    HEADER_SIZE,
    MAX_TRANSFER_LENGTH,
    OP_REP_DEVLIST,
    OP_REP_IMPORT,
    OpStatus,
    Speed,
    UrbFlag,
)


def _dev(busid="1-2", nif=2, speed=Speed.HIGH):
    return DeviceRecord(
        path=f"/sys/devices/platform/fleet/usb1/{busid}",
        busid=busid,
        busnum=1,
        devnum=3,
        speed=speed,
        id_vendor=0x1209,
        id_product=0x0001,
        bcd_device=0x0100,
        device_class=0,
        device_subclass=0,
        device_protocol=0,
        configuration_value=1,
        num_configurations=1,
        num_interfaces=nif,
        interfaces=tuple(Interface(8, 6, 0x50 + i) for i in range(nif)),
    )


# ---------------------------------------------------------------- management


def test_devlist_request_is_the_8_byte_op_common():
    assert codec.encode_devlist_request() == bytes.fromhex("0111 8005 00000000".replace(" ", ""))


def test_devlist_reply_round_trips_with_documented_offsets():
    devs = [_dev("1-1", 1, Speed.FULL), _dev("1-2.3", 2)]
    raw = codec.encode_devlist_reply(devs)
    # first record at 0x0C, busid at 0x10C, idVendor at 0x138, bNumInterfaces at 0x143
    assert raw[0x10C:0x10F] == b"1-1"
    assert struct.unpack_from(">H", raw, 0x138)[0] == 0x1209
    assert raw[0x143] == 1
    # interface records are 4 bytes with a zero pad byte; next record follows them
    assert raw[0x144:0x148] == bytes([8, 6, 0x50, 0])
    second = 0x0C + 0x138 + 4
    assert raw[second + 0x100 : second + 0x105] == b"1-2.3"
    assert len(raw) == 12 + 2 * 0x138 + 3 * 4
    assert codec.devlist_reply_size(raw) == len(raw)
    assert codec.devlist_reply_size(raw[:-1]) is None
    assert codec.decode_devlist_reply(raw) == devs
    assert devs[1].devid == (1 << 16) | 3
    assert devs[1].vid_pid == "1209:0001"


def test_import_request_and_reply_round_trip():
    req = codec.encode_import_request("1-2.3")
    assert len(req) == 40 and req[:4] == bytes.fromhex("01118003")
    assert codec.decode_import_request(req) == "1-2.3"
    rep = codec.encode_import_reply(OpStatus.OK, _dev())
    assert len(rep) == 320  # no interface records in an IMPORT reply
    assert codec.decode_op_header(rep[:8], OP_REP_IMPORT).status == 0
    got = codec.decode_device_record(rep, 8)
    assert got == DeviceRecord(**{**_dev().__dict__, "interfaces": ()})
    refused = codec.encode_import_reply(OpStatus.DEV_BUSY)
    assert refused == bytes.fromhex("0111000300000002")


def test_import_request_accepts_version_zero_but_replies_must_be_0111():
    req = b"\x00\x00" + codec.encode_import_request("1-1")[2:]
    assert codec.decode_import_request(req) == "1-1"
    with pytest.raises(ProtocolError, match="version is 0x0000, expected 0x0111"):
        codec.decode_op_header(bytes(8), OP_REP_IMPORT)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b"\x01\x00" + b[2:], "version is 0x0100"),
        (lambda b: b[:2] + b"\x00\x03" + b[4:], "code is 0x0003, expected 0x0005"),
        (lambda b: b[:4] + b"\x00\x00\x00\x01" + b[8:], "status 1 \\(NA\\)"),
        (lambda b: b[:8] + b"\x00\x00\x10\x00" + b[12:], "claims 4096 devices"),
        (lambda b: b[:-1], "interfaces of 1-1: need 4 bytes, got 3"),
        (lambda b: b + b"\0", "1 unexpected trailing bytes"),
        (lambda b: b[:-1] + b"\x07", "padding byte is 7"),
        (lambda b: b[: 0x0C + 0x100] + b"x" * 32 + b[0x0C + 0x120 :], "busid is not NUL-terminated"),
        (lambda b: b[: 0x0C + 0x100] + bytes(32) + b[0x0C + 0x120 :], "empty busid"),
        (lambda b: b[: 0x0C + 0x104] + b"\x05" + b[0x0C + 0x105 :], "bytes after its NUL"),
        (lambda b: b[:0x134] + b"\x00\x00\x00\x09" + b[0x138:], "speed 9 is not"),
        (lambda b: b[:0x143] + b"\x40" + b[0x144:], "bNumInterfaces=64 exceeds"),
    ],
)
def test_malformed_devlist_replies_are_refused_with_the_field_named(mutate, message):
    raw = codec.encode_devlist_reply([_dev("1-1", 1)])
    with pytest.raises(ProtocolError, match=message):
        codec.decode_devlist_reply(mutate(raw))


def test_encoders_refuse_impossible_values():
    with pytest.raises(ValueError, match="too long"):
        codec.encode_import_request("1-" + "1" * 40)
    with pytest.raises(ValueError, match="bNumInterfaces=2 but 1 interface"):
        DeviceRecord(**{**_dev().__dict__, "interfaces": (Interface(1, 2, 3),)}).encode(True)
    with pytest.raises(ValueError, match="carries the device record"):
        codec.encode_import_reply(OpStatus.OK)


# ---------------------------------------------------------------- URB phase


def test_cmd_submit_out_layout_and_round_trip():
    pdu = CmdSubmit(7, 0x10003, DIR_OUT, 1, UrbFlag.ZERO_PACKET, 5, 0, 0, 0, bytes(8), b"hello")
    raw = pdu.encode()
    assert len(raw) == HEADER_SIZE + 5
    assert struct.unpack_from(">IIIII", raw) == (CMD_SUBMIT, 7, 0x10003, 0, 1)
    assert struct.unpack_from(">Ii", raw, 0x14) == (0x40, 5)
    assert raw[0x30:] == b"hello"
    assert codec.decode_cmd_submit(raw) == pdu


def test_cmd_submit_control_in_keeps_setup_raw_little_endian():
    setup = codec.setup_packet(0x80, 6, 0x0100, 0, 18)
    assert setup == bytes([0x80, 6, 0x00, 0x01, 0, 0, 18, 0])
    pdu = CmdSubmit(1, 2, DIR_IN, 0, UrbFlag.DIR_IN, 18, 0, -1, 0, setup)
    raw = pdu.encode()
    assert len(raw) == HEADER_SIZE and raw[0x28:0x30] == setup
    assert codec.decode_cmd_submit(raw) == pdu  # number_of_packets -1 is accepted


def test_iso_submit_and_ret_carry_descriptors_in_both_directions():
    iso_req = (IsoPacket(0, 192), IsoPacket(192, 192))
    pdu = CmdSubmit(3, 2, DIR_IN, 2, UrbFlag.ISO_ASAP, 384, 0, 2, 1, bytes(8), b"", iso_req)
    raw = pdu.encode()
    assert len(raw) == HEADER_SIZE + 32
    assert codec.decode_cmd_submit(raw, iso=True) == pdu
    # IN data compacted: 100 + 50 bytes, descriptors keep the request's offsets
    iso_ret = (IsoPacket(0, 192, 100, 0), IsoPacket(192, 192, 50, 0))
    ret = RetSubmit(3, 0, 150, 5, 2, 0, b"a" * 100 + b"b" * 50, iso_ret)
    rraw = ret.encode()
    assert len(rraw) == HEADER_SIZE + 150 + 32
    assert codec.decode_ret_submit(rraw, DIR_IN, 384, iso=True) == ret


def test_ret_submit_in_and_out():
    ret = RetSubmit(9, 0, 4, data=b"abcd")
    assert codec.decode_ret_submit(ret.encode(), DIR_IN, 64) == ret
    out = RetSubmit(10, 0, 4096)  # OUT: bytes accepted, no data follows
    assert len(out.encode()) == HEADER_SIZE
    assert codec.decode_ret_submit(out.encode(), DIR_OUT, 4096) == out
    stalled = RetSubmit(11, -32, 0)
    assert struct.unpack_from(">i", stalled.encode(), 0x14)[0] == -32


def test_unlink_round_trips():
    cmd = CmdUnlink(12, 0x10002, 9)
    raw = cmd.encode()
    assert len(raw) == HEADER_SIZE and raw[0x18:] == bytes(24)
    assert codec.decode_cmd_unlink(raw) == cmd
    ret = RetUnlink(12, -104)
    assert codec.decode_ret_unlink(ret.encode()) == ret


@pytest.mark.parametrize(
    "raw, message",
    [
        (struct.pack(">IIIII", 9, 1, 0, 0, 0) + bytes(28), "unknown URB command 9"),
        (struct.pack(">IIIII", 1, 1, 0, 2, 0) + bytes(28), "direction 2 must be 0 or 1"),
        (struct.pack(">IIIII", 1, 1, 0, 0, 16) + bytes(28), "endpoint 16 out of 0..15"),
        (struct.pack(">IIIIIIi", 1, 1, 0, 1, 1, 0, -1) + bytes(20), "transfer_buffer_length -1"),
        (
            struct.pack(">IIIIIIi", 1, 1, 0, 1, 1, 0, MAX_TRANSFER_LENGTH + 1) + bytes(20),
            "transfer_buffer_length",
        ),
        (struct.pack(">IIIIIIiii", 1, 1, 0, 1, 1, 0, 8, 0, 5000) + bytes(12), "number_of_packets 5000"),
        (struct.pack(">IIIIIii", 3, 1, 0, 0, 0, 0, -5) + bytes(20), "actual_length -5"),
        (bytes(47), "URB header: need 48 bytes, got 47"),
    ],
)
def test_malformed_headers_are_refused(raw, message):
    with pytest.raises(ProtocolError, match=message):
        codec.decode_header(raw)


def test_ret_submit_longer_than_the_request_is_refused():
    ret = RetSubmit(1, 0, 65, data=bytes(65))
    with pytest.raises(ProtocolError, match="actual_length 65 exceeds the requested 64"):
        codec.decode_ret_submit(ret.encode(), DIR_IN, 64)


def test_truncated_and_overlong_pdus_are_refused():
    raw = CmdSubmit(1, 2, DIR_OUT, 1, 0, 10, data=bytes(10)).encode()
    with pytest.raises(ProtocolError, match="need 58 bytes, got 57"):
        codec.decode_cmd_submit(raw[:-1])
    with pytest.raises(ProtocolError, match="1 unexpected trailing bytes"):
        codec.decode_cmd_submit(raw + b"x")
    with pytest.raises(ProtocolError, match="expected RET_UNLINK, got command 1"):
        codec.decode_ret_unlink(raw[:HEADER_SIZE])


def test_bad_iso_descriptors_are_refused():
    ret = RetSubmit(3, 0, 10, 0, 1, 0, bytes(10), (IsoPacket(0, 8, 10, 0),))
    with pytest.raises(ProtocolError, match="actual_length 10 > length 8"):
        codec.decode_ret_submit(ret.encode(), DIR_IN, 16, iso=True)
    ret = RetSubmit(3, 0, 0, 0, 1, 0, b"", (IsoPacket(12, 8, 0, 0),))
    with pytest.raises(ProtocolError, match="exceeds buffer 16"):
        codec.decode_ret_submit(ret.encode(), DIR_IN, 16, iso=True)


def test_encoder_refuses_inconsistent_submits():
    with pytest.raises(ValueError, match="OUT data is 3 bytes but transfer_buffer_length is 4"):
        CmdSubmit(1, 0, DIR_OUT, 1, 0, 4, data=b"abc").encode()
    with pytest.raises(ValueError, match="IN carries no data"):
        CmdSubmit(1, 0, DIR_IN, 1, 0, 4, data=b"abc").encode()
    with pytest.raises(ValueError, match="endpoint number 16"):
        CmdSubmit(1, 0, DIR_IN, 16, 0, 4).encode()
    with pytest.raises(ValueError, match="wLength 65536"):
        codec.setup_packet(0x80, 6, 0, 0, 65536)


def test_unknown_devlist_code_is_refused():
    hdr = struct.pack(">HHI", 0x0111, OP_REP_DEVLIST + 1, 0)
    with pytest.raises(ProtocolError, match="code is 0x0006, expected 0x0005"):
        codec.decode_op_header(hdr, OP_REP_DEVLIST)
