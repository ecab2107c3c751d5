#!/usr/bin/env python3
"""Lease throughput and latency under concurrent clients.

    .venv/bin/python bench/leases.py [--db postgres|sqlite|both] [--clients 50]
                                     [--seconds 10] [--devices 25] [--via http|service]

Each client loops: acquire a random device among ``--devices`` (fewer devices
than clients, so requests collide and the 409 path is exercised), hold it
briefly, release it. ``--via http`` (default) drives the real REST API served
by uvicorn in a separate process; ``--via service`` calls the lease service
directly (one session per thread) to show the cost without HTTP.

Printed: acquire/release/conflict rates, operations per second (acquire +
release + conflict answers), p50/p99 latency per operation, and the
double-grant count, which must be 0. Double grants are counted twice: by the
clients (a device granted while another client still held it) and by the
database afterwards (two lease intervals overlapping on one device).
Target on the 2-core reference machine: >= 500 lease operations/s.
"""

from __future__ import annotations

import argparse
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


def run_clients(n_clients: int, n_devices: int, seconds: float, make_client: Any) -> Stats:
    stats = Stats()
    stop = time.monotonic() + seconds
    barrier = threading.Barrier(n_clients)

    def loop(i: int) -> None:
        acquire, release = make_client(i)
        rnd = random.Random(i)
        barrier.wait()
        while time.monotonic() < stop:
            dev = rnd.randint(1, n_devices)
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


def via_http(url: str, tokens: list[str]) -> Any:
    import httpx

    port = _free_port()
    env = {**os.environ, "FLEET_BENCH_DB": url}
    server = subprocess.Popen([sys.executable, __file__, "_serve", str(port), str(WORKERS)], env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
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

    def make_client(i: int) -> Any:
        c = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {tokens[i]}"}, timeout=30)

        def acquire(dev: int) -> int | None:
            r = c.post("/api/v1/leases", json={"device": dev, "duration_s": 60, "clients": ["127.0.0.1"]})
            if r.status_code == 409:
                return None
            r.raise_for_status()
            return int(r.json()["id"])

        def release(lease_id: int) -> None:
            c.post(f"/api/v1/leases/{lease_id}/release").raise_for_status()

        return acquire, release

    def close() -> None:
        server.terminate()
        server.wait(10)

    return make_client, close


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
    return create_api(build_services(make_session_factory(engine), CountingPublisher()))


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


def bench(backend: str, via: str, n_clients: int, n_devices: int, seconds: float) -> bool:
    with scratch_database(backend) as url:
        tokens = seed(url, n_devices, n_clients)
        make_client, close = (via_http if via == "http" else via_service)(url, tokens)
        try:
            t0 = time.perf_counter()
            stats = run_clients(n_clients, n_devices, seconds, make_client)
            wall = time.perf_counter() - t0
        finally:
            close()
        db_overlaps = overlaps_in_db(url)
    n = {k: len(v) for k, v in stats.lat.items()}
    ops = sum(n.values()) / wall
    how = f"via {via}" + (f" ({WORKERS} server processes)" if via == "http" else "")
    print(f"\n== leases: {backend}, {how}, {n_clients} clients, {n_devices} devices, {wall:.1f} s ==")
    for op, label in (("acquire", "acquired"), ("release", "released"), ("conflict", "409 busy")):
        lat = stats.lat[op]
        print(
            f"{label} {n[op]:>7}  ({n[op] / wall:7.1f}/s)   "
            f"p50 {pct(lat, 0.5) * 1e3:6.1f} ms  p99 {pct(lat, 0.99) * 1e3:6.1f} ms"
        )
    print(f"lease operations/s: {ops:.1f}  (target >= {TARGET_OPS:.0f}: ratio {ops / TARGET_OPS:.2f})")
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
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--devices", type=int, default=25)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=1, help="API server processes (--via http)")
    a = ap.parse_args()
    WORKERS = a.workers
    ok = True
    for backend in ["postgres", "sqlite"] if a.db == "both" else [a.db]:
        ok &= bench(backend, a.via, a.clients, a.devices, a.seconds)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
