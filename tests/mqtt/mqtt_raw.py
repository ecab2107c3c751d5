"""A few hand-built MQTT 3.1.1 packets, for what a well-behaved library will not do:
vanish without DISCONNECT, go silent past the keepalive, send garbage."""

from __future__ import annotations

import socket
import struct

from fleet.mqtt.packets import encode_length, encode_str


def connect_packet(
    client_id: str,
    keepalive: int = 60,
    will: tuple[str, bytes, int, bool] | None = None,
    clean: bool = True,
    level: int = 4,
) -> bytes:
    flags = 0x02 if clean else 0
    payload = encode_str(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += encode_str(topic) + struct.pack("!H", len(message)) + message
    var = encode_str("MQTT") + bytes((level, flags)) + struct.pack("!H", keepalive)
    body = var + payload
    return bytes((0x10,)) + encode_length(len(body)) + body


def raw_connect(host: str, port: int, client_id: str, **kw) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=5)
    sock.sendall(connect_packet(client_id, **kw))
    connack = recv_exactly(sock, 4)
    assert connack[0] == 0x20 and connack[3] == 0, f"CONNACK refused: {connack!r}"
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def abort(sock: socket.socket) -> None:
    """Close with RST and no DISCONNECT, like a dongle losing power."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
