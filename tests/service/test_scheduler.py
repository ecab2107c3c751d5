"""Lease expiry by itself, leader election, telemetry retention."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import func, select, update

from fleet.db.models import Command, TelemetrySample
from fleet.scheduler import Scheduler
from fleet.services.common import utcnow
from fleet.services.container import Services

from .helpers import DONGLE_A, Db, RecordingPublisher, bring_online, device, msg


def _wait_for(pred, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_short_lease_expires_and_revoke_is_recorded(
    services: Services, db: Db, publisher: RecordingPublisher
) -> None:
    bring_online(services, DONGLE_A, [device("1-1")])
    services.users.add("alice", "user")
    alice = services.users.authenticate(services.users.issue_token("alice"))
    assert alice is not None
    lease = services.leases.acquire(alice, 1, duration_s=1, clients=["127.0.0.1"])
    sched = Scheduler(db.sf, services.leases, services.commands, interval_s=0.1)
    sched.start()
    try:
        assert _wait_for(lambda: services.leases.get(lease["id"])["state"] == "expired")
    finally:
        sched.stop()
    assert sched.instance_id and not sched.is_leader  # released its lock on stop
    got = services.leases.get(lease["id"])
    assert got["ended_at"] == got["expires_at"] and got["end_reason"] == "expired"
    with db.sf() as s:
        revoke = s.scalar(select(Command).where(Command.name == "revoke"))
    assert revoke is not None and revoke.lease_id == lease["id"] and revoke.state == "sent"
    assert revoke.payload["reason"] == "expired" and revoke.payload["busid"] == "1-1"
    assert publisher.names() == ["grant", "revoke"]
    assert services.inventory.get_device(1)["state"] == "free"
    assert services.audit.list(action="lease.expire")["items"][0]["actor"] == "scheduler"


def test_only_one_replica_leads(services: Services, db: Db) -> None:
    a = Scheduler(db.sf, services.leases, services.commands, lock_ttl_s=30)
    b = Scheduler(db.sf, services.leases, services.commands, lock_ttl_s=30)
    a.tick()
    b.tick()
    assert a.is_leader and not b.is_leader
    a.tick()
    assert a.is_leader
    # A leader that stops refreshing loses the lock once it is stale.
    from fleet.db.models import SchedulerLock

    with db.sf.begin() as s:
        s.execute(update(SchedulerLock).values(expires_at=utcnow() - timedelta(seconds=1)))
    b.tick()
    assert b.is_leader
    a.tick()
    assert not a.is_leader


def test_failed_commands_are_resent_by_the_leader(
    services: Services, db: Db, publisher: RecordingPublisher
) -> None:
    bring_online(services, DONGLE_A, [device("1-1")])
    services.users.add("alice", "user")
    alice = services.users.authenticate(services.users.issue_token("alice"))
    assert alice is not None
    publisher.fail = True
    services.leases.acquire(alice, 1, clients=["127.0.0.1"])
    publisher.fail = False
    Scheduler(db.sf, services.leases, services.commands).tick()
    assert publisher.names() == ["grant"]
    assert services.commands.list(state="sent")["total"] == 1


def test_telemetry_older_than_retention_is_pruned(services: Services, db: Db) -> None:
    now = time.time()
    services.ingest.apply(
        [msg("telemetry", DONGLE_A, {"seq": i, "uptime_s": i}, at=now - 7200 + i * 7000) for i in range(2)]
    )
    sched = Scheduler(db.sf, services.leases, services.commands, telemetry_retention_hours=1)
    assert sched.prune_telemetry() == 1
    with db.sf() as s:
        assert s.scalar(select(func.count()).select_from(TelemetrySample)) == 1
