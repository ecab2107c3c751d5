"""``fleet dongles ls | show | reboot | power | config | commands`` against a real
uvicorn serving the API on a real database.

The dongle's answers (cmd-result) are fed to the service's ingest, as the MQTT
adapter would, by a thread watching what the service publishes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from fleet import contracts
from fleet.api import create_api
from fleet.services.container import Services, build_services

from .helpers import DONGLE_A, DONGLE_B, Db, RecordingPublisher, bring_online, device, msg, serving, status


@pytest.fixture
def svc(db: Db, publisher: RecordingPublisher) -> Services:
    s = build_services(db.sf, publisher, dongle_mqtt_url="mqtt://127.0.0.1:1999")
    bring_online(s, DONGLE_A, [device("1-1", serial="PROBE0001"), device("1-2", serial="PROBE0002")])
    bring_online(s, DONGLE_B, [])
    s.ingest.apply([status(DONGLE_B, "offline", "lwt")])
    return s


@pytest.fixture
def server(svc: Services) -> Iterator[str]:
    with serving(create_api(svc)) as url:
        yield url


@pytest.fixture
def fleet(server: str, svc: Services, tmp_path: Any, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from fleet.client.dongles_cmds import dongles_app

    monkeypatch.setenv("FLEET_URL", server)
    monkeypatch.setenv("FLEET_TOKEN", svc.users.add("root", "admin")[1])
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    app = typer.Typer()
    app.add_typer(dongles_app, name="dongles")

    def run(*args: str, code: int = 0) -> str:
        r = CliRunner().invoke(app, ["dongles", *args])
        assert r.exit_code == code, r.output
        return r.output

    return run


class Dongle:
    """Answers every command the service publishes to DONGLE_A, ok or with ``error``."""

    def __init__(self, svc: Services, publisher: RecordingPublisher, error: str | None = None):
        self.svc, self.publisher, self.error = svc, publisher, error
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        answered = 0
        while not self.stop.is_set():
            for _, name, payload in self.publisher.sent[answered:]:
                body: dict[str, Any] = {
                    "request_id": payload["request_id"],
                    "command": name,
                    "ok": not self.error,
                }
                if self.error:
                    body["error"] = self.error
                else:
                    body["detail"] = {"seen": name}
                time.sleep(0.3)  # the CLI really has to wait
                self.svc.ingest.apply([msg("cmd-result", DONGLE_A, body)])
                answered += 1
            time.sleep(0.05)

    def __enter__(self) -> Dongle:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def test_ls_and_show(fleet: Any) -> None:
    lines = fleet("ls").splitlines()
    assert lines[0].split() == ["DONGLE", "STATUS", "FIRMWARE", "CHIP", "IP", "DEVICES", "LAST", "SEEN"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows[DONGLE_A][1:6] == ["online", "0.3.1", "esp32s3", "127.0.0.5", "2"]
    assert rows[DONGLE_B][1] == "offline"
    listed = json.loads(fleet("ls", "--json", "--status", "online"))
    assert [d["id"] for d in listed] == [DONGLE_A]
    shown = json.loads(fleet("show", DONGLE_A))
    assert shown["id"] == DONGLE_A and [d["busid"] for d in shown["devices"]] == ["1-1", "1-2"]
    out = fleet("show", "esp-0000000000ff", code=1)
    assert "fleet: no dongle 'esp-0000000000ff'" in out and "fleet dongles ls" in out


def test_events_oldest_first_filtered_and_as_json(fleet: Any, svc: Services) -> None:
    svc.ingest.apply([
        msg("events", DONGLE_A, {"seq": 700, "uptime_s": 9, "type": "import_refused", "busid": "1-1",
                                 "client": "127.0.0.1:40123", "detail": {"reason": "not granted to this address"}}),
        msg("events", DONGLE_A, {"seq": 701, "uptime_s": 9, "type": "ota_progress",
                                 "detail": {"step": "download", "bytes": 5, "total": 10}}),
    ])
    lines = fleet("events", DONGLE_A).splitlines()
    assert lines[0].split() == ["RECEIVED", "TYPE", "BUSID", "CLIENT", "DETAIL"]
    body = [line.split() for line in lines[1:]]
    assert [r[1] for r in body][-2:] == ["import_refused", "ota_progress"]
    assert body[-2][2:4] == ["1-1", "127.0.0.1:40123"]
    only = [json.loads(line) for line in fleet("events", DONGLE_A, "--type", "ota_progress", "--json").splitlines()]
    assert [e["detail"] for e in only] == [{"step": "download", "bytes": 5, "total": 10}]
    out = fleet("events", "esp-0000000000ff", code=1)
    assert "no dongle 'esp-0000000000ff'" in out


def test_reboot_power_config_with_wait(fleet: Any, svc: Services, publisher: RecordingPublisher) -> None:
    with Dongle(svc, publisher):
        out = fleet("reboot", DONGLE_A, "--reason", "maintenance", "--wait")
        assert out.splitlines()[-1] == f'reboot to {DONGLE_A}: done {{"seen": "reboot"}}'
        fleet("power", DONGLE_A, "1-2", "--action", "off", "--wait")
        out = fleet(
            "config", DONGLE_A, "--telemetry-interval", "60", "--no-enforce-grants", "--log-level", "debug",
            "--allow", "1366:0101", "--allow", "class:3", "--deny", "class:0x09", "--mqtt-url",
            "mqtt://127.0.0.1:1884", "--wait",
        )  # fmt: skip
        assert out.splitlines()[-1].startswith(f"config to {DONGLE_A}: done")
    (_, _, reboot), (_, _, power), (_, _, config) = publisher.sent
    assert reboot["reason"] == "maintenance"
    assert (power["busid"], power["action"]) == ("1-2", "off")
    contracts.validate("cmd-config", config)
    assert config["telemetry_interval_s"] == 60 and config["enforce_grants"] is False
    assert config["filters"] == {
        "allow": [{"vid": 0x1366, "pid": 0x0101}, {"class": 3}],
        "deny": [{"class": 9}],
    }
    assert config["mqtt"] == {"url": "mqtt://127.0.0.1:1884"} and config["log_level"] == "debug"

    table = fleet("commands", DONGLE_A).splitlines()
    assert table[0].split() == ["REQUEST", "NAME", "STATE", "OUTCOME", "SENT", "ANSWERED", "ERROR"]
    assert [line.split()[1:3] for line in table[1:]] == [
        ["config", "acked"],
        ["port-power", "acked"],
        ["reboot", "acked"],
    ]
    listed = json.loads(fleet("commands", DONGLE_A, "--json", "--name", "config"))
    assert [c["payload"]["version"] for c in listed] == [1]


def test_refusal_and_timeout_with_wait(fleet: Any, svc: Services, publisher: RecordingPublisher) -> None:
    with Dongle(svc, publisher, error="port-power: this dongle cannot switch port power"):
        out = fleet("power", DONGLE_A, "1-1", "--wait", code=1)
    assert f"fleet: {DONGLE_A} refused port-power: port-power: this dongle cannot switch port power" in out
    out = fleet("reboot", DONGLE_A, "--wait", "--timeout", "0.5", code=1)  # nobody answers
    assert f"fleet: reboot to {DONGLE_A}: no answer within 0.5 s (state sent)" in out
    assert f"fleet dongles commands {DONGLE_A}" in out


def test_clear_errors(fleet: Any, publisher: RecordingPublisher) -> None:
    out = fleet("reboot", DONGLE_B, code=4)  # 409 -> EXIT_BUSY
    assert f"fleet: dongle {DONGLE_B} is offline; commands are not queued" in out
    out = fleet("power", DONGLE_A, "1-7", code=1)
    assert f"fleet: dongle {DONGLE_A} has no port 1-7" in out
    out = fleet("config", DONGLE_A, "--telemetry-interval", "0", code=1)
    assert "fleet: telemetry_interval_s: 0 is less than the minimum of 1" in out
    out = fleet("config", DONGLE_A, "--allow", "usb-disk", code=2)
    assert "fleet: --allow 'usb-disk': give VID:PID in hex (1366:0101) or class:N (class:3)" in out
    out = fleet("power", DONGLE_A, "1-1", "--action", "toggle", code=1)
    assert "fleet: body.action: Input should be 'on', 'off' or 'cycle'" in out
    assert publisher.sent == []
