"""MdnsBrowser against a real zeroconf announcer on 127.0.0.1."""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Sequence

import pytest
from prometheus_client import REGISTRY
from zeroconf import IPVersion, ServiceInfo, Zeroconf

from fleet.discovery.mdns import SERVICE_TYPE, MdnsBrowser
from fleet.discovery.txt import BadTxt, NotADongle, check_txt, decode_txt
from fleet.ports import InboundMessage


class RecordingSink:
    def __init__(self) -> None:
        self.messages: list[InboundMessage] = []
        self.cond = threading.Condition()

    def apply(self, messages: Sequence[InboundMessage]) -> None:
        with self.cond:
            self.messages.extend(messages)
            self.cond.notify_all()

    def wait_for(self, pred, timeout: float = 15.0) -> InboundMessage:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                hits = [m for m in self.messages if pred(m)]
                if hits:
                    return hits[-1]
                left = deadline - time.monotonic()
                assert left > 0, f"not reported within {timeout}s; got {self.messages}"
                self.cond.wait(left)


def service(dongle_id: str, port: int = 3240, **txt: str) -> ServiceInfo:
    props = {"v": "1", "id": dongle_id, "fw": "0.3.1", "chip": "posix-sim", "rev": "0", "ndev": "2", **txt}
    return ServiceInfo(
        SERVICE_TYPE,
        f"{dongle_id}.{SERVICE_TYPE}",
        port=port,
        properties=props,
        addresses=[socket.inet_aton("127.0.0.1")],
        server=f"{dongle_id}.local.",
    )


def assert_loopback_only(zc: Zeroconf) -> None:
    """Every socket zeroconf sends from must be pinned to 127.0.0.1."""
    senders = zc.engine.senders
    assert senders, "zeroconf has no sending socket"
    for sock in senders:  # zeroconf wraps each socket with its transport
        mif = sock.sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, 4)
        assert socket.inet_ntoa(mif) == "127.0.0.1"


@pytest.fixture
def announcer(loopback_multicast):
    zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    assert_loopback_only(zc)
    yield zc
    zc.close()


@pytest.fixture
def browser(loopback_multicast):
    sink = RecordingSink()
    b = MdnsBrowser(sink, interfaces=["127.0.0.1"]).start()
    assert_loopback_only(b.zeroconf)
    yield b, sink
    b.stop()


def test_dongle_appears_updates_and_leaves(announcer, browser):
    b, sink = browser
    d = "esp-" + secrets.token_hex(6)
    info = service(d, port=3241)
    announcer.register_service(info)
    added = sink.wait_for(lambda m: m.dongle_id == d)
    assert added.kind == "mdns" and added.source == "mdns"
    assert added.payload == {
        "present": True,
        "address": "127.0.0.1",
        "port": 3241,
        "txt": {"v": "1", "id": d, "fw": "0.3.1", "chip": "posix-sim", "rev": "0", "ndev": "2"},
    }
    announcer.update_service(service(d, port=3241, ndev="3", fw="0.3.2"))
    updated = sink.wait_for(lambda m: m.dongle_id == d and m.payload["txt"].get("ndev") == "3")
    assert updated.payload["present"] is True and updated.payload["txt"]["fw"] == "0.3.2"
    announcer.unregister_service(info)
    gone = sink.wait_for(lambda m: m.dongle_id == d and m.payload["present"] is False)
    assert gone.payload == {"present": False, "address": None, "port": None, "txt": {}}


def test_other_usbip_servers_are_ignored(announcer, browser):
    b, sink = browser
    ignored = REGISTRY.get_sample_value("fleet_mdns_ignored_total", {"reason": "not_a_dongle"}) or 0
    foreign = ServiceInfo(
        SERVICE_TYPE,
        f"linux-usbipd-{secrets.token_hex(3)}.{SERVICE_TYPE}",
        port=3240,
        properties={"vendor": "linux"},
        addresses=[socket.inet_aton("127.0.0.1")],
    )
    announcer.register_service(foreign)
    deadline = time.monotonic() + 10
    while (REGISTRY.get_sample_value("fleet_mdns_ignored_total", {"reason": "not_a_dongle"}) or 0) == ignored:
        assert time.monotonic() < deadline, "foreign service was never resolved"
        time.sleep(0.05)
    assert not any(foreign.name == m.topic for m in sink.messages)
    announcer.unregister_service(foreign)


@pytest.mark.parametrize(
    ("txt", "error", "match"),
    [
        ({"v": "1"}, NotADongle, "id=''"),
        ({"v": "1", "id": "esp-A1B2C3D4E5F6"}, NotADongle, "lowercase"),
        ({"v": "2", "id": "esp-a1b2c3d4e5f6"}, BadTxt, "version"),
        ({"v": "1", "id": "esp-a1b2c3d4e5f6", "ndev": "-1"}, BadTxt, "ndev"),
        ({"v": "1", "id": "esp-a1b2c3d4e5f6", "rev": "x"}, BadTxt, "rev"),
        ({"v": "1", "id": "esp-a1b2c3d4e5f6", "chip": "esp8266"}, BadTxt, "chip"),
    ],
)
def test_txt_validation(txt, error, match):
    with pytest.raises(error, match=match):
        check_txt(txt)


def test_txt_decoding_is_case_insensitive_and_keeps_only_known_keys():
    raw = {b"V": b"1", b"ID": b"esp-a1b2c3d4e5f6", b"ndev": b"0", b"extra": b"x", b"flag": None}
    assert check_txt(decode_txt(raw)) == {"v": "1", "id": "esp-a1b2c3d4e5f6", "ndev": "0"}
    with pytest.raises(BadTxt):
        decode_txt({b"id": b"\xff"})
