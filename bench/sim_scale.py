#!/usr/bin/env python3
"""Many simulated dongles in one process: time until all are online, memory and CPU per dongle.

    .venv/bin/python bench/sim_scale.py --dongles 1000 [--telemetry-interval 10] [--steady 30] [--service]

Launches one process hosting N simulated dongles (``fleet-dongle --dongles N`` when the binary
supports it, else the agent test host ``agent_live``: the same C agent and posix ports over cores
on the core's fake USB host) against Mosquitto on 127.0.0.1:1883. It watches ``fleet/v1/+/status``
from before the launch and reports:

* time from launch until every dongle's retained ``status`` says online;
* resident memory of the process per dongle, and the marginal cost (N dongles vs 1);
* CPU per dongle while the fleet publishes steady telemetry, and the telemetry rate seen
  against the rate expected (N / interval);
* with ``--service``: ``fleet serve`` on a fresh PostgreSQL database (started and subscribed
  before the dongles), and the time until its ``dongles`` table has all N online.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "agent_fw" / "host" / "build"
TARGET_ONLINE_S = 60.0


def pick_binary(explicit: str | None) -> tuple[Path, str]:
    if explicit:
        p = Path(explicit)
        kind = "agent_live" if p.name == "agent_live" else "fleet-dongle"
        return p, kind
    dongle = Path(os.environ.get("FLEET_DONGLE_BIN", BUILD / "fleet-dongle"))
    if dongle.is_file():
        usage = subprocess.run([str(dongle), "--help"], capture_output=True, text=True).stdout
        if "--dongles" in usage:
            return dongle, "fleet-dongle"
    return Path(os.environ.get("FLEET_AGENT_LIVE_BIN", BUILD / "test-agent" / "agent_live")), "agent_live"


def command_line(binary: Path, kind: str, n: int, base_mac: str, base_addr: str, interval: int,
                 state_dir: Path) -> list[str]:
    if kind == "agent_live":
        return [str(binary), "--mqtt", "mqtt://127.0.0.1:1883", "--dongles", str(n), "--base-mac", base_mac,
                "--base-address", base_addr, "--telemetry-interval", str(interval)]
    return [str(binary), "--mqtt", "mqtt://127.0.0.1:1883", "--dongles", str(n), "--base-address", base_addr,
            "--base-mac", base_mac, "--telemetry-interval", str(interval), "--state-dir", str(state_dir),
            "--device", "hid-keyboard", "--log-level", "warn"]


class Watch:
    def __init__(self, ids: set[str]) -> None:
        self.ids = ids
        self.online: dict[str, float] = {}
        self.telemetry = 0
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"simscale-{secrets.token_hex(4)}")
        self.c.on_message = self._msg
        ready = threading.Event()
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.connect("127.0.0.1", 1883, 60)
        self.c.loop_start()
        self.c.subscribe([("fleet/v1/+/status", 1), ("fleet/v1/+/telemetry", 0)])
        if not ready.wait(10):
            sys.exit("sim_scale: no SUBACK from Mosquitto on 127.0.0.1:1883")

    def _msg(self, c, u, m) -> None:
        parts = m.topic.split("/")
        if len(parts) != 4 or parts[2] not in self.ids:
            return
        with self.lock:
            if parts[3] == "telemetry":
                self.telemetry += 1
            else:
                try:
                    online = json.loads(m.payload).get("status") == "online"
                except ValueError:
                    return
                if online:
                    self.online.setdefault(parts[2], time.monotonic())
                else:
                    self.online.pop(parts[2], None)

    def count(self) -> tuple[int, int]:
        with self.lock:
            return len(self.online), self.telemetry

    def close(self) -> None:
        # clear the run's retained status/state: leftovers pile up in the broker, and a subscriber
        # that arrives later gets them all at once (Mosquitto drops what exceeds its
        # max_queued_messages, 1000 by default, for a QoS 1 subscriber)
        for did in self.ids:
            for leaf in ("status", "state"):
                self.c.publish(f"fleet/v1/{did}/{leaf}", b"", qos=1, retain=True)
        deadline = time.monotonic() + 30
        while self.c.want_write() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        self.c.loop_stop()
        self.c.disconnect()


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def run_fleet(args, n: int, base_mac: str, steady: float, tmp: Path) -> dict:
    base = int(base_mac, 16)
    ids = {f"esp-{base + i:012x}" for i in range(n)}
    w = Watch(ids)
    service = None
    if args.service:
        service = start_service(tmp)
        wait_service_ready(service)
    cmd = command_line(args.binary, args.kind, n, base_mac, args.base_address, args.telemetry_interval, tmp)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(tmp / f"dongles-{n}.log", "w"))
    res: dict = {"dongles": n}
    try:
        deadline = t0 + args.timeout
        while time.monotonic() < deadline:
            online, _ = w.count()
            if online == n:
                break
            if p.poll() is not None:
                sys.exit(f"sim_scale: the dongle process exited with {p.returncode}; see {tmp}/dongles-{n}.log")
            time.sleep(0.05)
        online, _ = w.count()
        res["online"] = online
        res["time_to_all_online_s"] = round(time.monotonic() - t0, 2) if online == n else None
        if service is not None:
            res["service_all_online_s"] = wait_service(service, ids, t0, deadline)
        time.sleep(min(3.0, steady))  # let the connect burst settle
        cpu0, (_, tel0), s0 = proc_cpu_s(p.pid), w.count(), time.monotonic()
        time.sleep(steady)
        cpu1, (_, tel1), s1 = proc_cpu_s(p.pid), w.count(), time.monotonic()
        res["rss_bytes"] = proc_rss(p.pid)
        res["cpu_percent_steady"] = round(100 * (cpu1 - cpu0) / (s1 - s0), 2)
        res["telemetry_per_s"] = round((tel1 - tel0) / (s1 - s0), 1)
        res["telemetry_expected_per_s"] = round(n / args.telemetry_interval, 1)
    finally:
        p.terminate()
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
        w.close()
        if service is not None:
            stop_service(service)
    return res


# ------------------------------------------------------------------ optional: the service


def start_service(tmp: Path) -> dict:
    import psycopg

    db = f"fleet_simscale_{secrets.token_hex(4)}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{db}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
    env = {**os.environ, "FLEET_MQTT_URL": "mqtt://127.0.0.1:1883", "FLEET_DATABASE_URL": url,
           "FLEET_API_PORT": "0", "FLEET_MDNS_ENABLED": "false", "FLEET_LOG_LEVEL": "warning"}
    p = subprocess.Popen([str(REPO / ".venv" / "bin" / "fleet"), "serve", "--no-mdns"], env=env,
                         stdout=subprocess.DEVNULL, stderr=open(tmp / "service.log", "w"))
    return {"proc": p, "db": db}


def wait_service_ready(svc: dict, timeout: float = 60.0) -> None:
    """Until the service has migrated its database and (a moment later) subscribed.

    Started first on purpose: a service that subscribes after 1,000 dongles have published
    receives ~2,000 retained status/state messages at once, more than Mosquitto queues for one
    QoS 1 subscriber by default (max_queued_messages 1000), and loses some statuses."""
    import psycopg

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={svc['db']}") as c:
                c.execute("SELECT count(*) FROM dongles").fetchone()
            time.sleep(2.0)
            return
        except psycopg.Error:
            time.sleep(0.3)
    sys.exit("sim_scale: fleet serve did not migrate its database within 60 s; see service.log")


def wait_service(svc: dict, ids: set[str], t0: float, deadline: float) -> float | None:
    import psycopg

    ids_list = sorted(ids)
    while time.monotonic() < deadline + 30:
        try:
            with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={svc['db']}") as c:
                (n,) = c.execute("SELECT count(*) FROM dongles WHERE status = 'online' AND id = ANY(%s)",
                                 (ids_list,)).fetchone()
            if n == len(ids):
                return round(time.monotonic() - t0, 2)
        except psycopg.Error:
            pass  # not migrated yet
        if svc["proc"].poll() is not None:
            print("sim_scale: fleet serve exited; see service.log", file=sys.stderr)
            return None
        time.sleep(0.5)
    return None


def stop_service(svc: dict) -> None:
    import psycopg

    svc["proc"].terminate()
    try:
        svc["proc"].wait(30)
    except subprocess.TimeoutExpired:
        svc["proc"].kill()
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{svc["db"]}" WITH (FORCE)')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dongles", type=int, default=1000)
    ap.add_argument("--telemetry-interval", type=int, default=10)
    ap.add_argument("--steady", type=float, default=30.0, help="seconds of steady telemetry measured")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--base-address", default="127.8.0.1")
    ap.add_argument("--binary", default=None)
    ap.add_argument("--service", action="store_true", help="also run fleet serve and wait for it to see all")
    args = ap.parse_args()
    if not 1 <= args.dongles <= 5000:
        ap.error("--dongles must be 1..5000")
    args.binary, args.kind = pick_binary(args.binary)
    if not args.binary.is_file():
        sys.exit(f"sim_scale: {args.binary} missing; build agent_fw/host first")
    tmp = Path(f"/tmp/sim_scale-{secrets.token_hex(3)}")
    tmp.mkdir()
    print(f"binary: {args.binary} ({args.kind}); logs in {tmp}")
    # a random locally administered base MAC: retained messages of earlier runs do not count
    one = run_fleet(argparse.Namespace(**{**vars(args), "service": False}), 1, "02" + secrets.token_hex(5),
                    min(5.0, args.steady), tmp)
    many = run_fleet(args, args.dongles, "02" + secrets.token_hex(5), args.steady, tmp)
    n = args.dongles
    print(json.dumps({"one": one, "many": many}, indent=1))
    print(f"dongles online:            {many['online']}/{n}")
    t = many["time_to_all_online_s"]
    print(f"time to all online:        {t} s (target < {TARGET_ONLINE_S:.0f} s: "
          f"{'met' if t is not None and t < TARGET_ONLINE_S else 'NOT met'})")
    if args.service:
        print(f"service sees all online:   {many.get('service_all_online_s')} s after launch")
    print(f"RSS total:                 {many['rss_bytes'] / 2**20:.1f} MiB")
    print(f"RSS per dongle:            {many['rss_bytes'] / n / 1024:.1f} KiB (average)")
    print(f"RSS per extra dongle:      {(many['rss_bytes'] - one['rss_bytes']) / max(1, n - 1) / 1024:.1f} KiB "
          f"(marginal, vs one dongle: {one['rss_bytes'] / 2**20:.1f} MiB)")
    print(f"CPU, steady telemetry:     {many['cpu_percent_steady']} % of one core = "
          f"{many['cpu_percent_steady'] / n * 1000:.2f} m% per dongle")
    print(f"telemetry rate:            {many['telemetry_per_s']}/s seen vs {many['telemetry_expected_per_s']}/s "
          f"expected (ratio {many['telemetry_per_s'] / max(0.1, many['telemetry_expected_per_s']):.2f})")
    return 0 if many["online"] == n else 1


if __name__ == "__main__":
    sys.exit(main())
