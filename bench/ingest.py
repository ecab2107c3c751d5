#!/usr/bin/env python3
"""Sustained MQTT telemetry ingestion into PostgreSQL, with zero loss.

    .venv/bin/python bench/ingest.py --publishers 20 --rate 6000 --seconds 20 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres --broker mqtt://127.0.0.1:1883

The ingestion side is the real service path (``MqttIngestor`` feeding
``fleet.services.ingest.InventoryIngestSink`` on a fresh database the bench
creates, migrates with Alembic and drops) and runs in its own process so its
CPU time is measured alone. One niced publisher process (``--publisher-procs``
for more) plays N dongles over raw sockets: each dongle is its own MQTT
connection sending pre-encoded QoS 1 PUBLISH packets with a unique ``seq`` at
a combined ``--rate`` and checking every PUBACK, so the load costs a few
microseconds per message instead of starving the service. After the
publishers stop, the bench waits for the backlog to drain and counts distinct
(dongle, seq) rows in ``telemetry_samples`` against what the broker
acknowledged: duplicates are allowed, loss is not (exit status 1).

Printed: sustained rate (first publish to last row), loss, CPU seconds of the
service, the publishers, Mosquitto and the service's PostgreSQL backends (from
/proc), messages per service CPU-second and the ratio to the 5,000 msg/s target.
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
                    "queued": ingestor.queued(),
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


# --------------------------------------------------------------------------- publisher process


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8_field(s: str) -> bytes:
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


class _RawPublisher:
    """One simulated dongle: a raw MQTT 3.1.1 connection publishing pre-encoded QoS 1 PUBLISH packets.

    Packets are assembled from a fixed prefix, the seq digits and a fixed
    suffix, so a message costs a few bytes operations instead of a paho
    round through ``json.dumps`` and its packet builder; that keeps the load
    generator from eating the CPU the service is being measured on.
    """

    def __init__(self, broker, run_id: str, index: int, topic_root: str) -> None:
        import socket

        self.dongle_id = f"esp-{run_id}{index:06x}"
        self.sock = socket.create_connection((broker.host, broker.port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cid = _utf8_field(f"bench-pub-{run_id}-{index}")
        flags = 0x02 | (0x80 if broker.username else 0) | (0x40 if broker.password else 0)
        body = _utf8_field("MQTT") + bytes([4, flags]) + (0).to_bytes(2, "big") + cid
        if broker.username:
            body += _utf8_field(broker.username)
        if broker.password:
            body += _utf8_field(broker.password)
        self.sock.sendall(b"\x10" + _varint(len(body)) + body)
        connack = b""
        while len(connack) < 4:
            chunk = self.sock.recv(4 - len(connack))
            if not chunk:
                raise ConnectionError(f"broker closed the connection of {self.dongle_id} before CONNACK")
            connack += chunk
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"broker refused {self.dongle_id}: CONNACK {connack.hex()}")
        self.sock.setblocking(False)
        payload = json.dumps(_telemetry_template(self.dongle_id), separators=(",", ":"))
        head, tail = payload.split('"seq":0', 1)
        self.topic = _utf8_field(f"{topic_root}/{self.dongle_id}/telemetry")
        self.head = (head + '"seq":').encode()
        self.tail = tail.encode()
        self.sent = 0
        self.acked = 0
        self.inflight: set[int] = set()
        self.out = bytearray()
        self.inbuf = b""

    def queue_until(self, total: int) -> None:
        """Append PUBLISH packets for seq self.sent+1 .. total."""
        parts = []
        for seq in range(self.sent + 1, total + 1):
            mid = (seq - 1) % 65535 + 1  # packet ids 1..65535, reused only after a full wrap
            if mid in self.inflight:
                total = seq - 1  # 65,535 unacknowledged: wait for the broker
                break
            self.inflight.add(mid)
            var = self.topic + mid.to_bytes(2, "big") + self.head + str(seq).encode() + self.tail
            parts.append(b"\x32" + _varint(len(var)) + var)
        self.out += b"".join(parts)
        self.sent = max(self.sent, total)

    def flush(self) -> None:
        if self.out:
            try:
                n = self.sock.send(self.out)
            except BlockingIOError:
                return
            del self.out[:n]

    def read_acks(self) -> None:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        if not data:
            raise ConnectionError(f"broker closed the connection of {self.dongle_id}")
        buf = self.inbuf + data
        n = len(buf) - len(buf) % 4
        for i in range(0, n, 4):
            if buf[i] != 0x40 or buf[i + 1] != 2:
                raise ConnectionError(f"{self.dongle_id}: unexpected packet {buf[i : i + 4].hex()}")
            mid = int.from_bytes(buf[i + 2 : i + 4], "big")
            if mid not in self.inflight:
                raise ConnectionError(f"{self.dongle_id}: PUBACK for unknown packet id {mid}")
            self.inflight.discard(mid)
            self.acked += 1
        self.inbuf = buf[n:]

    def close(self) -> None:
        try:
            self.sock.setblocking(True)
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT: a clean end, no will
        except OSError:
            pass
        self.sock.close()


def _telemetry_template(dongle_id: str) -> dict:
    return {
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


def publisher_main(
    indexes: list[int], broker: str, rate: float, seconds: float, run_id: str, start_at: float, out
) -> None:
    """Drive the dongles ``indexes`` from one process, each at ``rate`` msg/s, single-threaded.

    Runs niced: on real hardware the dongles are other machines, so the load
    generator should not take CPU from the service being measured. Reports
    its own CPU time so the bench can show what the load itself cost.
    """
    import selectors

    from fleet.mqtt.url import parse_broker_url

    os.nice(10)
    b = parse_broker_url(broker)
    root = _topic_root(_service_id(run_id))
    pubs = [_RawPublisher(b, run_id, i, root) for i in indexes]
    sel = selectors.DefaultSelector()
    for p in pubs:
        sel.register(p.sock, selectors.EVENT_READ, p)
    total = int(rate * seconds)
    while time.time() < start_at:
        time.sleep(0.005)
    cpu0 = os.times()
    t0 = time.monotonic()
    publish_s = None
    deadline = None
    tick = 0.01  # 100 sends per second per dongle: batching without visible burstiness
    while True:
        now = time.monotonic()
        due = min(total, int((now - t0) * rate) + 1)
        for p in pubs:
            if p.sent < due:
                p.queue_until(due)
            p.flush()
        if publish_s is None and all(p.sent >= total and not p.out for p in pubs):
            publish_s = time.monotonic() - t0
            deadline = time.monotonic() + 60
        if publish_s is not None and (all(p.acked >= p.sent for p in pubs) or time.monotonic() > deadline):
            break
        for key, _ in sel.select(tick):
            key.data.read_acks()
    cpu1 = os.times()
    cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    for p in pubs:
        p.close()
    out.put(
        {
            "cpu_s": cpu_s,
            "dongles": [
                {"dongle_id": p.dongle_id, "sent": p.sent, "acked": p.acked, "publish_s": publish_s}
                for p in pubs
            ],
        }
    )


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
        default=1,
        help="processes the publisher connections are spread over (one event loop each, niced)",
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
        mosq_pids = _pids("mosquitto")
        mosq0 = _proc_cpu(mosq_pids)
        t0 = time.monotonic()
        reports = [out.get(timeout=args.seconds + 120) for _ in range(procs)]
        for p in pubs:
            p.join()
        pub_cpu_s = sum(r["cpu_s"] for r in reports)
        results = [d for r in reports for d in r["dongles"]]
        publish_s = max(r["publish_s"] or args.seconds for r in results)
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
        mosq_cpu_s = _proc_cpu(mosq_pids) - mosq0
        pg_cpu_s = _proc_cpu(_backend_pids(engine, db_name))
        apply_s = s1["apply_s"] - s0["apply_s"]
        batches = s1["batches"] - s0["batches"]
        parent.send("stop")
        parent.recv()
        service.join(10)

        sustained = distinct / elapsed if elapsed > 0 else 0.0
        lost = published - distinct
        print(f"sink                  {args.sink}, apply_workers={args.apply_workers}")
        print(
            f"publishers            {args.publishers} dongles "
            f"(QoS 1, {args.rate / args.publishers:.0f} msg/s each, unique seq per message)"
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
            f"drain                 last row {max(0.0, elapsed - publish_s):.1f} s after the last publish "
            f"(near 0 = the service kept up)"
        )
        print(
            f"service CPU           {cpu_s:.1f} s = {100 * cpu_s / elapsed:.0f}% of one core "
            f"({cpu_s / max(distinct, 1) * 1e6:.0f} us/msg)"
        )
        print(
            f"service efficiency    {distinct / max(cpu_s, 1e-9):.0f} msg per service CPU-second "
            f"(so {TARGET_MSGS_PER_S} msg/s needs {TARGET_MSGS_PER_S * cpu_s / max(distinct, 1):.2f} core)"
        )
        print(
            f"publisher CPU         {pub_cpu_s:.1f} s ({pub_cpu_s / max(published, 1) * 1e6:.0f} us/msg, "
            f"{procs} process{'es' if procs > 1 else ''}, raw sockets)"
        )
        print(
            f"mosquitto CPU         {mosq_cpu_s:.1f} s ({mosq_cpu_s / max(published, 1) * 1e6:.0f} us/msg; "
            f"pids {mosq_pids or 'not found'}; shared with other users of the broker)"
        )
        print(
            f"PostgreSQL CPU        {pg_cpu_s:.1f} s ({pg_cpu_s / max(distinct, 1) * 1e6:.0f} us/msg; "
            f"the service's backends only, not WAL writer/checkpointer)"
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


def _pids(name: str) -> list[int]:
    import subprocess

    r = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, check=False)
    return [int(x) for x in r.stdout.split()]


def _proc_cpu(pids: list[int]) -> float:
    """utime + stime of ``pids`` in seconds, from /proc (processes that are gone count 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / tick


def _backend_pids(engine, db_name: str) -> list[int]:
    """PostgreSQL backends serving the service's database; they were born with the run."""
    from sqlalchemy import text

    with engine.connect() as c:
        return list(
            c.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"),
                {"d": db_name},
            ).scalars()
        )


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
