"""Fixtures for MQTT tests: the embedded broker, the real Mosquitto, a dongle-side publisher."""

from __future__ import annotations

import socket

import pytest
from mqtt_support import MOSQUITTO, Publisher

from fleet.mqtt.broker import EmbeddedBroker


@pytest.fixture(scope="session")
def embedded_broker():
    broker = EmbeddedBroker(port=0).start()
    yield broker
    broker.stop()


def _require_mosquitto() -> None:
    try:
        socket.create_connection(MOSQUITTO, timeout=2).close()
    except OSError as exc:
        pytest.fail(f"Mosquitto must run on {MOSQUITTO[0]}:{MOSQUITTO[1]} for these tests: {exc}")


@pytest.fixture(params=["embedded", "mosquitto"])
def broker_addr(request) -> tuple[str, int]:
    """(host, port) of each broker the service must work with."""
    if request.param == "embedded":
        return "127.0.0.1", request.getfixturevalue("embedded_broker").port
    _require_mosquitto()
    return MOSQUITTO


@pytest.fixture
def broker_url(broker_addr) -> str:
    return f"mqtt://{broker_addr[0]}:{broker_addr[1]}"


@pytest.fixture
def publisher(broker_addr):
    pub = Publisher(*broker_addr)
    yield pub
    pub.close()
