"""Turn one received MQTT message into an ``InboundMessage`` or a reject reason.

Kept free of paho so it can be tested and benchmarked on its own. The checks
run cheapest first: topic, size, decoding, schema, then the topic/payload
identity check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from fleet import contracts
from fleet.ports import InboundMessage

DONGLE_ID = re.compile(r"esp-[0-9a-f]{12}")
INBOUND_KINDS = ("status", "state", "events", "telemetry", "cmd-result")


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str  # topic | oversize | empty | malformed | schema | mismatch
    detail: str


class Classifier:
    def __init__(self, topic_root: str = "fleet/v1", max_payload: int = 65536) -> None:
        self.prefix = topic_root.rstrip("/") + "/"
        self.max_payload = max_payload

    def parse_topic(self, topic: str) -> tuple[str, str] | None:
        """``<root>/<dongle-id>/<kind>`` -> (dongle_id, kind), else None."""
        if not topic.startswith(self.prefix):
            return None
        parts = topic[len(self.prefix) :].split("/")
        if len(parts) != 2 or parts[1] not in INBOUND_KINDS or not DONGLE_ID.fullmatch(parts[0]):
            return None
        return parts[0], parts[1]

    def classify(
        self, topic: str, payload: bytes, received_at: float, meta: dict | None = None
    ) -> InboundMessage | Rejected:
        parsed = self.parse_topic(topic)
        if parsed is None:
            return Rejected("topic", "not <root>/<dongle-id>/{status,state,events,telemetry,cmd-result}")
        dongle_id, kind = parsed
        if len(payload) > self.max_payload:
            return Rejected("oversize", f"{len(payload)} bytes > limit {self.max_payload}")
        if not payload:
            return Rejected("empty", "empty payload (retained message cleared)")
        try:
            # orjson is strict where it matters here: invalid UTF-8, NaN/Infinity, nesting
            # deeper than 1024 and integers beyond 64 bits are all errors.
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            return Rejected("malformed", f"not UTF-8 JSON: {exc}")
        try:
            contracts.validate(kind, obj)
        except contracts.ContractError as exc:
            return Rejected("schema", exc.message)
        claimed = obj.get("dongle_id")
        if claimed is not None and claimed != dongle_id:
            return Rejected("mismatch", f"payload dongle_id {claimed} on the topic of {dongle_id}")
        return InboundMessage(
            kind=kind,
            dongle_id=dongle_id,
            payload=obj,
            received_at=received_at,
            source="mqtt",
            topic=topic,
            meta=meta or {},
        )
