"""Encode and decode every USB/IP PDU, refusing anything the protocol does not allow.

Pure functions over bytes: no sockets here, so the same code serves the client,
tests that forge malformed PDUs, and any future server-side tooling.

Decoding is strict because a USB/IP stream has no resynchronisation point: once one
length is misread every later byte is garbage. Each rejection raises ProtocolError
naming the field, the value and what was expected.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .constants import (
    BUSID_SIZE,
    CMD_SUBMIT,
    CMD_UNLINK,
    DEVICE_RECORD_SIZE,
    DIR_IN,
    DIR_OUT,
    HEADER_SIZE,
    INTERFACE_RECORD_SIZE,
    ISO_DESCRIPTOR_SIZE,
    MAX_DEVICES,
    MAX_INTERFACES,
    MAX_ISO_PACKETS,
    MAX_TRANSFER_LENGTH,
    OP_HEADER_SIZE,
    OP_REP_DEVLIST,
    OP_REP_IMPORT,
    OP_REQ_DEVLIST,
    OP_REQ_IMPORT,
    PATH_SIZE,
    RET_SUBMIT,
    RET_UNLINK,
    USBIP_VERSION,
    OpStatus,
    Speed,
)


class ProtocolError(Exception):
    """The peer sent something USB/IP does not allow; the stream cannot be trusted."""


_OP = struct.Struct(">HHI")
_BASIC = struct.Struct(">IIIII")
_SUBMIT = struct.Struct(">Iiiii8s")
_RET_SUBMIT = struct.Struct(">iiiii8x")
_UNLINK = struct.Struct(">I24x")
_RET_UNLINK = struct.Struct(">i24x")
_DEVICE = struct.Struct(">256s32sIIIHHHBBBBBB")
_INTERFACE = struct.Struct(">BBBB")
_ISO = struct.Struct(">IIIi")
assert _DEVICE.size == DEVICE_RECORD_SIZE and _BASIC.size + _SUBMIT.size == HEADER_SIZE


def _need(data: bytes | bytearray | memoryview, size: int, what: str) -> None:
    if len(data) < size:
        raise ProtocolError(f"{what}: need {size} bytes, got {len(data)}")


def _cstring(raw: bytes, what: str) -> str:
    end = raw.find(b"\0")
    if end < 0:
        raise ProtocolError(f"{what} is not NUL-terminated within {len(raw)} bytes")
    if any(raw[end:]):
        raise ProtocolError(f"{what} has bytes after its NUL terminator (must be zero-padded)")
    try:
        return raw[:end].decode("ascii")
    except UnicodeDecodeError as e:
        raise ProtocolError(f"{what} is not ASCII: {raw[:end]!r}") from e


def _encode_cstring(text: str, size: int, what: str) -> bytes:
    raw = text.encode("ascii")
    if len(raw) >= size:
        raise ValueError(f"{what} {text!r} is too long: at most {size - 1} bytes")
    if b"\0" in raw:
        raise ValueError(f"{what} {text!r} contains a NUL byte")
    return raw.ljust(size, b"\0")


# ---------------------------------------------------------------- management phase


@dataclass(frozen=True)
class OpHeader:
    version: int
    code: int
    status: int

    def encode(self) -> bytes:
        return _OP.pack(self.version, self.code, self.status)


def decode_op_header(
    data: bytes, expect_code: int | None = None, accept_zero_version: bool = False
) -> OpHeader:
    """op_common. Replies must carry version 0x0111 exactly (the Linux client insists);
    requests may carry 0 as some clients do, hence accept_zero_version."""
    _need(data, OP_HEADER_SIZE, "op_common header")
    version, code, status = _OP.unpack_from(data)
    if version != USBIP_VERSION and not (accept_zero_version and version == 0):
        raise ProtocolError(f"op_common version is 0x{version:04x}, expected 0x{USBIP_VERSION:04x}")
    if expect_code is not None and code != expect_code:
        raise ProtocolError(f"op_common code is 0x{code:04x}, expected 0x{expect_code:04x}")
    return OpHeader(version, code, status)


@dataclass(frozen=True)
class Interface:
    cls: int
    subclass: int
    protocol: int


@dataclass(frozen=True)
class DeviceRecord:
    """struct usbip_usb_device, plus the interface triples DEVLIST appends."""

    path: str
    busid: str
    busnum: int
    devnum: int
    speed: int
    id_vendor: int
    id_product: int
    bcd_device: int
    device_class: int
    device_subclass: int
    device_protocol: int
    configuration_value: int
    num_configurations: int
    num_interfaces: int
    interfaces: tuple[Interface, ...] = field(default=())

    @property
    def devid(self) -> int:
        return (self.busnum << 16) | self.devnum

    @property
    def vid_pid(self) -> str:
        return f"{self.id_vendor:04x}:{self.id_product:04x}"

    def encode(self, with_interfaces: bool) -> bytes:
        out = _DEVICE.pack(
            _encode_cstring(self.path, PATH_SIZE, "path"),
            _encode_cstring(self.busid, BUSID_SIZE, "busid"),
            self.busnum,
            self.devnum,
            self.speed,
            self.id_vendor,
            self.id_product,
            self.bcd_device,
            self.device_class,
            self.device_subclass,
            self.device_protocol,
            self.configuration_value,
            self.num_configurations,
            self.num_interfaces,
        )
        if with_interfaces:
            if len(self.interfaces) != self.num_interfaces:
                raise ValueError(
                    f"device {self.busid}: bNumInterfaces={self.num_interfaces} but "
                    f"{len(self.interfaces)} interface records given"
                )
            out += b"".join(_INTERFACE.pack(i.cls, i.subclass, i.protocol, 0) for i in self.interfaces)
        return out


def decode_device_record(data: bytes, offset: int = 0) -> DeviceRecord:
    _need(memoryview(data)[offset:], DEVICE_RECORD_SIZE, "device record")
    f = _DEVICE.unpack_from(data, offset)
    path = _cstring(f[0], "device path")
    busid = _cstring(f[1], "busid")
    if not busid:
        raise ProtocolError("device record has an empty busid")
    speed = f[4]
    if speed not in Speed.__members__.values():
        raise ProtocolError(f"device {busid}: speed {speed} is not a Linux usb_device_speed (0..6)")
    if f[13] > MAX_INTERFACES:
        raise ProtocolError(f"device {busid}: bNumInterfaces={f[13]} exceeds {MAX_INTERFACES}")
    return DeviceRecord(path, busid, *f[2:])


def encode_devlist_request() -> bytes:
    return OpHeader(USBIP_VERSION, OP_REQ_DEVLIST, 0).encode()


def encode_devlist_reply(devices: list[DeviceRecord], status: int = OpStatus.OK) -> bytes:
    out = OpHeader(USBIP_VERSION, OP_REP_DEVLIST, status).encode() + struct.pack(">I", len(devices))
    return out + b"".join(d.encode(with_interfaces=True) for d in devices)


def decode_devlist_reply(data: bytes) -> list[DeviceRecord]:
    """Whole OP_REP_DEVLIST; trailing bytes are an error (the server closes after it)."""
    hdr = decode_op_header(data, OP_REP_DEVLIST)
    if hdr.status != OpStatus.OK:
        raise ProtocolError(f"OP_REP_DEVLIST status {hdr.status} ({_status_name(hdr.status)})")
    _need(data, OP_HEADER_SIZE + 4, "OP_REP_DEVLIST")
    (count,) = struct.unpack_from(">I", data, OP_HEADER_SIZE)
    if count > MAX_DEVICES:
        raise ProtocolError(f"OP_REP_DEVLIST claims {count} devices (limit {MAX_DEVICES})")
    off = OP_HEADER_SIZE + 4
    devices = []
    for _ in range(count):
        rec = decode_device_record(data, off)
        off += DEVICE_RECORD_SIZE
        _need(
            memoryview(data)[off:], rec.num_interfaces * INTERFACE_RECORD_SIZE, f"interfaces of {rec.busid}"
        )
        intfs = []
        for _i in range(rec.num_interfaces):
            cls, sub, proto, pad = _INTERFACE.unpack_from(data, off)
            if pad:
                raise ProtocolError(f"device {rec.busid}: interface record padding byte is {pad}, must be 0")
            intfs.append(Interface(cls, sub, proto))
            off += INTERFACE_RECORD_SIZE
        devices.append(DeviceRecord(**{**rec.__dict__, "interfaces": tuple(intfs)}))
    if off != len(data):
        raise ProtocolError(f"OP_REP_DEVLIST has {len(data) - off} unexpected trailing bytes")
    return devices


def devlist_reply_size(data: bytes) -> int | None:
    """Bytes the DEVLIST reply in `data` occupies, or None while more are needed.
    Lets a reader stop exactly at the end instead of relying on the server's close."""
    if len(data) < OP_HEADER_SIZE + 4:
        return None
    (count,) = struct.unpack_from(">I", data, OP_HEADER_SIZE)
    if count > MAX_DEVICES:
        raise ProtocolError(f"OP_REP_DEVLIST claims {count} devices (limit {MAX_DEVICES})")
    off = OP_HEADER_SIZE + 4
    for _ in range(count):
        if len(data) < off + DEVICE_RECORD_SIZE:
            return None
        nif = data[off + DEVICE_RECORD_SIZE - 1]
        off += DEVICE_RECORD_SIZE + nif * INTERFACE_RECORD_SIZE
    return off if len(data) >= off else None


def encode_import_request(busid: str) -> bytes:
    return OpHeader(USBIP_VERSION, OP_REQ_IMPORT, 0).encode() + _encode_cstring(busid, BUSID_SIZE, "busid")


def decode_import_request(data: bytes) -> str:
    decode_op_header(data, OP_REQ_IMPORT, accept_zero_version=True)
    _need(data, OP_HEADER_SIZE + BUSID_SIZE, "OP_REQ_IMPORT")
    return _cstring(bytes(data[OP_HEADER_SIZE : OP_HEADER_SIZE + BUSID_SIZE]), "busid")


def encode_import_reply(status: int, device: DeviceRecord | None = None) -> bytes:
    out = OpHeader(USBIP_VERSION, OP_REP_IMPORT, status).encode()
    if status == OpStatus.OK:
        if device is None:
            raise ValueError("a successful OP_REP_IMPORT carries the device record")
        out += device.encode(with_interfaces=False)
    return out


def _status_name(status: int) -> str:
    try:
        return OpStatus(status).name
    except ValueError:
        return "unknown"


# ---------------------------------------------------------------- URB phase


@dataclass(frozen=True)
class IsoPacket:
    offset: int
    length: int
    actual_length: int = 0
    status: int = 0


@dataclass(frozen=True)
class CmdSubmit:
    seqnum: int
    devid: int
    direction: int
    ep: int
    transfer_flags: int
    transfer_buffer_length: int
    start_frame: int = 0
    number_of_packets: int = 0
    interval: int = 0
    setup: bytes = bytes(8)
    data: bytes = b""
    iso: tuple[IsoPacket, ...] = ()

    def encode(self) -> bytes:
        _check_basic(self.seqnum, self.direction, self.ep, "CMD_SUBMIT")
        if len(self.setup) != 8:
            raise ValueError(f"setup packet must be 8 bytes, got {len(self.setup)}")
        if not 0 <= self.transfer_buffer_length <= MAX_TRANSFER_LENGTH:
            raise ValueError(
                f"transfer_buffer_length {self.transfer_buffer_length} out of 0..{MAX_TRANSFER_LENGTH}"
            )
        if self.direction == DIR_OUT and len(self.data) != self.transfer_buffer_length:
            raise ValueError(
                f"OUT data is {len(self.data)} bytes but transfer_buffer_length is "
                f"{self.transfer_buffer_length}"
            )
        if self.direction == DIR_IN and self.data:
            raise ValueError("CMD_SUBMIT for IN carries no data")
        if self.iso and len(self.iso) != self.number_of_packets:
            raise ValueError(
                f"{len(self.iso)} ISO descriptors but number_of_packets={self.number_of_packets}"
            )
        head = _BASIC.pack(CMD_SUBMIT, self.seqnum, self.devid, self.direction, self.ep) + _SUBMIT.pack(
            self.transfer_flags,
            self.transfer_buffer_length,
            self.start_frame,
            self.number_of_packets,
            self.interval,
            bytes(self.setup),
        )
        return (
            head
            + bytes(self.data)
            + b"".join(_ISO.pack(p.offset, p.length, p.actual_length, p.status) for p in self.iso)
        )


@dataclass(frozen=True)
class RetSubmit:
    seqnum: int
    status: int
    actual_length: int
    start_frame: int = 0
    number_of_packets: int = 0
    error_count: int = 0
    data: bytes = b""
    iso: tuple[IsoPacket, ...] = ()
    devid: int = 0
    direction: int = 0
    ep: int = 0

    def encode(self) -> bytes:
        head = _BASIC.pack(RET_SUBMIT, self.seqnum, self.devid, self.direction, self.ep) + _RET_SUBMIT.pack(
            self.status, self.actual_length, self.start_frame, self.number_of_packets, self.error_count
        )
        return (
            head
            + bytes(self.data)
            + b"".join(_ISO.pack(p.offset, p.length, p.actual_length, p.status) for p in self.iso)
        )


@dataclass(frozen=True)
class CmdUnlink:
    seqnum: int
    devid: int
    unlink_seqnum: int

    def encode(self) -> bytes:
        _check_basic(self.seqnum, 0, 0, "CMD_UNLINK")
        return _BASIC.pack(CMD_UNLINK, self.seqnum, self.devid, 0, 0) + _UNLINK.pack(self.unlink_seqnum)


@dataclass(frozen=True)
class RetUnlink:
    seqnum: int
    status: int

    def encode(self) -> bytes:
        return _BASIC.pack(RET_UNLINK, self.seqnum, 0, 0, 0) + _RET_UNLINK.pack(self.status)


def _check_basic(seqnum: int, direction: int, ep: int, what: str) -> None:
    if not 0 <= seqnum <= 0xFFFFFFFF:
        raise ValueError(f"{what}: seqnum {seqnum} is not a u32")
    if direction not in (DIR_OUT, DIR_IN):
        raise ValueError(f"{what}: direction {direction} must be 0 (OUT) or 1 (IN)")
    if not 0 <= ep <= 15:
        raise ValueError(f"{what}: endpoint number {ep} out of 0..15 (no direction bit)")


@dataclass(frozen=True)
class Header:
    """The 48-byte URB header, decoded; payload_length says how many bytes follow."""

    command: int
    seqnum: int
    devid: int
    direction: int
    ep: int
    # CMD_SUBMIT
    transfer_flags: int = 0
    transfer_buffer_length: int = 0
    start_frame: int = 0
    number_of_packets: int = 0
    interval: int = 0
    setup: bytes = bytes(8)
    # RET_SUBMIT / RET_UNLINK
    status: int = 0
    actual_length: int = 0
    error_count: int = 0
    # CMD_UNLINK
    unlink_seqnum: int = 0


def _check_packets(nop: int, what: str) -> None:
    # Linux sends 0 for non-ISO, the .rst and usbip-win2 send -1
    if not (nop == -1 or 0 <= nop <= MAX_ISO_PACKETS):
        raise ProtocolError(f"{what}: number_of_packets {nop} out of {{-1, 0..{MAX_ISO_PACKETS}}}")


def decode_header(data: bytes | bytearray | memoryview) -> Header:
    _need(data, HEADER_SIZE, "URB header")
    command, seqnum, devid, direction, ep = _BASIC.unpack_from(data)
    if command == CMD_SUBMIT:
        if direction not in (DIR_OUT, DIR_IN):
            raise ProtocolError(f"CMD_SUBMIT seqnum {seqnum}: direction {direction} must be 0 or 1")
        if ep > 15:
            raise ProtocolError(f"CMD_SUBMIT seqnum {seqnum}: endpoint {ep} out of 0..15")
        flags, tbl, start, nop, interval, setup = _SUBMIT.unpack_from(data, _BASIC.size)
        if not 0 <= tbl <= MAX_TRANSFER_LENGTH:
            raise ProtocolError(
                f"CMD_SUBMIT seqnum {seqnum}: transfer_buffer_length {tbl} out of 0..{MAX_TRANSFER_LENGTH}"
            )
        _check_packets(nop, f"CMD_SUBMIT seqnum {seqnum}")
        return Header(command, seqnum, devid, direction, ep, flags, tbl, start, nop, interval, setup)
    if command == RET_SUBMIT:
        status, actual, start, nop, errs = _RET_SUBMIT.unpack_from(data, _BASIC.size)
        if not 0 <= actual <= MAX_TRANSFER_LENGTH:
            raise ProtocolError(
                f"RET_SUBMIT seqnum {seqnum}: actual_length {actual} out of 0..{MAX_TRANSFER_LENGTH}"
            )
        _check_packets(nop, f"RET_SUBMIT seqnum {seqnum}")
        return Header(
            command,
            seqnum,
            devid,
            direction,
            ep,
            start_frame=start,
            number_of_packets=nop,
            status=status,
            actual_length=actual,
            error_count=errs,
        )
    if command == CMD_UNLINK:
        (target,) = _UNLINK.unpack_from(data, _BASIC.size)
        return Header(command, seqnum, devid, direction, ep, unlink_seqnum=target)
    if command == RET_UNLINK:
        (status,) = _RET_UNLINK.unpack_from(data, _BASIC.size)
        return Header(command, seqnum, devid, direction, ep, status=status)
    raise ProtocolError(f"unknown URB command {command} (expected 1..4) in header seqnum {seqnum}")


def decode_iso_packets(data: bytes, count: int, buffer_length: int) -> tuple[IsoPacket, ...]:
    _need(data, count * ISO_DESCRIPTOR_SIZE, "ISO descriptors")
    packets = []
    for i in range(count):
        off, length, actual, status = _ISO.unpack_from(data, i * ISO_DESCRIPTOR_SIZE)
        if off + length > buffer_length:
            raise ProtocolError(
                f"ISO packet {i}: offset {off} + length {length} exceeds buffer {buffer_length}"
            )
        if actual > length:
            raise ProtocolError(f"ISO packet {i}: actual_length {actual} > length {length}")
        packets.append(IsoPacket(off, length, actual, status))
    return tuple(packets)


def decode_cmd_submit(data: bytes, iso: bool = False) -> CmdSubmit:
    """A complete CMD_SUBMIT PDU. `iso` says whether descriptors follow, which the
    header alone cannot tell (non-ISO number_of_packets may be -1 or 0)."""
    h = decode_header(data)
    if h.command != CMD_SUBMIT:
        raise ProtocolError(f"expected CMD_SUBMIT, got command {h.command}")
    n = h.transfer_buffer_length if h.direction == DIR_OUT else 0
    np_ = h.number_of_packets if iso and h.number_of_packets > 0 else 0
    total = HEADER_SIZE + n + np_ * ISO_DESCRIPTOR_SIZE
    _need(data, total, f"CMD_SUBMIT seqnum {h.seqnum} with payload")
    if len(data) != total:
        raise ProtocolError(f"CMD_SUBMIT seqnum {h.seqnum}: {len(data) - total} unexpected trailing bytes")
    return CmdSubmit(
        h.seqnum,
        h.devid,
        h.direction,
        h.ep,
        h.transfer_flags,
        h.transfer_buffer_length,
        h.start_frame,
        h.number_of_packets,
        h.interval,
        h.setup,
        bytes(data[HEADER_SIZE : HEADER_SIZE + n]),
        decode_iso_packets(bytes(data[HEADER_SIZE + n :]), np_, h.transfer_buffer_length),
    )


def decode_ret_submit(data: bytes, direction: int, requested_length: int, iso: bool = False) -> RetSubmit:
    """A complete RET_SUBMIT, judged against the request it answers (the header
    alone does not say whether data follows)."""
    h = decode_header(data)
    if h.command != RET_SUBMIT:
        raise ProtocolError(f"expected RET_SUBMIT, got command {h.command}")
    check_ret_submit(h, direction, requested_length)
    n = h.actual_length if direction == DIR_IN else 0
    np_ = h.number_of_packets if iso and h.number_of_packets > 0 else 0
    total = HEADER_SIZE + n + np_ * ISO_DESCRIPTOR_SIZE
    _need(data, total, f"RET_SUBMIT seqnum {h.seqnum} with payload")
    if len(data) != total:
        raise ProtocolError(f"RET_SUBMIT seqnum {h.seqnum}: {len(data) - total} unexpected trailing bytes")
    return RetSubmit(
        h.seqnum,
        h.status,
        h.actual_length,
        h.start_frame,
        h.number_of_packets,
        h.error_count,
        bytes(data[HEADER_SIZE : HEADER_SIZE + n]),
        decode_iso_packets(bytes(data[HEADER_SIZE + n :]), np_, requested_length),
        h.devid,
        h.direction,
        h.ep,
    )


def check_ret_submit(h: Header, direction: int, requested_length: int) -> None:
    # Linux vhci tears the connection down on exactly this (usbip_recv_xbuff)
    if h.actual_length > requested_length:
        raise ProtocolError(
            f"RET_SUBMIT seqnum {h.seqnum}: actual_length {h.actual_length} exceeds the "
            f"requested {requested_length} bytes"
        )


def decode_ret_unlink(data: bytes) -> RetUnlink:
    h = decode_header(data)
    if h.command != RET_UNLINK:
        raise ProtocolError(f"expected RET_UNLINK, got command {h.command}")
    if len(data) != HEADER_SIZE:
        raise ProtocolError(
            f"RET_UNLINK seqnum {h.seqnum}: {len(data) - HEADER_SIZE} unexpected trailing bytes"
        )
    return RetUnlink(h.seqnum, h.status)


def decode_cmd_unlink(data: bytes) -> CmdUnlink:
    h = decode_header(data)
    if h.command != CMD_UNLINK:
        raise ProtocolError(f"expected CMD_UNLINK, got command {h.command}")
    if len(data) != HEADER_SIZE:
        raise ProtocolError(
            f"CMD_UNLINK seqnum {h.seqnum}: {len(data) - HEADER_SIZE} unexpected trailing bytes"
        )
    return CmdUnlink(h.seqnum, h.devid, h.unlink_seqnum)


def setup_packet(bm_request_type: int, b_request: int, w_value: int, w_index: int, w_length: int) -> bytes:
    """USB setup packet; little-endian as on the USB wire, copied raw into the header."""
    for name, v, hi in (
        ("bmRequestType", bm_request_type, 0xFF),
        ("bRequest", b_request, 0xFF),
        ("wValue", w_value, 0xFFFF),
        ("wIndex", w_index, 0xFFFF),
        ("wLength", w_length, 0xFFFF),
    ):
        if not 0 <= v <= hi:
            raise ValueError(f"{name} {v} out of 0..{hi}")
    return struct.pack("<BBHHH", bm_request_type, b_request, w_value, w_index, w_length)
