"""EmbeddedBroker: the MQTT 3.1.1 behaviour fleet relies on, checked with paho and libmosquitto clients."""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from mqtt_raw import connect_packet, raw_connect, recv_exactly
from mqtt_support import new_client_id

from fleet.mqtt.broker import EmbeddedBroker
from fleet.mqtt.topics import matches, valid_topic_filter


class Sub:
    """A paho subscriber collecting (topic, payload, qos, retain)."""

    def __init__(self, port: int, client_id: str | None = None, clean: bool = True) -> None:
        self.got: list[tuple[str, bytes, int, bool]] = []
        self.cond = threading.Condition()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or new_client_id("sub"), clean_session=clean
        )
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        self.client.on_connect = lambda *a: self.connected.set()
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()
        assert self.connected.wait(5)

    def _on_message(self, client, userdata, m) -> None:
        with self.cond:
            self.got.append((m.topic, m.payload, m.qos, bool(m.retain)))
            self.cond.notify_all()

    def subscribe(self, *filters: str, qos: int = 1) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe([(f, qos) for f in filters])
        assert done.wait(5)

    def wait(self, n: int, timeout: float = 5.0) -> list:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.got) < n and time.monotonic() < deadline:
                self.cond.wait(0.05)
            return list(self.got)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker():
    b = EmbeddedBroker(port=0).start()
    yield b
    b.stop()


def pub(port: int, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=new_client_id("pub"))
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def test_port_zero_picks_a_free_port_and_stop_closes_it():
    b = EmbeddedBroker(port=0).start()
    port = b.port
    assert port > 0
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    b.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_start_fails_clearly_when_the_port_is_taken(broker):
    with pytest.raises(OSError):
        EmbeddedBroker(port=broker.port).start()


def test_filters_and_wildcards():
    assert matches("fleet/v1/+/status", "fleet/v1/esp-1/status")
    assert not matches("fleet/v1/+/status", "fleet/v1/esp-1/x/status")
    assert matches("fleet/#", "fleet")
    assert matches("fleet/#", "fleet/v1/a/b")
    assert not matches("#", "$SYS/uptime")
    assert not matches("+/uptime", "$SYS/uptime")
    assert matches("$SYS/#", "$SYS/uptime")
    assert not valid_topic_filter("a/#/b") and not valid_topic_filter("a/b+") and valid_topic_filter("+/+/#")


def test_wildcard_subscriptions_route_and_dedupe(broker):
    s = Sub(broker.port)
    s.subscribe("w/+/status", "w/#")  # overlapping: one delivery per message
    pub(broker.port, "w/a/status", b"1")
    pub(broker.port, "w/a/b/c", b"2")
    pub(broker.port, "other/a/status", b"3")
    got = s.wait(2)
    time.sleep(0.2)
    assert sorted((t, p) for t, p, *_ in s.got) == [("w/a/b/c", b"2"), ("w/a/status", b"1")]
    assert len(got) == 2
    s.close()


def test_retained_message_is_delivered_to_late_subscribers_and_cleared_by_empty_payload(broker):
    pub(broker.port, "r/state", b"snapshot", retain=True)
    s = Sub(broker.port)
    s.subscribe("r/#")
    assert s.wait(1) == [("r/state", b"snapshot", 1, True)]
    pub(broker.port, "r/state", b"", retain=True)
    s2 = Sub(broker.port)
    s2.subscribe("r/#")
    time.sleep(0.3)
    assert s2.got == []
    s.close()
    s2.close()


def test_last_will_on_keepalive_timeout(broker):
    s = Sub(broker.port)
    s.subscribe("lw/#")
    sock = raw_connect(
        "127.0.0.1", broker.port, "silent-dongle", keepalive=1, will=("lw/status", b"offline", 1, False)
    )
    t0 = time.monotonic()
    got = s.wait(1, timeout=5)  # the socket stays open but sends nothing
    assert got == [("lw/status", b"offline", 1, False)]
    assert 1.0 <= time.monotonic() - t0 < 3.5  # 1.5 x keepalive
    assert sock.recv(1) == b""  # the broker closed the silent connection
    s.close()


def test_no_will_after_a_clean_disconnect(broker):
    s = Sub(broker.port)
    s.subscribe("lw2/#")
    sock = raw_connect("127.0.0.1", broker.port, "polite", will=("lw2/status", b"offline", 1, False))
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
    time.sleep(0.3)
    assert s.got == []
    s.close()


def test_persistent_session_keeps_subscriptions_and_queues_qos1(broker):
    cid = new_client_id("persist")
    s = Sub(broker.port, client_id=cid, clean=False)
    s.subscribe("p/#")
    s.close()
    for i in range(5):
        pub(broker.port, "p/x", str(i).encode())
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=new_client_id("pub"))
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    for i in range(200):
        c.publish("p/y", str(i).encode(), qos=1)
    c.publish("p/z", b"qos0-dropped-while-offline", qos=0).wait_for_publish(5)
    time.sleep(0.2)
    c.disconnect()
    c.loop_stop()
    s2 = Sub(broker.port, client_id=cid, clean=False)  # no new SUBSCRIBE
    got = s2.wait(205)
    time.sleep(0.2)
    ys = [p for t, p, *_ in s2.got if t == "p/y"]
    assert ys == [str(i).encode() for i in range(200)]  # in order, none lost
    assert all(t != "p/z" for t, *_ in s2.got)
    s2.close()
    assert len(got) >= 205


def test_unacknowledged_qos1_is_redelivered_with_dup_on_reconnect(broker):
    sock = raw_connect("127.0.0.1", broker.port, "no-acker", clean=False)
    sock.sendall(bytes((0x82,)) + bytes((7,)) + b"\x00\x01" + b"\x00\x02d/" + b"\x01")  # SUBSCRIBE d/ qos1
    assert recv_exactly(sock, 5)[0] == 0x90
    pub(broker.port, "d/", b"hello")
    first = recv_exactly(sock, 2 + 2 + 2 + 2 + 5)
    assert first[0] == 0x32 and first.endswith(b"hello")  # QoS 1, no DUP
    sock.close()  # without PUBACK
    sock = raw_connect("127.0.0.1", broker.port, "no-acker", clean=False)
    again = recv_exactly(sock, len(first))
    assert again[0] == 0x3A and again[2:] == first[2:]  # same packet id, DUP set
    sock.close()


def test_malformed_packet_closes_only_that_client(broker):
    s = Sub(broker.port)
    s.subscribe("m/#")
    errors = broker.protocol_errors
    bad = raw_connect("127.0.0.1", broker.port, "garbage")
    bad.sendall(b"\x30\xff\xff\xff\xff\x7f")  # remaining length of 5 bytes
    assert bad.recv(1) == b""
    bad2 = raw_connect("127.0.0.1", broker.port, "garbage2")
    bad2.sendall(b"\x32\x05\x00\x01m\x00\x00")  # QoS 1 PUBLISH with packet id 0
    assert bad2.recv(1) == b""
    bad3 = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
    bad3.sendall(b"\x82\x00")  # SUBSCRIBE before CONNECT
    assert bad3.recv(1) == b""
    assert broker.protocol_errors == errors + 3
    pub(broker.port, "m/ok", b"still serving")
    assert s.wait(1) == [("m/ok", b"still serving", 1, False)]
    s.close()


def test_oversized_packet_is_refused_without_reading_it():
    b = EmbeddedBroker(port=0, max_packet_size=1024).start()
    try:
        sock = raw_connect("127.0.0.1", b.port, "big")
        sock.sendall(b"\x30\x80\x10")  # announces 2048 bytes
        assert sock.recv(1) == b""
    finally:
        b.stop()


def test_connection_limit():
    b = EmbeddedBroker(port=0, max_connections=2).start()
    try:
        socks = [raw_connect("127.0.0.1", b.port, f"c{i}") for i in range(2)]
        extra = socket.create_connection(("127.0.0.1", b.port), timeout=5)
        extra.sendall(connect_packet("c3"))
        assert recv_exactly(extra, 4) == b"\x20\x02\x00\x03"  # server unavailable
        for s in socks:
            s.close()
    finally:
        b.stop()


def test_mqtt5_clients_are_told_to_use_311(broker):
    sock = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
    sock.sendall(connect_packet("v5", level=5))
    assert recv_exactly(sock, 4) == b"\x20\x02\x00\x01"


def test_shared_subscription_delivers_each_message_to_one_member(broker):
    a, b = Sub(broker.port), Sub(broker.port)
    a.subscribe("$share/g/sh/#")
    b.subscribe("$share/g/sh/#")
    for i in range(20):
        pub(broker.port, "sh/t", str(i).encode())
    time.sleep(0.5)
    payloads = sorted(int(p) for _, p, *_ in a.got + b.got)
    assert payloads == list(range(20))
    assert a.got and b.got
    a.close()
    b.close()


def test_qos2_publish_is_delivered_once(broker):
    s = Sub(broker.port)
    s.subscribe("q2/#", qos=2)
    pub(broker.port, "q2/x", b"exactly", qos=2)
    time.sleep(0.3)
    assert s.got == [("q2/x", b"exactly", 1, False)]  # granted QoS 1
    s.close()


def test_takeover_by_the_same_client_id(broker):
    old = raw_connect("127.0.0.1", broker.port, "twin")
    new = raw_connect("127.0.0.1", broker.port, "twin")
    assert old.recv(1) == b""
    new.sendall(b"\xc0\x00")  # PINGREQ
    assert recv_exactly(new, 2) == b"\xd0\x00"


def test_libmosquitto_clients_interoperate(broker):
    sub = subprocess.Popen(
        [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(broker.port),
            "-t",
            "lib/#",
            "-q",
            "1",
            "-C",
            "2",
            "-v",
            "-W",
            "10",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    for msg in ("one", "two"):
        subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", "lib/x", "-q", "1", "-m", msg],
            check=True,
            timeout=10,
        )
    out, _ = sub.communicate(timeout=10)
    assert out.splitlines() == ["lib/x one", "lib/x two"]
