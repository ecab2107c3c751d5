"""MQTT 3.1.1 wire format: fixed header framing and the packets the embedded broker handles.

Every decoder raises ``ProtocolError`` on malformed input; the broker answers
that by closing the offending connection only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14

# CONNACK return codes (3.1.1 §3.2.2.3)
ACCEPTED = 0
BAD_PROTOCOL_VERSION = 1
IDENTIFIER_REJECTED = 2
SERVER_UNAVAILABLE = 3


class ProtocolError(Exception):
    """The peer sent something MQTT 3.1.1 forbids."""


def encode_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_str(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("!H", len(raw)) + raw


class Reader:
    """Cursor over a packet's variable header and payload."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def u8(self) -> int:
        if self.pos + 1 > len(self.buf):
            raise ProtocolError("packet truncated")
        self.pos += 1
        return self.buf[self.pos - 1]

    def u16(self) -> int:
        if self.pos + 2 > len(self.buf):
            raise ProtocolError("packet truncated")
        (v,) = struct.unpack_from("!H", self.buf, self.pos)
        self.pos += 2
        return v

    def binary(self) -> bytes:
        n = self.u16()
        if self.pos + n > len(self.buf):
            raise ProtocolError("length-prefixed field runs past the packet")
        v = self.buf[self.pos : self.pos + n]
        self.pos += n
        return bytes(v)

    def string(self) -> str:
        raw = self.binary()
        try:
            s = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("string is not valid UTF-8") from exc
        if "\x00" in s:
            raise ProtocolError("string contains U+0000")
        return s

    def rest(self) -> bytes:
        v = self.buf[self.pos :]
        self.pos = len(self.buf)
        return bytes(v)


@dataclass(slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(slots=True)
class Connect:
    protocol_level: int
    client_id: str
    clean_session: bool
    keepalive: int
    will: Will | None
    username: str | None
    password: bytes | None


def decode_connect(body: bytes) -> Connect:
    r = Reader(body)
    name = r.string()
    level = r.u8()
    if (name, level) not in (("MQTT", 4), ("MQIsdp", 3), ("MQTT", 5)):
        raise ProtocolError(f"unknown protocol {name!r} level {level}")
    flags = r.u8()
    if flags & 0x01:
        raise ProtocolError("CONNECT reserved flag set")
    keepalive = r.u16()
    if level == 5:
        # Caller refuses MQTT 5 with return code 1; nothing else is parsed.
        return Connect(5, "", True, keepalive, None, None, None)
    client_id = r.string()
    will = None
    will_qos = (flags >> 3) & 0x03
    if flags & 0x04:
        if will_qos > 2:
            raise ProtocolError("will QoS 3")
        will = Will(r.string(), r.binary(), will_qos, bool(flags & 0x20))
    elif will_qos or flags & 0x20:
        raise ProtocolError("will QoS/retain set without will flag")
    username = r.string() if flags & 0x80 else None
    password = r.binary() if flags & 0x40 else None
    if r.remaining():
        raise ProtocolError("trailing bytes after CONNECT payload")
    return Connect(level, client_id, bool(flags & 0x02), keepalive, will, username, password)


def connack(session_present: bool, code: int) -> bytes:
    return bytes((CONNACK << 4, 2, 1 if session_present else 0, code))


def publish(topic: str, payload: bytes, qos: int, retain: bool, pid: int = 0, dup: bool = False) -> bytes:
    header = (PUBLISH << 4) | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    var = encode_str(topic)
    if qos:
        var += struct.pack("!H", pid)
    return bytes((header,)) + encode_length(len(var) + len(payload)) + var + payload


def decode_publish(flags: int, body: bytes) -> tuple[str, bytes, int, bool, int]:
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise ProtocolError("PUBLISH with QoS 3")
    r = Reader(body)
    topic = r.string()
    pid = 0
    if qos:
        pid = r.u16()
        if pid == 0:
            raise ProtocolError("PUBLISH packet identifier 0")
    return topic, r.rest(), qos, bool(flags & 0x01), pid


def ack(kind: int, pid: int) -> bytes:
    # PUBREL must carry flags 0b0010 (3.1.1 §3.6.1)
    return bytes(((kind << 4) | (0x02 if kind == PUBREL else 0), 2)) + struct.pack("!H", pid)


def decode_pid(body: bytes) -> int:
    if len(body) != 2:
        raise ProtocolError("acknowledgement must be exactly 2 bytes")
    return struct.unpack("!H", body)[0]


def decode_subscribe(body: bytes) -> tuple[int, list[tuple[str, int]]]:
    r = Reader(body)
    pid = r.u16()
    items = []
    while r.remaining():
        flt = r.string()
        opts = r.u8()
        if opts & 0xFC:
            raise ProtocolError("SUBSCRIBE reserved bits set")
        items.append((flt, opts & 0x03))
    if not items:
        raise ProtocolError("SUBSCRIBE without topic filters")
    return pid, items


def suback(pid: int, codes: list[int]) -> bytes:
    var = struct.pack("!H", pid) + bytes(codes)
    return bytes((SUBACK << 4,)) + encode_length(len(var)) + var


def decode_unsubscribe(body: bytes) -> tuple[int, list[str]]:
    r = Reader(body)
    pid = r.u16()
    filters = []
    while r.remaining():
        filters.append(r.string())
    if not filters:
        raise ProtocolError("UNSUBSCRIBE without topic filters")
    return pid, filters


PINGRESP_PACKET = bytes((PINGRESP << 4, 0))

# Fixed-header flags each packet type must carry (3.1.1 §2.2.2); PUBLISH is checked separately.
REQUIRED_FLAGS = {
    CONNECT: 0,
    PUBACK: 0,
    PUBREC: 0,
    PUBREL: 2,
    PUBCOMP: 0,
    SUBSCRIBE: 2,
    UNSUBSCRIBE: 2,
    PINGREQ: 0,
    DISCONNECT: 0,
}
