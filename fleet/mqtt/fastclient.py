"""A paho ``Client`` with cheaper per-message I/O for high-rate ingestion.

Measured on the 2-core reference machine, stock paho spends most of the
ingest CPU in system calls: it reads every packet's fixed header one byte per
``recv``, wakes ``select`` once per packet, and sends each PUBACK as its own
4-byte write after poking a wake-up socket. This subclass

* serves ``_sock_recv`` from a 256 KiB userland buffer (one ``recv`` for
  hundreds of packets) and keeps ``loop_read`` going while the buffer holds
  data, since ``select`` cannot see bytes that already left the kernel;
* offers ``ack_many`` which queues the PUBACKs of a whole batch as a single
  write;
* when ``on_publish_batch`` is set, decodes QoS 0/1 PUBLISH packets without
  properties itself (paho builds an ``MQTTMessage``, a ``Properties`` object
  and walks its topic matcher for each one, about half of the ingest CPU) and
  hands everything one read produced to the callback as one list of
  ``(topic, payload, mid, qos, dup, retain)``. QoS 2, properties (topic
  aliases, user properties) and topics that are not UTF-8 take paho's path
  and arrive through ``on_message`` as before.

It overrides paho internals (``_sock_recv``, ``loop_read``, ``reconnect``,
``_packet_queue``), checked at import time: if a paho release renames them,
``FAST_IO`` is False and the client behaves exactly like stock paho.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

import paho.mqtt.client as mqtt

_PUBACK = struct.Struct("!BBH")
_PUBACK_TYPE = 0x40

FAST_IO = all(
    callable(getattr(mqtt.Client, name, None))
    for name in ("_sock_recv", "loop_read", "reconnect", "_packet_queue", "_handle_publish")
)
Published = tuple[str, bytes, int, int, bool, bool]  # topic, payload, mid, qos, dup, retain


class FastClient(mqtt.Client):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        # Called from the network thread with a non-empty list[Published] after each read.
        self.on_publish_batch: Callable[[list[Published]], None] | None = None
        self._inbox: list[Published] = []

    if FAST_IO:

        def _sock_recv(self, bufsize: int) -> bytes:
            if self._rpos >= len(self._rbuf):
                data = super()._sock_recv(262144)  # raises BlockingIOError when nothing is there
                if not data:
                    return data  # EOF: paho handles the closed connection
                self._rbuf, self._rpos = data, 0
            out = self._rbuf[self._rpos : self._rpos + bufsize]
            self._rpos += len(out)
            return out

        def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
            try:
                rc = super().loop_read(max_packets)
                while rc == mqtt.MQTT_ERR_SUCCESS and self._rpos < len(self._rbuf):
                    rc = super().loop_read(max_packets)
            finally:
                # Handed over even when the read ended in an error: these packets arrived intact.
                if self._inbox:
                    inbox, self._inbox = self._inbox, []
                    self.on_publish_batch(inbox)
            return rc

        def _handle_publish(self) -> mqtt.MQTTErrorCode:
            if self.on_publish_batch is None:
                return super()._handle_publish()
            command = self._in_packet["command"]
            packet = self._in_packet["packet"]
            qos = (command & 0x06) >> 1
            tlen = int.from_bytes(packet[0:2], "big")
            pos = 2 + tlen
            if qos == 2 or (qos == 1 and not self._manual_ack) or len(packet) < pos + (2 if qos else 0):
                # QoS 2, automatic acks and short packets: paho's handling and its errors
                return super()._handle_publish()
            try:
                topic = packet[2:pos].decode()
            except UnicodeDecodeError:
                return super()._handle_publish()
            mid = 0
            if qos:
                mid = int.from_bytes(packet[pos : pos + 2], "big")
                pos += 2
            if self._protocol == mqtt.MQTTv5:
                # Property length is a variable byte integer; only the common "no properties"
                # (a single 0 byte) is handled here.
                if pos >= len(packet) or packet[pos] != 0:
                    return super()._handle_publish()
                pos += 1
            payload = bytes(memoryview(packet)[pos:])
            self._inbox.append((topic, payload, mid, qos, bool(command & 0x08), bool(command & 0x01)))
            return mqtt.MQTT_ERR_SUCCESS

        def reconnect(self) -> mqtt.MQTTErrorCode:
            self._rbuf, self._rpos = b"", 0  # bytes of the old connection must not leak into the new one
            return super().reconnect()

    def ack_many(self, mids: Iterable[int]) -> None:
        """PUBACK the QoS 1 messages ``mids`` (in this order) with one queued write."""
        mids = list(mids)
        if not mids:
            return
        if not FAST_IO:
            for mid in mids:
                self.ack(mid, 1)
            return
        blob = b"".join(_PUBACK.pack(_PUBACK_TYPE, 2, mid) for mid in mids)
        self._packet_queue(_PUBACK_TYPE, blob, 0, 0)
