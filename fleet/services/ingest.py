"""``InventoryIngestSink``: what dongles say (MQTT, mDNS) becomes inventory.

One database transaction per batch: raising means nothing of it was stored.
Telemetry, by far the most frequent message, takes a bulk path with no ORM
objects: only the newest message per dongle updates the inventory, every
message becomes a sample. On PostgreSQL that is a binary COPY into
``telemetry_samples`` and one set-based UPDATE each for dongles and devices
(``bench/ingest_sink.py`` measures it); on SQLite a multi-row INSERT and
executemany UPDATEs. The rarer status/state/events/cmd-result/mdns messages go
through the ORM in order.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from sqlalchemy import insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from fleet.db.models import Command, Device, Dongle, Event, TelemetrySample
from fleet.domain import identity, rules
from fleet.domain.errors import InvalidInput
from fleet.domain.model import DongleStatus
from fleet.ports import InboundMessage
from fleet.services.commands import CommandService
from fleet.services.common import audit, from_unix
from fleet.services.inventory import refresh_states

log = logging.getLogger(__name__)

_DEVICE_EVENTS = {"device_added", "device_removed", "attached", "detached"}


_CAME_ONLINE = object()


class InventoryIngestSink:
    """Satisfies ``fleet.ports.IngestSink``."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        bootloader_window_s: float = identity.BOOTLOADER_WINDOW_S,
        regrant: Callable[[Session, set[str]], list[Any]] | None = None,
        dispatch: Callable[[list[Any]], None] | None = None,
    ):
        self._sf = session_factory
        self._window = bootloader_window_s
        # Dongles that come (back) online get the grants of their active leases
        # again: recorded in the batch's transaction, published after commit.
        self._regrant = regrant
        self._dispatch = dispatch
        #: messages skipped because they named an invalid dongle or device
        self.skipped = 0

    def apply(self, messages: Sequence[InboundMessage]) -> None:
        good = [m for m in messages if self._acceptable(m)]
        if not good:
            return
        came_online: set[str] = set()
        outgoing: list[Any] = []
        with self._sf.begin() as s:
            self._ensure_dongles(s, good)
            slow = [m for m in good if m.kind != "telemetry"]
            fast = [m for m in good if m.kind == "telemetry"]
            if slow:
                dongles = {
                    d.id: d
                    for d in s.scalars(select(Dongle).where(Dongle.id.in_({m.dongle_id for m in slow})))
                }
                for m in slow:
                    handler = getattr(self, "_on_" + m.kind.replace("-", "_"))
                    if handler(s, dongles[m.dongle_id], m) is _CAME_ONLINE:
                        came_online.add(m.dongle_id)
            if fast:
                self._on_telemetry_batch(s, fast)
            if came_online and self._regrant is not None:
                outgoing = self._regrant(s, came_online)
        if outgoing and self._dispatch is not None:
            self._dispatch(outgoing)

    # -- helpers -----------------------------------------------------------------
    def _acceptable(self, m: InboundMessage) -> bool:
        try:
            rules.dongle_id(m.dongle_id)
        except InvalidInput as exc:
            log.warning("ingest: dropping %s message: %s", m.kind, exc)
            self.skipped += 1
            return False
        return True

    @staticmethod
    def _ensure_dongles(s: Session, msgs: Sequence[InboundMessage]) -> None:
        first: dict[str, float] = {}
        for m in msgs:
            first.setdefault(m.dongle_id, m.received_at)
        if s.get_bind().dialect.name == "postgresql":
            # One prepared statement whatever the number of dongles; the
            # expanded IN list of the generic path was recompiled per batch.
            raw = s.connection().connection.driver_connection
            assert raw is not None
            ids = sorted(first)
            seen = [from_unix(first[i]) for i in ids]
            raw.execute(_PG_ENSURE_DONGLES, (ids, seen), prepare=True)
            return
        known = set(s.scalars(select(Dongle.id).where(Dongle.id.in_(first))))
        new = [
            {
                "id": did,
                "status": DongleStatus.UNKNOWN.value,
                "first_seen": from_unix(ts),
                "last_seen": from_unix(ts),
                "via_mqtt": False,
                "via_mdns": False,
                "mdns_present": False,
            }
            for did, ts in first.items()
            if did not in known
        ]
        if new:
            s.execute(insert(Dongle), new)

    # -- status ------------------------------------------------------------------
    def _on_status(self, s: Session, d: Dongle, m: InboundMessage) -> object:
        p = m.payload
        status = p.get("status")
        if status not in (DongleStatus.ONLINE, DongleStatus.OFFLINE):
            log.warning("ingest: %s status %r ignored", d.id, status)
            return
        at = from_unix(m.received_at)
        d.via_mqtt = True
        d.last_seen = max(d.last_seen, at)
        if d.status != status:
            d.status = status
            d.status_reason = p.get("reason")
            s.flush()
            refresh_states(s, s.scalars(select(Device).where(Device.dongle_id == d.id)).all())
            return _CAME_ONLINE if status == DongleStatus.ONLINE else None
        d.status_reason = p.get("reason")
        return None

    # -- state -------------------------------------------------------------------
    def _on_state(self, s: Session, d: Dongle, m: InboundMessage) -> None:
        p = m.payload
        seq, uptime = p.get("seq"), p.get("uptime_s")
        if self._is_stale(d, seq, uptime):
            return
        at = from_unix(m.received_at)
        fw, chip, boot = p.get("firmware") or {}, p.get("chip") or {}, p.get("boot") or {}
        net, heap, usbip = p.get("net") or {}, p.get("heap") or {}, p.get("usbip") or {}
        d.via_mqtt = True
        d.last_seen = max(d.last_seen, at)
        d.last_seq, d.uptime_s = seq, uptime
        d.firmware_version, d.idf_version = fw.get("version"), fw.get("idf")
        d.chip_model, d.chip_revision = chip.get("model"), chip.get("revision")
        d.boot_slot, d.ota_state = boot.get("slot"), boot.get("ota_state")
        d.ip, d.mac, d.rssi = net.get("ip") or d.ip, net.get("mac") or d.mac, net.get("rssi")
        d.heap_free, d.heap_min_free, d.dma_free = (
            heap.get("free"),
            heap.get("min_free"),
            heap.get("dma_free"),
        )
        d.usbip_port = usbip.get("port", d.usbip_port)
        reported = [x for x in p.get("devices") or [] if self._valid_device(d.id, x)]
        self._reconcile(s, d, reported, m.received_at, full_snapshot=True)

    @staticmethod
    def _is_stale(d: Dongle, seq: Any, uptime: Any) -> bool:
        """A QoS 1 duplicate or an out-of-order delivery from the same boot."""
        if (
            not isinstance(seq, int)
            or d.last_seq is None
            or d.uptime_s is None
            or not isinstance(uptime, int)
        ):
            return False
        same_boot = uptime >= d.uptime_s
        return same_boot and seq <= d.last_seq

    @staticmethod
    def _valid_device(dongle_id: str, x: Any) -> bool:
        try:
            if not isinstance(x, dict):
                raise InvalidInput("devices[]", "not an object")
            rules.busid(x.get("busid"), "devices[].busid")
            for k in ("vid", "pid"):
                v = x.get(k)
                if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 0xFFFF:
                    raise InvalidInput(f"devices[].{k}", f"{v!r} is not a 16-bit integer")
        except InvalidInput as exc:
            log.warning("ingest: %s reported a bad device, ignored: %s", dongle_id, exc)
            return False
        return True

    def _reconcile(
        self, s: Session, d: Dongle, reported: list[dict[str, Any]], now_ts: float, *, full_snapshot: bool
    ) -> None:
        """Match reported devices to known identities, then move/update/insert/remove."""
        now = from_unix(now_ts)
        serials = {x.get("serial") for x in reported if identity.is_meaningful_serial(x.get("serial"))}
        cond = Device.dongle_id == d.id
        if serials:
            cond = or_(cond, Device.serial.in_(serials))
        rows = s.execute(
            select(Device, Dongle.status).join(Dongle, Dongle.id == Device.dongle_id).where(cond)
        ).all()
        by_id = {dev.id: dev for dev, _ in rows}
        known = [
            identity.KnownDevice(
                id=dev.id,
                dongle_id=dev.dongle_id,
                busid=dev.busid,
                vid=dev.vid,
                pid=dev.pid,
                serial=dev.serial,
                present=dev.present,
                removed_at=dev.removed_at.timestamp() if dev.removed_at else None,
                dongle_online=status == DongleStatus.ONLINE or dev.dongle_id == d.id,
            )
            for dev, status in rows
        ]
        claimed: set[int] = set()
        plan: list[tuple[dict[str, Any], Device | None]] = []
        for x in reported:
            seen = identity.SeenDevice(d.id, x["busid"], x["vid"], x["pid"], x.get("serial"))
            mid = identity.match_device(
                seen, known, now_ts, window_s=self._window, claimed=frozenset(claimed)
            )
            if mid is not None:
                claimed.add(mid)
            plan.append((x, by_id.get(mid) if mid is not None else None))

        reported_busids = {x["busid"] for x in reported}
        touched: list[Device] = []
        # Free every location that changes hands before taking new ones, so the
        # "one present device per port" index never sees a transient clash.
        for dev, _ in rows:
            here = dev.dongle_id == d.id and dev.present
            leaving = here and dev.id not in claimed and (full_snapshot or dev.busid in reported_busids)
            moving = dev.id in claimed and dev.present
            if leaving or moving:
                dev.present = False
                if leaving:
                    dev.removed_at = now
                    dev.attached_to = None
                    touched.append(dev)
        s.flush()
        for x, dev in plan:
            fields = _device_fields(x)
            if dev is None:
                dev = Device(
                    dongle_id=d.id,
                    busid=x["busid"],
                    present=True,
                    state="free",
                    quarantined=False,
                    first_seen=now,
                    last_seen=now,
                    **fields,
                )
                s.add(dev)
            else:
                if (dev.dongle_id, dev.busid) != (d.id, x["busid"]) or (dev.vid, dev.pid) != (
                    x["vid"],
                    x["pid"],
                ):
                    audit(
                        s,
                        at=now,
                        actor="system",
                        action="device.reidentified",
                        target=f"device:{dev.id}",
                        detail={
                            "from": {
                                "dongle_id": dev.dongle_id,
                                "busid": dev.busid,
                                "vid_pid": f"{dev.vid:04x}:{dev.pid:04x}",
                            },
                            "to": {
                                "dongle_id": d.id,
                                "busid": x["busid"],
                                "vid_pid": f"{x['vid']:04x}:{x['pid']:04x}",
                            },
                        },
                    )
                dev.dongle_id, dev.busid = d.id, x["busid"]
                dev.present, dev.removed_at, dev.last_seen = True, None, now
                for k, v in fields.items():
                    setattr(dev, k, v)
            touched.append(dev)
        s.flush()
        refresh_states(s, touched)

    # -- events ------------------------------------------------------------------
    def _on_events(self, s: Session, d: Dongle, m: InboundMessage) -> None:
        p = m.payload
        at = from_unix(m.received_at)
        etype = str(p.get("type", ""))[:32]
        busid = p.get("busid")
        detail = p.get("detail") if isinstance(p.get("detail"), dict) else None
        s.add(
            Event(
                dongle_id=d.id,
                seq=p.get("seq"),
                uptime_s=p.get("uptime_s"),
                type=etype,
                busid=busid if isinstance(busid, str) else None,
                client=str(p["client"])[:64] if p.get("client") is not None else None,
                detail=detail,
                received_at=at,
            )
        )
        d.last_seen = max(d.last_seen, at)
        if etype == "ota_progress" and detail is not None and isinstance(detail.get("request_id"), str):
            self._track_ota(s, d.id, detail)
            return
        if etype not in _DEVICE_EVENTS or not isinstance(busid, str):
            return
        if etype == "device_added":
            x = dict(detail or {})
            x.setdefault("busid", busid)
            if self._valid_device(d.id, x):
                self._reconcile(s, d, [x], m.received_at, full_snapshot=False)
            return
        dev = s.scalar(select(Device).where(Device.dongle_id == d.id, Device.busid == busid, Device.present))
        if dev is None:
            return
        if etype == "device_removed":
            dev.present, dev.removed_at, dev.attached_to = False, at, None
        elif etype == "attached":
            dev.attached_to = str(p.get("client") or "unknown")[:64]
        elif etype == "detached":
            dev.attached_to = None
        dev.last_seen = at
        s.flush()
        refresh_states(s, [dev])

    @staticmethod
    def _track_ota(s: Session, dongle_id: str, detail: dict[str, Any]) -> None:
        cmd = s.scalar(
            select(Command).where(
                Command.request_id == detail["request_id"],
                Command.dongle_id == dongle_id,
                Command.name == "ota",
            )
        )
        if cmd is None:
            log.info(
                "ingest: %s reported ota progress of unknown request %s", dongle_id, detail["request_id"]
            )
            return
        cmd.progress = {k: detail[k] for k in _OTA_PROGRESS_KEYS if k in detail}
        cmd.outcome = ota_outcome(detail.get("step"), detail.get("reason"), cmd.outcome)

    # -- command results ---------------------------------------------------------------
    def _on_cmd_result(self, s: Session, d: Dongle, m: InboundMessage) -> None:
        if not CommandService.apply_result(s, d.id, m.payload, from_unix(m.received_at)):
            log.info("ingest: %s answered unknown request %s", d.id, m.payload.get("request_id"))

    # -- mDNS --------------------------------------------------------------------------
    def _on_mdns(self, s: Session, d: Dongle, m: InboundMessage) -> None:
        p = m.payload
        d.via_mdns = True
        d.mdns_present = bool(p.get("present"))
        if not d.mdns_present:
            return
        d.last_seen = max(d.last_seen, from_unix(m.received_at))
        if isinstance(p.get("address"), str) and p["address"]:
            d.ip = p["address"][:64]
        if isinstance(p.get("port"), int):
            d.usbip_port = p["port"]
        txt = p.get("txt") if isinstance(p.get("txt"), dict) else {}
        if txt.get("fw"):
            d.firmware_version = str(txt["fw"])[:64]
        if txt.get("chip"):
            d.chip_model = str(txt["chip"])[:32]
        if str(txt.get("rev", "")).isdigit():
            d.chip_revision = int(txt["rev"])

    # -- telemetry (hot path) ----------------------------------------------------------
    @staticmethod
    def _on_telemetry_batch(s: Session, msgs: Sequence[InboundMessage]) -> None:
        # Only the newest message per dongle updates the inventory; every
        # message becomes a sample. Ties go to the later message in the batch.
        latest: dict[str, InboundMessage] = {}
        for m in msgs:
            prev = latest.get(m.dongle_id)
            if prev is None or m.received_at >= prev.received_at:
                latest[m.dongle_id] = m
        if s.get_bind().dialect.name == "postgresql":
            _pg_telemetry(s, msgs, latest)
            return

        samples = [
            {
                "dongle_id": m.dongle_id,
                "seq": m.payload.get("seq"),
                "received_at": from_unix(m.received_at),
                "payload": m.payload,
            }
            for m in msgs
        ]
        dongle_rows = []
        for did, m in latest.items():
            p = m.payload
            row: dict[str, Any] = {"id": did, "last_seen": from_unix(m.received_at), "via_mqtt": True}
            for key in _DONGLE_COUNTERS:
                if key in p:
                    row[key] = p[key]
            dongle_rows.append(row)
        locs = {
            (dongle_id, busid): did
            for did, dongle_id, busid in s.execute(
                select(Device.id, Device.dongle_id, Device.busid).where(
                    Device.dongle_id.in_(latest), Device.present
                )
            )
        }
        dev_rows = [
            {
                "id": dev_id,
                "urbs": x.get("urbs"),
                "bytes_in": x.get("bytes_in"),
                "bytes_out": x.get("bytes_out"),
                "errors": x.get("errors"),
                "latency_us": x.get("latency_us"),
                "last_seen": from_unix(m.received_at),
            }
            for dev_id, x, m in _device_counters(latest, locs)
        ]
        s.execute(insert(TelemetrySample), samples)
        _bulk_update(s, Dongle, dongle_rows)
        _bulk_update(s, Device, dev_rows)


_OTA_PROGRESS_KEYS = ("step", "bytes", "total", "reason", "version")


def ota_outcome(step: Any, reason: Any, current: str | None) -> str | None:
    """Where an ota command stands after an ``ota_progress`` event (agent's ota.c).

    A reason marks the end of an attempt: on ``verify`` the manifest or image was
    refused, on ``download`` the transfer failed, on ``rollback`` the new image
    failed its self-test. ``verify`` without a reason (a check in progress)
    leaves the outcome as it was.
    """
    failed = isinstance(reason, str) and reason != ""
    if step == "verify":
        return "refused" if failed else current
    if step == "download":
        return "failed" if failed else "downloading"
    if step == "boot":
        return "staged"
    if step == "selftest":
        return "self_test"
    if step == "confirm":
        return "confirmed"
    if step == "rollback":
        return "rolled_back"
    return current


# Dongle columns telemetry may carry, named as in the payload.
_DONGLE_COUNTERS = ("heap_free", "rssi", "uptime_s")


def _device_counters(
    latest: dict[str, InboundMessage], locs: dict[tuple[str, str], int]
) -> list[tuple[int, dict[str, Any], InboundMessage]]:
    """(device id, reported counters, message) for each present device the
    newest telemetry of its dongle reports; the last report of a port wins."""
    out: dict[int, tuple[int, dict[str, Any], InboundMessage]] = {}
    for did, m in latest.items():
        for x in m.payload.get("devices") or []:
            dev_id = locs.get((did, x.get("busid"))) if isinstance(x, dict) else None
            if dev_id is not None:
                out[dev_id] = (dev_id, x, m)
    return list(out.values())


def _bulk_update(s: Session, model: type[Any], rows: list[dict[str, Any]]) -> None:
    """Update many rows by primary key: one executemany per key set."""
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(frozenset(r), []).append(r)
    for group in groups.values():
        s.execute(update(model), group)


# PostgreSQL hot path, straight on the psycopg connection (no SQL compilation
# per batch; arrays go in binary, the text format escapes every JSON quote):
# samples are COPYed into telemetry_samples, and dongles and devices get one
# set-based UPDATE each, fed by array parameters that unnest() turns into a
# table. Before: executemany UPDATEs (one statement per row) capped ingestion
# near 3,000 msg/s; temporary tables filled by COPY cost three extra round
# trips per batch.
_PG_ENSURE_DONGLES = """
INSERT INTO dongles (id, status, first_seen, last_seen, via_mqtt, via_mdns, mdns_present)
SELECT u.id, 'unknown', u.seen, u.seen, false, false, false
FROM unnest(%b::text[], %b::timestamptz[]) AS u(id, seen)
ON CONFLICT (id) DO NOTHING
"""
# Binary COPY: the server reads integers and timestamps without parsing text.
_PG_COPY_SAMPLES = "COPY telemetry_samples (dongle_id, seq, received_at, payload) FROM STDIN (FORMAT BINARY)"
_PG_SAMPLE_TYPES = ("text", "int8", "timestamptz", "json")
_PG_LOCATIONS = "SELECT id, dongle_id, busid FROM devices WHERE present AND dongle_id = ANY(%b)"
# Rows are locked in id order (the arrays are sorted) so that concurrent
# batches touching the same dongles queue instead of deadlocking.
_PG_UPDATE_DONGLES = """
UPDATE dongles AS g SET
    last_seen = GREATEST(g.last_seen, u.last_seen), via_mqtt = true,
    heap_free = CASE WHEN u.has_heap THEN u.heap_free ELSE g.heap_free END,
    rssi = CASE WHEN u.has_rssi THEN u.rssi ELSE g.rssi END,
    uptime_s = CASE WHEN u.has_uptime THEN u.uptime_s ELSE g.uptime_s END
FROM unnest(%b::text[], %b::timestamptz[], %b::bigint[], %b::bool[], %b::int[], %b::bool[],
            %b::bigint[], %b::bool[])
     AS u(id, last_seen, heap_free, has_heap, rssi, has_rssi, uptime_s, has_uptime)
WHERE g.id = u.id
"""
_PG_UPDATE_DEVICES = """
UPDATE devices AS d SET
    urbs = u.urbs, bytes_in = u.bytes_in, bytes_out = u.bytes_out,
    errors = u.errors, latency_us = u.latency_us, last_seen = u.last_seen
FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[], %b::bigint[], %b::json[], %b::json[],
            %b::timestamptz[])
     AS u(id, urbs, bytes_in, bytes_out, errors, latency_us, last_seen)
WHERE d.id = u.id
"""


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63 else None


def _int32(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and -(2**31) <= v < 2**31 else None


def _json_text(v: Any) -> str | None:
    if v is None:
        return None
    try:
        # orjson is ~10x faster than json.dumps; it refuses integers beyond
        # 64 bits, which the stdlib encoder still writes.
        return orjson.dumps(v).decode()
    except TypeError:
        return json.dumps(v, separators=(",", ":"))


def _pg_telemetry(s: Session, msgs: Sequence[InboundMessage], latest: dict[str, InboundMessage]) -> None:
    raw = s.connection().connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur:
        cur.execute(_PG_LOCATIONS, (list(latest),), prepare=True)
        locs = {(dongle_id, busid): dev_id for dev_id, dongle_id, busid in cur}
        with cur.copy(_PG_COPY_SAMPLES) as cp:
            cp.set_types(_PG_SAMPLE_TYPES)
            for m in msgs:
                cp.write_row(
                    (m.dongle_id, _int(m.payload.get("seq")), from_unix(m.received_at), _json_text(m.payload))
                )

        cols: list[list[Any]] = [[] for _ in range(8)]
        for did in sorted(latest):
            m = latest[did]
            p = m.payload
            for col, v in zip(
                cols,
                (
                    did,
                    from_unix(m.received_at),
                    _int(p.get("heap_free")),
                    "heap_free" in p,
                    _int32(p.get("rssi")),
                    "rssi" in p,
                    _int(p.get("uptime_s")),
                    "uptime_s" in p,
                ),
                strict=True,
            ):
                col.append(v)
        cur.execute(_PG_UPDATE_DONGLES, cols, prepare=True)

        counters = sorted(_device_counters(latest, locs), key=lambda r: r[0])
        if counters:
            dcols: list[list[Any]] = [[] for _ in range(7)]
            for dev_id, x, m in counters:
                for col, v in zip(
                    dcols,
                    (
                        dev_id,
                        _int(x.get("urbs")),
                        _int(x.get("bytes_in")),
                        _int(x.get("bytes_out")),
                        _json_text(x.get("errors")),
                        _json_text(x.get("latency_us")),
                        from_unix(m.received_at),
                    ),
                    strict=True,
                ):
                    col.append(v)
            cur.execute(_PG_UPDATE_DEVICES, dcols, prepare=True)


def _device_fields(x: dict[str, Any]) -> dict[str, Any]:
    def text(key: str, n: int) -> str | None:
        v = x.get(key)
        return str(v)[:n] if v is not None else None

    def small_int(key: str) -> int | None:
        v = x.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    interfaces = x.get("interfaces")
    return {
        "vid": x["vid"],
        "pid": x["pid"],
        "bcd_device": small_int("bcd_device"),
        "serial": text("serial", 128),
        "manufacturer": text("manufacturer", 128),
        "product": text("product", 128),
        "device_class": small_int("class"),
        "device_subclass": small_int("subclass"),
        "device_protocol": small_int("protocol"),
        "speed": text("speed", 16),
        "interfaces": interfaces if isinstance(interfaces, list) else None,
        "attached_to": text("attached_to", 64),
    }
