"""`fleet sim`: simulated dongles come online over MQTT and obey the control channel."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from client.labkit import FLEET, clear_retained, dongle_binary  # noqa: E402

pytestmark = [pytest.mark.dongle, pytest.mark.mosquitto]


def dongle_bin() -> str:
    return str(dongle_binary())


class Watch:
    """Records the latest retained/live payload per topic under the given dongle ids."""

    def __init__(self, ids: list[str]):
        self.latest: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watch-{secrets.token_hex(4)}")
        self.c.on_message = self._on
        self.c.connect("127.0.0.1", 1883)
        for i in ids:
            self.c.subscribe(f"fleet/v1/{i}/#", qos=1)
        self.c.loop_start()

    def _on(self, _c, _u, msg) -> None:
        if msg.payload:
            with self.lock:
                self.latest[msg.topic] = json.loads(msg.payload)

    def wait(self, topic: str, pred, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                p = self.latest.get(topic)
            if p is not None and pred(p):
                return p
            time.sleep(0.05)
        raise AssertionError(f"{topic}: condition not met within {timeout}s; last {self.latest.get(topic)}")

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def sim(tmp_path: Path):
    base_mac = "02aa" + secrets.token_hex(3) + "00"  # unique ids per run on the shared broker
    ids = [f"esp-{int(base_mac, 16) + i:012x}" for i in range(3)]
    env = {**os.environ, "FLEET_DONGLE_BIN": dongle_bin()}
    proc = subprocess.Popen(
        [
            *FLEET,
            "sim",
            "run",
            "--dongles",
            "3",
            "--devices",
            "msc,probe",
            "--base-address",
            "127.77.0.1",
            "--state-dir",
            str(tmp_path / "sim"),
            "--no-mdns",
            "--telemetry-interval",
            "1",
            "--base-mac",
            base_mac,
        ],
        env=env,
    )
    yield proc, ids, tmp_path / "sim" / "control.sock", env
    proc.terminate()
    proc.wait(30)
    clear_retained(ids)


def ctl(env: dict, control: Path, *words: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*FLEET, "sim", "ctl", "--control", str(control), *words],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_dongles_come_online_and_follow_plug_unplug(sim) -> None:
    proc, ids, control, env = sim
    w = Watch(ids)
    try:
        for i in ids:
            w.wait(f"fleet/v1/{i}/status", lambda p: p["status"] == "online", timeout=20)
            st = w.wait(f"fleet/v1/{i}/state", lambda p: len(p["devices"]) == 2)
            assert {d["busid"] for d in st["devices"]} == {"1-1", "1-2"}
            assert st["net"]["ip"].startswith("127.77.0.")
        w.wait(f"fleet/v1/{ids[0]}/telemetry", lambda p: p["interval_s"] == 1)

        r = ctl(env, control, ids[1], "plug", "cdc-acm")
        assert r.returncode == 0 and r.stdout.strip() == "ok 1-3", r.stdout + r.stderr
        t0 = time.monotonic()
        w.wait(f"fleet/v1/{ids[1]}/state", lambda p: any(d["busid"] == "1-3" for d in p["devices"]), 2.0)
        assert time.monotonic() - t0 <= 2.0

        r = ctl(env, control, ids[1], "unplug", "1-1")
        assert r.returncode == 0, r.stdout
        w.wait(
            f"fleet/v1/{ids[1]}/state", lambda p: {d["busid"] for d in p["devices"]} == {"1-2", "1-3"}, 2.0
        )
        # the other dongles are untouched
        assert len(w.latest[f"fleet/v1/{ids[0]}/state"]["devices"]) == 2
    finally:
        w.close()
    assert proc.poll() is None


def test_bad_arguments_are_refused_with_a_reason(tmp_path: Path) -> None:
    env = {**os.environ, "FLEET_DONGLE_BIN": dongle_bin()}
    cases = [
        (["--devices", "msc,floppy"], "unknown device 'floppy'"),
        (["--base-address", "192.0.2.10"], "must stay inside 127.0.0.0/8"),
        (["--base-mac", "xyz"], "expected 12 hex digits"),
        (["--broker", "http://127.0.0.1"], "expected mqtt://"),
    ]
    for args, msg in cases:
        r = subprocess.run(
            [*FLEET, "sim", "run", "--state-dir", str(tmp_path), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 2 and msg in r.stderr, (args, r.stderr)
    # the short form, `fleet sim --dongles N ...`, is `fleet sim run`
    r = subprocess.run([*FLEET, "sim", "--dongles", "2", "--state-dir", str(tmp_path), "--devices", "floppy"],
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "unknown device 'floppy'" in r.stderr, r.stderr
    r = subprocess.run([*FLEET, "sim", "run", "--state-dir", str(tmp_path), "--ota-pubkey", str(tmp_path / "no.pem")],
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "no.pem: no such file" in r.stderr, r.stderr
    r = ctl(env, tmp_path / "nothing.sock", "stats")
    assert r.returncode == 2 and "is `fleet sim run` up?" in r.stderr
