"""In-process MQTT 3.1.1 broker for the single-machine shape of fleet.

``fleet serve`` without ``FLEET_MQTT_URL`` owns one of these; dongles and the
service's own ingestor connect to it exactly as they would to Mosquitto. It
runs its own asyncio loop in a daemon thread so the synchronous service can
start and stop it like any other component.

Supported: QoS 0/1 (QoS 2 publishes are accepted and delivered at QoS 1 at
most), retained messages, Last Will on unclean disconnect and keepalive
timeout, persistent sessions (subscriptions plus queued and unacknowledged
QoS 1 messages survive reconnects while the broker runs), ``+``/``#``
wildcards and ``$share/<group>/<filter>`` shared subscriptions. MQTT 5 clients
are refused with CONNACK 0x01 so they can fall back to 3.1.1. There is no
authentication: the broker listens on loopback unless told otherwise.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import deque
from dataclasses import dataclass, field

from . import packets as P
from .topics import matches, split_shared, valid_topic_filter, valid_topic_name

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool = False


@dataclass(eq=False)
class Session:
    client_id: str
    persistent: bool
    subscriptions: dict[str, int] = field(default_factory=dict)  # filter (possibly $share/...) -> qos
    queue: deque[Message] = field(default_factory=deque)  # QoS 1 waiting for an inflight slot
    inflight: dict[int, Message] = field(default_factory=dict)  # sent, awaiting PUBACK
    conn: Connection | None = None
    _pids: itertools.cycle = field(default_factory=lambda: itertools.cycle(range(1, 65536)))

    def next_pid(self) -> int:
        while True:
            pid = next(self._pids)
            if pid not in self.inflight:
                return pid


class Connection:
    """One client socket: reads packets, owns keepalive, publishes the will on unclean loss."""

    def __init__(self, broker: EmbeddedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.broker = broker
        self.reader = reader
        self.writer = writer
        self.session: Session | None = None
        self.will: P.Will | None = None
        self.keepalive = 0
        self.closed = False
        self.qos2_ids: set[int] = set()
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.writer.write(data)

    def write_backlog(self) -> int:
        transport = self.writer.transport
        return transport.get_write_buffer_size() if transport else 0

    async def read_packet(self) -> tuple[int, int, bytes]:
        first = (await self.reader.readexactly(1))[0]
        length = 0
        for shift in range(0, 28, 7):
            byte = (await self.reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
        else:
            raise P.ProtocolError("remaining length longer than 4 bytes")
        if length > self.broker.max_packet_size:
            raise P.ProtocolError(f"packet of {length} bytes exceeds limit {self.broker.max_packet_size}")
        body = await self.reader.readexactly(length) if length else b""
        return first >> 4, first & 0x0F, body

    async def run(self) -> None:
        broker = self.broker
        clean_exit = False
        try:
            async with asyncio.timeout(broker.connect_timeout_s):
                kind, flags, body = await self.read_packet()
            if kind != P.CONNECT or flags:
                raise P.ProtocolError("first packet must be CONNECT")
            if not await self.handle_connect(P.decode_connect(body)):
                clean_exit = True
                return
            while True:
                timeout = self.keepalive * 1.5 if self.keepalive else None
                try:
                    async with asyncio.timeout(timeout):
                        kind, flags, body = await self.read_packet()
                except TimeoutError:
                    log.info("mqtt broker: %s (%s) missed its keepalive", self.client_id, self.peer)
                    return
                if kind == P.DISCONNECT:
                    clean_exit = True
                    return
                self.dispatch(kind, flags, body)
                if self.write_backlog() > broker.max_write_backlog:
                    await self.writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        except P.ProtocolError as exc:
            broker.protocol_errors += 1
            log.warning("mqtt broker: closing %s (%s): %s", self.client_id, self.peer, exc)
        finally:
            self.close(publish_will=not clean_exit)

    @property
    def client_id(self) -> str:
        return self.session.client_id if self.session else "?"

    async def handle_connect(self, c: P.Connect) -> bool:
        broker = self.broker
        if c.protocol_level == 5:
            self.send(P.connack(False, P.BAD_PROTOCOL_VERSION))
            return False
        if len(broker.connections) > broker.max_connections:
            self.send(P.connack(False, P.SERVER_UNAVAILABLE))
            log.warning("mqtt broker: refusing %s, %d connections", self.peer, broker.max_connections)
            return False
        client_id = c.client_id
        if not client_id:
            if not c.clean_session:
                self.send(P.connack(False, P.IDENTIFIER_REJECTED))
                return False
            client_id = f"auto-{next(broker.auto_ids)}"
        if c.will is not None and not valid_topic_name(c.will.topic):
            raise P.ProtocolError(f"invalid will topic {c.will.topic!r}")
        self.will = c.will
        self.keepalive = c.keepalive
        self.session, present = broker.attach(client_id, c.clean_session, self)
        self.send(P.connack(present, P.ACCEPTED))
        if present:
            # Unacknowledged deliveries go out again first, marked DUP (3.1.1 §4.4).
            for pid, msg in self.session.inflight.items():
                self.send(P.publish(msg.topic, msg.payload, msg.qos, False, pid, dup=True))
        broker.pump(self.session)
        return True

    def dispatch(self, kind: int, flags: int, body: bytes) -> None:
        broker = self.broker
        if kind != P.PUBLISH and P.REQUIRED_FLAGS.get(kind, 0) != flags:
            raise P.ProtocolError(f"packet type {kind} with flags {flags:#x}")
        if kind == P.PUBLISH:
            topic, payload, qos, retain, pid = P.decode_publish(flags, body)
            if not valid_topic_name(topic):
                raise P.ProtocolError(f"invalid topic name {topic!r}")
            if qos == 2:
                self.send(P.ack(P.PUBREC, pid))
                if pid in self.qos2_ids:
                    return  # duplicate of a QoS 2 message already routed
                self.qos2_ids.add(pid)
            broker.route(Message(topic, payload, min(qos, 1), retain))
            if qos == 1:
                self.send(P.ack(P.PUBACK, pid))
        elif kind == P.PUBACK:
            pid = P.decode_pid(body)
            if self.session.inflight.pop(pid, None) is not None:
                broker.pump(self.session)
        elif kind == P.PUBREL:
            pid = P.decode_pid(body)
            self.qos2_ids.discard(pid)
            self.send(P.ack(P.PUBCOMP, pid))
        elif kind in (P.PUBREC, P.PUBCOMP):
            P.decode_pid(body)  # we never send QoS 2, tolerate stray acks
        elif kind == P.SUBSCRIBE:
            pid, items = P.decode_subscribe(body)
            self.send(P.suback(pid, [broker.subscribe(self.session, flt, qos) for flt, qos in items]))
        elif kind == P.UNSUBSCRIBE:
            pid, filters = P.decode_unsubscribe(body)
            for flt in filters:
                broker.unsubscribe(self.session, flt)
            self.send(P.ack(P.UNSUBACK, pid))
        elif kind == P.PINGREQ:
            self.send(P.PINGRESP_PACKET)
        else:
            raise P.ProtocolError(f"unexpected packet type {kind}")

    def close(self, publish_will: bool) -> None:
        if self.closed:
            return
        self.closed = True
        broker = self.broker
        try:
            self.writer.close()
        except RuntimeError:
            pass  # loop already shutting down
        broker.connections.discard(self)
        if self.session is not None:
            broker.detach(self.session, self)
            if publish_will and self.will is not None:
                log.info("mqtt broker: %s lost without DISCONNECT, publishing its will", self.client_id)
                w = self.will
                broker.route(Message(w.topic, w.payload, min(w.qos, 1), w.retain))


class EmbeddedBroker:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        max_connections: int = 1024,
        max_packet_size: int = 1 << 20,
        max_queued: int = 100_000,
        max_inflight: int = 1000,
        max_write_backlog: int = 4 << 20,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.max_packet_size = max_packet_size
        self.max_queued = max_queued
        self.max_inflight = max_inflight
        self.max_write_backlog = max_write_backlog
        self.connect_timeout_s = connect_timeout_s
        self.sessions: dict[str, Session] = {}
        self.retained: dict[str, Message] = {}
        self.connections: set[Connection] = set()
        self.shared_rr: dict[tuple[str, str], int] = {}
        self.auto_ids = itertools.count(1)
        self.protocol_errors = 0
        self.dropped = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    # ----- lifecycle (called from the owning thread) -----

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        """Listen and return; raises OSError when the address is unusable."""
        if self._thread is not None:
            raise RuntimeError("broker already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._accept, self.host, self.port, limit=1 << 16)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # noqa: BLE001 - reported to start()'s caller
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name="mqtt-broker", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("embedded MQTT broker did not start")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        log.info("embedded MQTT broker listening on %s:%d", self.host, self.port)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None or self._loop is None:
            return

        async def shutdown() -> None:
            self._server.close()
            for conn in list(self.connections):
                conn.close(publish_will=False)
            await self._server.wait_closed()
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(self, reader, writer)
        self.connections.add(conn)
        await conn.run()

    # ----- sessions and routing (run on the broker loop only) -----

    def attach(self, client_id: str, clean: bool, conn: Connection) -> tuple[Session, bool]:
        old = self.sessions.get(client_id)
        if old is not None and old.conn is not None:
            # Takeover (3.1.1 §3.1.4): the newer connection wins, the old one goes quietly.
            old.conn.close(publish_will=False)
            old = self.sessions.get(client_id)
        if clean or old is None:
            session = Session(client_id, persistent=not clean)
            self.sessions[client_id] = session
            present = False
        else:
            session, present = old, True
        session.conn = conn
        return session, present

    def detach(self, session: Session, conn: Connection) -> None:
        if session.conn is conn:
            session.conn = None
            if not session.persistent:
                self.sessions.pop(session.client_id, None)

    def subscribe(self, session: Session, flt: str, qos: int) -> int:
        try:
            group, inner = split_shared(flt)
        except ValueError:
            return 0x80
        if qos > 2 or not valid_topic_filter(inner):
            return 0x80
        granted = min(qos, 1)
        session.subscriptions[flt] = granted
        if group is None:
            for msg in list(self.retained.values()):
                if matches(inner, msg.topic):
                    self.deliver(session, Message(msg.topic, msg.payload, min(granted, msg.qos), True))
        return granted

    def unsubscribe(self, session: Session, flt: str) -> None:
        session.subscriptions.pop(flt, None)

    def route(self, msg: Message) -> None:
        if msg.retain:
            if msg.payload:
                self.retained[msg.topic] = msg
            else:
                self.retained.pop(msg.topic, None)
        shared: dict[tuple[str, str], list[tuple[Session, int]]] = {}
        for session in list(self.sessions.values()):
            best = -1
            for flt, qos in session.subscriptions.items():
                if flt.startswith("$share/"):
                    group, inner = split_shared(flt)
                    if matches(inner, msg.topic):
                        shared.setdefault((group, inner), []).append((session, qos))
                elif qos > best and matches(flt, msg.topic):
                    best = qos
            if best >= 0:
                # The retain flag is only kept for deliveries caused by a new subscription.
                self.deliver(session, Message(msg.topic, msg.payload, min(best, msg.qos), False))
        for key, members in shared.items():
            # Prefer connected members; fall back to an offline persistent one so nothing is lost.
            online = [m for m in members if m[0].conn is not None] or members
            online.sort(key=lambda m: m[0].client_id)
            idx = self.shared_rr.get(key, 0) % len(online)
            self.shared_rr[key] = idx + 1
            session, qos = online[idx]
            self.deliver(session, Message(msg.topic, msg.payload, min(qos, msg.qos), False))

    def deliver(self, session: Session, msg: Message) -> None:
        conn = session.conn
        if msg.qos == 0:
            if conn is not None and conn.write_backlog() < self.max_write_backlog:
                conn.send(P.publish(msg.topic, msg.payload, 0, msg.retain))
            return
        if len(session.queue) >= self.max_queued:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning(
                    "mqtt broker: queue of %s full, dropped %d messages", session.client_id, self.dropped
                )
            return
        session.queue.append(msg)
        self.pump(session)

    def pump(self, session: Session) -> None:
        conn = session.conn
        if conn is None:
            return
        while session.queue and len(session.inflight) < self.max_inflight:
            msg = session.queue.popleft()
            pid = session.next_pid()
            session.inflight[pid] = msg
            conn.send(P.publish(msg.topic, msg.payload, 1, msg.retain, pid))
