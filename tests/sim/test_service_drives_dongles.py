"""The service drives simulated dongles end to end, through the `fleet` CLI and the REST
API only: config applied and reported, reboot, port power, and firmware updates — the
happy path, a firmware whose self-test fails and rolls back, `kill -9` in the middle of a
download followed by a retry that resumes, and images the dongle must refuse."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from simlab import SimLab, wait_for

from fleet.usbip import client as usbip
from fleet.usbip.client import ImportRefused

pytestmark = [pytest.mark.dongle, pytest.mark.mosquitto]

FACTORY = "0.3.1"  # the simulated dongle's factory image


def _request_id(out: str) -> str:
    m = re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", out)
    assert m, f"no request id in {out!r}"
    return m.group(0)


def _firmware(lab: SimLab, tmp: Path, version: str, *extra: str) -> dict:
    image = tmp / f"fw-{version}.bin"
    r = lab.fleet("firmware", "sim-image", "--version", version, "-o", str(image), *extra)
    assert r.returncode == 0, r.stderr
    r = lab.fleet("firmware", "add", str(image), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def lab(tmp_path: Path):
    lab = SimLab(tmp_path, dongles=1, devices="msc,hid", base_address="127.80.0.1")
    try:
        yield lab.start()
    finally:
        lab.stop()


def test_config_reboot_and_port_power(lab: SimLab) -> None:
    d, ip = lab.ids[0], "127.80.0.1"
    with pytest.raises(ImportRefused):  # grants are enforced: nobody holds a lease
        usbip.import_device(ip, 3240, "1-1", timeout=5)
    refused = wait_for(lambda: lab.events(d, "import_refused"), 5, "the refusal reported")[-1]
    assert refused["busid"] == "1-1" and refused["detail"]["reason"] == "not granted to this address"
    assert re.fullmatch(r"127\.0\.0\.1:[1-9][0-9]*", refused["client"]), refused

    r = lab.fleet("dongles", "config", d, "--no-enforce-grants", "--telemetry-interval", "2", "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    cmd = lab.command(_request_id(r.stdout + r.stderr))
    assert cmd["state"] == "acked" and cmd["payload"]["version"] == 1
    assert cmd["payload"]["enforce_grants"] is False and cmd["payload"]["telemetry_interval_s"] == 2
    usbip.import_device(ip, 3240, "1-1", timeout=5).close()  # applied without a reboot

    r = lab.fleet("dongles", "config", d, "--telemetry-interval", "0")
    assert r.returncode != 0 and "telemetry" in (r.stdout + r.stderr).lower()

    # the dongle keeps its config across a reboot
    boots = len(lab.events(d, "rebooted"))
    r = lab.fleet("dongles", "reboot", d, "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: len(lab.events(d, "rebooted")) > boots and lab.status(d) == "online", 20, "back after reboot")
    wait_for(lambda: usbip.devlist(ip, timeout=2), 10, "the listener up again")
    usbip.import_device(ip, 3240, "1-2", timeout=5).close()

    # a second config moves the version on and is applied too
    r = lab.fleet("dongles", "config", d, "--enforce-grants", "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    assert lab.command(_request_id(r.stdout + r.stderr))["payload"]["version"] == 2
    with pytest.raises(ImportRefused):
        usbip.import_device(ip, 3240, "1-1", timeout=5)

    removed = len(lab.events(d, "device_removed"))
    r = lab.fleet("dongles", "power", d, "1-2", "--action", "cycle", "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: len(lab.events(d, "device_removed")) > removed, 5, "the port cycled")
    wait_for(lambda: any(x["busid"] == "1-2" and x["state"] == "free" for x in lab.devices(d)), 5,
             "the device back after the power cycle")


def test_ota_happy_path_then_a_firmware_that_fails_its_self_test(lab: SimLab, tmp_path: Path) -> None:
    d = lab.ids[0]
    assert lab.dongle(d)["firmware"]["version"] == FACTORY
    _firmware(lab, tmp_path, "0.4.0")
    r = lab.fleet("dongles", "ota", d, "--version", "0.4.0", "--wait", "--timeout", "90", timeout=150)
    assert r.returncode == 0, r.stdout + r.stderr + lab.logs()
    got = wait_for(lambda: (x := lab.dongle(d))["firmware"]["version"] == "0.4.0" and x, 15, "0.4.0 reported")
    assert got["boot"] == {"slot": "ota_1", "ota_state": "valid"} and got["status"] == "online"
    cmd = lab.command(_request_id(r.stdout + r.stderr))
    assert cmd["outcome"] == "confirmed", cmd
    selftests = lab.events(d, "selftest")
    assert selftests[-1]["detail"]["ok"] is True
    assert sorted(x["busid"] for x in lab.devices(d) if x["state"] == "free") == ["1-1", "1-2"]

    _firmware(lab, tmp_path, "0.5.0", "--fault", "no-usbip-listener")
    r = lab.fleet("dongles", "ota", d, "--version", "0.5.0", "--wait", "--timeout", "120", timeout=180)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out + lab.logs()
    assert "rolled back" in out.lower() and "listener" in out.lower(), out
    cmd = lab.command(_request_id(out))
    assert cmd["outcome"] == "rolled_back" and "listener" in cmd["progress"]["reason"], cmd
    failed = lab.events(d, "selftest")[-1]["detail"]
    assert failed["ok"] is False and failed["checks"]["usbip_listener"] is False
    got = wait_for(lambda: (x := lab.dongle(d))["status"] == "online" and x["firmware"]["version"] == "0.4.0" and x,
                   30, "back on 0.4.0")
    assert got["boot"]["slot"] == "ota_1"
    assert {x.busid for x in usbip.devlist("127.80.0.1", timeout=5)} == {"1-1", "1-2"}


def test_refusals_tampered_bytes_wrong_key_and_downgrade(lab: SimLab, tmp_path: Path) -> None:
    d = lab.ids[0]
    fw = _firmware(lab, tmp_path, "0.4.0")
    # someone alters the stored image after it was signed: the dongle's SHA-256 check refuses it
    stored = lab.svc_data / "firmware" / f"{fw['sha256']}.bin"
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF
    stored.write_bytes(bytes(data))
    r = lab.fleet("dongles", "ota", d, "--version", "0.4.0", "--wait", "--timeout", "60", timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "sha256" in out.lower(), out + lab.logs()
    assert lab.command(_request_id(out))["outcome"] == "refused"
    assert lab.dongle(d)["firmware"]["version"] == FACTORY

    # the service refuses a downgrade itself, naming both versions
    r = lab.fleet("dongles", "ota", d, "--version", "0.3.1")
    assert r.returncode != 0

    # a dongle provisioned with another key refuses the service's signature before downloading
    lab.kill9_sim()
    other = Path(__file__).resolve().parents[2] / "agent_fw/test/unit/agent/fixtures/TEST-ONLY-ota-signing-key.pub.pem"
    lab.start_sim(["--ota-pubkey", str(other)])
    wait_for(lambda: lab.status(d) == "online", 30, "the re-provisioned dongle online")
    fw2 = _firmware(lab, tmp_path, "0.4.1")
    r = lab.fleet("dongles", "ota", d, "--firmware", str(fw2["id"]), "--wait", "--timeout", "60", timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "signature" in out.lower(), out
    assert not [e for e in lab.events(d, "ota_progress")
                if e["detail"].get("request_id") == _request_id(out) and e["detail"]["step"] == "download"]


def test_kill_9_mid_download_keeps_the_old_firmware_and_the_retry_resumes(tmp_path: Path) -> None:
    lab = SimLab(tmp_path, dongles=1, devices="msc", base_address="127.80.1.1",
                 sim_args=["--ota-rate", str(256 * 1024)])
    try:
        lab.start()
        d = lab.ids[0]
        _firmware(lab, tmp_path, "0.4.0", "--payload-size", str(3 << 20))
        r = lab.fleet("dongles", "ota", d, "--version", "0.4.0")
        assert r.returncode == 0, r.stdout + r.stderr
        first = _request_id(r.stdout + r.stderr)
        wait_for(lambda: (lab.command(first).get("progress") or {}).get("bytes", 0) >= 768 * 1024, 30,
                 "a good part downloaded")
        lab.kill9_sim()

        lab.start_sim()  # power back on: the old firmware runs, no rate limit this time
        wait_for(lambda: lab.status(d) == "online", 30, "back online")
        got = wait_for(lambda: (x := lab.dongle(d))["firmware"]["version"] and x, 10, "state reported")
        assert got["firmware"]["version"] == FACTORY and got["boot"]["slot"] == "ota_0"

        r = lab.fleet("dongles", "ota", d, "--version", "0.4.0", "--wait", "--timeout", "90", timeout=150)
        assert r.returncode == 0, r.stdout + r.stderr + lab.logs()
        retry = _request_id(r.stdout + r.stderr)
        # Resumed, not started again: a download from 0 reports progress from ~10 %
        # (300 KiB) on, a resumed one starts with the offset the journal made durable.
        done = [e["detail"]["bytes"] for e in lab.events(d, "ota_progress")
                if e["detail"].get("request_id") == retry and e["detail"]["step"] == "download"]
        moved = [b for b in done if b > 0]
        assert moved and moved[0] >= 512 * 1024, done
        wait_for(lambda: lab.dongle(d)["firmware"]["version"] == "0.4.0", 15, "0.4.0 running")
    finally:
        lab.stop()
