"""Helpers shared by the MQTT tests (imported by module name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Sequence

import paho.mqtt.client as mqtt

from fleet.ports import InboundMessage

MOSQUITTO = ("127.0.0.1", 1883)


class RecordingSink:
    """The ingestor's collaborator: stores every committed batch; can be told to fail."""

    def __init__(self, fail_times: int = 0, fail_always: bool = False) -> None:
        self.batches: list[list[InboundMessage]] = []
        self.fail_times = fail_times
        self.fail_always = fail_always
        self.calls = 0
        self.cond = threading.Condition()

    def apply(self, messages: Sequence[InboundMessage]) -> None:
        with self.cond:
            self.calls += 1
            if self.fail_always or self.fail_times > 0:
                self.fail_times -= 1
                raise RuntimeError("database is down (test)")
            self.batches.append(list(messages))
            self.cond.notify_all()

    @property
    def messages(self) -> list[InboundMessage]:
        with self.cond:
            return [m for b in self.batches for m in b]

    def wait_for(self, predicate: Callable[[list[InboundMessage]], bool], timeout: float = 10.0) -> list:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                msgs = [m for b in self.batches for m in b]
                if predicate(msgs):
                    return msgs
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"sink condition not met within {timeout}s; got {len(msgs)} messages: "
                        f"{[(m.kind, m.topic) for m in msgs][:20]}"
                    )
                self.cond.wait(left)


def new_dongle_id() -> str:
    return "esp-" + secrets.token_hex(6)


def new_client_id(prefix: str = "test") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


class Publisher:
    """A plain paho client playing the dongle side; clears the retained topics it set."""

    def __init__(self, host: str, port: int) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=new_client_id("pub"))
        self.client.connect(host, port, 30)
        self.client.loop_start()
        self.retained: set[str] = set()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if retain:
            self.retained.add(topic)
        info.wait_for_publish(10)
        assert info.is_published(), f"publish to {topic} not acknowledged"

    def close(self) -> None:
        for topic in self.retained:
            self.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()
