"""Test helpers shared by the service tests: message builders and a recording publisher."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from fleet.domain.errors import TransportError
from fleet.ports import InboundMessage
from fleet.services.container import Services


@dataclass
class Db:
    backend: str
    url: str
    engine: Engine
    sf: sessionmaker[Session]


@dataclass
class RecordingPublisher:
    """Stands in for the MQTT ingestor as ``CommandPublisher``: records what
    would go on the wire and can be told to fail like a disconnected client."""

    sent: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    fail: bool = False

    def publish(self, dongle_id: str, name: str, payload: dict[str, Any]) -> None:
        if self.fail:
            raise TransportError("not connected to the broker")
        self.sent.append((dongle_id, name, payload))

    def names(self) -> list[str]:
        return [n for _, n, _ in self.sent]


# -- message builders -------------------------------------------------------------------

DONGLE_A = "esp-a1b2c3d4e5f6"
DONGLE_B = "esp-0a0b0c0d0e0f"


def device(
    busid: str,
    vid: int = 0x1366,
    pid: int = 0x0101,
    serial: str | None = "000683012345",
    product: str = "J-Link",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "busid": busid,
        "vid": vid,
        "pid": pid,
        "bcd_device": 0x100,
        "serial": serial,
        "manufacturer": "SEGGER",
        "product": product,
        "class": 0,
        "subclass": 0,
        "protocol": 0,
        "speed": "high",
        "interfaces": [{"class": 255, "subclass": 0, "protocol": 0}],
        "attached_to": None,
        "granted_to": [],
        **extra,
    }


def msg(
    kind: str, dongle_id: str, payload: dict[str, Any], at: float | None = None, source: str = "mqtt"
) -> InboundMessage:
    body = {"v": 1, "dongle_id": dongle_id, **payload}
    return InboundMessage(
        kind=kind,
        dongle_id=dongle_id,
        payload=body,  # type: ignore[arg-type]
        received_at=time.time() if at is None else at,
        source=source,
    )  # type: ignore[arg-type]


_seq = iter(range(1, 10**9))


def state(
    dongle_id: str,
    devices: list[dict[str, Any]],
    *,
    seq: int | None = None,
    uptime: int = 100,
    at: float | None = None,
) -> InboundMessage:
    return msg(
        "state",
        dongle_id,
        {
            "seq": next(_seq) if seq is None else seq,
            "uptime_s": uptime,
            "firmware": {"version": "0.3.1", "idf": "v5.5.5"},
            "chip": {"model": "esp32s3", "revision": 2},
            "boot": {"slot": "ota_0", "ota_state": "valid"},
            "net": {"ip": "127.0.0.5", "mac": "a1:b2:c3:d4:e5:f6", "rssi": -61},
            "heap": {"free": 182000, "min_free": 150000, "dma_free": 120000},
            "buffers": {"budget": 196608, "used": 0, "peak": 131072},
            "usbip": {"port": 3240, "enforce_grants": True},
            "devices": devices,
        },
        at,
    )


def status(dongle_id: str, value: str, reason: str | None = None, at: float | None = None) -> InboundMessage:
    p: dict[str, Any] = {"status": value}
    if reason:
        p["reason"] = reason
    return msg("status", dongle_id, p, at)


def bring_online(svc: Services, dongle_id: str, devices: list[dict[str, Any]]) -> None:
    svc.ingest.apply([status(dongle_id, "online"), state(dongle_id, devices)])


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve an ASGI app with a real uvicorn on a free loopback port, in a thread; yields its URL."""
    import uvicorn  # noqa: PLC0415

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    t = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        srv.should_exit = True
        t.join(10)
        sock.close()
