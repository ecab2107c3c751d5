"""Admin commands end to end: ``fleet serve`` (subprocess) and the simulated dongle's own
MQTT agent (``fleet-dongle --mqtt``) over the real Mosquitto on 127.0.0.1:1883.

The dongle parses every command with its real C parsers, so this is where a config
the service builds and the dongle's idea of a valid config meet.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from client.labkit import Lab, Service, dongle_binary  # noqa: E402

pytestmark = [pytest.mark.mosquitto, pytest.mark.dongle]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    if not dongle_binary().exists():
        pytest.fail(f"{dongle_binary()} missing: build agent_fw/host or set FLEET_DONGLE_BIN")
    service = Service(tmp_path / "service")
    service.start({"admin": "admin"})
    lab = Lab(service, tmp_path)
    try:
        yield lab
    finally:
        lab.close()
        service.stop()


def _until(c: httpx.Client, what: str, path: str, done: Any, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = c.get(path).json()
        if done(body):
            return body  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"{what}: last seen {body}"
        time.sleep(0.1)


def _answered(c: httpx.Client, r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 202, r.text
    rid = r.json()["request_id"]
    return _until(c, f"answer to {rid}", f"/commands/{rid}", lambda v: v["state"] in ("acked", "rejected"))


def test_config_power_and_reboot_with_a_real_dongle(lab: Lab) -> None:
    dongle, agent = lab.dongle(["hid-keyboard:port=1-2"])
    with lab.api("admin") as c:
        _until(c, "dongle online", f"/dongles/{agent.id}", lambda d: d.get("status") == "online")
        _until(c, "device reported", f"/devices?dongle={agent.id}", lambda p: p.get("total") == 1)

        first = _answered(c, c.post(f"/dongles/{agent.id}/config", json={"telemetry_interval_s": 7}))
        assert first["state"] == "acked", first
        assert first["result"]["detail"]["version"] == 1
        # version 2, everything else as in version 1: the dongle sees only the log level change
        second = _answered(
            c,
            c.post(
                f"/dongles/{agent.id}/config",
                json={"log_level": "debug", "mqtt": {"username": "dongle", "password": "sekret"}},
            ),
        )
        assert second["state"] == "acked", second
        assert second["result"]["detail"]["version"] == 2
        assert set(second["result"]["detail"]["changed"]) == {"log", "mqtt"}
        assert second["payload"]["mqtt"]["password"] == "********"
        stored = json.loads((agent.state_dir / agent.id / "config.kv").read_text())  # as the dongle saved it
        assert (stored["version"], stored["telemetry_interval_s"], stored["log_level"]) == (2, 7, "debug")

        # what the dongle would refuse is refused before it is sent, naming the dongle's field
        r = c.post(
            f"/dongles/{agent.id}/config", json={"filters": {"allow": [{"class": 3, "vid": 1, "pid": 1}]}}
        )
        assert r.status_code == 422 and r.json()["error"]["field"] == "filters.allow[0]"

        power = _answered(c, c.post(f"/dongles/{agent.id}/ports/1-2/power", json={"action": "off"}))
        assert power["state"] == "acked" and power["result"]["detail"] == {"action": "off"}, power
        _until(c, "port off", f"/devices?dongle={agent.id}", lambda p: p["items"][0]["present"] is False)
        power = _answered(c, c.post(f"/dongles/{agent.id}/ports/1-2/power", json={"action": "on"}))
        assert power["state"] == "acked", power
        _until(c, "port on", f"/devices?dongle={agent.id}", lambda p: p["items"][0]["present"] is True)

        reboot = _answered(c, c.post(f"/dongles/{agent.id}/reboot", json={"reason": "e2e"}))
        assert reboot["state"] == "acked", reboot
        rebooted = _until(
            c,
            "rebooted event",
            f"/events?dongle={agent.id}&type=rebooted",
            lambda p: p.get("total", 0) >= 2,  # the first one is the power-on boot
        )
        assert [e["detail"]["reason"] for e in rebooted["items"]] == ["e2e", "power_on"]
        _until(c, "dongle back online", f"/dongles/{agent.id}", lambda d: d.get("status") == "online")
    assert dongle.alive()
