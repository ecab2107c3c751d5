"""MqttIngestor against the embedded broker and the real Mosquitto."""

from __future__ import annotations

import copy
import json
import secrets
import time

import paho.mqtt.client as mqtt
import pytest
from mqtt_raw import abort, raw_connect
from mqtt_support import RecordingSink, new_client_id, new_dongle_id
from prometheus_client import REGISTRY

from fleet import contracts
from fleet.domain.errors import TransportError
from fleet.mqtt.ingest import MqttIngestor

# A topic root of our own: the shared Mosquitto carries other suites' traffic and retained
# messages under fleet/v1, which would flood these tests' sessions.
ROOT = f"fleet-test-{secrets.token_hex(3)}/v1"


def fixture(name: str, case: str, dongle_id: str | None = None) -> dict:
    doc = copy.deepcopy(dict(contracts.fixtures(name))[case])
    if dongle_id is not None and "dongle_id" in doc:
        doc["dongle_id"] = dongle_id
    return doc


def telemetry(dongle_id: str, seq: int) -> bytes:
    doc = fixture("telemetry", "one-device", dongle_id)
    doc["seq"] = seq
    return json.dumps(doc).encode()


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def ingestors():
    started: list[MqttIngestor] = []

    def start(url: str, sink, client_id: str | None = None, **kw) -> MqttIngestor:
        kw.setdefault("topic_root", ROOT)
        ing = MqttIngestor(url, client_id or new_client_id("svc"), sink, **kw).start()
        started.append(ing)
        assert ing.wait_subscribed(10), "ingestor did not connect and subscribe"
        return ing

    yield start
    for ing in started:
        ing.stop()
    for ing in started:
        forget_session(ing)


def forget_session(ing: MqttIngestor) -> None:
    """Drop the ingestor's persistent session so the shared broker stops queuing for it."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=ing.client_id, clean_session=True)
    try:
        c.connect(ing.broker.host, ing.broker.port)
    except OSError:
        return  # nothing listens there (the no-broker test)
    c.loop_start()
    time.sleep(0.05)
    c.disconnect()
    c.loop_stop()


def test_every_kind_reaches_the_sink_validated(broker_url, publisher, ingestors):
    sink = RecordingSink()
    ingestors(broker_url, sink)
    d = new_dongle_id()
    sent = {
        "status": fixture("status", "online", d),
        "state": fixture("state", "posix-sim-three-devices", d),
        "events": fixture("events", "attached", d),
        "telemetry": fixture("telemetry", "two-devices-with-errors-no-rssi", d),
        "cmd-result": fixture("cmd-result", "grant-ok"),
    }
    for kind, doc in sent.items():
        publisher.publish(f"{ROOT}/{d}/{kind}", json.dumps(doc), retain=kind in ("status", "state"))
    msgs = sink.wait_for(lambda ms: {m.kind for m in ms if m.dongle_id == d} == set(sent))
    for m in (m for m in msgs if m.dongle_id == d):
        assert m.payload == sent[m.kind]
        assert m.topic == f"{ROOT}/{d}/{m.kind}"
        assert m.source == "mqtt" and m.meta["qos"] == 1
        assert abs(m.received_at - time.time()) < 30


def test_retained_state_reaches_a_late_subscriber(broker_url, publisher, ingestors):
    d = new_dongle_id()
    state = fixture("state", "esp32s3-one-disk", d)
    publisher.publish(f"{ROOT}/{d}/state", json.dumps(state), retain=True)
    sink = RecordingSink()
    ingestors(broker_url, sink)  # subscribes only now
    msgs = sink.wait_for(lambda ms: any(m.dongle_id == d for m in ms))
    (m,) = [m for m in msgs if m.dongle_id == d]
    assert m.kind == "state" and m.payload == state and m.meta["retain"] is True


def test_last_will_of_a_vanished_dongle_marks_it_offline(broker_addr, broker_url, publisher, ingestors):
    sink = RecordingSink()
    ingestors(broker_url, sink)
    d = new_dongle_id()
    topic = f"{ROOT}/{d}/status"
    will = json.dumps({"v": 1, "dongle_id": d, "status": "offline", "reason": "lwt"}).encode()
    publisher.retained.add(topic)  # the will is retained: clear it at teardown
    sock = raw_connect(*broker_addr, f"dongle-{d}", will=(topic, will, 1, True))
    publisher.publish(topic, json.dumps({"v": 1, "dongle_id": d, "status": "online"}), retain=True)
    sink.wait_for(lambda ms: any(m.dongle_id == d and m.payload["status"] == "online" for m in ms))
    abort(sock)
    msgs = sink.wait_for(lambda ms: any(m.dongle_id == d and m.payload["status"] == "offline" for m in ms))
    (off,) = [m for m in msgs if m.dongle_id == d and m.payload["status"] == "offline"]
    assert off.kind == "status" and off.payload["reason"] == "lwt"


def test_bad_payloads_are_counted_by_reason_and_dropped_while_valid_ones_flow(
    broker_url, publisher, ingestors
):
    sink = RecordingSink()
    ing = ingestors(broker_url, sink)
    d = new_dongle_id()
    other = new_dongle_id()
    before = {
        r: metric("fleet_mqtt_messages_rejected_total", reason=r)
        for r in ("malformed", "oversize", "schema", "mismatch", "topic")
    }
    bad_schema = fixture("telemetry", "one-device", d)
    bad_schema["devices"][0]["urbs"] = -1
    big = fixture("telemetry", "one-device", d)
    big["padding"] = "x" * 70_000
    bad = [
        ("telemetry", b'{"v":1,"dongle_id":'),  # malformed: truncated JSON
        ("telemetry", b"\xff\xfe not utf-8"),  # malformed: not UTF-8
        ("events", b"NaN"),  # malformed: JSON constant
        ("telemetry", json.dumps(big).encode()),  # oversize
        ("telemetry", json.dumps(bad_schema).encode()),  # schema
        ("status", b'{"v":1,"dongle_id":"%s","status":"asleep"}' % d.encode()),  # schema
        ("state", json.dumps(fixture("state", "esp32s3-one-disk", other)).encode()),  # mismatch
    ]
    seq = 0
    for kind, payload in bad:
        publisher.publish(f"{ROOT}/{d}/{kind}", payload)
        seq += 1
        publisher.publish(f"{ROOT}/{d}/telemetry", telemetry(d, seq))
    publisher.publish(f"{ROOT}/esp-NOT-A-DONGLE/telemetry", telemetry(d, 99))  # topic
    seq += 1
    publisher.publish(f"{ROOT}/{d}/telemetry", telemetry(d, seq))
    msgs = sink.wait_for(lambda ms: sum(m.dongle_id == d for m in ms) >= seq)
    assert sorted(m.payload["seq"] for m in msgs if m.dongle_id == d) == list(range(1, seq + 1))
    deadline = time.monotonic() + 5
    expected = {"malformed": 3, "oversize": 1, "schema": 2, "mismatch": 1, "topic": 1}
    while time.monotonic() < deadline and any(
        ing.stats.get(f"rejected:{r}", 0) != n for r, n in expected.items()
    ):
        time.sleep(0.05)
    assert {r: ing.stats.get(f"rejected:{r}", 0) for r in expected} == expected
    for reason, n in expected.items():
        assert metric("fleet_mqtt_messages_rejected_total", reason=reason) - before[reason] == n
    assert ing.stats["ingested:telemetry"] == seq


def test_rejects_are_logged_with_their_topic(broker_url, publisher, ingestors, caplog):
    sink = RecordingSink()
    ingestors(broker_url, sink)
    d = new_dongle_id()
    with caplog.at_level("WARNING", logger="fleet.mqtt.ingest"):
        publisher.publish(f"{ROOT}/{d}/events", b"{not json")
        publisher.publish(f"{ROOT}/{d}/telemetry", telemetry(d, 1))
        sink.wait_for(lambda ms: any(m.dongle_id == d for m in ms))
    assert any(
        f"{ROOT}/{d}/events" in r.getMessage() and "malformed" in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize("protocol", ["auto", "3.1.1"])
def test_persistent_session_receives_what_was_published_while_down(
    broker_url, publisher, ingestors, protocol
):
    client_id = new_client_id("svc-persist")
    d = new_dongle_id()
    first = ingestors(broker_url, RecordingSink(), client_id=client_id, protocol=protocol)
    first.stop()
    for seq in range(1, 201):
        publisher.publish(f"{ROOT}/{d}/telemetry", telemetry(d, seq))
    sink = RecordingSink()
    ingestors(broker_url, sink, client_id=client_id, protocol=protocol)
    msgs = sink.wait_for(lambda ms: {m.payload["seq"] for m in ms if m.dongle_id == d} == set(range(1, 201)))
    assert len([m for m in msgs if m.dongle_id == d]) >= 200


def test_sink_failure_is_retried_and_nothing_is_lost(broker_url, publisher, ingestors):
    sink = RecordingSink(fail_times=2)
    failures = metric("fleet_mqtt_sink_failures_total")
    ingestors(broker_url, sink)
    d = new_dongle_id()
    for seq in range(1, 21):
        publisher.publish(f"{ROOT}/{d}/telemetry", telemetry(d, seq))
    sink.wait_for(lambda ms: {m.payload["seq"] for m in ms if m.dongle_id == d} == set(range(1, 21)))
    assert metric("fleet_mqtt_sink_failures_total") - failures == 2


def test_batch_never_committed_is_redelivered_to_the_next_session(broker_url, publisher, ingestors):
    client_id = new_client_id("svc-crash")
    d = new_dongle_id()
    broken = ingestors(broker_url, RecordingSink(fail_always=True), client_id=client_id)
    for seq in range(1, 31):
        publisher.publish(f"{ROOT}/{d}/telemetry", telemetry(d, seq))
    time.sleep(0.3)
    broken.stop()  # gives up mid-retry: nothing was acknowledged
    sink = RecordingSink()
    ingestors(broker_url, sink, client_id=client_id)
    sink.wait_for(lambda ms: {m.payload["seq"] for m in ms if m.dongle_id == d} == set(range(1, 31)))


def test_command_publish_reaches_the_dongle_topic(broker_addr, broker_url, ingestors):
    d = new_dongle_id()
    got: list[mqtt.MQTTMessage] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=new_client_id("dongle"))
    sub.on_message = lambda c, u, m: got.append(m)
    sub.connect(*broker_addr)
    sub.loop_start()
    try:
        sub.subscribe(f"{ROOT}/{d}/cmd/#", 1)[1]
        time.sleep(0.3)
        ing = ingestors(broker_url, RecordingSink())
        grant = fixture("cmd-grant", "one-client-int-lease")
        ing.publish(d, "grant", grant)
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [m.topic for m in got] == [f"{ROOT}/{d}/cmd/grant"]
        assert json.loads(got[0].payload) == grant
        assert got[0].qos == 1 and not got[0].retain
    finally:
        sub.disconnect()
        sub.loop_stop()


def test_command_payload_and_dongle_id_are_validated(broker_url, ingestors):
    ing = ingestors(broker_url, RecordingSink())
    d = new_dongle_id()
    revoke = fixture("cmd-revoke", "expired")
    del revoke["reason"]
    with pytest.raises(contracts.ContractError, match="reason"):
        ing.publish(d, "revoke", revoke)
    with pytest.raises(contracts.ContractError, match="unknown command"):
        ing.publish(d, "selfdestruct", fixture("cmd-reboot", "plain"))
    with pytest.raises(contracts.ContractError, match="dongle id"):
        ing.publish("esp-XYZ", "reboot", fixture("cmd-reboot", "plain"))


def test_default_subscriptions_cover_every_inbound_kind():
    ing = MqttIngestor("mqtt://127.0.0.1", "svc", RecordingSink())
    assert ing.subscriptions() == [
        f"fleet/v1/+/{k}" for k in ("status", "state", "events", "telemetry", "cmd-result")
    ]
    shared = MqttIngestor("mqtt://127.0.0.1", "svc", RecordingSink(), shared_group="ingest")
    assert shared.subscriptions()[0] == "$share/ingest/fleet/v1/+/status"


def test_command_publish_without_broker_raises_transport_error():
    ing = MqttIngestor("mqtt://127.0.0.1:9", new_client_id("svc-nobroker"), RecordingSink()).start()
    try:
        with pytest.raises(TransportError, match="not connected"):
            ing.publish(new_dongle_id(), "reboot", fixture("cmd-reboot", "plain"))
        assert not ing.connected
    finally:
        ing.stop()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1", "scheme"),
        ("mqtt://", "host"),
        ("mqtt://127.0.0.1:99999", "port"),
        ("mqtt://127.0.0.1/x", "path"),
        ("mqtt://127.0.0.1?bogus=1", "unknown parameter"),
    ],
)
def test_bad_broker_url_is_rejected_clearly(url, problem):
    with pytest.raises(ValueError, match=problem):
        MqttIngestor(url, "svc", RecordingSink())


class SlowSink(RecordingSink):
    """Commits take a varying time, so parallel appliers finish out of order."""

    def apply(self, messages):
        time.sleep(0.002 * (len(messages) % 7))
        super().apply(messages)


def test_parallel_appliers_lose_nothing(broker_url, publisher, ingestors):
    sink = SlowSink()
    ing = ingestors(broker_url, sink, apply_workers=3, batch_max=7)
    d = new_dongle_id()
    for seq in range(1, 301):
        publisher.client.publish(f"{ROOT}/{d}/telemetry", telemetry(d, seq), qos=1)
    publisher.publish(f"{ROOT}/{d}/telemetry", telemetry(d, 301))
    sink.wait_for(lambda ms: {m.payload["seq"] for m in ms if m.dongle_id == d} == set(range(1, 302)))
    deadline = time.monotonic() + 5
    while ing._pending and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not ing._pending, "every committed batch must have been acknowledged"


def test_shared_group_splits_messages_between_replicas(broker_url, publisher, ingestors):
    group = new_client_id("grp")
    a, b = RecordingSink(), RecordingSink()
    ingestors(broker_url, a, shared_group=group)
    ingestors(broker_url, b, shared_group=group)
    d = new_dongle_id()
    for seq in range(1, 41):
        publisher.publish(f"{ROOT}/{d}/telemetry", telemetry(d, seq))

    def seqs(sink):
        return [m.payload["seq"] for m in sink.messages if m.dongle_id == d]

    deadline = time.monotonic() + 10
    while len(seqs(a)) + len(seqs(b)) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    assert sorted(seqs(a) + seqs(b)) == list(range(1, 41))  # each message to exactly one replica
    assert seqs(a) and seqs(b)


def test_ingestor_reconnects_after_the_broker_restarts(ingestors):
    from fleet.mqtt.broker import EmbeddedBroker

    broker = EmbeddedBroker(port=0).start()
    port = broker.port
    sink = RecordingSink()
    ing = ingestors(f"mqtt://127.0.0.1:{port}", sink)
    broker.stop()
    deadline = time.monotonic() + 5
    while ing.connected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not ing.connected
    broker = EmbeddedBroker(port=port).start()
    try:
        assert ing.wait_subscribed(15), "did not reconnect and subscribe again"
        d = new_dongle_id()
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=new_client_id("pub"))
        pub.connect("127.0.0.1", port)
        pub.loop_start()
        pub.publish(f"{ROOT}/{d}/telemetry", telemetry(d, 1), qos=1).wait_for_publish(5)
        sink.wait_for(lambda ms: any(m.dongle_id == d for m in ms))
        assert metric("fleet_mqtt_connected") == 1
        pub.disconnect()
        pub.loop_stop()
    finally:
        ing.stop()
        broker.stop()


def test_stock_paho_io_path_still_works(broker_url, publisher, ingestors, monkeypatch):
    import fleet.mqtt.fastclient as fastclient

    monkeypatch.setattr(fastclient, "FAST_IO", False)  # ack_many falls back to one ack() per message
    sink = RecordingSink()
    ing = ingestors(broker_url, sink)
    d = new_dongle_id()
    for seq in range(1, 21):
        publisher.publish(f"{ROOT}/{d}/telemetry", telemetry(d, seq))
    sink.wait_for(lambda ms: {m.payload["seq"] for m in ms if m.dongle_id == d} == set(range(1, 21)))
    ing.stop()
    # acknowledged: a new session with the same id gets nothing again
    again = RecordingSink()
    ingestors(broker_url, again, client_id=ing.client_id)
    time.sleep(0.5)
    assert not [m for m in again.messages if m.dongle_id == d]
