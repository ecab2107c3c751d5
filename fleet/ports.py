"""Contracts between the service core and its transport adapters.

The MQTT ingestor and the mDNS browser turn what they receive into
``InboundMessage`` batches and hand them to an ``IngestSink``; the lease
service sends dongle commands through a ``CommandPublisher``. The composition
root (``fleet.app``) wires concrete classes to these protocols, so the domain
and service layers never import paho or zeroconf.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

MessageKind = Literal["status", "state", "events", "telemetry", "cmd-result", "mdns"]


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One validated message from a dongle.

    ``payload`` has already passed its JSON Schema (MQTT) or been parsed from
    TXT records (mDNS: ``{"present": bool, "address": str | None, "port": int | None,
    "txt": {str: str}}``). ``received_at`` is a unix timestamp taken on arrival.
    """

    kind: MessageKind
    dongle_id: str
    payload: dict[str, Any]
    received_at: float
    source: Literal["mqtt", "mdns"] = "mqtt"
    topic: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class IngestSink(Protocol):
    def apply(self, messages: Sequence[InboundMessage]) -> None:
        """Persist a batch atomically. Raising means nothing of the batch was
        stored; the adapter then retries or drops it and counts that."""


class CommandPublisher(Protocol):
    def publish(self, dongle_id: str, name: str, payload: dict[str, Any]) -> None:
        """Send ``payload`` (already containing ``v``, ``request_id`` and
        ``issued_at``) to ``fleet/v1/<dongle_id>/cmd/<name>`` with QoS 1.
        Raises ``fleet.domain.errors.TransportError`` when it cannot be queued."""
