"""A paho ``Client`` with cheaper per-message I/O for high-rate ingestion.

Measured on the 2-core reference machine, stock paho spends most of the
ingest CPU in system calls: it reads every packet's fixed header one byte per
``recv``, wakes ``select`` once per packet, and sends each PUBACK as its own
4-byte write after poking a wake-up socket. This subclass

* serves ``_sock_recv`` from a 256 KiB userland buffer (one ``recv`` for
  hundreds of packets) and keeps ``loop_read`` going while the buffer holds
  data, since ``select`` cannot see bytes that already left the kernel;
* offers ``ack_many`` which queues the PUBACKs of a whole batch as a single
  write.

It overrides paho internals (``_sock_recv``, ``loop_read``, ``reconnect``,
``_packet_queue``), checked at import time: if a paho release renames them,
``FAST_IO`` is False and the client behaves exactly like stock paho.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import paho.mqtt.client as mqtt

_PUBACK = struct.Struct("!BBH")
_PUBACK_TYPE = 0x40

FAST_IO = all(
    callable(getattr(mqtt.Client, name, None))
    for name in ("_sock_recv", "loop_read", "reconnect", "_packet_queue")
)


class FastClient(mqtt.Client):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0

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
            rc = super().loop_read(max_packets)
            while rc == mqtt.MQTT_ERR_SUCCESS and self._rpos < len(self._rbuf):
                rc = super().loop_read(max_packets)
            return rc

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
