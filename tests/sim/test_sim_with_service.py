"""The real service sees a `fleet sim` lab: dongles and devices appear, hot-plug shows
within 2 s, and a dongle process killed with SIGKILL goes offline through its Last Will."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from client.labkit import FLEET, Service, clear_retained, dongle_binary  # noqa: E402

pytestmark = [pytest.mark.dongle, pytest.mark.mosquitto]


def wait_for(fn, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout}s (last: {last})")


def test_service_follows_a_simulated_lab(tmp_path: Path) -> None:
    svc = Service(tmp_path / "svc")
    svc.start({"admin": "admin"})
    base_mac = "02bb" + secrets.token_hex(3) + "00"
    ids = [f"esp-{int(base_mac, 16) + i:012x}" for i in range(2)]
    env = {**os.environ, "FLEET_DONGLE_BIN": str(dongle_binary())}
    control = tmp_path / "sim" / "control.sock"
    sim = subprocess.Popen(
        [
            *FLEET,
            "sim",
            "run",
            "--dongles",
            "2",
            "--devices",
            "msc,hid",
            "--base-address",
            "127.78.0.1",
            "--base-mac",
            base_mac,
            "--state-dir",
            str(tmp_path / "sim"),
            "--no-mdns",
        ],
        env=env,
        start_new_session=True,
    )
    api = httpx.Client(
        base_url=svc.url + "/api/v1", headers={"Authorization": f"Bearer {svc.tokens['admin']}"}, timeout=30
    )
    try:

        def devices(dongle: str) -> list[dict]:
            return api.get("/devices", params={"dongle": dongle}).json()["items"]

        def dongle(d: str) -> dict | None:
            r = api.get(f"/dongles/{d}")
            return r.json() if r.status_code == 200 else None

        for d in ids:
            wait_for(lambda d=d: (dongle(d) or {}).get("status") == "online", 30, f"{d} online")
            got = wait_for(lambda d=d: len(devices(d)) == 2 and devices(d), 10, f"{d} devices")
            assert sorted((x["busid"], x["state"]) for x in got) == [("1-1", "free"), ("1-2", "free")]
            assert dongle(d)["ip"].startswith("127.78.0.")

        r = subprocess.run(
            [*FLEET, "sim", "ctl", "--control", str(control), ids[1], "plug", "probe"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 0 and r.stdout.strip() == "ok 1-3", r.stdout + r.stderr
        t0 = time.monotonic()
        wait_for(
            lambda: any(x["busid"] == "1-3" for x in devices(ids[1])), 2.0, "plugged probe in the service"
        )
        plugged_after = time.monotonic() - t0

        r = subprocess.run(
            [*FLEET, "sim", "ctl", "--control", str(control), ids[1], "unplug", "1-1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 0, r.stdout
        wait_for(
            lambda: (
                {x["busid"] for x in devices(ids[1]) if x["state"] != "offline"} == {"1-2", "1-3"}
                or {x["busid"] for x in devices(ids[1])} == {"1-2", "1-3"}
            ),
            2.0,
            "unplug in the service",
        )

        # kill -9: no goodbye from anyone; the broker publishes the Last Wills
        os.killpg(sim.pid, signal.SIGKILL)
        sim.wait(10)
        for d in ids:
            got = wait_for(
                lambda d=d: (dongle(d) or {}).get("status") == "offline" and dongle(d),
                60,
                f"{d} offline by Last Will",
            )
            assert got["status_reason"] == "lwt"
            assert all(x["state"] == "offline" for x in devices(d))
        print(f"hot-plug reached the service in {plugged_after * 1000:.0f} ms")
    finally:
        api.close()
        if sim.poll() is None:
            os.killpg(sim.pid, signal.SIGKILL)
            sim.wait(10)
        svc.stop()
        clear_retained(ids)
