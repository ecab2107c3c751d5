"""JSON-ready representations of stored rows (what the API and CLI show)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fleet.db.models import ApiToken, AuditEntry, Command, Device, Dongle, Event, Lease, User


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def dongle_view(d: Dongle, *, device_count: int | None = None) -> dict[str, Any]:
    discovered = [s for s, on in (("mdns", d.via_mdns), ("mqtt", d.via_mqtt)) if on]
    out: dict[str, Any] = {
        "id": d.id,
        "status": d.status,
        "status_reason": d.status_reason,
        "chip": {"model": d.chip_model, "revision": d.chip_revision},
        "firmware": {"version": d.firmware_version, "idf": d.idf_version},
        "boot": {"slot": d.boot_slot, "ota_state": d.ota_state},
        "ip": d.ip,
        "mac": d.mac,
        "usbip_port": d.usbip_port,
        "heap": {"free": d.heap_free, "min_free": d.heap_min_free, "dma_free": d.dma_free},
        "rssi": d.rssi,
        "uptime_s": d.uptime_s,
        "discovered_by": discovered,
        "first_seen": iso(d.first_seen),
        "last_seen": iso(d.last_seen),
    }
    if device_count is not None:
        out["device_count"] = device_count
    return out


def device_view(
    d: Device, tags: list[str], lease: Lease | None = None, holder: str | None = None
) -> dict[str, Any]:
    return {
        "id": d.id,
        "name": d.name,
        "tags": sorted(tags),
        "dongle_id": d.dongle_id,
        "busid": d.busid,
        "present": d.present,
        "state": d.state,
        "quarantined": d.quarantined,
        "vid": d.vid,
        "pid": d.pid,
        "vid_pid": f"{d.vid:04x}:{d.pid:04x}",
        "bcd_device": d.bcd_device,
        "serial": d.serial,
        "manufacturer": d.manufacturer,
        "product": d.product,
        "class": d.device_class,
        "subclass": d.device_subclass,
        "protocol": d.device_protocol,
        "speed": d.speed,
        "interfaces": d.interfaces or [],
        "attached_to": d.attached_to,
        "counters": {
            "urbs": d.urbs,
            "bytes_in": d.bytes_in,
            "bytes_out": d.bytes_out,
            "errors": d.errors,
            "latency_us": d.latency_us,
        },
        "lease": None
        if lease is None
        else {"id": lease.id, "holder": holder, "expires_at": iso(lease.expires_at)},
        "first_seen": iso(d.first_seen),
        "last_seen": iso(d.last_seen),
        "removed_at": iso(d.removed_at),
    }


def lease_view(lease: Lease, device: Device, holder: str) -> dict[str, Any]:
    return {
        "id": lease.id,
        "device": {
            "id": device.id,
            "name": device.name,
            "dongle_id": device.dongle_id,
            "busid": device.busid,
        },
        "holder": holder,
        "state": lease.state,
        "clients": lease.clients,
        "started_at": iso(lease.started_at),
        "expires_at": iso(lease.expires_at),
        "ended_at": iso(lease.ended_at),
        "end_reason": lease.end_reason,
    }


def audit_view(a: AuditEntry) -> dict[str, Any]:
    return {
        "id": a.id,
        "at": iso(a.at),
        "actor": a.actor,
        "action": a.action,
        "target": a.target,
        "detail": a.detail,
    }


MASK = "********"


def masked(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` without secrets: a config command's MQTT password is replaced by a mask."""
    mqtt = payload.get("mqtt")
    if not isinstance(mqtt, dict) or not mqtt.get("password"):
        return payload
    return {**payload, "mqtt": {**mqtt, "password": MASK}}


def command_view(c: Command) -> dict[str, Any]:
    return {
        "id": c.id,
        "request_id": c.request_id,
        "dongle_id": c.dongle_id,
        "name": c.name,
        "lease_id": c.lease_id,
        "state": c.state,
        "attempts": c.attempts,
        "payload": masked(c.payload),
        "error": c.error,
        "result": c.result,
        "progress": c.progress,
        "outcome": c.outcome,
        "created_at": iso(c.created_at),
        "sent_at": iso(c.sent_at),
        "answered_at": iso(c.answered_at),
    }


def user_view(u: User, tokens: list[ApiToken] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": u.id, "name": u.name, "role": u.role, "created_at": iso(u.created_at)}
    if tokens is not None:
        out["tokens"] = [
            {"id": t.id, "prefix": t.prefix, "created_at": iso(t.created_at), "revoked_at": iso(t.revoked_at)}
            for t in tokens
        ]
    return out


def event_view(e: Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "dongle_id": e.dongle_id,
        "type": e.type,
        "busid": e.busid,
        "client": e.client,
        "detail": e.detail,
        "seq": e.seq,
        "uptime_s": e.uptime_s,
        "received_at": iso(e.received_at),
    }
