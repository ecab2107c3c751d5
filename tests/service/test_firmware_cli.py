"""``fleet firmware ...`` and ``fleet dongles ota`` against a real uvicorn serving the API.

The dongle's side of an OTA is played by feeding its ``ota_progress`` events to
the service's ingest, exactly as the MQTT adapter would.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy import func, select
from typer.testing import CliRunner

from fleet.api import create_api
from fleet.db.models import Command
from fleet.domain.firmware import parse_image
from fleet.services.container import Services, build_services
from fleet.services.firmware import FirmwareSettings, load_signing_key

from .helpers import DONGLE_A, Db, RecordingPublisher, msg, serving
from .test_firmware import FIXTURE_IMAGE, TEST_KEY, TEST_PUB, online


def _cli() -> typer.Typer:
    # The firmware and dongles groups as the root command registers them.
    from fleet.client import firmware_cmds
    from fleet.client.dongles_cmds import dongles_app

    app = typer.Typer()
    firmware_cmds.register(app)
    app.add_typer(dongles_app, name="dongles")
    return app


@pytest.fixture
def fsvc(sqlite_db: Db, publisher: RecordingPublisher, tmp_path: Path) -> Services:
    settings = FirmwareSettings(tmp_path / "firmware", load_signing_key(TEST_KEY), "http://127.0.0.1:1")
    return build_services(sqlite_db.sf, publisher, firmware=settings)


@pytest.fixture
def server(fsvc: Services) -> Iterator[str]:
    with serving(create_api(fsvc)) as url:
        yield url


@pytest.fixture
def fleet(server: str, fsvc: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    token = fsvc.users.add("root", "admin")[1]
    monkeypatch.setenv("FLEET_URL", server)
    monkeypatch.setenv("FLEET_TOKEN", token)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    app = _cli()

    def run(*args: str, code: int = 0) -> str:
        r = CliRunner().invoke(app, list(args))
        out = r.output  # stdout and stderr
        assert r.exit_code == code, out
        return out

    return run


def test_firmware_commands(fleet: Any, tmp_path: Path) -> None:
    out = fleet("firmware", "add", str(FIXTURE_IMAGE), "--notes", "sim build")
    assert out.startswith("firmware 1: posix-sim 0.4.0, 1064 bytes, sha256 cee9c2f6")
    assert "already registered" not in out
    assert "(already registered)" in fleet("firmware", "add", str(FIXTURE_IMAGE))
    img = tmp_path / "fw-0.5.0.bin"
    out = fleet(
        "firmware",
        "sim-image",
        "--version",
        "0.5.0",
        "--fault",
        "no-usbip-listener",
        "--payload-size",
        "100",
        "-o",
        str(img),
    )
    assert out.startswith(f"{img}: posix-sim 0.5.0")
    data = img.read_bytes()
    assert (
        data[64:].startswith(b"fleet-sim-fault: no-usbip-listener\n") and parse_image(data).version == "0.5.0"
    )
    fleet("firmware", "add", str(img))
    table = fleet("firmware", "ls")
    assert table.splitlines()[0].split() == [
        "ID",
        "VERSION",
        "CHIP",
        "SIZE",
        "SECURE",
        "REVS",
        "SHA256",
        "UPLOADED",
        "BY",
        "FILE",
    ]
    assert [line.split()[1] for line in table.splitlines()[1:]] == ["0.5.0", "0.4.0"]
    listed = json.loads(fleet("firmware", "ls", "--json"))
    assert [f["filename"] for f in listed] == ["fw-0.5.0.bin", "fw-posix-sim-0.4.0.bin"]
    shown = json.loads(fleet("firmware", "show", "1"))
    assert shown["notes"] == "sim build" and shown["url"].endswith(f"/fw/{shown['sha256']}.bin")
    assert fleet("firmware", "pubkey") == TEST_PUB.read_text()
    assert fleet("firmware", "rm", "2").startswith("removed firmware 2: posix-sim 0.5.0")
    out = fleet("firmware", "show", "2", code=1)
    assert "fleet: no firmware 2" in out and "fleet firmware ls" in out
    out = fleet("firmware", "add", str(tmp_path / "missing.bin"), code=2)
    assert f"cannot read {tmp_path / 'missing.bin'}" in out
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"MZ not firmware")
    assert "fleet: image: unknown format" in fleet("firmware", "add", str(bad), code=1)
    assert "version: 'v1' is not a SemVer" in fleet(
        "firmware", "sim-image", "--version", "v1", "-o", str(bad), code=2
    )


def _play_dongle(svc: Services, steps: list[dict[str, Any]]) -> threading.Thread:
    """Once the next ota command is recorded, report its progress as the dongle would."""

    with svc.session_factory() as s:
        seen = s.scalar(select(func.max(Command.id))) or 0

    def run() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with svc.session_factory() as s:
                rid = s.scalar(select(Command.request_id).where(Command.name == "ota", Command.id > seen))
            if rid is not None:
                break
            time.sleep(0.05)
        for i, detail in enumerate(steps):
            svc.ingest.apply(
                [
                    msg(
                        "events",
                        DONGLE_A,
                        {
                            "seq": 500 + i,
                            "uptime_s": 9,
                            "type": "ota_progress",
                            "detail": {**detail, "request_id": rid},
                        },
                    )
                ]
            )
            time.sleep(0.3)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_dongles_ota_waits_for_the_outcome(fleet: Any, fsvc: Services, publisher: RecordingPublisher) -> None:
    fleet("firmware", "add", str(FIXTURE_IMAGE))
    online(fsvc, DONGLE_A, version="0.3.0")
    out = fleet("dongles", "ota", DONGLE_A, "--version", "0.4.0")
    [(_, _, payload)] = [s for s in publisher.sent if s[1] == "ota"]
    assert out == f"ota 0.4.0 sent to {DONGLE_A}: request {payload['request_id']}\n"
    # A downgrade is refused by the service, naming both versions.
    online(fsvc, DONGLE_A, version="0.5.0")
    out = fleet("dongles", "ota", DONGLE_A, "--firmware", "1", code=4)  # 409: EXIT_BUSY
    assert "runs 0.5.0; 0.4.0 is a downgrade" in out and "fix: add --allow-downgrade" in out
    out = fleet("dongles", "ota", DONGLE_A, code=2)
    assert "give exactly one of --version V or --firmware ID" in out

    t = _play_dongle(
        fsvc,
        [
            {"step": "download", "bytes": 512, "total": 1064},
            {"step": "download", "bytes": 1064, "total": 1064},
            {"step": "boot", "version": "0.4.0"},
            {"step": "selftest"},
            {"step": "confirm", "version": "0.4.0"},
        ],
    )
    out = fleet(
        "dongles", "ota", DONGLE_A, "--firmware", "1", "--allow-downgrade", "--wait", "--timeout", "30"
    )
    t.join()
    assert "ota 0.4.0 sent to" in out and out.rstrip().endswith(f"{DONGLE_A} runs 0.4.0 (confirmed)")

    t = _play_dongle(
        fsvc,
        [
            {"step": "boot", "version": "0.4.0"},
            {"step": "rollback", "reason": "selftest: usbip listener is not running"},
        ],
    )
    out = fleet("dongles", "ota", DONGLE_A, "--version", "0.4.0", "--allow-downgrade", "--wait", code=1)
    t.join()
    assert f"to {DONGLE_A} rolled back: selftest: usbip listener is not running" in out
