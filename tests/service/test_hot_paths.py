"""The fast paths added for throughput keep the slow paths' meaning.

Authentication answers are cached briefly (revocation elsewhere is bounded,
here immediate); a lease operation's writes on PostgreSQL go out as one
statement and must store what the generic path stores; telemetry batches stay
atomic and concurrent batches on the same dongles do not deadlock.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select

from fleet.db.models import AuditEntry, Command, Device, Dongle, Lease, TelemetrySample
from fleet.domain.errors import Conflict
from fleet.services import ingest as ingest_module
from fleet.services.container import Services, build_services
from fleet.services.users import UserService

from .helpers import DONGLE_A, DONGLE_B, Db, RecordingPublisher, bring_online, device, msg


def test_auth_cache_bounds_revocation_elsewhere_and_is_immediate_here(db: Db) -> None:
    here = UserService(db.sf, auth_cache_s=0.5)
    elsewhere = UserService(db.sf)  # another replica, or the CLI
    _, token = elsewhere.add("carol", "user")
    assert here.authenticate_cached(token).name == "carol"  # type: ignore[union-attr]
    elsewhere.revoke_token(token)
    # Still remembered here, never longer than auth_cache_s.
    assert here.authenticate_cached(token) is not None
    assert elsewhere.authenticate(token) is None
    time.sleep(0.6)
    assert here.authenticate_cached(token) is None

    second = elsewhere.issue_token("carol")
    assert here.authenticate_cached(second) is not None
    here.revoke_token(second)  # through this process: at once
    assert here.cached_principal(second) is None and here.authenticate_cached(second) is None

    third = elsewhere.issue_token("carol")
    assert here.authenticate_cached(third).role == "user"  # type: ignore[union-attr]
    here.set_role("carol", "admin")
    assert here.authenticate_cached(third).role == "admin"  # type: ignore[union-attr]


def test_unknown_tokens_are_not_cached(db: Db) -> None:
    users = UserService(db.sf, auth_cache_s=60)
    for i in range(20):
        assert users.authenticate_cached(f"fleet_guess{i}") is None
    assert users._auth_cache == {}


def test_lease_operations_store_the_audit_and_commands_they_publish(
    services: Services, db: Db, publisher: RecordingPublisher
) -> None:
    bring_online(services, DONGLE_A, [device("1-1"), device("1-2")])
    alice = services.users.authenticate(services.users.add("alice", "user")[1])
    assert alice is not None
    dev_id = services.inventory.list_devices()["items"][0]["id"]
    lease = services.leases.acquire(alice, dev_id, duration_s=120, clients=["127.0.0.1"])
    assert lease["device"]["id"] == dev_id and lease["state"] == "active"
    assert services.inventory.get_device(str(dev_id))["state"] == "leased"
    ended = services.leases.release(alice, lease["id"])
    assert ended["state"] == "released" and ended["end_reason"] == "released" and ended["ended_at"]
    assert services.inventory.get_device(str(dev_id))["state"] == "free"

    with db.sf() as s:
        stored = s.get(Lease, lease["id"])
        assert stored is not None and stored.state == "released" and stored.clients == ["127.0.0.1"]
        assert stored.ended_at is not None and stored.ended_at >= stored.started_at
        cmds = s.scalars(select(Command).order_by(Command.id)).all()
        audit = s.scalars(
            select(AuditEntry).where(AuditEntry.action.startswith("lease.")).order_by(AuditEntry.id)
        ).all()
        assert s.get(Device, dev_id).state == "free"  # type: ignore[union-attr]
    # What went out over MQTT is exactly what was recorded, command by command.
    assert [(c.dongle_id, c.name, c.payload) for c in cmds] == publisher.sent
    assert [c.lease_id for c in cmds] == [lease["id"], lease["id"]]
    assert [c.state for c in cmds] == ["sent", "sent"]
    assert cmds[1].payload["reason"] == "released" and cmds[1].payload["busid"] == "1-1"
    assert [(a.action, a.actor, a.target) for a in audit] == [
        ("lease.acquire", "alice", f"device:{dev_id}"),
        ("lease.release", "alice", f"device:{dev_id}"),
    ]
    assert audit[0].detail == {
        "lease_id": lease["id"],
        "device": f"device {dev_id} ({DONGLE_A} 1-1)",
        "expires_at": lease["expires_at"],
        "clients": ["127.0.0.1"],
    }
    assert audit[1].detail == {"lease_id": lease["id"], "holder": "alice", "reason": "released"}


def _telemetry(dongle: str, seq: int, at: float) -> object:
    return msg(
        "telemetry",
        dongle,
        {
            "seq": seq,
            "uptime_s": seq,
            "interval_s": 10,
            "heap_free": 1000 + seq,
            "devices": [
                {"busid": "1-1", "urbs": seq, "bytes_in": 1, "bytes_out": 2, "unlinks": 0, "queue_depth": 0}
            ],
        },
        at=at,
    )


def test_a_failing_telemetry_batch_stores_nothing(
    services: Services, db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    bring_online(services, DONGLE_A, [device("1-1")])

    def broken(*_: object) -> list[object]:
        raise RuntimeError("disk full")  # after the samples were already sent to the database

    monkeypatch.setattr(ingest_module, "_device_counters", broken)
    t = time.time()
    with pytest.raises(RuntimeError):
        services.ingest.apply([_telemetry(DONGLE_A, i, t + i) for i in range(50)])  # type: ignore[misc]
    with db.sf() as s:
        assert s.scalar(select(func.count()).select_from(TelemetrySample)) == 0
        assert s.get(Dongle, DONGLE_A).heap_free != 1049  # type: ignore[union-attr]


def test_concurrent_telemetry_batches_on_the_same_dongles(services: Services, db: Db) -> None:
    dongles = [DONGLE_A, DONGLE_B] + [f"esp-{i:012x}" for i in range(1, 19)]
    for d in dongles:
        bring_online(services, d, [device("1-1", serial=f"S-{d}")])
    t = time.time()
    errors: list[BaseException] = []

    def feed(offset: int) -> None:
        try:
            for b in range(8):
                # Each batch names the dongles in a different order.
                order = dongles[b % 7 :] + dongles[: b % 7]
                services.ingest.apply(
                    [
                        _telemetry(d, 1000 * offset + 10 * b + k, t + b + k / 100)
                        for k in range(5)
                        for d in order
                    ]  # type: ignore[misc]
                )
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=feed, args=(i,)) for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    with db.sf() as s:
        assert s.scalar(select(func.count()).select_from(TelemetrySample)) == 3 * 8 * 5 * len(dongles)


def test_lease_routes_answer_plain_json(services: Services) -> None:
    from fastapi.testclient import TestClient

    from fleet.api import create_api

    bring_online(services, DONGLE_A, [device("1-1")])
    _, token = services.users.add("dave", "user")
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_api(services, threads=2)) as client:
        r = client.post("/api/v1/leases", json={"device": 1, "clients": ["127.0.0.1"]}, headers=auth)
        assert r.status_code == 201 and r.headers["content-type"] == "application/json"
        assert r.json()["holder"] == "dave" and r.json()["device"]["busid"] == "1-1"
        r = client.post(f"/api/v1/leases/{r.json()['id']}/release", headers=auth)
        assert r.status_code == 200 and r.json()["state"] == "released"
        r = client.post("/api/v1/leases/999/release", headers=auth)
        assert r.status_code == 404 and r.json() == {
            "error": {"code": "not_found", "message": "no lease 999"}
        }
    with pytest.raises(ValueError, match="at least 1"):
        create_api(services, threads=0)


def test_racing_acquire_and_release_never_record_overlapping_leases(db: Db) -> None:
    """Clients grab a device the moment its holder lets go: every recorded
    lease must start at or after the previous one on its device ended."""
    services = build_services(db.sf, RecordingPublisher())
    bring_online(services, DONGLE_A, [device("1-1"), device("1-2")])
    who = [services.users.authenticate(services.users.add(f"u{i}", "user")[1]) for i in range(24)]
    stop = time.monotonic() + 2.0
    errors: list[BaseException] = []

    def churn(i: int) -> None:
        try:
            while time.monotonic() < stop:
                try:
                    lease = services.leases.acquire(who[i], 1 + i % 2, duration_s=60, clients=["127.0.0.1"])
                except Conflict:
                    continue
                services.leases.release(who[i], lease["id"])  # type: ignore[arg-type]
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(len(who))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    with db.sf() as s:
        rows = s.execute(
            select(Lease.id, Lease.device_id, Lease.started_at, Lease.ended_at).order_by(
                Lease.device_id, Lease.started_at
            )
        ).all()
    assert len(rows) > 20  # the race was actually run
    overlaps = [
        (a.id, b.id)
        for a, b in zip(rows, rows[1:], strict=False)
        if a.device_id == b.device_id and a.ended_at > b.started_at
    ]
    assert overlaps == []
