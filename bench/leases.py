#!/usr/bin/env python3
"""Lease throughput and latency under concurrent clients.

    .venv/bin/python bench/leases.py [--db postgres|sqlite|both] [--clients 50]
                                     [--seconds 10] [--devices 25] [--via http|service]
                                     [--scenario shared|own|both] [--workers 1]

Each client loops: acquire a device, release it. ``--scenario shared`` has
every client pick a random device among ``--devices`` (fewer devices than
clients, so requests collide and the 409 path is exercised); ``own`` gives
each client its own device (no contention: the pure cost of a lease).
``--via http`` (default) drives the real REST API served by uvicorn in a
separate process (``--workers`` processes) from one asyncio client that speaks
raw HTTP/1.1 over one keep-alive connection per client, so the load
generator stays cheap; ``--via service`` calls the lease service directly
(one thread per client) to show the cost without HTTP. ``FLEET_BENCH_THREADS``
sets the API's thread pool (default 8, as ``fleet serve``).

Printed: acquire/release/conflict rates, operations per second (acquire +
release + conflict answers), p50/p99 latency per operation, and the CPU
seconds spent by the server processes, the PostgreSQL backends serving them
and the load generator (from /proc, so other jobs on a shared machine do not
count), with operations per server CPU-second. On a loaded machine the wall
clock rate says little; ops per server CPU-second says what the service can
do per core it gets (>= 1,000 means 500 ops/s needs half of one core).
The double-grant count must be 0: counted by the clients (a device granted
while another client still held it) and by the database afterwards (two
lease intervals overlapping on one device).
Target on the 2-core reference machine: >= 500 lease operations/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

PG_ADMIN_URL = os.environ.get("FLEET_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TARGET_OPS = 500.0
WORKERS = 1


# -- shared with bench/metrics.py ------------------------------------------------------------
@contextmanager
def scratch_database(backend: str) -> Iterator[str]:
    """A migrated, empty database that is deleted afterwards."""
    from fleet.db import migrate
    from fleet.db.engine import make_engine

    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="fleet-bench-") as d:
            url = f"sqlite:///{d}/fleet.db"
            e = make_engine(url)
            migrate.upgrade(e)
            e.dispose()
            yield url
        return
    name = f"fleet_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        e = make_engine(url)
        migrate.upgrade(e)
        e.dispose()
        yield url
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class CountingPublisher:
    """Takes commands as a connected MQTT client would, and counts them."""

    def __init__(self) -> None:
        self.count = 0

    def publish(self, dongle_id: str, name: str, payload: dict[str, Any]) -> None:
        self.count += 1


def dongle_id(i: int) -> str:
    return f"esp-{i:012x}"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


# -- setup -------------------------------------------------------------------------------------
def seed(url: str, n_devices: int, n_clients: int) -> list[str]:
    """One online dongle per 8 devices; returns one API token per client."""
    from fleet.db.engine import make_engine, make_session_factory
    from fleet.ports import InboundMessage
    from fleet.services.container import build_services

    engine = make_engine(url)
    svc = build_services(make_session_factory(engine), CountingPublisher())
    msgs = []
    t = time.time()
    for k in range((n_devices + 7) // 8):
        did = dongle_id(k + 1)
        devs = [
            {"busid": f"1-{j + 1}", "vid": 0x1366, "pid": 0x0101, "serial": f"B{k:04d}{j:04d}"}
            for j in range(min(8, n_devices - 8 * k))
        ]
        msgs += [
            InboundMessage("status", did, {"v": 1, "dongle_id": did, "status": "online"}, t),
            InboundMessage(
                "state", did, {"v": 1, "dongle_id": did, "seq": 1, "uptime_s": 1, "devices": devs}, t
            ),
        ]
    svc.ingest.apply(msgs)
    tokens = [svc.users.add(f"bench{i}", "user")[1] for i in range(n_clients)]
    engine.dispose()
    return tokens


# -- the two drivers ---------------------------------------------------------------------------
class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lat: dict[str, list[float]] = {"acquire": [], "release": [], "conflict": []}
        self.errors: list[str] = []
        self.holders: dict[int, int] = {}
        self.double_grants = 0

    def record(self, op: str, seconds: float) -> None:
        with self.lock:
            self.lat[op].append(seconds)

    def granted(self, device: int, client: int) -> None:
        with self.lock:
            if device in self.holders:
                self.double_grants += 1
            self.holders[device] = client

    def releasing(self, device: int) -> None:
        with self.lock:
            self.holders.pop(device, None)


def run_clients(n_clients: int, pick: Any, seconds: float, make_client: Any) -> Stats:
    """Thread per client (``--via service``)."""
    stats = Stats()
    stop = time.monotonic() + seconds
    barrier = threading.Barrier(n_clients)

    def loop(i: int) -> None:
        acquire, release = make_client(i)
        rnd = random.Random(i)
        barrier.wait()
        while time.monotonic() < stop:
            dev = pick(i, rnd)
            t0 = time.perf_counter()
            try:
                lease_id = acquire(dev)
            except Exception as exc:  # noqa: BLE001 - reported below, never hidden
                stats.errors.append(repr(exc)[:200])
                continue
            if lease_id is None:
                stats.record("conflict", time.perf_counter() - t0)
                continue
            stats.record("acquire", time.perf_counter() - t0)
            stats.granted(dev, i)
            stats.releasing(dev)
            t0 = time.perf_counter()
            try:
                release(lease_id)
                stats.record("release", time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001
                stats.errors.append(repr(exc)[:200])

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(n_clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return stats


def via_service(url: str, tokens: list[str]) -> Any:
    from fleet.db.engine import make_engine, make_session_factory
    from fleet.domain.errors import Conflict
    from fleet.services.container import build_services

    engine = make_engine(url, pool_size=len(tokens))
    svc = build_services(make_session_factory(engine), CountingPublisher())
    principals = [svc.users.authenticate(t) for t in tokens]

    def make_client(i: int) -> Any:
        who = principals[i]

        def acquire(dev: int) -> int | None:
            try:
                return int(svc.leases.acquire(who, dev, duration_s=60, clients=["127.0.0.1"])["id"])
            except Conflict:
                return None

        return acquire, lambda lease_id: svc.leases.release(who, lease_id)

    return make_client, engine.dispose


# -- HTTP: one asyncio process, raw HTTP/1.1 on keep-alive sockets -----------------------------
class HttpError(Exception):
    pass


async def _http(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes
) -> tuple[int, bytes]:
    writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise HttpError(f"response {status} without Content-Length")
    return status, await reader.readexactly(length)


async def _http_clients(port: int, tokens: list[str], pick: Any, seconds: float, stats: Stats) -> None:
    async def client(i: int, ready: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        auth = f"Host: 127.0.0.1\r\nAuthorization: Bearer {tokens[i]}\r\n".encode()
        post_acquire = b"POST /api/v1/leases HTTP/1.1\r\n" + auth + b"Content-Type: application/json\r\n"
        rnd = random.Random(i)
        await ready.wait()
        stop = time.monotonic() + seconds
        try:
            while time.monotonic() < stop:
                dev = pick(i, rnd)
                body = json.dumps({"device": dev, "duration_s": 60, "clients": ["127.0.0.1"]}).encode()
                t0 = time.perf_counter()
                status, data = await _http(reader, writer, post_acquire, body)
                if status == 409:
                    stats.record("conflict", time.perf_counter() - t0)
                    continue
                if status != 201:
                    stats.errors.append(f"acquire {status}: {data[:200]!r}")
                    continue
                stats.record("acquire", time.perf_counter() - t0)
                lease_id = json.loads(data)["id"]
                stats.granted(dev, i)
                stats.releasing(dev)
                t0 = time.perf_counter()
                head = f"POST /api/v1/leases/{lease_id}/release HTTP/1.1\r\n".encode() + auth
                status, data = await _http(reader, writer, head, b"")
                if status != 200:
                    stats.errors.append(f"release {status}: {data[:200]!r}")
                    continue
                stats.record("release", time.perf_counter() - t0)
        finally:
            writer.close()

    ready = asyncio.Event()
    tasks = [asyncio.create_task(client(i, ready)) for i in range(len(tokens))]
    await asyncio.sleep(0.2)  # let every connection open before the clock starts
    ready.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    stats.errors += [repr(r)[:200] for r in results if isinstance(r, BaseException)]


def start_server(url: str) -> tuple[subprocess.Popen[bytes], int]:
    import httpx

    port = _free_port()
    env = {**os.environ, "FLEET_BENCH_DB": url}
    server = subprocess.Popen([sys.executable, __file__, "_serve", str(port), str(WORKERS)], env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise SystemExit("bench server did not start")
        time.sleep(0.1)
    return server, port


# -- CPU accounting from /proc -------------------------------------------------------------------
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int | str = "self") -> float:
    """User + system CPU seconds of a process (fields 14 and 15 of /proc/<pid>/stat); 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants (uvicorn --workers forks a process per worker)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def db_backends(url: str) -> list[int]:
    """PostgreSQL backend processes connected to the bench database."""
    if not url.startswith("postgresql"):
        return []
    admin = create_engine(PG_ADMIN_URL)
    with admin.connect() as c:
        pids = (
            c.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"),
                {"d": make_url(url).database},
            )
            .scalars()
            .all()
        )
    admin.dispose()
    return [int(p) for p in pids]


class CpuMeter:
    """CPU seconds used between start() and stop() by a fixed set of processes."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.t0 = {p: proc_cpu_s(p) for p in pids}
        self.used = 0.0

    def stop(self) -> float:
        self.used = sum(max(0.0, proc_cpu_s(p) - self.t0[p]) for p in self.pids)
        return self.used


def run_http(url: str, tokens: list[str], pick: Any, seconds: float) -> tuple[Stats, float, dict[str, float]]:
    server, port = start_server(url)
    try:
        stats = Stats()
        # Warm each worker's pool: the backends then exist before we measure.
        asyncio.run(_http_clients(port, tokens, pick, 0.5, Stats()))
        server_cpu = CpuMeter(process_tree(server.pid))
        db_cpu = CpuMeter(db_backends(url))
        me0 = proc_cpu_s()
        t0 = time.perf_counter()
        asyncio.run(_http_clients(port, tokens, pick, seconds, stats))
        wall = time.perf_counter() - t0
        cpu = {
            "server": server_cpu.stop(),
            "db": db_cpu.stop(),
            "client": proc_cpu_s() - me0,
            "server_procs": len(server_cpu.pids),
            "db_procs": len(db_cpu.pids),
        }
    finally:
        server.terminate()
        server.wait(15)
    return stats, wall, cpu


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _make_app() -> Any:
    """The API with a counting publisher (the MQTT side is measured by bench/ingest.py)."""
    import logging

    from fleet.api import create_api
    from fleet.db.engine import make_engine, make_session_factory
    from fleet.services.container import build_services

    logging.disable(logging.WARNING)
    engine = make_engine(os.environ["FLEET_BENCH_DB"], pool_size=60)
    threads = int(os.environ.get("FLEET_BENCH_THREADS", "8"))
    return create_api(build_services(make_session_factory(engine), CountingPublisher()), threads=threads)


def _serve(port: int, workers: int) -> None:
    import uvicorn

    if workers == 1:
        uvicorn.run(_make_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    else:  # separate processes, like API replicas behind a load balancer
        uvicorn.run(
            "leases:_make_app",
            factory=True,
            workers=workers,
            app_dir=str(Path(__file__).parent),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
        )


def overlaps_in_db(url: str) -> int:
    from fleet.db.engine import make_engine
    from fleet.db.models import Lease

    engine = make_engine(url)
    with engine.connect() as c:
        rows = c.execute(
            select(Lease.device_id, Lease.started_at, Lease.ended_at, Lease.expires_at).order_by(
                Lease.device_id, Lease.started_at
            )
        ).all()
    engine.dispose()
    bad = 0
    for prev, nxt in zip(rows, rows[1:], strict=False):
        if prev.device_id == nxt.device_id and (prev.ended_at or prev.expires_at) > nxt.started_at:
            bad += 1
    return bad


def picker(scenario: str, n_devices: int) -> Any:
    if scenario == "own":
        return lambda i, rnd: i + 1
    return lambda i, rnd: rnd.randint(1, n_devices)


def bench(backend: str, via: str, scenario: str, n_clients: int, n_devices: int, seconds: float) -> bool:
    if scenario == "own":
        n_devices = n_clients
    pick = picker(scenario, n_devices)
    cpu: dict[str, float] = {}
    with scratch_database(backend) as url:
        tokens = seed(url, n_devices, n_clients)
        if via == "http":
            stats, wall, cpu = run_http(url, tokens, pick, seconds)
        else:
            make_client, close = via_service(url, tokens)
            try:
                run_clients(n_clients, pick, 0.5, make_client)  # opens the pool's connections
                db_cpu = CpuMeter(db_backends(url))
                me0 = proc_cpu_s()
                t0 = time.perf_counter()
                stats = run_clients(n_clients, pick, seconds, make_client)
                wall = time.perf_counter() - t0
                cpu = {"server": proc_cpu_s() - me0, "db": db_cpu.stop(), "db_procs": len(db_cpu.pids)}
            finally:
                close()
        db_overlaps = overlaps_in_db(url)
    n = {k: len(v) for k, v in stats.lat.items()}
    total = sum(n.values())
    ops = total / wall
    how = f"via {via}" + (f" ({WORKERS} server processes)" if via == "http" else "")
    print(
        f"\n== leases: {backend}, {how}, {scenario} devices, {n_clients} clients, "
        f"{n_devices} devices, {wall:.1f} s, load average {os.getloadavg()[0]:.1f} =="
    )
    for op, label in (("acquire", "acquired"), ("release", "released"), ("conflict", "409 busy")):
        lat = stats.lat[op]
        print(
            f"{label} {n[op]:>7}  ({n[op] / wall:7.1f}/s)   "
            f"p50 {pct(lat, 0.5) * 1e3:6.1f} ms  p99 {pct(lat, 0.99) * 1e3:6.1f} ms"
        )
    print(f"lease operations/s: {ops:.1f}  (target >= {TARGET_OPS:.0f}: ratio {ops / TARGET_OPS:.2f})")
    srv = cpu.get("server", 0.0)
    per_cpu = total / srv if srv else float("nan")
    what = "server processes" if via == "http" else "bench process (service + client threads)"
    print(
        f"CPU: {srv:.2f} s in {what} -> {per_cpu:.0f} ops per CPU-second "
        f"({per_cpu / TARGET_OPS:.2f} x target per core; "
        f"{1e3 / per_cpu if per_cpu else float('nan'):.2f} ms/op)"
    )
    if backend == "postgres":
        db = cpu.get("db", 0.0)
        print(
            f"     {db:.2f} s in {int(cpu.get('db_procs', 0))} PostgreSQL backends"
            + (f" ({total / db:.0f} ops per CPU-second)" if db else "")
            + (f"; load generator {cpu.get('client', 0.0):.2f} s" if via == "http" else "")
        )
        both = srv + db
        if both:
            print(
                f"     server + database: {total / both:.0f} ops per CPU-second "
                f"(2 cores = {2 * total / both:.0f} ops/s)"
            )
    print(f"double grants: clients saw {stats.double_grants}, database overlaps {db_overlaps}  (must be 0)")
    if stats.errors:
        print(f"errors: {len(stats.errors)}, first: {stats.errors[0]}")
    return stats.double_grants == 0 and db_overlaps == 0 and not stats.errors


def main() -> int:
    global WORKERS
    if len(sys.argv) == 4 and sys.argv[1] == "_serve":
        _serve(int(sys.argv[2]), int(sys.argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", choices=["postgres", "sqlite", "both"], default="both")
    ap.add_argument("--via", choices=["http", "service"], default="http")
    ap.add_argument("--scenario", choices=["shared", "own", "both"], default="both")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--devices", type=int, default=25, help="devices shared by all clients (scenario shared)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=1, help="API server processes (--via http)")
    a = ap.parse_args()
    WORKERS = a.workers
    ok = True
    for backend in ["postgres", "sqlite"] if a.db == "both" else [a.db]:
        for scenario in ["own", "shared"] if a.scenario == "both" else [a.scenario]:
            ok &= bench(backend, a.via, scenario, a.clients, a.devices, a.seconds)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
