#!/usr/bin/env python3
"""Sustained MQTT telemetry ingestion into PostgreSQL, with zero loss.

    .venv/bin/python bench/ingest.py --publishers 20 --rate 6000 --seconds 20 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres --broker mqtt://127.0.0.1:1883

The ingestion side is the real service path (``MqttIngestor`` feeding
``fleet.services.ingest.InventoryIngestSink`` on a fresh database the bench
creates, migrates with Alembic and drops) and runs in its own process so its
CPU time is measured alone. Publisher processes play N dongles, each with its
own id, publishing valid telemetry at QoS 1 at a combined ``--rate``. After
the publishers stop, the bench waits for the backlog to drain and compares
what was acknowledged by the broker with the rows in ``telemetry_samples``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_MSGS_PER_S = 5000


# --------------------------------------------------------------------------- service process


class CopySink:
    """Diagnostic sink (``--sink copy``): COPY telemetry rows only, no inventory updates.

    Shows the ceiling of the MQTT side alone; the figure that counts is the
    default ``--sink inventory`` (the service's real sink).
    """

    def __init__(self, engine) -> None:
        self.engine = engine

    def apply(self, messages) -> None:
        from datetime import UTC, datetime

        from psycopg.types.json import Jsonb

        raw = self.engine.raw_connection()
        try:
            with (
                raw.cursor() as cur,
                cur.copy("COPY telemetry_samples (dongle_id, seq, received_at, payload) FROM STDIN") as copy,
            ):
                for m in messages:
                    copy.write_row(
                        (
                            m.dongle_id,
                            m.payload.get("seq"),
                            datetime.fromtimestamp(m.received_at, UTC),
                            Jsonb(m.payload),
                        )
                    )
            raw.commit()
        finally:
            raw.close()


def embedded_broker_main(conn) -> None:
    from fleet.mqtt.broker import EmbeddedBroker

    broker = EmbeddedBroker(port=0).start()
    conn.send(broker.port)
    while True:
        time.sleep(3600)


def _service_id(run_id: str) -> str:
    return f"bench-svc-{run_id}"


def _topic_root(service_id: str) -> str:
    return f"fleet-{service_id}/v1"


class _TimedSink:
    """Wall time spent inside sink.apply, to tell database time from MQTT time."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.batches = 0

    def apply(self, messages) -> None:
        t0 = time.perf_counter()
        try:
            self.inner.apply(messages)
        finally:
            self.seconds += time.perf_counter() - t0
            self.batches += 1


def service_main(
    database_url: str, broker: str, client_id: str, sink_kind: str, apply_workers: int, conn
) -> None:
    import logging

    from fleet.db.engine import make_engine, make_session_factory
    from fleet.mqtt.ingest import MqttIngestor
    from fleet.services.ingest import InventoryIngestSink

    logging.basicConfig(level=logging.WARNING, format="service: %(levelname)s %(name)s: %(message)s")
    engine = make_engine(database_url, pool_size=apply_workers + 1)
    sink = InventoryIngestSink(make_session_factory(engine)) if sink_kind == "inventory" else CopySink(engine)
    sink = _TimedSink(sink)
    # A topic root of the run's own: a shared broker may hold thousands of retained messages
    # under fleet/v1 from other users, which are not what this bench measures.
    ingestor = MqttIngestor(
        broker, client_id, sink, apply_workers=apply_workers, topic_root=_topic_root(client_id)
    ).start()
    if not ingestor.wait_subscribed(15):
        conn.send({"error": f"ingestor could not subscribe on {broker}"})
        return
    conn.send({"ready": True})
    while True:
        cmd = conn.recv()
        if cmd == "stats":
            t = os.times()
            conn.send(
                {
                    "cpu_s": t.user + t.system,
                    "ingested": ingestor.stats.get("ingested:telemetry", 0),
                    "rejected": sum(v for k, v in ingestor.stats.items() if k.startswith("rejected:")),
                    "queued": ingestor._queue.qsize(),
                    "apply_s": round(sink.seconds, 2),
                    "batches": sink.batches,
                    "pending_batches": len(ingestor._pending),
                }
            )
        elif cmd == "dump":
            import faulthandler

            faulthandler.dump_traceback(all_threads=True)
            conn.send({})
        elif cmd == "stop":
            ingestor.stop()
            engine.dispose()
            conn.send({"stopped": True})
            return


# --------------------------------------------------------------------------- publisher processes


def publisher_main(
    indexes: list[int], broker: str, rate: float, seconds: float, run_id: str, start_at: float, out
) -> None:
    """One process driving several publisher clients (threads), each a dongle at ``rate`` msg/s.

    Runs at a lower priority: on real hardware the dongles are other machines,
    so the load generator should not take CPU from the service being measured.
    """
    import threading

    os.nice(10)
    results = []
    threads = [
        threading.Thread(
            target=lambda i=i: results.append(_publish(i, broker, rate, seconds, run_id, start_at))
        )
        for i in indexes
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        out.put(r)


def _publish(index: int, broker: str, rate: float, seconds: float, run_id: str, start_at: float) -> dict:
    import paho.mqtt.client as mqtt

    from fleet.mqtt.url import parse_broker_url

    b = parse_broker_url(broker)
    dongle_id = f"esp-{run_id}{index:06x}"
    template = {
        "v": 1,
        "dongle_id": dongle_id,
        "seq": 0,
        "uptime_s": 0,
        "interval_s": 1,
        "heap_free": 181000,
        "rssi": None,
        "buffers": {"budget": 196608, "used": 16384, "peak": 131072, "waits": 3},
        "devices": [
            {
                "busid": "1-1",
                "urbs": 1200,
                "bytes_in": 9830400,
                "bytes_out": 512,
                "unlinks": 1,
                "queue_depth": 0,
                "errors": {"stall": 0, "proto": 0, "overflow": 0, "nodev": 0, "timeout": 0, "other": 0},
                "latency_us": {"p50": 310, "p99": 1900, "max": 4100},
            }
        ],
    }
    acked = 0

    def on_publish(client, userdata, mid, reason_code, properties):
        nonlocal acked
        acked += 1

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{run_id}-{index}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    if b.username:
        client.username_pw_set(b.username, b.password)
    client.connect(b.host, b.port, 30)
    client.loop_start()
    topic = f"{_topic_root(_service_id(run_id))}/{dongle_id}/telemetry"
    while time.time() < start_at:
        time.sleep(0.005)
    t0 = time.monotonic()
    sent = 0
    total = int(rate * seconds)
    while sent < total:
        due = min(total, int((time.monotonic() - t0) * rate) + 1)
        while sent < due:
            sent += 1
            template["seq"] = sent
            template["uptime_s"] = int(time.monotonic() - t0)
            client.publish(topic, json.dumps(template, separators=(",", ":")), qos=1)
        time.sleep(0.01)
    publish_s = time.monotonic() - t0
    deadline = time.monotonic() + 60
    while acked < sent and time.monotonic() < deadline:
        time.sleep(0.01)
    client.disconnect()
    client.loop_stop()
    return {"index": index, "dongle_id": dongle_id, "sent": sent, "acked": acked, "publish_s": publish_s}


# --------------------------------------------------------------------------- database


def create_database(admin_url: str) -> tuple[str, str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"fleet_bench_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name, make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def stored_counts(engine, run_id: str) -> tuple[int, int]:
    from sqlalchemy import text

    with engine.connect() as c:
        rows, distinct = c.execute(
            text(
                "SELECT count(*), count(DISTINCT (dongle_id, seq)) FROM telemetry_samples"
                " WHERE dongle_id LIKE :p"
            ),
            {"p": f"esp-{run_id}%"},
        ).one()
    return rows, distinct


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--publishers", type=int, default=20, help="publisher clients (one simulated dongle each)"
    )
    ap.add_argument("--rate", type=float, default=6000, help="combined offered rate, messages/s")
    ap.add_argument("--seconds", type=float, default=20, help="how long the publishers publish")
    ap.add_argument(
        "--database-url",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL server (the bench creates and drops its own database there)",
    )
    ap.add_argument(
        "--broker",
        default="mqtt://127.0.0.1:1883",
        help="broker URL, or 'embedded' to run fleet's EmbeddedBroker in a process of its own",
    )
    ap.add_argument(
        "--publisher-procs",
        type=int,
        default=2,
        help="processes the publisher clients are spread over (threads inside, niced)",
    )
    ap.add_argument("--apply-workers", type=int, default=1, help="MqttIngestor apply_workers")
    ap.add_argument(
        "--sink",
        choices=("inventory", "copy"),
        default="inventory",
        help="inventory = the service's InventoryIngestSink (the real figure); "
        "copy = COPY into telemetry_samples only (diagnostic ceiling of the MQTT side)",
    )
    ap.add_argument("--keep-database", action="store_true")
    args = ap.parse_args()
    if args.publishers < 1 or args.rate <= 0 or args.seconds <= 0:
        ap.error("--publishers, --rate and --seconds must be positive")

    from fleet.db.engine import make_engine
    from fleet.db.migrate import upgrade

    run_id = secrets.token_hex(3)  # the 6 hex digits after "esp-"; publisher index fills the other 6
    db_name, db_url = create_database(args.database_url)
    engine = make_engine(db_url, pool_size=1)
    ctx = mp.get_context("spawn")
    service = None
    broker_proc = None
    try:
        if args.broker == "embedded":
            parent_b, child_b = ctx.Pipe()
            broker_proc = ctx.Process(target=embedded_broker_main, args=(child_b,), daemon=True)
            broker_proc.start()
            args.broker = f"mqtt://127.0.0.1:{parent_b.recv()}"
        upgrade(engine)
        parent, child = ctx.Pipe()
        service = ctx.Process(
            target=service_main,
            args=(db_url, args.broker, _service_id(run_id), args.sink, args.apply_workers, child),
        )
        service.start()
        hello = parent.recv()
        if "error" in hello:
            print(hello["error"], file=sys.stderr)
            return 2

        out = ctx.Queue()
        start_at = time.time() + 3.0  # let every publisher process import and connect first
        procs = min(args.publisher_procs, args.publishers)
        pubs = [
            ctx.Process(
                target=publisher_main,
                args=(
                    list(range(p, args.publishers, procs)),
                    args.broker,
                    args.rate / args.publishers,
                    args.seconds,
                    run_id,
                    start_at,
                    out,
                ),
            )
            for p in range(procs)
        ]
        for p in pubs:
            p.start()
        while time.time() < start_at:
            time.sleep(0.01)
        parent.send("stats")
        s0 = parent.recv()
        t0 = time.monotonic()
        results = [out.get(timeout=args.seconds + 120) for _ in range(args.publishers)]
        for p in pubs:
            p.join()
        publish_s = max(r["publish_s"] for r in results)
        published = sum(r["acked"] for r in results)
        unacked = sum(r["sent"] - r["acked"] for r in results)

        # Drain: wait until every acknowledged message is a row, or progress stops for 15 s.
        last, last_change = -1, time.monotonic()
        while True:
            rows, distinct = stored_counts(engine, run_id)
            now = time.monotonic()
            if distinct != last:
                last, last_change, t_last = distinct, now, now
            if distinct >= published or now - last_change > 15:
                break
            if now - last_change > 3 and os.environ.get("BENCH_DEBUG"):
                parent.send("stats")
                print("stalled:", parent.recv(), file=sys.stderr)
                parent.send("dump")
                parent.recv()
                os.environ.pop("BENCH_DEBUG")
            time.sleep(0.05)
        elapsed = t_last - t0
        parent.send("stats")
        s1 = parent.recv()
        cpu_s = s1["cpu_s"] - s0["cpu_s"]
        apply_s = s1["apply_s"] - s0["apply_s"]
        batches = s1["batches"] - s0["batches"]
        parent.send("stop")
        parent.recv()
        service.join(10)

        sustained = distinct / elapsed if elapsed > 0 else 0.0
        lost = published - distinct
        print(f"sink                  {args.sink}, apply_workers={args.apply_workers}")
        print(
            f"publishers            {args.publishers} (QoS 1, {args.rate / args.publishers:.0f} msg/s each)"
        )
        print(
            f"offered rate          {args.rate:.0f} msg/s for {args.seconds:.0f} s "
            f"(achieved {published / publish_s:.0f} msg/s, publishing took {publish_s:.1f} s)"
        )
        print(
            f"published (PUBACKed)  {published}" + (f"  (+{unacked} never acknowledged)" if unacked else "")
        )
        print(f"stored rows           {rows} ({distinct} distinct, {rows - distinct} duplicates)")
        print(f"lost                  {lost}")
        print(
            f"sustained ingest      {sustained:.0f} msg/s into PostgreSQL over {elapsed:.1f} s "
            f"(first publish -> last row)"
        )
        print(
            f"service CPU           {cpu_s:.1f} s = {100 * cpu_s / elapsed:.0f}% of one core "
            f"({cpu_s / max(distinct, 1) * 1e6:.0f} us/msg)"
        )
        print(
            f"sink.apply            {batches} batches, {apply_s:.1f} s wall in total "
            f"({1000 * apply_s / max(batches, 1):.0f} ms/batch, "
            f"{1e6 * apply_s / max(distinct, 1):.0f} us/msg)"
        )
        print(
            f"ratio to target       {sustained / TARGET_MSGS_PER_S:.2f} x {TARGET_MSGS_PER_S} msg/s"
            f"{'' if lost == 0 else '  (NOT zero loss)'}"
        )
        return 0 if lost == 0 else 1
    finally:
        if service is not None and service.is_alive():
            service.terminate()
        if broker_proc is not None:
            broker_proc.terminate()
        engine.dispose()
        if not args.keep_database:
            drop_database(args.database_url, db_name)
        _forget_session(args.broker, _service_id(run_id))


def _forget_session(broker: str, client_id: str) -> None:
    """Remove the service's persistent session so the broker stops queuing for it."""
    import paho.mqtt.client as mqtt

    from fleet.mqtt.url import parse_broker_url

    b = parse_broker_url(broker)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    try:
        c.connect(b.host, b.port)
        c.loop(0.2)
        c.disconnect()
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
