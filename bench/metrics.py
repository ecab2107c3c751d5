#!/usr/bin/env python3
"""/metrics render time with a large inventory.

    .venv/bin/python bench/metrics.py [--db postgres|sqlite|both] [--dongles 10000] [--devices 40000]
                                      [--leases 2000] [--runs 20]

Seeds the database in bulk (dongles across all statuses, devices across all
states, active and ended leases), then renders the Prometheus exposition the
way ``GET /metrics`` does, with and without the per-dongle
``fleet_dongle_up`` series, and over HTTP through the real app. Prints
p50/p99/max render time against the 50 ms target and the exposition size.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leases import CountingPublisher, dongle_id, pct, scratch_database  # noqa: E402
from sqlalchemy import insert  # noqa: E402

TARGET_MS = 50.0


def seed(url: str, n_dongles: int, n_devices: int, n_leases: int) -> None:
    from fleet.db.engine import make_engine
    from fleet.db.models import Device, Dongle, Lease, User

    engine = make_engine(url)
    now = datetime.now(UTC)
    statuses = ["online"] * 8 + ["offline", "unknown"]
    states = ["free"] * 5 + ["leased", "attached", "offline", "quarantined"]
    with engine.begin() as c:
        c.execute(
            insert(Dongle),
            [
                {
                    "id": dongle_id(i + 1),
                    "status": statuses[i % len(statuses)],
                    "first_seen": now,
                    "last_seen": now,
                    "via_mqtt": True,
                    "via_mdns": i % 2 == 0,
                    "mdns_present": i % 2 == 0,
                    "chip_model": "esp32s3",
                    "chip_revision": 2,
                    "firmware_version": "0.3.1",
                    "heap_free": 180000,
                    "uptime_s": i,
                }
                for i in range(n_dongles)
            ],
        )
        per = max(1, n_devices // n_dongles)
        rows = []
        for i in range(n_devices):
            rows.append(
                {
                    "dongle_id": dongle_id(i // per % n_dongles + 1),
                    "busid": f"1-{i % per + 1}",
                    "present": i % 20 != 0,
                    "state": states[i % len(states)],
                    "quarantined": False,
                    "vid": 0x1366,
                    "pid": 0x0101,
                    "serial": f"S{i:010d}",
                    "first_seen": now,
                    "last_seen": now,
                }
            )
            if len(rows) == 5000:
                c.execute(insert(Device), rows)
                rows = []
        if rows:
            c.execute(insert(Device), rows)
        c.execute(insert(User).values(name="bench", role="user", created_at=now))
        c.execute(
            insert(Lease),
            [
                {
                    "device_id": i + 1,
                    "user_id": 1,
                    "state": "active" if i % 4 == 0 else "released",
                    "clients": ["127.0.0.1"],
                    "started_at": now - timedelta(hours=1),
                    "expires_at": now + timedelta(hours=1),
                    "ended_at": None if i % 4 == 0 else now,
                }
                for i in range(n_leases)
            ],
        )
    engine.dispose()


def bench(backend: str, args: argparse.Namespace) -> bool:
    from fastapi.testclient import TestClient

    from fleet import metrics
    from fleet.api import create_api
    from fleet.db.engine import make_engine, make_session_factory
    from fleet.services.container import build_services

    with scratch_database(backend) as url:
        t0 = time.perf_counter()
        seed(url, args.dongles, args.devices, args.leases)
        engine = make_engine(url)
        # A running service's database has been vacuumed and analysed
        # (autovacuum, or SQLite's optimize); benchmark that steady state.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.exec_driver_sql("VACUUM ANALYZE" if backend == "postgres" else "ANALYZE")
        seeded = time.perf_counter() - t0
        sf = make_session_factory(engine)
        print(
            f"\n== /metrics: {backend}, {args.dongles} dongles, {args.devices} devices, {args.leases} leases "
            f"(seeded in {seeded:.1f} s) =="
        )
        ok = True
        for per_dongle in (True, False):
            reg = metrics.InventoryMetrics(sf, per_dongle=per_dongle)
            metrics.render(reg)  # warm caches, as a running service would be
            times = []
            for _ in range(args.runs):
                t = time.perf_counter()
                body = metrics.render(reg)
                times.append((time.perf_counter() - t) * 1e3)
            p50, p99 = pct(times, 0.5), pct(times, 0.99)
            label = "with fleet_dongle_up per dongle" if per_dongle else "aggregates only"
            print(
                f"render {label:<32} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  max {max(times):6.1f} ms  "
                f"{len(body) / 1024:6.0f} KiB  "
                f"(target <= {TARGET_MS:.0f} ms: p50 ratio {p50 / TARGET_MS:.2f})"
            )
            if not per_dongle:  # the default configuration is what must meet the target
                ok = p50 <= TARGET_MS
        app = create_api(
            build_services(sf, CountingPublisher()), inventory_metrics=metrics.InventoryMetrics(sf)
        )
        with TestClient(app) as client:
            client.get("/metrics")
            times = []
            for _ in range(args.runs):
                t = time.perf_counter()
                r = client.get("/metrics")
                times.append((time.perf_counter() - t) * 1e3)
                assert r.status_code == 200
        print(
            f"GET /metrics over the ASGI app          "
            f"p50 {pct(times, 0.5):6.1f} ms  p99 {pct(times, 0.99):6.1f} ms"
        )
        engine.dispose()
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", choices=["postgres", "sqlite", "both"], default="both")
    ap.add_argument("--dongles", type=int, default=10_000)
    ap.add_argument("--devices", type=int, default=40_000)
    ap.add_argument("--leases", type=int, default=2_000)
    ap.add_argument("--runs", type=int, default=20)
    a = ap.parse_args()
    results = [bench(b, a) for b in (["postgres", "sqlite"] if a.db == "both" else [a.db])]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
