"""Lease rules, commands and audit, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from fleet.db.models import Command, Lease
from fleet.domain.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from fleet.domain.model import Principal
from fleet.services.container import Services

from .helpers import DONGLE_A, Db, RecordingPublisher, bring_online, device, status


def user(services: Services, name: str, role: str = "user") -> Principal:
    services.users.add(name, role)
    p = services.users.authenticate(services.users.issue_token(name))
    assert p is not None
    return p


@pytest.fixture
def lab(services: Services) -> dict[str, Principal]:
    bring_online(
        services,
        DONGLE_A,
        [
            device("1-1", serial="PROBE0001"),
            device("1-2", serial="PROBE0002"),
            device("1-3", serial="DISK0003", vid=0x0781, pid=0x5567),
        ],
    )
    ids = {x["busid"]: x["id"] for x in services.inventory.list_devices()["items"]}
    admin = user(services, "root", "admin")
    services.inventory.update_device(ids["1-1"], actor=admin, name="jlink-3", add_tags=["probe"])
    services.inventory.update_device(ids["1-2"], actor=admin, name="jlink-4", add_tags=["probe"])
    return {"alice": user(services, "alice"), "bob": user(services, "bob"), "admin": admin}


def test_acquire_sends_grant_and_conflict_names_holder(
    services: Services, lab, publisher: RecordingPublisher
) -> None:
    lease = services.leases.acquire(lab["alice"], "jlink-3", duration_s=900, clients=["127.0.0.1", "::1"])
    assert lease["state"] == "active" and lease["holder"] == "alice"
    assert services.inventory.get_device("jlink-3")["state"] == "leased"
    ((dongle, name, payload),) = publisher.sent
    assert (dongle, name) == (DONGLE_A, "grant")
    assert payload["busid"] == "1-1" and payload["clients"] == ["127.0.0.1", "::1"]
    assert payload["lease_id"] == lease["id"] and isinstance(payload["expires_at"], int)
    assert payload["v"] == 1 and len(payload["request_id"]) == 36

    with pytest.raises(Conflict) as e:
        services.leases.acquire(lab["bob"], "jlink-3", clients=["127.0.0.2"])
    assert e.value.message == f"jlink-3 is leased by alice until {lease['expires_at']}"
    assert e.value.extra["holder"] == "alice" and e.value.extra["until"] == lease["expires_at"]


def test_tag_target_picks_first_free_in_id_order(services: Services, lab) -> None:
    first = services.leases.acquire(lab["alice"], "tag:probe", clients=["127.0.0.1"])
    second = services.leases.acquire(lab["bob"], "tag:probe", clients=["127.0.0.1"])
    assert (first["device"]["name"], second["device"]["name"]) == ("jlink-3", "jlink-4")
    with pytest.raises(Conflict, match="all 2 devices tagged 'probe'"):
        services.leases.acquire(lab["bob"], "tag:probe", clients=["127.0.0.1"])
    with pytest.raises(NotFound, match="no device is tagged 'nothing'"):
        services.leases.acquire(lab["bob"], "tag:nothing", clients=["127.0.0.1"])


def test_invalid_requests_are_rejected_with_the_field(services: Services, lab) -> None:
    with pytest.raises(InvalidInput, match="maximum lease of 3600 s"):
        services.leases.acquire(lab["alice"], "jlink-3", duration_s=7200, clients=["127.0.0.1"])
    with pytest.raises(InvalidInput, match=r"clients\[0\]"):
        services.leases.acquire(lab["alice"], "jlink-3", clients=["not-an-ip"])
    with pytest.raises(NotFound, match="no device with id or name 'jlink-99'"):
        services.leases.acquire(lab["alice"], "jlink-99", clients=["127.0.0.1"])


def test_extend_release_and_permissions(services: Services, lab, publisher: RecordingPublisher) -> None:
    lease = services.leases.acquire(lab["alice"], "jlink-3", duration_s=600, clients=["127.0.0.1"])
    with pytest.raises(PermissionDenied, match="held by alice"):
        services.leases.release(lab["bob"], lease["id"])
    longer = services.leases.extend(lab["alice"], lease["id"], 600)
    assert longer["expires_at"] > lease["expires_at"]
    assert publisher.names() == ["grant", "grant"]  # the dongle learns the new expiry
    with pytest.raises(InvalidInput, match="more than the maximum of 3600 s"):
        services.leases.extend(lab["alice"], lease["id"], 3000)
    done = services.leases.release(lab["alice"], lease["id"])
    assert done["state"] == "released" and done["ended_at"] is not None
    assert publisher.names()[-1] == "revoke" and publisher.sent[-1][2]["reason"] == "released"
    assert services.inventory.get_device("jlink-3")["state"] == "free"
    with pytest.raises(Conflict, match="already ended"):
        services.leases.release(lab["alice"], lease["id"])
    actions = [a["action"] for a in services.audit.list(action="lease")["items"]]
    assert actions == ["lease.release", "lease.extend", "lease.acquire"]


def test_admin_revoke_needs_reason_and_admin(services: Services, lab, publisher: RecordingPublisher) -> None:
    lease = services.leases.acquire(lab["alice"], "jlink-3", clients=["127.0.0.1"])
    with pytest.raises(PermissionDenied):
        services.leases.revoke(lab["bob"], lease["id"], "mine now")
    with pytest.raises(InvalidInput, match="say why"):
        services.leases.revoke(lab["admin"], lease["id"], "  ")
    out = services.leases.revoke(lab["admin"], lease["id"], "hardware swap")
    assert out["state"] == "revoked" and out["end_reason"] == "hardware swap"
    assert publisher.sent[-1][1] == "revoke" and publisher.sent[-1][2]["reason"] == "revoke: hardware swap"
    entry = services.audit.list(action="lease.revoke")["items"][0]
    assert entry["actor"] == "root" and entry["detail"]["reason"] == "hardware swap"


def test_quarantined_and_offline_devices_cannot_be_leased(services: Services, lab) -> None:
    services.inventory.set_quarantine("jlink-4", True, actor=lab["admin"], reason="flaky cable")
    with pytest.raises(Conflict, match="quarantined"):
        services.leases.acquire(lab["alice"], "jlink-4", clients=["127.0.0.1"])
    with pytest.raises(PermissionDenied):
        services.inventory.set_quarantine("jlink-4", False, actor=lab["alice"])
    services.inventory.set_quarantine("jlink-4", False, actor=lab["admin"])
    services.ingest.apply([status(DONGLE_A, "offline", "lwt")])
    with pytest.raises(Conflict, match="which is offline"):
        services.leases.acquire(lab["alice"], "jlink-4", clients=["127.0.0.1"])


def test_stale_lease_is_expired_by_the_next_acquire(
    services: Services, lab, db: Db, publisher: RecordingPublisher
) -> None:
    old = services.leases.acquire(lab["alice"], "jlink-3", clients=["127.0.0.1"])
    with db.sf.begin() as s:  # let it run out without waiting
        lease = s.get(Lease, old["id"])
        assert lease is not None
        s.execute(
            update(Lease)
            .where(Lease.id == old["id"])
            .values(expires_at=lease.started_at + timedelta(milliseconds=1))
        )
    new = services.leases.acquire(lab["bob"], "jlink-3", clients=["127.0.0.1"])
    assert services.leases.get(old["id"])["state"] == "expired"
    assert new["holder"] == "bob"
    assert publisher.names() == ["grant", "revoke", "grant"]


def test_expire_due_ends_leases_and_sends_revoke(
    services: Services, lab, db: Db, publisher: RecordingPublisher
) -> None:
    lease = services.leases.acquire(lab["alice"], "jlink-3", clients=["127.0.0.1"])
    with db.sf.begin() as s:
        s.execute(update(Lease).where(Lease.id == lease["id"]).values(expires_at=Lease.started_at))
    count, lag = services.leases.expire_due()
    assert count == 1 and lag >= 0
    assert services.leases.get(lease["id"])["state"] == "expired"
    assert services.inventory.get_device("jlink-3")["state"] == "free"
    assert publisher.sent[-1][1] == "revoke" and publisher.sent[-1][2]["reason"] == "expired"
    assert services.leases.expire_due() == (0, 0.0)


def test_publisher_failure_keeps_the_lease_and_is_retried(
    services: Services, lab, db: Db, publisher: RecordingPublisher
) -> None:
    publisher.fail = True
    lease = services.leases.acquire(lab["alice"], "jlink-3", clients=["127.0.0.1"])
    assert services.leases.get(lease["id"])["state"] == "active"
    failed = services.commands.list(state="failed")["items"]
    assert [(c["name"], c["error"]) for c in failed] == [("grant", "not connected to the broker")]
    publisher.fail = False
    assert services.commands.resend_failed() == 1
    assert publisher.names() == ["grant"] and publisher.sent[0][2]["request_id"] == failed[0]["request_id"]
    with db.sf() as s:
        cmd = s.scalar(select(Command))
        assert cmd is not None and cmd.state == "sent" and cmd.attempts == 2


def test_list_filters_and_pagination(services: Services, lab) -> None:
    a = services.leases.acquire(lab["alice"], "jlink-3", clients=["127.0.0.1"])
    services.leases.acquire(lab["bob"], "jlink-4", clients=["127.0.0.1"])
    services.leases.release(lab["alice"], a["id"])
    assert services.leases.list(state="active")["total"] == 1
    assert [x["holder"] for x in services.leases.list(holder="alice")["items"]] == ["alice"]
    page = services.leases.list(limit=1, offset=1)
    assert page["total"] == 2 and len(page["items"]) == 1 and page["items"][0]["id"] == a["id"]
    with pytest.raises(InvalidInput, match="state"):
        services.leases.list(state="bogus")
