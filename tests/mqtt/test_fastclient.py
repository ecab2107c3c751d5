"""FastClient's own PUBLISH decoding and batch hand-over, and the ingestor's use of it."""

from __future__ import annotations

import json
import secrets
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from mqtt_support import MOSQUITTO, RecordingSink, new_client_id, new_dongle_id
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from test_ingest import ROOT, ingestors, telemetry  # noqa: F401  (ingestors is a fixture)

from fleet.mqtt.fastclient import FAST_IO, FastClient
from fleet.mqtt.inbound import Classifier, Rejected


def test_fast_path_is_active_with_the_installed_paho() -> None:
    # Throughput depends on it: a paho release without the hooks FastClient
    # overrides must fail here, not quietly fall back to the slow path.
    assert FAST_IO, "this paho lacks the hooks FastClient overrides; ingest would fall back to stock paho"


def _publish_packet(topic: bytes, payload: bytes, *, qos: int, mid: int = 0, v5: bool, flags: int = 0):
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"")
    return 0x30 | (qos << 1) | flags, bytearray(body + (b"\x00" if v5 else b"") + payload)


def _fed(client: FastClient, command: int, packet: bytearray) -> None:
    client._in_packet = {"command": command, "packet": packet}
    assert client._handle_publish() == mqtt.MQTT_ERR_SUCCESS


@pytest.mark.parametrize("v5", [True, False])
def test_publish_packets_are_decoded_into_the_batch_inbox(v5):
    client = FastClient(
        mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311, manual_ack=True
    )
    got = []
    client.on_publish_batch = got.extend
    _fed(client, *_publish_packet(b"a/b", b'{"x":1}', qos=1, mid=513, v5=v5, flags=0x08 | 0x01))
    _fed(client, *_publish_packet("ü/t".encode(), b"", qos=0, v5=v5))
    assert client._inbox == [("a/b", b'{"x":1}', 513, 1, True, True), ("ü/t", b"", 0, 0, False, False)]
    assert all(type(item[1]) is bytes for item in client._inbox)  # not a view of paho's packet buffer


def test_what_the_fast_path_cannot_decode_takes_paho_s_path():
    client = FastClient(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    client.on_publish_batch = lambda items: None
    delivered = []
    client.on_message = lambda c, u, m: delivered.append(m)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = ("k", "v")
    packed = props.pack()
    body = b"\x00\x03a/b" + (7).to_bytes(2, "big") + packed + b"payload"
    _fed(client, 0x32, bytearray(body))  # properties present
    _fed(client, 0x32, bytearray(b"\x00\x02\xff\xfe\x00\x09\x00x"))  # topic not UTF-8
    assert client._inbox == []
    assert [m.payload for m in delivered] == [b"payload", b"x"]
    assert delivered[0].properties.UserProperty == [("k", "v")]


def test_a_truncated_publish_is_a_protocol_error_not_a_crash():
    client = FastClient(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    client.on_publish_batch = lambda items: None
    client._in_packet = {"command": 0x32, "packet": bytearray(b"\x00\x09a/b")}  # topic length beyond packet
    with pytest.raises(Exception):  # noqa: B017  paho's decoder raises; its loop turns it into a disconnect
        client._handle_publish()
    assert client._inbox == []


def test_a_burst_arrives_complete_in_large_batches_through_mosquitto():
    """Published faster than the subscriber reads: one read must yield many messages."""
    topic = f"{ROOT}/fast-{secrets.token_hex(3)}"
    batches: list[list] = []
    done = threading.Event()
    n = 2000

    def on_batch(items):
        batches.append(items)
        if sum(len(b) for b in batches) >= n:
            done.set()

    sub = FastClient(mqtt.CallbackAPIVersion.VERSION2, client_id=new_client_id("fast"), protocol=mqtt.MQTTv5)
    sub.on_publish_batch = on_batch
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect(*MOSQUITTO, clean_start=True)
    sub.subscribe(topic, qos=1)
    deadline = time.monotonic() + 5
    while not subscribed.is_set() and time.monotonic() < deadline:
        sub.loop(0.1)
    assert subscribed.is_set()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=new_client_id("pub"))
    pub.connect(*MOSQUITTO)
    pub.loop_start()
    try:
        # The subscriber's loop is not running yet, so the broker's sends pile up in its socket.
        infos = [pub.publish(topic, b"%d" % i, qos=0) for i in range(n)]
        for info in infos:
            info.wait_for_publish(10)
        time.sleep(0.3)
        sub.loop_start()
        assert done.wait(15), f"got {sum(len(b) for b in batches)} of {n}"
    finally:
        pub.disconnect()
        pub.loop_stop()
        sub.disconnect()
        sub.loop_stop()
    payloads = [int(p) for b in batches for (_, p, _, _, _, _) in b]
    assert sorted(payloads) == list(range(n))
    assert len(batches) <= n // 10  # many messages per hand-over, not one call per message


def test_ingestor_still_ingests_messages_that_carry_properties(ingestors):  # noqa: F811
    """A dongle on MQTT 5 may attach properties; those messages take paho's path and still count."""
    sink = RecordingSink()
    ingestors(f"mqtt://{MOSQUITTO[0]}:{MOSQUITTO[1]}", sink)
    d = new_dongle_id()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=new_client_id("pub5"), protocol=mqtt.MQTTv5)
    pub.connect(*MOSQUITTO)
    pub.loop_start()
    try:
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = "application/json"
        pub.publish(f"{ROOT}/{d}/telemetry", telemetry(d, 1), qos=1, properties=props).wait_for_publish(5)
        pub.publish(f"{ROOT}/{d}/telemetry", telemetry(d, 2), qos=1).wait_for_publish(5)
        msgs = sink.wait_for(lambda ms: len([m for m in ms if m.dongle_id == d]) == 2)
    finally:
        pub.disconnect()
        pub.loop_stop()
    assert sorted(m.payload["seq"] for m in msgs if m.dongle_id == d) == [1, 2]


def test_ingestor_batches_grow_under_load_and_respect_batch_max(ingestors):  # noqa: F811
    published = threading.Event()

    class Stuck(RecordingSink):
        def apply(self, messages):
            published.wait(30)  # a database that hangs while the whole burst arrives
            super().apply(messages)

    sink = Stuck()
    ingestors(f"mqtt://{MOSQUITTO[0]}:{MOSQUITTO[1]}", sink, batch_max=700)
    d = new_dongle_id()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=new_client_id("pub"))
    pub.max_inflight_messages_set(0)
    pub.connect(*MOSQUITTO)
    pub.loop_start()
    n = 3000
    try:
        infos = [pub.publish(f"{ROOT}/{d}/telemetry", telemetry(d, s), qos=1) for s in range(1, n + 1)]
        for info in infos:
            info.wait_for_publish(20)
        time.sleep(0.3)  # the broker forwards the tail of the burst
        published.set()
        msgs = sink.wait_for(lambda ms: len({m.payload["seq"] for m in ms if m.dongle_id == d}) == n, 30)
    finally:
        pub.disconnect()
        pub.loop_stop()
    assert {m.payload["seq"] for m in msgs if m.dongle_id == d} == set(range(1, n + 1))
    sizes = [len(b) for b in sink.batches]
    assert max(sizes) <= 700
    assert sizes.count(700) >= 3, sizes  # a lagging sink gets few full commits, not many small ones


@pytest.mark.parametrize(
    "payload",
    [b"[" * 2000 + b"]" * 2000, b'{"v":Infinity}', b"\xed\xa0\x80", b'{"a":1} trailing'],
)
def test_classifier_rejects_what_strict_json_forbids(payload):
    d = new_dongle_id()
    r = Classifier("fleet/v1").classify(f"fleet/v1/{d}/telemetry", payload, time.time())
    assert isinstance(r, Rejected) and r.reason == "malformed", r


def test_classifier_accepts_a_valid_fixture_as_before():
    d = new_dongle_id()
    r = Classifier("fleet/v1").classify(f"fleet/v1/{d}/telemetry", telemetry(d, 7), 1.0, {"qos": 1})
    assert not isinstance(r, Rejected), r
    assert (r.kind, r.dongle_id, r.payload["seq"], r.meta) == ("telemetry", d, 7, {"qos": 1})
    assert r.payload == json.loads(telemetry(d, 7))
