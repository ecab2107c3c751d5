"""mqtts:// against a real Mosquitto with a TLS listener this test starts on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import paho.mqtt.client as mqtt
import pytest
from mqtt_support import RecordingSink, new_client_id, new_dongle_id

from fleet import contracts
from fleet.mqtt.ingest import MqttIngestor


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=fleet test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        cwd=d,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        cwd=d,
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
        cwd=d,
    )
    port = _free_port()
    # "user root": started as root, mosquitto would switch to its own user and could not
    # read the certificates in pytest's private temporary directory (ignored when not root).
    (d / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n"
        f"cafile {d / 'ca.pem'}\ncertfile {d / 'server.pem'}\nkeyfile {d / 'server.key'}\n"
    )
    proc = subprocess.Popen(["mosquitto", "-c", str(d / "mosquitto.conf")], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto TLS listener did not start: {proc.stderr.read()!r}") from None
            time.sleep(0.05)
    yield port, d / "ca.pem"
    proc.terminate()
    proc.wait(10)


def test_mqtts_ingests_and_verifies_the_server(tls_broker):
    port, ca = tls_broker
    sink = RecordingSink()
    ing = MqttIngestor(f"mqtts://127.0.0.1:{port}?ca={ca}", new_client_id("svc-tls"), sink).start()
    try:
        assert ing.wait_subscribed(10), "no TLS session"
        d = new_dongle_id()
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=new_client_id("pub"))
        pub.tls_set(ca_certs=str(ca))
        pub.connect("127.0.0.1", port)
        pub.loop_start()
        doc = dict(contracts.fixtures("status"))["online"] | {"dongle_id": d}
        pub.publish(f"fleet/v1/{d}/status", json.dumps(doc), qos=1).wait_for_publish(5)
        sink.wait_for(lambda ms: any(m.dongle_id == d for m in ms))
        pub.disconnect()
        pub.loop_stop()
    finally:
        ing.stop()


def test_mqtts_refuses_an_unknown_server_certificate(tls_broker):
    port, _ = tls_broker
    ing = MqttIngestor(f"mqtts://127.0.0.1:{port}", new_client_id("svc-tls"), RecordingSink()).start()
    try:
        assert not ing.wait_connected(2), "connected to a server the system CAs do not trust"
    finally:
        ing.stop()
