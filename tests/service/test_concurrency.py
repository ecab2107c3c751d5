"""Exclusivity comes from the database: 50 racing requests, one winner."""

from __future__ import annotations

import threading
from collections import Counter

from sqlalchemy import select

from fleet.db.engine import make_engine, make_session_factory
from fleet.db.models import Lease
from fleet.domain.errors import Conflict
from fleet.services.container import build_services

from .helpers import DONGLE_A, Db, RecordingPublisher, bring_online, device

N = 50


def test_fifty_concurrent_requests_one_winner_no_overlap(db: Db, publisher: RecordingPublisher) -> None:
    svc = build_services(db.sf, publisher)
    bring_online(svc, DONGLE_A, [device("1-1")])
    principals = []
    for i in range(N):
        svc.users.add(f"user{i}", "user")
        p = svc.users.authenticate(svc.users.issue_token(f"user{i}"))
        assert p is not None
        principals.append(p)

    # Each thread has its own engine (own connections), as separate API replicas would.
    engines = [make_engine(db.url, pool_size=1) for _ in range(N)]
    barrier = threading.Barrier(N)
    results: list[str] = []
    lock = threading.Lock()

    def attempt(i: int) -> None:
        own = build_services(make_session_factory(engines[i]), publisher)
        barrier.wait()
        try:
            own.leases.acquire(principals[i], 1, duration_s=60, clients=["127.0.0.1"])
            outcome = "won"
        except Conflict as exc:
            outcome = (
                "conflict"
                if "is leased by user" in exc.message or "same moment" in exc.message
                else repr(exc)
            )
        except Exception as exc:  # reported, so a crash cannot pass as a conflict
            outcome = repr(exc)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for e in engines:
        e.dispose()

    assert Counter(results) == Counter({"won": 1, "conflict": N - 1})
    assert publisher.names() == ["grant"]

    # Then a churn of acquire/release by several users: intervals never overlap.
    for i in range(6):
        who = principals[i]
        lease = svc.leases.acquire(who, 1, clients=["127.0.0.1"]) if i else None
        if lease is None:
            active = svc.leases.list(state="active")["items"][0]
            holder = next(p for p in principals if p.name == active["holder"])
            svc.leases.release(holder, active["id"])
        else:
            svc.leases.release(who, lease["id"])
    with db.sf() as s:
        leases = s.scalars(select(Lease).where(Lease.device_id == 1).order_by(Lease.started_at)).all()
    assert len(leases) == 6
    for prev, nxt in zip(leases, leases[1:], strict=False):
        end = prev.ended_at or prev.expires_at
        assert end <= nxt.started_at, f"lease {prev.id} overlaps lease {nxt.id}"


def test_database_refuses_a_second_active_lease(db: Db, publisher: RecordingPublisher) -> None:
    """The guarantee holds even for code that bypasses the lease service."""
    import pytest
    from sqlalchemy.exc import IntegrityError

    from fleet.services.common import utcnow

    svc = build_services(db.sf, publisher)
    bring_online(svc, DONGLE_A, [device("1-1")])
    svc.users.add("carol", "user")
    now = utcnow()
    row = {
        "device_id": 1,
        "user_id": 1,
        "state": "active",
        "clients": ["127.0.0.1"],
        "started_at": now,
        "expires_at": now,
    }
    with db.sf.begin() as s:
        s.add(Lease(**row))
    with pytest.raises(IntegrityError), db.sf.begin() as s:
        s.add(Lease(**row))
        s.flush()
    with db.sf.begin() as s:  # ended leases do not count
        s.add(Lease(**{**row, "state": "released"}))
