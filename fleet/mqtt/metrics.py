"""Prometheus series of the MQTT adapter (default registry, created once per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

INGESTED = Counter("fleet_mqtt_messages_ingested", "MQTT messages handed to the sink and committed", ["kind"])
REJECTED = Counter("fleet_mqtt_messages_rejected", "MQTT messages dropped as invalid, by reason", ["reason"])
QUEUE_DEPTH = Gauge("fleet_mqtt_ingest_queue_depth", "MQTT messages received and waiting to be batched")
CONNECTED = Gauge("fleet_mqtt_connected", "1 while the service's MQTT client is connected")
SINK_FAILURES = Counter(
    "fleet_mqtt_sink_failures", "Batches whose sink.apply raised (retried, never acknowledged)"
)
COMMANDS = Counter("fleet_mqtt_commands_published", "Commands queued to dongles", ["name"])
