"""fleet-dongle with its agent, end to end: real Mosquitto, the real USB/IP
client (fleet.usbip) importing through the core the agent controls, the
control channel, the service's contract validators and mDNS browser."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from agent_support import MQTT_URL, MultiDongle, Observer, random_mac

from fleet.contracts import validate
from fleet.usbip import ImportRefused, import_device
from fleet.usbip.simdongle import SimDongle

pytestmark = [pytest.mark.dongle, pytest.mark.mosquitto]


@pytest.fixture(autouse=True)
def _mosquitto() -> None:
    try:
        socket.create_connection(("127.0.0.1", 1883), timeout=2).close()
    except OSError as exc:
        pytest.fail(f"Mosquitto must run on 127.0.0.1:1883: {exc}")


@pytest.fixture
def agent_dongle(dongle_bin, tmp_path):
    started: list[tuple[SimDongle, Observer]] = []

    def start(devices=("msc:size=1M", "hid-keyboard"), args=(), dongle_id: str | None = None):
        did = dongle_id or f"esp-{random_mac()}"
        obs = Observer([did])
        d = SimDongle(devices=list(devices), binary=dongle_bin,
                      args=["--id", did, "--mqtt", MQTT_URL, "--state-dir", str(tmp_path), *args]).start()
        started.append((d, obs))
        obs.wait_for(lambda t, p: t == f"fleet/v1/{did}/status" and p["status"] == "online")
        return d, obs, did

    yield start
    for d, obs in started:
        d.stop()
        obs.close()


def test_online_state_matches_the_devices(agent_dongle):
    d, obs, did = agent_dongle()
    st = obs.wait_for(lambda t, p: t == f"fleet/v1/{did}/status")
    validate("status", st)
    state = obs.wait_for(lambda t, p: t == f"fleet/v1/{did}/state" and len(p["devices"]) == 2)
    validate("state", state)
    assert state["usbip"]["port"] == d.port
    disk, kbd = state["devices"]
    assert (disk["busid"], disk["interfaces"][0]["class"]) == ("1-1", 8)  # mass storage
    assert (kbd["busid"], kbd["interfaces"][0]["class"]) == ("1-2", 3)  # HID
    assert disk["serial"] == d.list()[0]["serial"]


def test_hotplug_shows_in_state_and_events_within_2s(agent_dongle):
    d, obs, did = agent_dongle()
    obs.wait_for(lambda t, p: t == f"fleet/v1/{did}/state" and len(p["devices"]) == 2)
    mark = obs.mark()
    t0 = time.monotonic()
    busid = d.plug("cdc-acm")
    added = obs.wait_for(lambda t, p: t.endswith("/events") and p["type"] == "device_added", after=mark, timeout=2)
    validate("events", added)
    assert added["busid"] == busid and added["detail"]["busid"] == busid
    obs.wait_for(lambda t, p: t.endswith("/state") and busid in [x["busid"] for x in p["devices"]],
                 after=mark, timeout=2)
    assert time.monotonic() - t0 < 2.0
    mark = obs.mark()
    d.unplug(busid)
    removed = obs.wait_for(lambda t, p: t.endswith("/events") and p["type"] == "device_removed", after=mark,
                           timeout=2)
    assert removed["busid"] == busid
    obs.wait_for(lambda t, p: t.endswith("/state") and busid not in [x["busid"] for x in p["devices"]],
                 after=mark, timeout=2)


def test_grant_and_revoke_over_mqtt_are_enforced_by_the_core(agent_dongle):
    d, obs, did = agent_dongle(devices=("probe",), args=["--enforce-grants"])
    busid = d.list()[0]["busid"]
    with pytest.raises(ImportRefused):  # refused before the grant
        import_device(d.host, d.port, busid, source="127.0.0.1")
    r = obs.command(did, "grant", {"busid": busid, "clients": ["127.0.0.1"], "lease_id": "lease-9",
                                   "expires_at": int(time.time()) + 600})
    assert r["ok"] is True, r
    validate("cmd-result", r)
    mark = obs.mark()
    s = import_device(d.host, d.port, busid, source="127.0.0.1")  # accepted after
    att = obs.wait_for(lambda t, p: t.endswith("/events") and p["type"] == "attached", after=mark, timeout=2)
    validate("events", att)
    assert att["client"].startswith("127.0.0.1:")
    t0 = time.monotonic()
    r = obs.command(did, "revoke", {"busid": busid, "lease_id": "lease-9", "reason": "released"})
    assert r["ok"] is True and r["detail"]["revoked"] is True, r
    s.sock.settimeout(1.0)
    try:
        closed = s.sock.recv(65536) == b""  # cut within 1 s of the command
    except (ConnectionResetError, TimeoutError, socket.timeout):
        closed = False
    assert closed and time.monotonic() - t0 < 1.5
    s.sock.close()
    det = obs.wait_for(lambda t, p: t.endswith("/events") and p["type"] == "detached", after=mark, timeout=2)
    validate("events", det)
    with pytest.raises(ImportRefused):
        import_device(d.host, d.port, busid, source="127.0.0.1")


def test_config_and_bad_commands(agent_dongle):
    d, obs, did = agent_dongle()
    r = obs.command(did, "config", {"version": 2, "mqtt": {"url": MQTT_URL}, "telemetry_interval_s": 1,
                                    "enforce_grants": True, "log_level": "warn"})
    assert r["ok"] is True, r
    obs.wait_for(lambda t, p: t.endswith("/state") and p["usbip"]["enforce_grants"] is True)
    tel = obs.wait_for(lambda t, p: t.endswith("/telemetry") and p["interval_s"] == 1, timeout=5)
    validate("telemetry", tel)
    with pytest.raises(ImportRefused):  # enforcement really is on in the core
        import_device(d.host, d.port, "1-1", source="127.0.0.1")
    r = obs.command(did, "revoke", {"busid": "1-1", "lease_id": "x y", "reason": "released"})
    assert r["ok"] is False and r["error"].startswith("lease_id"), r
    r = obs.command(did, "port-power", {"busid": "7-7"})
    assert r["ok"] is False and "7-7" in r["error"], r
    assert d.alive()


def test_port_power_and_reboot_re_export_the_devices(agent_dongle):
    d, obs, did = agent_dongle()
    mark = obs.mark()
    r = obs.command(did, "port-power", {"busid": "1-2", "action": "cycle"})
    assert r["ok"] is True, r
    obs.wait_for(lambda t, p: t.endswith("/events") and p["type"] == "device_removed" and p["busid"] == "1-2",
                 after=mark, timeout=2)
    obs.wait_for(lambda t, p: t.endswith("/events") and p["type"] == "device_added" and p["busid"] == "1-2",
                 after=mark, timeout=3)
    mark = obs.mark()
    r = obs.command(did, "reboot", {"reason": "test"})
    assert r["ok"] is True
    off = obs.wait_for(lambda t, p: t.endswith("/status") and p["status"] == "offline", after=mark)
    assert off["reason"] == "reboot"
    obs.wait_for(lambda t, p: t.endswith("/events") and p["type"] == "rebooted" and p["detail"]["reason"] == "test",
                 after=mark)
    state = obs.wait_for(lambda t, p: t.endswith("/state") and len(p["devices"]) == 2, after=mark, timeout=5)
    assert [x["busid"] for x in state["devices"]] == ["1-1", "1-2"]
    assert sorted(x["busid"] for x in d.list()) == ["1-1", "1-2"]  # control channel still serves


def test_kill_9_gives_the_last_will(agent_dongle):
    d, obs, did = agent_dongle()
    mark = obs.mark()
    d.proc.kill()
    will = obs.wait_for(lambda t, p: t.endswith("/status"), after=mark, timeout=5)
    assert will["status"] == "offline" and will["reason"] == "lwt"


def test_multi_dongle_process(dongle_bin, tmp_path, loopback_multicast_on):
    from fleet.discovery.mdns import MdnsBrowser  # noqa: PLC0415

    base_mac = random_mac()
    ids = [f"esp-{int(base_mac, 16) + i:012x}" for i in range(3)]
    obs = Observer(ids)
    seen: list = []
    cond = threading.Condition()

    class Sink:
        def apply(self, messages) -> None:
            with cond:
                seen.extend(messages)
                cond.notify_all()

    browser = MdnsBrowser(Sink(), interfaces=["127.0.0.1"]).start()
    d = MultiDongle(dongle_bin, ["--device", "hid-keyboard", "--dongles", "3", "--base-address", "127.6.0.1",
                                 "--base-mac", base_mac, "--mqtt", MQTT_URL, "--state-dir", str(tmp_path),
                                 "--mdns"], tmp_path)
    try:
        assert [line.split()[1] for line in d.banner if line.startswith("dongle ")] == ids
        for i, did in enumerate(ids):
            state = obs.wait_for(lambda t, p, did=did: t == f"fleet/v1/{did}/state")
            assert state["net"]["ip"] == f"127.6.0.{1 + i}" and state["usbip"]["port"] == 3240
            assert len(state["devices"]) == 1
        # the selector reaches one dongle; the others do not change
        mark = obs.mark()
        assert d.command(f"@{ids[1]} plug msc:size=1M") == "ok 1-2"
        obs.wait_for(lambda t, p: t == f"fleet/v1/{ids[1]}/events" and p["type"] == "device_added", after=mark)
        assert len(json.loads(d.command(f"@{ids[0]} list")[3:])) == 1
        assert d.command("@esp-000000000000 list").startswith("err no dongle")
        stats = json.loads(d.command("stats")[3:])
        assert stats["process"]["dongles"] == 3 and stats["process"]["rss_per_dongle"] > 0
        # a USB/IP client reaches each dongle on its own address
        s = import_device(f"127.6.0.3", 3240, "1-1", source="127.0.0.1")
        s.sock.close()
        # mDNS: every dongle discovered with its own address; ndev follows the plug
        deadline = time.monotonic() + 15
        with cond:
            while True:
                found = {m.dongle_id: m for m in seen if m.payload["present"]}
                if all(i in found for i in ids) and found[ids[1]].payload["txt"]["ndev"] == "2":
                    break
                assert time.monotonic() < deadline, f"mDNS saw {found}"
                cond.wait(0.5)
        assert found[ids[2]].payload["address"] == "127.6.0.3"
        assert found[ids[0]].payload["txt"]["ndev"] == "1"
    finally:
        d.stop()
        obs.close()
        browser.stop()


@pytest.fixture
def loopback_multicast_on() -> None:
    import subprocess  # noqa: PLC0415

    flags = subprocess.run(["ip", "link", "show", "lo"], capture_output=True, text=True, check=True).stdout
    if "MULTICAST" not in flags.split(">")[0]:
        subprocess.run(["ip", "link", "set", "lo", "multicast", "on"], check=True)


def test_ota_through_fleet_dongle(agent_dongle):
    import functools
    import http.server
    import json as _json

    from agent_support import REPO  # noqa: PLC0415

    fixtures = REPO / "agent_fw" / "test" / "unit" / "agent" / "fixtures"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(fixtures))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        d, obs, did = agent_dongle(args=["--ota-pubkey", str(fixtures / "TEST-ONLY-ota-signing-key.pub.pem")])
        state = obs.wait_for(lambda t, p: t.endswith("/state") and len(p["devices"]) == 2)
        assert state["firmware"]["version"] == "0.3.1" and state["boot"]["slot"] == "ota_0"
        manifest = _json.loads((fixtures / "ota-manifest.posix-sim.json").read_text())
        manifest["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/fw-posix-sim-0.4.0.bin"
        manifest.pop("request_id")
        mark = obs.mark()
        r = obs.command(did, "ota", manifest)
        assert r["ok"] is True, r
        st = obs.wait_for(lambda t, p: t.endswith("/events") and p["type"] == "selftest", after=mark,
                          timeout=15)
        assert st["detail"]["ok"] is True, st
        new = obs.wait_for(lambda t, p: t.endswith("/state") and p["boot"]["ota_state"] == "valid", after=mark)
        assert new["firmware"]["version"] == "0.4.0" and new["boot"]["slot"] == "ota_1"
        assert [x["busid"] for x in new["devices"]] == ["1-1", "1-2"]  # the same devices re-exported
        # the same manifest again: 0.4.0 is not newer than what runs now
        r = obs.command(did, "ota", dict(manifest))
        assert r["ok"] is False and r["error"].startswith("version"), r
    finally:
        httpd.shutdown()


# ---- faults a lab has: power cut, network cut, a broken firmware, a slow link ----


def _statuses(obs: Observer, did: str, after: int) -> list[dict]:
    with obs.cond:
        return [p for t, p, _ in obs.messages[after:]
                if t == f"fleet/v1/{did}/status" and isinstance(p, dict)]


def _mdns_answers_for(name: str, timeout: float = 5.0) -> bool:
    """Whether the responder answers for name, retried until timeout (announcing takes a moment)."""
    from agent_support import mdns_legacy_query  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if name.encode() in mdns_legacy_query():
            return True
    return False


def test_crash_gives_only_that_dongles_last_will_and_start_powers_it_on(dongle_bin, tmp_path,
                                                                       loopback_multicast_on):
    from agent_support import MdnsSniffer, mdns_legacy_query  # noqa: PLC0415

    from fleet.usbip.client import devlist  # noqa: PLC0415

    base_mac = random_mac()
    ids = [f"esp-{int(base_mac, 16) + i:012x}" for i in range(3)]
    obs = Observer(ids)
    d = MultiDongle(dongle_bin, ["--device", "hid-keyboard", "--device", "msc:size=1M", "--dongles", "3",
                                 "--base-address", "127.7.0.1", "--base-mac", base_mac, "--mqtt", MQTT_URL,
                                 "--state-dir", str(tmp_path), "--mdns"], tmp_path)
    victim, others = ids[1], [ids[0], ids[2]]
    sniffer = MdnsSniffer()
    try:
        for did in ids:
            obs.wait_for(lambda t, p, did=did: t == f"fleet/v1/{did}/state" and len(p["devices"]) == 2)
        assert _mdns_answers_for(victim)
        before = json.loads(d.command(f"@{victim} list")[3:])
        mark = obs.mark()
        heard = len(sniffer.packets)
        t0 = time.monotonic()
        assert d.command(f"@{victim} crash") == "ok"
        will = obs.wait_for(lambda t, p: t == f"fleet/v1/{victim}/status", after=mark, timeout=3)
        assert will == {"v": 1, "dongle_id": victim, "status": "offline", "reason": "lwt"}
        assert time.monotonic() - t0 < 3
        with pytest.raises(ConnectionRefusedError):  # no power, no listener
            socket.create_connection(("127.7.0.2", 3240), timeout=2)
        # mDNS: no goodbye went out, and it no longer answers for the dead dongle (the others still do)
        answers = mdns_legacy_query()
        assert others[0].encode() in answers and victim.encode() not in answers
        assert sniffer.mentioning(victim, heard) == []
        # powered off: only the power switch and the read-only views answer
        reply = d.command(f"@{victim} plug probe")
        assert reply == f"err {victim} is powered off (start powers it on)", reply
        assert d.command(f"@{victim} net off").startswith(f"err {victim} is powered off")
        assert json.loads(d.command(f"@{victim} stats")[3:])["power"] == "off"
        assert [x["busid"] for x in json.loads(d.command(f"@{victim} list")[3:])] == ["1-1", "1-2"]
        assert d.command(f"@{others[0]} start") == f"err {others[0]} is already running"

        mark = obs.mark()
        assert d.command(f"@{victim} start") == "ok"
        on = obs.wait_for(lambda t, p: t == f"fleet/v1/{victim}/status", after=mark, timeout=5)
        assert on["status"] == "online"
        boot = obs.wait_for(lambda t, p: t == f"fleet/v1/{victim}/events" and p["type"] == "rebooted",
                            after=mark)
        validate("events", boot)
        assert boot["detail"]["reason"] == "power_on" and boot["seq"] <= 2  # a new boot: memory was gone
        state = obs.wait_for(lambda t, p: t == f"fleet/v1/{victim}/state" and len(p["devices"]) == 2,
                             after=mark)
        # the same hardware in the same ports, exported again
        assert [(x["busid"], x["serial"]) for x in state["devices"]] == [(x["busid"], x["serial"])
                                                                        for x in before]
        assert {r.busid for r in devlist("127.7.0.2", 3240, timeout=5)} == {"1-1", "1-2"}
        assert json.loads(d.command(f"@{victim} stats")[3:])["power"] == "on"
        assert _mdns_answers_for(victim)
        # the other dongles never went offline
        for did in others:
            assert [s["status"] for s in _statuses(obs, did, 0)] == ["online"], did
    finally:
        sniffer.close()
        d.stop()
        obs.close()


def test_net_cut_ends_in_the_last_will_and_restoring_it_reconnects(dongle_bin, tmp_path,
                                                                   loopback_multicast_on):
    from agent_support import MdnsSniffer, mdns_legacy_query  # noqa: PLC0415

    from fleet.usbip import codec  # noqa: PLC0415

    base_mac = random_mac()
    ids = [f"esp-{int(base_mac, 16) + i:012x}" for i in range(2)]
    obs = Observer(ids)
    d = MultiDongle(dongle_bin, ["--device", "hid-keyboard", "--dongles", "2", "--base-address", "127.8.0.1",
                                 "--base-mac", base_mac, "--mqtt", MQTT_URL, "--state-dir", str(tmp_path),
                                 "--mqtt-keepalive", "5", "--mdns"], tmp_path)
    victim, other = ids[0], ids[1]
    pending = None
    sniffer = MdnsSniffer()
    try:
        for did in ids:
            obs.wait_for(lambda t, p, did=did: t == f"fleet/v1/{did}/state" and len(p["devices"]) == 1)
        assert _mdns_answers_for(victim)
        mark = obs.mark()
        t0 = time.monotonic()
        assert d.command(f"@{victim} net off") == "ok"
        assert json.loads(d.command(f"@{victim} stats")[3:])["link"] == "down"
        # the kernel still completes the TCP handshake, but nobody answers
        pending = socket.create_connection(("127.8.0.1", 3240), timeout=2)
        pending.sendall(codec.encode_devlist_request())
        pending.settimeout(1.0)
        with pytest.raises(TimeoutError):
            pending.recv(65536)
        heard = len(sniffer.packets)
        answers = mdns_legacy_query()  # its records are cut off too
        assert other.encode() in answers and victim.encode() not in answers
        # 1.5 x keepalive of silence; Mosquitto 2.0 checks keepalives coarsely and takes up to ~10.5 s
        will = obs.wait_for(lambda t, p: t == f"fleet/v1/{victim}/status", after=mark, timeout=14)
        assert will["status"] == "offline" and will["reason"] == "lwt"
        assert time.monotonic() - t0 >= 5  # not before the keepalive ran out
        assert d.command(f"@{victim} list").startswith("ok [")  # the USB side keeps running

        mark = obs.mark()
        assert d.command(f"@{victim} net on") == "ok"
        on = obs.wait_for(lambda t, p: t == f"fleet/v1/{victim}/status", after=mark, timeout=10)
        assert on["status"] == "online"
        obs.wait_for(lambda t, p: t == f"fleet/v1/{victim}/state" and len(p["devices"]) == 1, after=mark)
        # the connection made while cut is served now
        pending.settimeout(5.0)
        data = b""
        while True:
            size = codec.devlist_reply_size(data) if len(data) >= 8 else None
            if size is not None and len(data) >= size:
                break
            chunk = pending.recv(65536)
            assert chunk, "closed instead of answered"
            data += chunk
        assert [r.busid for r in codec.decode_devlist_reply(data)] == ["1-1"]
        assert sniffer.mentioning(victim, heard)  # announced again once back
        assert _mdns_answers_for(victim)
        # a cut link is not a power cycle, and the other dongle did not notice
        with obs.cond:
            assert not [p for t, p, _ in obs.messages[mark:] if t.endswith("/events") and isinstance(p, dict)
                        and p["type"] == "rebooted"]
        assert [s["status"] for s in _statuses(obs, other, 0)] == ["online"]
    finally:
        if pending is not None:
            pending.close()
        sniffer.close()
        d.stop()
        obs.close()


def test_powered_off_dongle_refuses_commands_and_bad_fault_flags(dongle_bin):
    from fleet.usbip.simdongle import ControlError  # noqa: PLC0415

    for flag, value in (("--mqtt-keepalive", "2"), ("--mqtt-keepalive", "soon"), ("--ota-rate", "-1")):
        r = subprocess.run([str(dongle_bin), flag, value], capture_output=True, text=True, timeout=10)
        assert r.returncode == 2 and flag in r.stderr and value in r.stderr, (flag, value, r.stderr)
    d = SimDongle(devices=["hid-keyboard"], binary=dongle_bin).start()
    try:
        port = d.port
        assert d.command("crash") == ""
        for cmd in ("plug probe", "unplug 1-1", "grant 1-1 127.0.0.1", "enforce on", "dev 1-1 type x",
                    "crash", "net off"):
            with pytest.raises(ControlError, match="^esp-000000000000 is powered off"):
                d.command(cmd)
        with pytest.raises(ControlError, match="^usage: start$"):
            d.command("@esp-000000000000 start now")
        assert d.command("@esp-000000000000 start") == ""
        deadline = time.monotonic() + 5
        while True:  # powered on at the next tick
            try:
                if [x["busid"] for x in d.list()] == ["1-1"] and d.stats()["power"] == "on":
                    break
            except ControlError:
                pass
            assert time.monotonic() < deadline, "not powered on"
            time.sleep(0.1)
        with pytest.raises(ControlError, match="is already running"):
            d.command("start")
        with pytest.raises(ControlError, match=r"^usage: net on\|off$"):
            d.command("net sideways")
        from fleet.usbip.client import devlist  # noqa: PLC0415
        assert [r.busid for r in devlist("127.0.0.1", port, timeout=5)] == ["1-1"]  # the same port again
    finally:
        d.stop()


def _index_after(obs: Observer, payload: dict) -> int:
    with obs.cond:
        return next(i for i, m in enumerate(obs.messages) if m[1] is payload) + 1


def _ota_events(obs: Observer, after: int, step: str) -> list[dict]:
    with obs.cond:
        return [p for t, p, _ in obs.messages[after:] if t.endswith("/events") and isinstance(p, dict)
                and p["type"] == "ota_progress" and p["detail"]["step"] == step]


def test_ota_image_without_usbip_listener_fails_its_selftest_and_rolls_back(agent_dongle, tmp_path):
    from agent_support import TEST_PUBKEY, FileServer, signed_manifest, sim_image  # noqa: PLC0415

    from fleet.usbip.client import devlist  # noqa: PLC0415

    www = tmp_path / "www"
    www.mkdir()
    image = sim_image("0.5.0", b"\x5a" * 4000, fault="no-usbip-listener")
    (www / "broken.bin").write_bytes(image)
    srv = FileServer(www)
    try:
        d, obs, did = agent_dongle(args=["--ota-pubkey", str(TEST_PUBKEY)])
        obs.wait_for(lambda t, p: t.endswith("/state") and len(p["devices"]) == 2)
        manifest = signed_manifest(image, "0.5.0", f"{srv.url}/broken.bin")
        rid = manifest["request_id"]
        mark = obs.mark()
        r = obs.command(did, "ota", manifest)
        assert r["ok"] is True, r
        st = obs.wait_for(lambda t, p: t.endswith("/events") and p["type"] == "selftest", after=mark,
                          timeout=15)
        validate("events", st)
        assert st["detail"]["ok"] is False
        assert st["detail"]["checks"] == {"network": True, "mqtt": True, "usbip_listener": False,
                                          "devices": True}
        assert "USB/IP listener not up" in st["detail"]["reason"]
        # after the second reset the old firmware runs and says why
        back = obs.wait_for(lambda t, p: t.endswith("/events") and p["type"] == "ota_progress"
                            and p["detail"]["step"] == "rollback"
                            and "rolled back to 0.3.1" in p["detail"]["reason"],
                            after=mark, timeout=15)
        validate("events", back)
        assert back["detail"]["request_id"] == rid and back["detail"]["version"] == "0.5.0"
        assert "USB/IP listener not up" in back["detail"]["reason"]
        assert all(e["detail"]["request_id"] == rid for e in _ota_events(obs, mark, "rollback"))
        state = obs.wait_for(lambda t, p: t.endswith("/state") and p["firmware"]["version"] == "0.3.1"
                             and len(p["devices"]) == 2, after=_index_after(obs, st), timeout=5)
        assert state["boot"]["slot"] == "ota_0"
        assert {x.busid for x in devlist("127.0.0.1", d.port, timeout=5)} == {"1-1", "1-2"}
        assert any("does NOT start its USB/IP listener" in line for line in d.output)  # said loudly
    finally:
        srv.close()


def test_ota_rate_caps_the_download(agent_dongle, tmp_path):
    from agent_support import TEST_PUBKEY, FileServer, signed_manifest, sim_image  # noqa: PLC0415

    www = tmp_path / "www"
    www.mkdir()
    image = sim_image("0.4.0", bytes(range(256)) * (8 * 1024))  # 2 MiB of payload
    (www / "big.bin").write_bytes(image)
    srv = FileServer(www)
    try:
        d, obs, did = agent_dongle(args=["--ota-pubkey", str(TEST_PUBKEY), "--ota-rate", "512K"])
        obs.wait_for(lambda t, p: t.endswith("/state") and len(p["devices"]) == 2)
        manifest = signed_manifest(image, "0.4.0", f"{srv.url}/big.bin")
        mark = obs.mark()
        t0 = time.monotonic()
        obs.raw(did, "ota", json.dumps(manifest).encode())
        obs.wait_for(lambda t, p: t.endswith("/events") and p["type"] == "ota_progress"
                     and p["detail"]["step"] == "download" and p["detail"]["bytes"] > 0,
                     after=mark, timeout=5)
        time.sleep(max(0.0, t0 + 1.2 - time.monotonic()))
        got = [e["detail"]["bytes"] for e in _ota_events(obs, mark, "download")]
        assert got and 0 < max(got) < len(image), got  # still downloading after 1 s
        assert max(got) <= 1.3 * 1.2 * 512 * 1024, got  # ...at the cap, not at loopback speed
        assert not _ota_events(obs, mark, "boot")
        mark = obs.mark()
        d.proc.kill()  # mid-download, as the cap was made for
        will = obs.wait_for(lambda t, p: t.endswith("/status"), after=mark, timeout=5)
        assert will["reason"] == "lwt"
    finally:
        srv.close()


# ---- an OTA download runs off the event loop (the esp32 runs it in a task of its own) ----


def _progress(obs: Observer, did: str, after: int) -> list[int]:
    with obs.cond:
        return [p["detail"]["bytes"] for t, p, _ in obs.messages[after:]
                if t == f"fleet/v1/{did}/events" and isinstance(p, dict) and p["type"] == "ota_progress"
                and p["detail"]["step"] == "download"]


def _check_b_serves(d: MultiDongle, b: str, b_ip: str) -> None:
    """B answers USB/IP and the control channel within a second, whatever A does."""
    from fleet.usbip.client import devlist  # noqa: PLC0415

    t0 = time.monotonic()
    assert [r.busid for r in devlist(b_ip, 3240, timeout=1.0)] == ["1-1"]
    stats = json.loads(d.command(f"@{b} stats")[3:])
    assert stats["power"] == "on"
    assert time.monotonic() - t0 < 1.0


def _watch_download(d: MultiDongle, obs: Observer, a: str, b: str, b_ip: str, after: int,
                    until: Callable[[], bool], timeout: float) -> list[int]:
    """Poll B twice a second while A downloads; the download progress A had reported at each poll."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, f"A's download did not get there; progress {seen}"
        _check_b_serves(d, b, b_ip)
        got = _progress(obs, a, after)
        seen.append(max(got) if got else 0)
        time.sleep(0.5)
    return seen


def test_ota_download_does_not_stall_the_other_dongles(dongle_bin, tmp_path):
    from agent_support import TEST_PUBKEY, RangeServer, signed_manifest, sim_image  # noqa: PLC0415

    www = tmp_path / "www"
    www.mkdir()
    new = sim_image("0.4.0", bytes(range(256)) * (12 * 1024))  # 3 MiB: 12 s at 256 KiB/s
    newer = sim_image("0.5.0", bytes(range(255, -1, -1)) * (12 * 1024))
    (www / "new.bin").write_bytes(new)
    (www / "newer.bin").write_bytes(newer)
    srv = RangeServer(www)
    base_mac = random_mac()
    a, b = (f"esp-{int(base_mac, 16) + i:012x}" for i in range(2))
    b_ip = "127.9.0.2"
    obs = Observer([a, b])
    state_dir = tmp_path / "state"
    # keepalive 5: a loop frozen for 7.5 s makes the broker publish B's Last Will
    d = MultiDongle(dongle_bin, ["--device", "hid-keyboard", "--dongles", "2", "--base-address", "127.9.0.1",
                                 "--base-mac", base_mac, "--mqtt", MQTT_URL, "--state-dir", str(state_dir),
                                 "--ota-pubkey", str(TEST_PUBKEY), "--ota-rate", "256K",
                                 "--mqtt-keepalive", "5", "--telemetry-interval", "1"], tmp_path)
    try:
        for did in (a, b):
            obs.wait_for(lambda t, p, did=did: t == f"fleet/v1/{did}/state" and len(p["devices"]) == 1)
        start = obs.mark()
        manifest = signed_manifest(new, "0.4.0", f"{srv.url}/new.bin")
        rid = manifest["request_id"]
        obs.raw(a, "ota", json.dumps(manifest).encode())
        obs.wait_for(lambda t, p: t == f"fleet/v1/{a}/events" and p["type"] == "ota_progress"
                     and p["detail"]["step"] == "download" and p["detail"]["bytes"] > 0,
                     after=start, timeout=5)
        # a second update while this one downloads: refused at once, the first goes on
        t0 = time.monotonic()
        other = obs.command(a, "ota", signed_manifest(newer, "0.5.0", f"{srv.url}/newer.bin"))
        assert other["ok"] is False and other["error"].startswith("state: "), other
        assert time.monotonic() - t0 < 2.0
        validate("cmd-result", other)

        def a_answered() -> bool:
            with obs.cond:
                return any(t == f"fleet/v1/{a}/cmd-result" and isinstance(p, dict) and p["request_id"] == rid
                           for t, p, _ in obs.messages[start:])

        seen = _watch_download(d, obs, a, b, b_ip, start, a_answered, timeout=40)
        # progress reached the service while the bytes were still coming
        during = [x for x in seen if 0 < x < len(new)]
        assert len(set(during)) >= 4 and during == sorted(during), seen
        done = obs.wait_for(lambda t, p: t == f"fleet/v1/{a}/cmd-result" and p["request_id"] == rid,
                            after=start)
        assert done["ok"] is True, done
        t_end = obs.arrivals(f"fleet/v1/{a}/cmd-result", start)[-1]
        confirmed = obs.wait_for(lambda t, p: t == f"fleet/v1/{a}/state"
                                 and p["boot"]["ota_state"] == "valid", after=start, timeout=20)
        assert confirmed["firmware"]["version"] == "0.4.0" and confirmed["boot"]["slot"] == "ota_1"
        # B kept its telemetry going all through A's download, and never went offline
        t_b = [x for x in obs.arrivals(f"fleet/v1/{b}/telemetry", start) if x <= t_end]
        assert len(t_b) >= 8, t_b
        assert max(y - x for x, y in zip(t_b, t_b[1:], strict=False)) < 2.5, t_b
        assert [s["status"] for s in _statuses(obs, b, 0)] == ["online"]

        # a power cut in the middle of the next download
        mark = obs.mark()
        manifest = signed_manifest(newer, "0.5.0", f"{srv.url}/newer.bin")
        obs.raw(a, "ota", json.dumps(manifest).encode())
        obs.wait_for(lambda t, p: t == f"fleet/v1/{a}/events" and p["type"] == "ota_progress"
                     and p["detail"]["step"] == "download" and p["detail"]["bytes"] >= 1024 * 1024,
                     after=mark, timeout=15)
        t0 = time.monotonic()
        assert d.command(f"@{a} crash") == "ok"
        assert time.monotonic() - t0 < 1.0  # the download stops within a pacing step
        will = obs.wait_for(lambda t, p: t == f"fleet/v1/{a}/status", after=mark, timeout=10)
        assert will["reason"] == "lwt"
        assert d.proc.poll() is None
        _check_b_serves(d, b, b_ip)
        cut = obs.mark()
        assert d.command(f"@{a} start") == "ok"
        boot = obs.wait_for(lambda t, p: t == f"fleet/v1/{a}/events" and p["type"] == "rebooted", after=cut)
        assert boot["detail"]["reason"] == "power_on"
        st = obs.wait_for(lambda t, p: t == f"fleet/v1/{a}/state", after=cut)
        assert st["firmware"]["version"] == "0.4.0" and st["boot"]["slot"] == "ota_1"  # the old slot boots
        assert not _ota_events(obs, mark, "boot")
        # what the cut left is consistent: the retry resumes from the journal and the image verifies
        retry = obs.mark()
        obs.raw(a, "ota", json.dumps(manifest).encode())
        r = obs.wait_for(lambda t, p: t == f"fleet/v1/{a}/cmd-result"
                         and p["request_id"] == manifest["request_id"], after=retry, timeout=30)
        assert r["ok"] is True, r
        # the GET asked for the rest only, from what the journal vouched for
        gets = [line.split() for line in srv.requests() if line.startswith("GET /fw/newer.bin ")]
        assert gets[-1][3] == "206", gets
        assert int(gets[-1][2].removeprefix("range=bytes=").rstrip("-")) >= 256 * 1024, gets
        assert 0 not in _progress(obs, a, retry)[1:], _progress(obs, a, retry)  # never started over
        up = obs.wait_for(lambda t, p: t == f"fleet/v1/{a}/state" and p["firmware"]["version"] == "0.5.0"
                          and p["boot"]["ota_state"] == "valid", after=retry, timeout=20)
        assert up["boot"]["slot"] == "ota_0"
        assert [s["status"] for s in _statuses(obs, b, 0)] == ["online"]
        _check_b_serves(d, b, b_ip)

        # SIGTERM mid-download: the thread is stopped and joined, its answer leaves before the goodbye
        last = sim_image("0.6.0", b"\x17" * (3 * 1024 * 1024))
        (www / "last.bin").write_bytes(last)
        mark = obs.mark()
        manifest = signed_manifest(last, "0.6.0", f"{srv.url}/last.bin")
        obs.raw(a, "ota", json.dumps(manifest).encode())
        obs.wait_for(lambda t, p: t == f"fleet/v1/{a}/events" and p["type"] == "ota_progress"
                     and p["detail"]["step"] == "download" and p["detail"]["bytes"] > 0,
                     after=mark, timeout=15)
        assert d.stop() == 0, Path(d.log.name).read_text()[-3000:]
        res = obs.wait_for(lambda t, p: t == f"fleet/v1/{a}/cmd-result"
                           and p["request_id"] == manifest["request_id"], after=mark, timeout=5)
        assert res["ok"] is False and res["error"].startswith("download: cancelled at "), res
        bye = obs.wait_for(lambda t, p: t == f"fleet/v1/{a}/status" and p.get("reason") == "shutdown",
                           after=mark, timeout=5)
        assert _index_after(obs, res) < _index_after(obs, bye)
    finally:
        rc = d.stop()
        obs.close()
        srv.close()
    assert rc == 0, Path(d.log.name).read_text()[-3000:]
