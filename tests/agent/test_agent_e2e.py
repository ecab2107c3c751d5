"""The C agent end to end: real Mosquitto, real libmosquitto client, real mDNS
responder on loopback, the service's own contract validators and mDNS browser.

The dongles here run the agent over USB/IP cores on the core's fake USB host
(agent_live); fleet-dongle wiring is tested in test_dongle_e2e.py."""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest
from agent_support import LiveAgents, Observer

from fleet.contracts import validate

pytestmark = pytest.mark.mosquitto


@pytest.fixture(autouse=True)
def _mosquitto() -> None:
    try:
        socket.create_connection(("127.0.0.1", 1883), timeout=2).close()
    except OSError as exc:
        pytest.fail(f"Mosquitto must run on 127.0.0.1:1883: {exc}")


@pytest.fixture
def agents(live_bin, tmp_path):
    a = LiveAgents(live_bin, n=2, extra=["--telemetry-interval", "1"], state_dir=tmp_path)
    obs = Observer(a.ids)
    yield a, obs
    a.stop()
    obs.close()


def _leaf(topic: str) -> str:
    return topic.split("/", 3)[3]


def test_online_with_retained_status_state_and_steady_telemetry(agents):
    a, obs = agents
    for d in a.ids:
        st = obs.wait_for(lambda t, p, d=d: t == f"fleet/v1/{d}/status" and p["status"] == "online")
        validate("status", st)
        state = obs.wait_for(lambda t, p, d=d: t == f"fleet/v1/{d}/state")
        validate("state", state)
        assert state["net"]["ip"].startswith("127.3.0.")
        assert [dev["busid"] for dev in state["devices"]] == ["1-1"]
    # telemetry every second, each valid, seq increasing
    mark = obs.mark()
    time.sleep(2.5)
    tel = [p for t, p, _ in obs.messages[mark:] if t == f"fleet/v1/{a.ids[0]}/telemetry"]
    assert len(tel) >= 2, tel
    for p in tel:
        validate("telemetry", p)
    assert tel[1]["seq"] > tel[0]["seq"]


def test_commands_answered_and_applied(agents):
    a, obs = agents
    d = a.ids[0]
    obs.wait_for(lambda t, p: t == f"fleet/v1/{d}/status" and p["status"] == "online")
    r = obs.command(d, "grant", {"busid": "1-1", "clients": ["127.0.0.1"], "lease_id": 5, "expires_at": 0})
    validate("cmd-result", r)
    assert r["ok"] is True, r
    state = obs.wait_for(lambda t, p: t == f"fleet/v1/{d}/state" and p["devices"][0]["granted_to"] == ["127.0.0.1"])
    validate("state", state)
    ev = obs.wait_for(lambda t, p: t.endswith("/events") and p["type"] == "grant_applied")
    assert ev["detail"]["lease_id"] == 5
    r = obs.command(d, "revoke", {"busid": "1-1", "lease_id": 5, "reason": "released"})
    assert r["ok"] is True and r["detail"]["revoked"] is True, r
    obs.wait_for(lambda t, p: t == f"fleet/v1/{d}/state" and p["devices"][0]["granted_to"] == [])

    # bad commands: a reason naming the field, and the dongle keeps serving
    r = obs.command(d, "grant", {"busid": "1-01", "clients": ["127.0.0.1"], "lease_id": 5, "expires_at": 0})
    assert r["ok"] is False and r["error"].startswith("busid"), r
    validate("cmd-result", r)
    r = obs.command(d, "port-power", {"busid": "1-1", "action": "sideways"})
    assert r["ok"] is False and r["error"].startswith("action"), r
    obs.raw(d, "grant", b"\x00\xffnot json")
    r = obs.command(d, "config", {"version": 1, "mqtt": {"url": "mqtt://127.0.0.1:1883"},
                                  "telemetry_interval_s": 0, "enforce_grants": True, "log_level": "info"})
    assert r["ok"] is False and r["error"].startswith("telemetry_interval_s"), r

    # config: applied live and reported
    r = obs.command(d, "config", {"version": 1, "mqtt": {"url": "mqtt://127.0.0.1:1883"},
                                  "telemetry_interval_s": 2, "enforce_grants": True, "log_level": "info"})
    assert r["ok"] is True and r["detail"]["version"] == 1, r
    obs.wait_for(lambda t, p: t == f"fleet/v1/{d}/state" and p["usbip"]["enforce_grants"] is True)
    obs.wait_for(lambda t, p: t == f"fleet/v1/{d}/telemetry" and p["interval_s"] == 2)

    # port-power cycle: the device leaves and comes back
    mark = obs.mark()
    r = obs.command(d, "port-power", {"busid": "1-1", "action": "cycle"})
    assert r["ok"] is True, r
    obs.wait_for(lambda t, p: t.endswith("/events") and p["type"] == "device_removed", after=mark, timeout=3)
    added = obs.wait_for(lambda t, p: t.endswith("/events") and p["type"] == "device_added", after=mark,
                         timeout=3)
    validate("events", added)

    # the other dongle was not disturbed by any of it
    other = a.ids[1]
    obs.wait_for(lambda t, p: t == f"fleet/v1/{other}/telemetry", after=obs.mark(), timeout=3)


def test_reboot_goes_offline_and_comes_back(agents):
    a, obs = agents
    d = a.ids[0]
    obs.wait_for(lambda t, p: t == f"fleet/v1/{d}/status" and p["status"] == "online")
    mark = obs.mark()
    r = obs.command(d, "reboot", {"reason": "maintenance"})
    assert r["ok"] is True
    off = obs.wait_for(lambda t, p: t == f"fleet/v1/{d}/status" and p["status"] == "offline", after=mark)
    assert off["reason"] == "reboot"
    obs.wait_for(lambda t, p: t == f"fleet/v1/{d}/status" and p["status"] == "online", after=mark)
    ev = obs.wait_for(lambda t, p: t.endswith("/events") and p["type"] == "rebooted"
                      and p["detail"]["reason"] == "maintenance", after=mark)
    assert ev["seq"] <= 2  # a new boot restarts seq


def test_config_survives_a_restart(live_bin, tmp_path):
    a = LiveAgents(live_bin, n=1, state_dir=tmp_path)
    obs = Observer(a.ids)
    try:
        d = a.ids[0]
        obs.wait_for(lambda t, p: t == f"fleet/v1/{d}/status" and p["status"] == "online")
        r = obs.command(d, "config", {"version": 4, "mqtt": {"url": "mqtt://127.0.0.1:1883"},
                                      "telemetry_interval_s": 1, "enforce_grants": False, "log_level": "warn"})
        assert r["ok"] is True, r
        assert a.stop() == 0
        b = LiveAgents(live_bin, n=1, state_dir=tmp_path, base_mac=a.base_mac)
        mark = obs.mark()
        tel = obs.wait_for(lambda t, p: t == f"fleet/v1/{d}/telemetry", after=mark, timeout=5)
        assert tel["interval_s"] == 1  # the persisted document, not the default 10
        # same version, other content: refused
        r = obs.command(d, "config", {"version": 4, "mqtt": {"url": "mqtt://127.0.0.1:1883"},
                                      "telemetry_interval_s": 7, "enforce_grants": False, "log_level": "warn"})
        assert r["ok"] is False and "version" in r["error"], r
        b.stop()
    finally:
        a.stop()
        obs.close()


def test_kill_9_publishes_the_last_will(live_bin):
    a = LiveAgents(live_bin, n=1, extra=["--telemetry-interval", "60"])
    obs = Observer(a.ids)
    try:
        d = a.ids[0]
        obs.wait_for(lambda t, p: t == f"fleet/v1/{d}/status" and p["status"] == "online")
        mark = obs.mark()
        a.stop("kill")
        # the broker notices the dead socket at once (RST) and publishes the will
        will = obs.wait_for(lambda t, p: t == f"fleet/v1/{d}/status", after=mark, timeout=5)
        assert will == {"v": 1, "dongle_id": d, "status": "offline", "reason": "lwt"}
        validate("status", will)
    finally:
        obs.close()


def test_sigterm_says_offline_shutdown(live_bin):
    a = LiveAgents(live_bin, n=1)
    obs = Observer(a.ids)
    try:
        d = a.ids[0]
        obs.wait_for(lambda t, p: t == f"fleet/v1/{d}/status" and p["status"] == "online")
        mark = obs.mark()
        assert a.stop() == 0
        off = obs.wait_for(lambda t, p: t == f"fleet/v1/{d}/status", after=mark, timeout=5)
        assert off["status"] == "offline" and off["reason"] == "shutdown"
    finally:
        obs.close()


@pytest.fixture
def loopback_multicast() -> None:
    flags = subprocess.run(["ip", "link", "show", "lo"], capture_output=True, text=True, check=True).stdout
    if "MULTICAST" not in flags.split(">")[0]:
        subprocess.run(["ip", "link", "set", "lo", "multicast", "on"], check=True)


def test_mdns_discovered_by_the_service_browser(live_bin, loopback_multicast):
    from fleet.discovery.mdns import MdnsBrowser  # noqa: PLC0415

    class Sink:
        def __init__(self) -> None:
            self.messages: list = []
            self.cond = threading.Condition()

        def apply(self, messages) -> None:
            with self.cond:
                self.messages.extend(messages)
                self.cond.notify_all()

        def wait_for(self, pred, timeout: float = 15.0):
            deadline = time.monotonic() + timeout
            with self.cond:
                while True:
                    hits = [m for m in self.messages if pred(m)]
                    if hits:
                        return hits[-1]
                    left = deadline - time.monotonic()
                    assert left > 0, f"not reported within {timeout}s; got {self.messages}"
                    self.cond.wait(left)

    sink = Sink()
    browser = MdnsBrowser(sink, interfaces=["127.0.0.1"]).start()
    a = LiveAgents(live_bin, n=3, extra=["--mdns"])
    obs = Observer(a.ids)
    try:
        for i, d in enumerate(a.ids):
            m = sink.wait_for(lambda m, d=d: m.dongle_id == d and m.payload["present"])
            assert m.payload["port"] == 3240
            assert m.payload["address"] == f"127.3.0.{1 + i}"
            assert m.payload["txt"]["id"] == d
            assert m.payload["txt"]["chip"] == "posix-sim"
            assert m.payload["txt"]["ndev"] == "1"
            assert m.payload["txt"]["fw"] == "0.3.1"
        # TXT kept current: a device leaves, ndev follows
        d = a.ids[0]
        obs.wait_for(lambda t, p: t == f"fleet/v1/{d}/status" and p["status"] == "online")
        r = obs.command(d, "port-power", {"busid": "1-1", "action": "off"})
        assert r["ok"] is True
        sink.wait_for(lambda m: m.dongle_id == d and m.payload["present"] and m.payload["txt"]["ndev"] == "0")
        # goodbye on stop
        a.stop()
        sink.wait_for(lambda m: m.dongle_id == a.ids[1] and m.payload["present"] is False)
    finally:
        a.stop()
        obs.close()
        browser.stop()


def test_ota_update_reboots_into_the_new_slot_and_confirms(live_bin, tmp_path):
    import functools
    import http.server
    import json as _json

    from agent_support import REPO  # noqa: PLC0415

    fixtures = REPO / "agent_fw" / "test" / "unit" / "agent" / "fixtures"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(fixtures))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    a = LiveAgents(live_bin, n=1, state_dir=tmp_path,
                   extra=["--ota-pubkey", str(fixtures / "TEST-ONLY-ota-signing-key.pub.pem")])
    obs = Observer(a.ids)
    try:
        d = a.ids[0]
        state = obs.wait_for(lambda t, p: t == f"fleet/v1/{d}/state")
        assert state["firmware"]["version"] == "0.3.1" and state["boot"]["slot"] == "ota_0"
        manifest = _json.loads((fixtures / "ota-manifest.posix-sim.json").read_text())
        manifest["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/fw-posix-sim-0.4.0.bin"  # not signed

        tampered = {**manifest, "size": manifest["size"] + 1}
        tampered.pop("request_id")
        r = obs.command(d, "ota", tampered)
        assert r["ok"] is False and r["error"].startswith("signature"), r

        manifest.pop("request_id")
        mark = obs.mark()
        r = obs.command(d, "ota", manifest)
        assert r["ok"] is True, r
        validate("cmd-result", r)
        off = obs.wait_for(lambda t, p: t == f"fleet/v1/{d}/status" and p["status"] == "offline", after=mark)
        assert off["reason"] == "reboot"
        obs.wait_for(lambda t, p: t.endswith("/events") and p["type"] == "rebooted"
                     and p["detail"]["reason"] == "ota", after=mark)
        st = obs.wait_for(lambda t, p: t.endswith("/events") and p["type"] == "selftest", after=mark, timeout=15)
        validate("events", st)
        assert st["detail"]["ok"] is True and all(st["detail"]["checks"].values()), st
        confirmed = obs.wait_for(lambda t, p: t == f"fleet/v1/{d}/state" and p["boot"]["ota_state"] == "valid"
                                 and p["firmware"]["version"] == "0.4.0", after=mark, timeout=10)
        assert confirmed["boot"]["slot"] == "ota_1"
        validate("state", confirmed)
    finally:
        a.stop()
        obs.close()
        httpd.shutdown()
