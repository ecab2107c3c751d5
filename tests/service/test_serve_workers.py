"""``fleet serve --workers N``: N API processes on one port, one database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from fleet.cli import main
from fleet.db.engine import make_engine, make_session_factory
from fleet.services.commands import NoTransport
from fleet.services.container import build_services

from .helpers import DONGLE_A, bring_online, device

FLEET_SCRIPT = Path(sys.executable).parent / "fleet"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return out


def test_workers_serve_leases_from_several_processes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env["FLEET_DATA_DIR"] = str(tmp_path / "data")
    port = _free_port()
    server = subprocess.Popen(
        [str(FLEET_SCRIPT), "serve", "--workers", "2", "--no-mqtt", "--no-mdns", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'fleet.db'}")
        svc = build_services(make_session_factory(engine), NoTransport())
        bring_online(svc, DONGLE_A, [device("1-1"), device("1-2")])
        _, token = svc.users.add("erin", "user")
        auth = {"Authorization": f"Bearer {token}"}
        # Several connections, so the kernel spreads them over the workers.
        ids = []
        for i in range(6):
            with httpx.Client(base_url=base, headers=auth) as c:
                r = c.post("/api/v1/leases", json={"device": 1 + i % 2, "clients": ["127.0.0.1"]})
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
                busy = c.post("/api/v1/leases", json={"device": 1 + i % 2, "clients": ["127.0.0.1"]})
                assert busy.status_code == 409 and "leased by erin" in busy.json()["error"]["message"]
                assert c.post(f"/api/v1/leases/{ids[-1]}/release").status_code == 200
        assert len(_children(server.pid)) >= 2  # the workers (uvicorn's supervisor is the parent)
        # No MQTT here: the grants are recorded as failed, for an MQTT-enabled
        # replica's scheduler to re-send.
        cmds = svc.commands.list(name="grant")
        assert cmds["total"] == 6 and {c["state"] for c in cmds["items"]} == {"failed"}
        engine.dispose()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert server.returncode == 0, server.stderr.read().decode() if server.stderr else ""


def test_workers_refuse_to_share_mqtt(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    old = {k: os.environ.pop(k) for k in [k for k in os.environ if k.startswith("FLEET_")]}
    os.environ["FLEET_DATA_DIR"] = str(tmp_path / "data")
    try:
        code = main(["serve", "--workers", "2", "--no-mdns"])
    finally:
        del os.environ["FLEET_DATA_DIR"]
        os.environ.update(old)
    assert code == 2
    assert "worker processes serve the API only; add --no-mqtt --no-mdns" in capsys.readouterr().err
