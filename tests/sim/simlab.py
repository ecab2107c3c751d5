"""A real service (`fleet serve`, SQLite, Mosquitto on 127.0.0.1:1883) and a `fleet sim`
lab reporting to it, driven only through the `fleet` command line and the REST API, as
a user would."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from client.labkit import FLEET, Service, clear_retained, dongle_binary  # noqa: E402

T = TypeVar("T")


def wait_for(fn: Callable[[], T], timeout: float, what: str, every: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what} not within {timeout}s (last: {last})")


class SimLab:
    """One service, one `fleet sim run` process with ``dongles`` dongles from ``base_address``."""

    def __init__(self, tmp: Path, *, dongles: int, devices: str, base_address: str,
                 sim_args: Sequence[str] = ()) -> None:
        self.tmp = tmp
        self.svc = Service(tmp / "svc")
        self.n = dongles
        self.device_kinds = devices
        self.base_address = base_address
        self.sim_args = list(sim_args)
        self.base_mac = "02" + secrets.token_hex(4) + "00"
        self.ids = [f"esp-{int(self.base_mac, 16) + i:012x}" for i in range(dongles)]
        self.state_dir = tmp / "sim"
        self.control = self.state_dir / "control.sock"
        self.sim: subprocess.Popen[bytes] | None = None
        self.sim_log = tmp / "sim.log"
        self.api: httpx.Client | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> SimLab:
        self.svc.start({"admin": "admin"})
        self.api = httpx.Client(
            base_url=self.svc.url + "/api/v1",
            headers={"Authorization": f"Bearer {self.svc.tokens['admin']}"},
            timeout=30,
        )
        self.start_sim()
        for d in self.ids:
            wait_for(lambda d=d: self.status(d) == "online", 60, f"{d} online in the service")
        return self

    @property
    def pubkey(self) -> Path:
        """The service's OTA verification key, written by `fleet serve` at start."""
        return self.svc_data / "ota" / "signing-key.pub.pem"

    @property
    def svc_data(self) -> Path:
        return Path(self.svc.env["FLEET_DATA_DIR"])

    def start_sim(self, extra: Sequence[str] = ()) -> None:
        args = [*self.sim_args, *extra]
        if "--ota-pubkey" not in args:
            args += ["--ota-pubkey", str(self.pubkey)]
        self.sim = subprocess.Popen(
            [*FLEET, "sim", "run", "--dongles", str(self.n), "--devices", self.device_kinds,
             "--base-address", self.base_address, "--base-mac", self.base_mac,
             "--state-dir", str(self.state_dir), "--no-mdns", *args],
            env={**os.environ, "FLEET_DONGLE_BIN": str(dongle_binary())},
            stdout=open(self.sim_log, "ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill9_sim(self) -> None:
        """SIGKILL the whole simulator: no dongle says goodbye, nothing is flushed. Returns
        once the service has the Last Wills, so a later "online" is the next boot's."""
        assert self.sim is not None
        os.killpg(self.sim.pid, signal.SIGKILL)
        self.sim.wait(10)
        for d in self.ids:
            wait_for(lambda d=d: self.status(d) == "offline", 30, f"{d} offline by its Last Will")

    def stop(self) -> None:
        if self.api:
            self.api.close()
        if self.sim and self.sim.poll() is None:
            os.killpg(self.sim.pid, signal.SIGTERM)
            try:
                self.sim.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.sim.pid, signal.SIGKILL)
                self.sim.wait(10)
        self.svc.stop()
        clear_retained(self.ids)

    # -- the user's tools ---------------------------------------------------------------------
    def fleet(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`fleet ...` as the admin, from a workstation that logged in to this service."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
        home = self.tmp / "home"
        home.mkdir(exist_ok=True)
        env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
                    "FLEET_URL": self.svc.url, "FLEET_TOKEN": self.svc.tokens["admin"]})
        return subprocess.run([*FLEET, *args], env=env, capture_output=True, text=True, timeout=timeout)

    def simctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`fleet sim <subcommand> ...` against this lab's simulator."""
        return subprocess.run([*FLEET, "sim", *args, "--control", str(self.control)],
                              capture_output=True, text=True, timeout=30)

    # -- what the service knows ---------------------------------------------------------------
    def dongle(self, d: str) -> dict[str, Any]:
        assert self.api is not None
        r = self.api.get(f"/dongles/{d}")
        return r.json() if r.status_code == 200 else {}

    def status(self, d: str) -> str | None:
        return self.dongle(d).get("status")

    def devices(self, d: str) -> list[dict[str, Any]]:
        assert self.api is not None
        return self.api.get("/devices", params={"dongle": d}).json()["items"]

    def events(self, d: str, type: str | None = None) -> list[dict[str, Any]]:
        """Oldest first."""
        assert self.api is not None
        params: dict[str, Any] = {"dongle": d, "limit": 1000}
        if type:
            params["type"] = type
        return list(reversed(self.api.get("/events", params=params).json()["items"]))

    def command(self, request_id: str) -> dict[str, Any]:
        assert self.api is not None
        r = self.api.get(f"/commands/{request_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def logs(self) -> str:
        return (f"--- service ---\n{self.svc.log.read_text()[-3000:]}\n"
                f"--- sim ---\n{self.sim_log.read_text()[-3000:] if self.sim_log.exists() else ''}")
