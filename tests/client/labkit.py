"""Lab kit shared by tests/client and tests/vhci: a real fleet service (``fleet serve``
subprocess, SQLite in a temp dir, Mosquitto on 127.0.0.1:1883), real simulated dongles,
whose own MQTT agent reports them to the service and obeys its grants and revokes.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt

from fleet.usbip.simdongle import SimDongle

REPO = Path(__file__).resolve().parents[2]
FLEET = [sys.executable, "-c", "import sys; from fleet.cli import main; sys.exit(main())"]
TOPIC_ROOT = "fleet/v1"


def dongle_binary() -> Path:
    """$FLEET_DONGLE_BIN, else $FLEET_DONGLE (what fleet.usbip.simdongle reads), else the CMake build."""
    env = os.environ.get("FLEET_DONGLE_BIN") or os.environ.get("FLEET_DONGLE")
    return Path(env) if env else REPO / "agent_fw/host/build/fleet-dongle"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def clear_retained(dongle_ids: list[str]) -> None:
    """Leave no retained status/state of these dongles on the shared broker."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"cleanup-{secrets.token_hex(4)}")
    c.connect("127.0.0.1", 1883)
    c.loop_start()
    for d in dongle_ids:
        for kind in ("status", "state"):
            c.publish(f"{TOPIC_ROOT}/{d}/{kind}", b"", qos=1, retain=True).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()


class Service:
    def __init__(self, tmp: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "FLEET_DATA_DIR": str(tmp / "data"),
            "FLEET_MQTT_URL": "mqtt://127.0.0.1:1883",
            "FLEET_MQTT_CLIENT_ID": f"fleet-svc-{secrets.token_hex(4)}",
            "FLEET_API_HOST": "127.0.0.1",
            "FLEET_API_PORT": str(self.port),
            "FLEET_LOG_LEVEL": "info",
        }
        self.log = tmp / "service.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def fleet(self, *args: str) -> str:
        r = subprocess.run([*FLEET, *args], env=self.env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def add_user(self, name: str, role: str = "user") -> str:
        return self.fleet("users", "add", name, "--role", role).strip().splitlines()[-1]

    def start(self, users: dict[str, str]) -> None:
        self.fleet("db", "upgrade")
        # Before serving: a second writer on the SQLite file would wait for the server's locks.
        self.tokens = {name: self.add_user(name, role) for name, role in users.items()}
        self.proc = subprocess.Popen(
            [*FLEET, "serve", "--no-mdns"], env=self.env, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT
        )
        # generous: on a loaded 2-core machine the first start (imports, migrations) is slow
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError("fleet serve did not come up:\n" + self.log.read_text())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Agent:
    """The dongle's own MQTT agent (``fleet-dongle --mqtt``): the service learns about the
    dongle, and sends it grants and revokes, exactly as it would with a real one."""

    def __init__(self, dongle_id: str, state_dir: Path):
        self.id = dongle_id
        self.state_dir = state_dir

    def args(self) -> list[str]:
        return ["--mqtt", "mqtt://127.0.0.1:1883", "--id", self.id, "--state-dir", str(self.state_dir),
                "--telemetry-interval", "5"]

    def rebooted(self, dongle: SimDongle) -> None:
        """Nothing to do: the restarted dongle comes back online by itself and the service
        re-sends the grants of its active leases."""

    def close(self) -> None:
        clear_retained([self.id])


class Lab:
    """Service + dongles + users, and `fleet` invocations as a given user."""

    def __init__(self, service: Service, tmp: Path):
        self.service = service
        self.tmp = tmp
        self.dongles: list[tuple[SimDongle, Agent]] = []
        self.tokens: dict[str, str] = dict(service.tokens)

    def dongle(self, devices: list[str]) -> tuple[SimDongle, Agent]:
        agent = Agent(f"esp-{secrets.token_hex(6)}", self.tmp / f"dongle-{len(self.dongles)}")
        d = SimDongle(devices, args=["--enforce-grants", *agent.args()], binary=dongle_binary()).start()
        self.dongles.append((d, agent))
        return d, agent

    def api(self, user: str) -> httpx.Client:
        return httpx.Client(base_url=self.service.url + "/api/v1",
                            headers={"Authorization": f"Bearer {self.tokens[user]}"}, timeout=60)

    def name_device(self, dongle_id: str, busid: str, name: str, tags: list[str], admin: str = "admin") -> dict:
        with self.api(admin) as c:
            deadline = time.monotonic() + 30
            while True:
                r = c.get("/devices", params={"dongle": dongle_id})
                items = [d for d in r.json()["items"] if d["busid"] == busid]
                if items:
                    break
                assert time.monotonic() < deadline, (
                    f"the service never learned {dongle_id} {busid}:\n{self.service.log.read_text()[-3000:]}"
                )
                time.sleep(0.1)
            r = c.patch(f"/devices/{items[0]['id']}", json={"name": name, "tags": tags})
            assert r.status_code == 200, r.text
            return r.json()

    def env(self, user: str) -> dict[str, str]:
        home = self.tmp / f"home-{user}"
        home.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
        env.update({
            "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_STATE_HOME": str(home / ".state"),
            "FLEET_URL": self.service.url, "FLEET_TOKEN": self.tokens[user], "FLEET_USER": user,
        })
        return env

    def close(self) -> None:
        """End this test's leases and free its names for the next test on the same service."""
        with self.api("admin") as c:
            for lease in c.get("/leases", params={"state": "active"}).json()["items"]:
                c.post(f"/leases/{lease['id']}/revoke", json={"reason": "test cleanup"})
            for _d, b in self.dongles:
                for dev in c.get("/devices", params={"dongle": b.id}).json()["items"]:
                    c.patch(f"/devices/{dev['id']}", json={"name": None, "tags": []})
        for d, b in self.dongles:
            d.stop()  # first: a stopping dongle publishes its retained "offline"
            b.close()


