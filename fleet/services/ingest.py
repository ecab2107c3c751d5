"""``InventoryIngestSink``: what dongles say (MQTT, mDNS) becomes inventory.

One database transaction per batch. Telemetry, by far the most frequent
message, takes a bulk path (one multi-row INSERT into ``telemetry_samples`` and
executemany UPDATEs keyed by primary key) with no ORM objects; the rarer
status/state/events/cmd-result/mdns messages go through the ORM in order.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from fleet.db.models import Device, Dongle, Event, TelemetrySample
from fleet.domain import identity, rules
from fleet.domain.errors import InvalidInput
from fleet.domain.model import DongleStatus
from fleet.ports import InboundMessage
from fleet.services.commands import CommandService
from fleet.services.common import audit, from_unix
from fleet.services.inventory import refresh_states

log = logging.getLogger(__name__)

_DEVICE_EVENTS = {"device_added", "device_removed", "attached", "detached"}


class InventoryIngestSink:
    """Satisfies ``fleet.ports.IngestSink``."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        bootloader_window_s: float = identity.BOOTLOADER_WINDOW_S,
    ):
        self._sf = session_factory
        self._window = bootloader_window_s
        #: messages skipped because they named an invalid dongle or device
        self.skipped = 0

    def apply(self, messages: Sequence[InboundMessage]) -> None:
        good = [m for m in messages if self._acceptable(m)]
        if not good:
            return
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
                    handler(s, dongles[m.dongle_id], m)
            if fast:
                self._on_telemetry_batch(s, fast)

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
    def _on_status(self, s: Session, d: Dongle, m: InboundMessage) -> None:
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
        else:
            d.status_reason = p.get("reason")

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
        samples = []
        latest: dict[str, InboundMessage] = {}
        for m in msgs:
            samples.append(
                {
                    "dongle_id": m.dongle_id,
                    "seq": m.payload.get("seq"),
                    "received_at": from_unix(m.received_at),
                    "payload": m.payload,
                }
            )
            prev = latest.get(m.dongle_id)
            if prev is None or m.received_at >= prev.received_at:
                latest[m.dongle_id] = m

        dongle_rows = []
        for did, m in latest.items():
            p = m.payload
            row: dict[str, Any] = {"id": did, "last_seen": from_unix(m.received_at), "via_mqtt": True}
            for col, key in (("heap_free", "heap_free"), ("rssi", "rssi"), ("uptime_s", "uptime_s")):
                if key in p:
                    row[col] = p[key]
            dongle_rows.append(row)

        locs = {
            (dongle_id, busid): did
            for did, dongle_id, busid in s.execute(
                select(Device.id, Device.dongle_id, Device.busid).where(
                    Device.dongle_id.in_(latest), Device.present
                )
            )
        }
        dev_rows = []
        for did, m in latest.items():
            for x in m.payload.get("devices") or []:
                dev_id = locs.get((did, x.get("busid"))) if isinstance(x, dict) else None
                if dev_id is None:
                    continue
                dev_rows.append(
                    {
                        "id": dev_id,
                        "urbs": x.get("urbs"),
                        "bytes_in": x.get("bytes_in"),
                        "bytes_out": x.get("bytes_out"),
                        "errors": x.get("errors"),
                        "latency_us": x.get("latency_us"),
                        "last_seen": from_unix(m.received_at),
                    }
                )
        if s.get_bind().dialect.name == "postgresql":
            _pg_telemetry(s, samples, dongle_rows, dev_rows)
        else:
            s.execute(insert(TelemetrySample), samples)
            _bulk_update(s, Dongle, dongle_rows)
            _bulk_update(s, Device, dev_rows)


def _bulk_update(s: Session, model: type[Any], rows: list[dict[str, Any]]) -> None:
    """Update many rows by primary key: one executemany per key set."""
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(frozenset(r), []).append(r)
    for group in groups.values():
        s.execute(update(model), group)


# PostgreSQL hot path: COPY instead of INSERT/UPDATE statements. Samples are
# copied straight into telemetry_samples; dongle and device updates are copied
# into per-connection temporary tables and applied with one UPDATE ... FROM
# each. executemany sent one statement per row and capped ingestion near
# 3,000 messages/s; COPY streams rows through psycopg's C dumpers.
_PG_TEMP_TABLES = """
CREATE TEMP TABLE fleet_tmp_dongles (
    id text, last_seen timestamptz, heap_free bigint, has_heap boolean,
    rssi integer, has_rssi boolean, uptime_s bigint, has_uptime boolean
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE fleet_tmp_devices (
    id bigint, urbs bigint, bytes_in bigint, bytes_out bigint,
    errors json, latency_us json, last_seen timestamptz
) ON COMMIT DELETE ROWS;
"""
_PG_UPDATE_DONGLES = """
UPDATE dongles AS g SET
    last_seen = GREATEST(g.last_seen, u.last_seen), via_mqtt = true,
    heap_free = CASE WHEN u.has_heap THEN u.heap_free ELSE g.heap_free END,
    rssi = CASE WHEN u.has_rssi THEN u.rssi ELSE g.rssi END,
    uptime_s = CASE WHEN u.has_uptime THEN u.uptime_s ELSE g.uptime_s END
FROM fleet_tmp_dongles AS u WHERE g.id = u.id
"""
_PG_UPDATE_DEVICES = """
UPDATE devices AS d SET
    urbs = u.urbs, bytes_in = u.bytes_in, bytes_out = u.bytes_out,
    errors = u.errors, latency_us = u.latency_us, last_seen = u.last_seen
FROM fleet_tmp_devices AS u WHERE d.id = u.id
"""


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63 else None


def _json_text(v: Any) -> str | None:
    return None if v is None else json.dumps(v, separators=(",", ":"))


def _pg_telemetry(
    s: Session, samples: list[dict[str, Any]], dongles: list[dict[str, Any]], devices: list[dict[str, Any]]
) -> None:
    conn = s.connection()
    raw = conn.connection.driver_connection
    assert raw is not None
    if not conn.connection.info.get("fleet_tmp_tables"):
        with raw.cursor() as cur:
            cur.execute(_PG_TEMP_TABLES)
        conn.connection.info["fleet_tmp_tables"] = True
    with raw.cursor() as cur:
        with cur.copy("COPY telemetry_samples (dongle_id, seq, received_at, payload) FROM STDIN") as cp:
            for r in samples:
                cp.write_row((r["dongle_id"], _int(r["seq"]), r["received_at"], _json_text(r["payload"])))
        with cur.copy("COPY fleet_tmp_dongles FROM STDIN") as cp:
            for r in dongles:
                cp.write_row(
                    (
                        r["id"],
                        r["last_seen"],
                        _int(r.get("heap_free")),
                        "heap_free" in r,
                        _int(r.get("rssi")),
                        "rssi" in r,
                        _int(r.get("uptime_s")),
                        "uptime_s" in r,
                    )
                )
        cur.execute(_PG_UPDATE_DONGLES)
        if devices:
            with cur.copy("COPY fleet_tmp_devices FROM STDIN") as cp:
                for r in devices:
                    cp.write_row(
                        (
                            r["id"],
                            _int(r["urbs"]),
                            _int(r["bytes_in"]),
                            _int(r["bytes_out"]),
                            _json_text(r["errors"]),
                            _json_text(r["latency_us"]),
                            r["last_seen"],
                        )
                    )
            cur.execute(_PG_UPDATE_DEVICES)


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
