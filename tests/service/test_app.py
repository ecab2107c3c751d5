"""The composition root: settings -> migrated database -> services -> API, and ``fleet serve``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from fleet.app import build_runtime, create_app
from fleet.config import load_settings


def test_app_migrates_starts_scheduler_and_serves(tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=str(tmp_path), scheduler_interval_seconds=0.1)
    runtime = build_runtime(settings, mqtt=False, mdns=False)
    _, token = runtime.services.users.add("alice", "admin")
    with TestClient(create_app(runtime)) as client:
        assert client.get("/healthz").json()["database"] == "ok"
        assert (
            client.get("/api/v1/dongles", headers={"Authorization": f"Bearer {token}"}).json()["total"] == 0
        )
        deadline = time.monotonic() + 5
        while not runtime.scheduler.is_leader and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runtime.scheduler.is_leader
        assert "fleet_scheduler_leader 1.0" in client.get("/metrics").text
    assert (tmp_path / "fleet.db").exists()


def test_fleet_serve_without_transports_answers_healthz(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env |= {"FLEET_DATA_DIR": str(tmp_path), "FLEET_API_PORT": str(port), "FLEET_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "fleet"), "serve", "--no-mqtt", "--no-mdns"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "fleet serve did not come up"
                time.sleep(0.2)
        assert r.json() == {"status": "ok", "database": "ok"}
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/devices").status_code == 401
    finally:
        proc.terminate()
        proc.wait(10)
