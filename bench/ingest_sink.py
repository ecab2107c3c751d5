#!/usr/bin/env python3
"""Telemetry ingest throughput of ``InventoryIngestSink.apply`` alone (no MQTT).

    .venv/bin/python bench/ingest_sink.py [--db postgres|sqlite|both] [--dongles 200]
                                          [--batch 500] [--messages 50000] [--runs 3]

Seeds ``--dongles`` online dongles with two devices each, then feeds
telemetry ``InboundMessage`` batches (the shape ``fleet.mqtt`` hands over)
straight into the sink, as fast as it takes them. Prints messages/s
(wall clock), messages per CPU-second of this process and of the PostgreSQL
backend serving it (both read from /proc, so machine load from others does
not count), and checks zero loss: every message is a row in
``telemetry_samples`` and every dongle/device carries its latest counters.
Target: >= 5,000 msg/s sustained end to end; the sink should manage >= 10,000.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leases import dongle_id, scratch_database  # noqa: E402
from sqlalchemy import select, text  # noqa: E402

TARGET = 5_000.0
AIM = 10_000.0
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int | str = "self") -> float:
    """User + system CPU seconds of a process (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def telemetry(did: str, seq: int, i: int) -> dict[str, Any]:
    return {
        "v": 1,
        "dongle_id": did,
        "seq": seq,
        "uptime_s": 3600 + seq,
        "interval_s": 10,
        "heap_free": 180_000 + i % 997,
        "rssi": -50 - i % 30,
        "buffers": {"budget": 196608, "used": 16384, "peak": 131072, "waits": 3},
        "devices": [
            {
                "busid": busid,
                "urbs": 1200 + seq,
                "bytes_in": 9_830_400 + seq,
                "bytes_out": 512,
                "unlinks": 1,
                "queue_depth": 0,
                "errors": {"stall": 0, "proto": 0, "overflow": 0, "nodev": 0, "timeout": 0, "other": 0},
                "latency_us": {"p50": 310, "p99": 1900, "max": 4100},
            }
            for busid in ("1-1", "1-2.3")
        ],
    }


def seed(sink: Any, n_dongles: int) -> None:
    from fleet.ports import InboundMessage

    t = time.time()
    msgs = []
    for k in range(n_dongles):
        did = dongle_id(k + 1)
        devs = [
            {"busid": b, "vid": 0x1366, "pid": 0x0101, "serial": f"S{k:05d}{j}"}
            for j, b in enumerate(("1-1", "1-2.3"))
        ]
        msgs += [
            sink_msg(InboundMessage, "status", did, {"v": 1, "dongle_id": did, "status": "online"}, t),
            sink_msg(
                InboundMessage,
                "state",
                did,
                {"v": 1, "dongle_id": did, "seq": 1, "uptime_s": 1, "devices": devs},
                t,
            ),
        ]
    sink.apply(msgs)


def sink_msg(cls: Any, kind: str, did: str, payload: dict[str, Any], t: float) -> Any:
    return cls(kind, did, payload, t, topic=f"fleet/v1/{did}/{kind}")


def batches(n_dongles: int, total: int, size: int) -> list[list[Any]]:
    """Built up front so the timed loop measures the sink, not message construction."""
    from fleet.ports import InboundMessage

    out: list[list[Any]] = []
    t = time.time()
    for start in range(0, total, size):
        batch = []
        for i in range(start, min(total, start + size)):
            did = dongle_id(i % n_dongles + 1)
            seq = i // n_dongles + 2
            batch.append(sink_msg(InboundMessage, "telemetry", did, telemetry(did, seq, i), t + i * 1e-5))
        out.append(batch)
    return out


def backend_pid(engine: Any) -> int | None:
    """The PostgreSQL backend of the pool's only connection (pool_size=1)."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as c:
        return int(c.execute(text("SELECT pg_backend_pid()")).scalar_one())


def check(engine: Any, n_dongles: int, total: int) -> list[str]:
    """Zero loss, verified in the database."""
    from fleet.db.models import Device, Dongle

    problems = []
    last_seq = {dongle_id(i % n_dongles + 1): i // n_dongles + 2 for i in range(total)}
    with engine.connect() as c:
        rows, distinct = c.execute(
            text("SELECT count(*), count(DISTINCT dongle_id || ':' || seq) FROM telemetry_samples")
        ).one()
        if rows != total or distinct != total:
            problems.append(f"telemetry_samples has {rows} rows ({distinct} distinct), expected {total}")
        uptimes = dict(c.execute(select(Dongle.id, Dongle.uptime_s)).all())
        wrong = [d for d, seq in last_seq.items() if uptimes.get(d) != 3600 + seq]
        if wrong:
            problems.append(f"{len(wrong)} dongles lack their latest uptime, e.g. {wrong[0]}")
        urbs = c.execute(select(Device.dongle_id, Device.urbs)).all()
        stale = [d for d, u in urbs if u != 1200 + last_seq[d]]
        if stale:
            problems.append(f"{len(stale)} devices lack their latest counters, e.g. on {stale[0]}")
    return problems


def run(backend: str, n_dongles: int, size: int, total: int, runs: int) -> bool:
    from fleet.db.engine import make_engine, make_session_factory
    from fleet.services.ingest import InventoryIngestSink

    ok = True
    print(f"\n== ingest sink: {backend}, {n_dongles} dongles x 2 devices, batches of {size} ==")
    print(
        f"{'run':>3} {'messages':>9} {'wall s':>7} {'msg/s':>8} {'msg/CPU-s':>10} "
        f"{'msg/db-CPU-s':>13} {'loss':>5}"
    )
    for r in range(runs):
        with scratch_database(backend) as url:
            engine = make_engine(url, pool_size=1)
            sink = InventoryIngestSink(make_session_factory(engine))
            seed(sink, n_dongles)
            work = batches(n_dongles, total, size)
            sink.apply(work[0][:1])  # warm the connection, statement caches and temp tables
            pid = backend_pid(engine)
            c0, d0 = proc_cpu_s(), proc_cpu_s(pid) if pid else 0.0
            t0 = time.perf_counter()
            for b in work:
                sink.apply(b)
            wall = time.perf_counter() - t0
            cpu = proc_cpu_s() - c0
            db_cpu = proc_cpu_s(pid) - d0 if pid else float("nan")
            # The warm-up message is a duplicate of the first one: remove it before counting.
            with engine.begin() as c:
                c.execute(
                    text("DELETE FROM telemetry_samples WHERE id = (SELECT min(id) FROM telemetry_samples)")
                )
            problems = check(engine, n_dongles, total)
            engine.dispose()
        rate = total / wall
        db_rate = total / db_cpu if db_cpu and db_cpu == db_cpu else float("nan")
        print(
            f"{r + 1:>3} {total:>9} {wall:>7.2f} {rate:>8.0f} {total / max(cpu, 1e-9):>10.0f} "
            f"{db_rate:>13.0f} {'0' if not problems else 'LOST':>5}"
        )
        for p in problems:
            print("    " + p)
        ok &= not problems
        print(
            f"    ratio to target {TARGET:.0f}/s: {rate / TARGET:.2f}; to aim {AIM:.0f}/s: {rate / AIM:.2f}"
        )
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", choices=["postgres", "sqlite", "both"], default="postgres")
    ap.add_argument("--dongles", type=int, default=200)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    ok = True
    for backend in ["postgres", "sqlite"] if a.db == "both" else [a.db]:
        ok &= run(backend, a.dongles, a.batch, a.messages, a.runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
