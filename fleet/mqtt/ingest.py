"""The service's MQTT client: ingests dongle messages and publishes commands.

Zero loss is the design goal. Messages are QoS 1 on a persistent session, and
a message is acknowledged (PUBACK) only after the batch containing it was
committed by the sink, or after it was rejected as invalid. If the process
dies before a commit, the broker still holds the message and redelivers it to
the next ingestor that connects with the same client id (or, with a shared
group, to another member). Consumers must therefore tolerate duplicates;
``meta["dup"]`` tells when the broker marked one.

Threads: paho's network thread only decodes packets and hands each read's
messages over as one list. A batcher thread collects up to
``batch_max`` messages (waiting at most ``batch_wait_s``, less once the stream
pauses), validates them and passes the batch to ``apply_workers`` applier
threads that call ``sink.apply``. Acks are released strictly in arrival order
(MQTT 3.1.1 §4.6), so a batch that is still retrying holds back the acks of
later ones instead of letting them be confirmed out of order.

Protocol: MQTT 5 when the broker speaks it, so the session can ask for a large
Receive Maximum (Mosquitto lets only 20 unacknowledged QoS 1 messages to a
3.1.1 client, which caps ingestion at 20 per commit); brokers that refuse MQTT 5
(the embedded one) get MQTT 3.1.1 with ``clean_session=False``.
"""

from __future__ import annotations

import json
import logging
import queue
import ssl
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleet import contracts
from fleet.domain.errors import TransportError
from fleet.ports import InboundMessage, IngestSink

from . import metrics
from .fastclient import FastClient
from .inbound import DONGLE_ID, INBOUND_KINDS, Classifier, Rejected
from .url import parse_broker_url

log = logging.getLogger(__name__)

Protocol = Literal["auto", "5", "3.1.1"]
UNSUPPORTED_PROTOCOL = 132  # v5 reason code paho reports for CONNACK "unacceptable protocol version"
SESSION_EXPIRY_S = 7 * 24 * 3600  # how long the broker keeps queuing for a stopped service (MQTT 5)


@dataclass(slots=True)
class _Received:
    topic: str
    payload: bytes
    mid: int
    qos: int
    dup: bool
    retain: bool
    received_at: float
    generation: int


@dataclass(slots=True, eq=False)
class _Batch:
    items: list[_Received]
    accepted: list[InboundMessage] = field(default_factory=list)
    done: bool = False


class _RateLimitedLog:
    """At most one warning per reason per interval; the rest are summed into the next one."""

    def __init__(self, interval_s: float = 5.0) -> None:
        self.interval_s = interval_s
        self.last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def warn(self, reason: str, topic: str, detail: str) -> None:
        now = time.monotonic()
        if now - self.last.get(reason, -1e9) >= self.interval_s:
            extra = self.suppressed.pop(reason, 0)
            more = f" (+{extra} more since last report)" if extra else ""
            log.warning("mqtt: dropped message on %s: %s: %s%s", topic, reason, detail, more)
            self.last[reason] = now
        else:
            self.suppressed[reason] = self.suppressed.get(reason, 0) + 1


class MqttIngestor:
    """Subscribes to every dongle's inbound topics and feeds an ``IngestSink``; also a ``CommandPublisher``.

    ``client_id`` must be stable across restarts: it names the broker session
    that queues messages while the service is down. Replicas either share one
    ``shared_group`` (each message goes to one of them) or use distinct ids.
    ``receive_maximum`` (MQTT 5) bounds how many unacknowledged messages the
    broker may push to us, hence the memory of the in-process queue. It is
    the protocol's maximum by default: Mosquitto queues what it may not send
    yet only up to ``max_queued_messages`` (1000) per client and drops QoS 1
    messages beyond, so a backlog is safer in flight to us (at most 65,535
    payloads in memory, redelivered if we die) than queued at the broker.
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        sink: IngestSink,
        *,
        shared_group: str | None = None,
        topic_root: str = "fleet/v1",
        max_payload: int = 65536,
        batch_max: int = 2000,
        batch_wait_s: float = 0.05,
        keepalive_s: int = 30,
        protocol: Protocol = "auto",
        receive_maximum: int = 65535,
        apply_workers: int = 1,
    ) -> None:
        self.broker = parse_broker_url(url)
        if not client_id or len(client_id.encode()) > 65535 or any(c in client_id for c in "+#/\x00"):
            raise ValueError(f"client id {client_id!r}: must be 1-65535 bytes without + # / or NUL")
        if shared_group is not None and (not shared_group or any(c in shared_group for c in "+#/")):
            raise ValueError(f"shared group {shared_group!r}: must be non-empty without + # or /")
        if protocol not in ("auto", "5", "3.1.1"):
            raise ValueError(f"protocol {protocol!r}: must be auto, 5 or 3.1.1")
        if not 1 <= apply_workers <= 16:
            raise ValueError(f"apply_workers {apply_workers}: must be 1-16")
        if batch_max < 1 or batch_wait_s < 0 or max_payload < 1 or not 1 <= receive_maximum <= 65535:
            raise ValueError("batch_max, max_payload and receive_maximum must be positive, batch_wait_s >= 0")
        self.client_id = client_id
        self.sink = sink
        self.shared_group = shared_group
        self.topic_root = topic_root.rstrip("/")
        self.batch_max = batch_max
        self.batch_wait_s = batch_wait_s
        self.keepalive_s = keepalive_s
        self.receive_maximum = receive_maximum
        self.classifier = Classifier(self.topic_root, max_payload)
        self.protocol: Protocol = protocol
        self.stats: dict[str, int] = {}  # per-instance totals (ingested:<kind>, rejected:<reason>)
        # Lists of received messages, one per socket read: the network thread hands over
        # a list with one lock round instead of one per message.
        self._inbox: deque[list[_Received]] = deque()
        self._inbox_size = 0
        self._inbox_cond = threading.Condition(threading.Lock())
        self._lock = threading.Lock()  # guards generation, connected, and acks against reconnects
        self._generation = 0
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._accepting = False
        self._stopping = threading.Event()
        self._fallback = threading.Event()
        self._client: FastClient | None = None
        self._worker: threading.Thread | None = None
        self._reject_log = _RateLimitedLog()
        # More than one applier overlaps database round trips; the sink must then
        # tolerate concurrent apply() calls (it is retried when they conflict).
        self.apply_workers = apply_workers
        self._apply_queue: queue.Queue[_Batch | None] = queue.Queue(maxsize=apply_workers)
        self._free_appliers = apply_workers  # read without a lock by the batcher: a hint only
        self._pending: deque[_Batch] = deque()  # batches in arrival order, acked from the left
        self._ack_lock = threading.Lock()
        self._stats_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def subscriptions(self) -> list[str]:
        prefix = f"$share/{self.shared_group}/" if self.shared_group else ""
        return [f"{prefix}{self.topic_root}/+/{kind}" for kind in INBOUND_KINDS]

    def start(self) -> MqttIngestor:
        """Connect in the background (retrying with backoff) and start ingesting."""
        if self._worker is not None:
            raise RuntimeError("ingestor already started")
        self._accepting = True
        self._client = self._make_client("5" if self.protocol == "auto" else self.protocol)
        self._worker = threading.Thread(target=self._run, name=f"mqtt-ingest-{self.client_id}", daemon=True)
        self._worker.start()
        return self

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def wait_subscribed(self, timeout: float) -> bool:
        """True once the broker acknowledged the subscriptions of the current connection."""
        return self._subscribed.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Commit and acknowledge what was received, then disconnect cleanly.

        Messages arriving during shutdown are not acknowledged; the broker
        keeps them for the next session.
        """
        if self._worker is None:
            return
        self._accepting = False
        self._stopping.set()
        self._worker.join(timeout)
        if self._worker.is_alive():
            log.error(
                "mqtt: ingest worker did not finish within %.1f s; unacknowledged messages "
                "will be redelivered",
                timeout,
            )
        client = self._client
        if client is not None:
            # paho 2.2 logs a spurious "Client is not connected" ERROR after a clean disconnect.
            client.disable_logger()
            client.disconnect()
            client.loop_stop()
        self._set_connected(False)
        self._worker = None

    # ------------------------------------------------------------------ paho client

    def _make_client(self, protocol: str) -> FastClient:
        b = self.broker
        if protocol == "5":
            client = FastClient(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=mqtt.MQTTv5,
                manual_ack=True,
            )
        else:
            client = FastClient(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=mqtt.MQTTv311,
                clean_session=False,
                manual_ack=True,
            )
        client.enable_logger(logging.getLogger("fleet.mqtt.paho"))
        if b.username is not None:
            client.username_pw_set(b.username, b.password)
        if b.tls:
            client.tls_set(ca_certs=b.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_queued_messages_set(10_000)  # outbound commands while reconnecting
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish_batch = self._on_publish_batch
        client.on_subscribe = self._on_subscribe
        self._active_protocol = protocol
        props = None
        if protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            props.ReceiveMaximum = self.receive_maximum
            client.connect_async(b.host, b.port, self.keepalive_s, clean_start=False, properties=props)
        else:
            client.connect_async(b.host, b.port, self.keepalive_s)
        client.loop_start()
        return client

    def _set_connected(self, up: bool) -> None:
        with self._lock:
            self._generation += 1
            if up:
                self._connected.set()
            else:
                self._connected.clear()
                self._subscribed.clear()
        metrics.CONNECTED.set(1 if up else 0)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            if reason_code.value == UNSUPPORTED_PROTOCOL and self.protocol == "auto":
                client.disconnect()  # ends paho's loop now instead of after a reconnect delay
                self._fallback.set()  # the worker swaps to a 3.1.1 client
                return
            log.error(
                "mqtt: broker %s refused connection as %s: %s", self.broker, self.client_id, reason_code
            )
            return
        self._set_connected(True)
        log.info(
            "mqtt: connected to %s as %s (MQTT %s, session present: %s)",
            self.broker,
            self.client_id,
            self._active_protocol,
            flags.session_present,
        )
        if flags.session_present:
            # Not subscribing again: the broker would resend every retained status/state, a
            # flood that can overflow its queue for us and drop the messages it kept while
            # we were away.
            self._subscribed.set()
            return
        client.subscribe([(t, 1) for t in self.subscriptions()])

    def _on_connect_fail(self, client, userdata) -> None:
        log.warning("mqtt: cannot reach broker %s; retrying in the background", self.broker)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected.is_set()
        self._set_connected(False)
        if was and not self._stopping.is_set():
            log.warning("mqtt: lost connection to %s (%s); reconnecting", self.broker, reason_code)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            log.error(
                "mqtt: broker %s refused subscriptions %s: %s", self.broker, self.subscriptions(), failed
            )
        else:
            self._subscribed.set()

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        """Messages paho decoded itself (QoS 2, with properties); the rest come in batches."""
        if not self._accepting:
            return  # not acknowledged: the broker redelivers it to the next session
        self._hand_over(
            [
                _Received(
                    msg.topic,
                    msg.payload,
                    msg.mid,
                    msg.qos,
                    bool(msg.dup),
                    bool(msg.retain),
                    time.time(),
                    self._generation,
                )
            ]
        )

    def _on_publish_batch(self, published: list) -> None:
        if not self._accepting:
            return
        now, gen = time.time(), self._generation
        self._hand_over(
            [_Received(t, p, mid, qos, dup, ret, now, gen) for t, p, mid, qos, dup, ret in published]
        )

    def _hand_over(self, items: list[_Received]) -> None:
        with self._inbox_cond:
            self._inbox.append(items)
            self._inbox_size += len(items)
            self._inbox_cond.notify()

    def _take(self, limit: int, timeout: float) -> list[_Received]:
        """Up to ``limit`` received messages, waiting at most ``timeout`` for the first."""
        with self._inbox_cond:
            if not self._inbox and (timeout <= 0 or not self._inbox_cond.wait(timeout)):
                return []
            out: list[_Received] = []
            while self._inbox and len(out) < limit:
                chunk = self._inbox.popleft()
                room = limit - len(out)
                if len(chunk) > room:
                    self._inbox.appendleft(chunk[room:])
                    chunk = chunk[:room]
                out += chunk
            self._inbox_size -= len(out)
            return out

    def queued(self) -> int:
        """Messages received and not yet taken into a batch."""
        return self._inbox_size

    # ------------------------------------------------------------------ worker

    def _next_batch(self) -> list[_Received]:
        """Collect the next batch.

        While an applier is free, a pause in the stream (or ``batch_wait_s``)
        ends the batch: waiting longer would only add latency, and the broker
        may hold further messages until these are acknowledged. While every
        applier is busy the batch keeps growing up to ``batch_max``, since it
        could not start anyway; fewer, larger commits is what lets the sink
        keep up under load.
        """
        batch = self._take(self.batch_max, 0.2)
        if not batch:
            return batch
        deadline = time.monotonic() + self.batch_wait_s
        idle_gap = min(self.batch_wait_s, 0.002)
        while len(batch) < self.batch_max and not self._stopping.is_set():
            more = self._take(self.batch_max - len(batch), 0)
            if more:
                batch += more
                continue
            applier_free = self._free_appliers > 0
            remaining = deadline - time.monotonic()
            if applier_free and remaining <= 0:
                break
            more = self._take(
                self.batch_max - len(batch), min(remaining, idle_gap) if applier_free else 0.005
            )
            if more:
                batch += more
            elif applier_free:
                break
        return batch

    def _run(self) -> None:
        """Batcher: collect, validate, count rejects, hand batches to the appliers in order."""
        appliers = [
            threading.Thread(target=self._apply_loop, name=f"mqtt-apply-{i}", daemon=True)
            for i in range(self.apply_workers)
        ]
        for t in appliers:
            t.start()
        try:
            while True:
                if self._fallback.is_set():
                    self._fall_back_to_311()
                items = self._next_batch()
                if not items:
                    if self._stopping.is_set():
                        return
                    continue
                metrics.QUEUE_DEPTH.set(self._inbox_size)
                batch = self._classify(items)
                with self._ack_lock:
                    self._pending.append(batch)
                if batch.accepted:
                    self._apply_queue.put(batch)  # bounded: backpressure when the sink is slow
                else:
                    batch.done = True
                    self._release_acks()
        finally:
            for _ in appliers:
                self._apply_queue.put(None)
            for t in appliers:
                t.join()

    def _classify(self, items: list[_Received]) -> _Batch:
        batch = _Batch(items)
        for item in items:
            meta = {"qos": item.qos, "dup": item.dup, "retain": item.retain}
            result = self.classifier.classify(item.topic, item.payload, item.received_at, meta)
            if isinstance(result, Rejected):
                self._count(f"rejected:{result.reason}")
                metrics.REJECTED.labels(result.reason).inc()
                if result.reason == "empty":
                    log.debug("mqtt: ignoring empty payload on %s", item.topic)
                else:
                    self._reject_log.warn(result.reason, item.topic, result.detail)
            else:
                batch.accepted.append(result)
        return batch

    def _fall_back_to_311(self) -> None:
        self._fallback.clear()
        log.info("mqtt: broker %s does not speak MQTT 5; using MQTT 3.1.1", self.broker)
        old = self._client
        old.disable_logger()
        old.disconnect()
        old.loop_stop()
        self.protocol = "3.1.1"
        self._client = self._make_client("3.1.1")

    def _apply_loop(self) -> None:
        while True:
            batch = self._apply_queue.get()
            if batch is None:
                return
            with self._stats_lock:
                self._free_appliers -= 1
            try:
                self._apply_batch(batch)
            finally:
                with self._stats_lock:
                    self._free_appliers += 1

    def _apply_batch(self, batch: _Batch) -> None:
        if not self._apply_with_retry(batch.accepted):
            # Stopping mid-retry: this batch and every later one stay unacknowledged
            # (acks are released strictly in order) and the broker redelivers them.
            return
        kinds: dict[str, int] = {}
        for msg in batch.accepted:
            kinds[msg.kind] = kinds.get(msg.kind, 0) + 1
        for kind, n in kinds.items():
            self._count(f"ingested:{kind}", n)
            metrics.INGESTED.labels(kind).inc(n)
        batch.done = True
        self._release_acks()

    def _apply_with_retry(self, messages: Sequence[InboundMessage]) -> bool:
        delay = 0.1
        while True:
            try:
                self.sink.apply(messages)
                return True
            except Exception:
                metrics.SINK_FAILURES.inc()
                log.exception(
                    "mqtt: sink failed to store a batch of %d messages; retrying in %.1f s "
                    "(not acknowledged)",
                    len(messages),
                    delay,
                )
            if self._stopping.wait(delay):
                return False
            delay = min(delay * 2, 5.0)

    def _release_acks(self) -> None:
        """PUBACK every leading finished batch: MQTT wants acks in arrival order (3.1.1 §4.6)."""
        with self._ack_lock:
            while self._pending and self._pending[0].done:
                batch = self._pending.popleft()
                with self._lock:
                    client = self._client
                    if client is not None:
                        # A mid belongs to one connection; after a reconnect the broker redelivers
                        # on its own, and acking the old mid could confirm an unrelated message.
                        # (QoS 2 is never granted: we subscribe with QoS 1.)
                        client.ack_many(
                            item.mid
                            for item in batch.items
                            if item.qos == 1 and item.generation == self._generation
                        )

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] = self.stats.get(key, 0) + n

    # ------------------------------------------------------------------ CommandPublisher

    def publish(self, dongle_id: str, name: str, payload: dict[str, Any]) -> None:
        if not isinstance(dongle_id, str) or not DONGLE_ID.fullmatch(dongle_id):
            raise contracts.ContractError(f"cmd-{name}", f"dongle id {dongle_id!r} is not esp-<12 hex>")
        contract = f"cmd-{name}"
        if contract not in contracts.NAMES:
            raise contracts.ContractError(contract, f"unknown command {name!r}")
        contracts.validate(contract, payload)
        client = self._client
        if client is None or not self._connected.is_set():
            raise TransportError(
                f"MQTT broker {self.broker} not connected; command {name} to {dongle_id} not sent"
            )
        info = client.publish(
            f"{self.topic_root}/{dongle_id}/cmd/{name}",
            json.dumps(payload, separators=(",", ":")),
            qos=1,
            retain=False,
        )
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise TransportError(f"command {name} to {dongle_id} not queued: {mqtt.error_string(info.rc)}")
        metrics.COMMANDS.labels(name).inc()
