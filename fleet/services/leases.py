"""Leases: exclusive, time-limited use of a USB device.

Exclusivity is the database's job: the partial unique index
``ux_leases_active_device`` admits one ``active`` lease per device, whatever
the number of threads or API replicas racing. This service adds the rules
around it (who may do what, durations, clients), the audit trail and the
``grant``/``revoke`` commands that make the dongle enforce the lease.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Json
from sqlalchemy import Connection, and_, bindparam, func, insert, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from fleet.db.models import Device, DeviceTag, Dongle, Lease, User
from fleet.domain import rules
from fleet.domain.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from fleet.domain.model import DeviceState, DongleStatus, LeaseState, Principal, derive_device_state
from fleet.services.commands import CommandService, Outgoing
from fleet.services.common import Clock, audit, clamp_page, device_label, utcnow
from fleet.services.inventory import refresh_states, resolve_device
from fleet.services.views import iso, lease_view

# How many times a tag request moves on to the next device after losing a race.
_TAG_RETRIES = 8


class LeaseService:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        commands: CommandService,
        *,
        default_s: int = 3600,
        max_s: int = 7 * 86400,
        clock: Clock = utcnow,
    ):
        self._sf = session_factory
        self._engine = session_factory.kw["bind"]
        self._pg = self._engine.dialect.name == "postgresql"
        self._commands = commands
        self.default_s = default_s
        self.max_s = max_s
        self._clock = clock

    # -- acquire -------------------------------------------------------------------
    # The hot path (acquire, release) runs Core statements built once, on a
    # plain Connection: no ORM identity map, no unit of work, no statement
    # construction per request. It was most of the CPU of a lease operation.
    def acquire(
        self, actor: Principal, device: str | int, *, duration_s: int | None = None, clients: list[str]
    ) -> dict[str, Any]:
        if actor.user_id is None:
            raise PermissionDenied("leases are held by users; authenticate as one")
        target = rules.lease_target(device)
        seconds = rules.lease_duration(duration_s, default_s=self.default_s, max_s=self.max_s)
        addrs = rules.client_addresses(clients)
        excluded: set[int] = set()
        for _ in range(_TAG_RETRIES):
            now = self._clock()
            dev_id: int | None = None
            try:
                with self._engine.begin() as c:
                    dev, next_id = self._pick(c, target, excluded, now)
                    dev_id = dev.id
                    outbox = self._clear_or_refuse(c, dev, now)
                    # Read the clock again now that any previous lease is seen
                    # as ended: its end time was taken before it committed, so
                    # this lease cannot start before it (no overlap on record).
                    start = self._clock()
                    expires = start + timedelta(seconds=seconds)
                    # The unique index speaks in either branch if another request won.
                    if next_id is not None:
                        lease = LeaseRow(next_id, LeaseState.ACTIVE.value, addrs, start, expires, None, None)
                        outbox.append(self._pg_acquire(c, actor, lease, dev))
                    else:
                        lease = self._acquire_writes(c, actor, dev, addrs, start, expires, outbox)
                view = lease_view(lease, dev, actor.name)  # type: ignore[arg-type]
                self._commands.dispatch(outbox)
                return view
            except IntegrityError:
                if dev_id is None:
                    raise
                if target.kind == "tag":
                    excluded.add(dev_id)
                    continue
                raise self._held_conflict(dev_id) from None
        raise Conflict(f"no free device tagged {target.value!r}: every candidate was taken while trying")

    def _acquire_writes(
        self,
        c: Connection,
        actor: Principal,
        dev: DeviceRow,
        addrs: list[str],
        start: datetime,
        expires: datetime,
        outbox: list[Outgoing],
    ) -> LeaseRow:
        """The writes of an acquire, one statement each (SQLite)."""
        lease_id = c.execute(
            _INSERT_LEASE,
            {
                "device_id": dev.id,
                "user_id": actor.user_id,
                "state": LeaseState.ACTIVE.value,
                "clients": addrs,
                "started_at": start,
                "expires_at": expires,
            },
        ).scalar_one()
        lease = LeaseRow(lease_id, LeaseState.ACTIVE.value, addrs, start, expires, None, None)
        _set_state(c, dev, DeviceState.ATTACHED if dev.attached_to else DeviceState.LEASED)
        audit(
            c,
            at=start,
            actor=actor.name,
            action="lease.acquire",
            target=f"device:{dev.id}",
            detail=_acquire_detail(lease, dev),
        )
        outbox.append(self._grant(c, lease, dev))
        return lease

    def _pg_acquire(self, c: Connection, actor: Principal, lease: LeaseRow, dev: DeviceRow) -> Outgoing:
        """The same writes as ``_acquire_writes`` in one PostgreSQL statement."""
        cmd = self._commands.draft(
            dongle_id=dev.dongle_id, name="grant", args=_grant_args(lease, dev), lease_id=lease.id
        )
        new_state = DeviceState.ATTACHED if dev.attached_to else DeviceState.LEASED
        cid = _pg_write(
            c,
            _PG_ACQUIRE,
            {
                "lease_id": lease.id,
                "device_id": dev.id,
                "user_id": actor.user_id,
                "lease_state": lease.state,
                "clients": Json(lease.clients, dumps=_dumps),
                "started_at": lease.started_at,
                "expires_at": lease.expires_at,
                "new_state": new_state.value,
                "at": lease.started_at,
                "actor": actor.name,
                "action": "lease.acquire",
                "target": f"device:{dev.id}",
                "detail": Json(_acquire_detail(lease, dev), dumps=_dumps),
                **_cmd_params(cmd),
            },
        )
        dev.state = new_state.value
        return Outgoing(cid, dev.dongle_id, "grant", cmd["payload"])

    def _pick(
        self, c: Connection, target: rules.Target, excluded: set[int], now: datetime
    ) -> tuple[DeviceRow, int | None]:
        """The device and, on PostgreSQL, the id its new lease will get
        (taken up front so every write can name it in one statement)."""
        by_id, by_name = (_PICK_BY_ID_PG, _PICK_BY_NAME_PG) if self._pg else (_PICK_BY_ID, _PICK_BY_NAME)
        if target.kind == "id":
            row = c.execute(by_id, {"ref": int(target.value)}).first()
        elif target.kind == "name":
            row = c.execute(by_name, {"ref": target.value}).first()
        else:
            row = c.execute(by_id, {"ref": self._pick_tagged(c, target, excluded, now)}).first()
        if row is None:
            raise NotFound(f"no device with id or name {target.value!r}")
        return DeviceRow(*row[:_DEVICE_FIELDS]), (row[_DEVICE_FIELDS] if self._pg else None)

    @staticmethod
    def _pick_tagged(c: Connection, target: rules.Target, excluded: set[int], now: datetime) -> int:
        devices = c.execute(
            select(Device.id, Device.dongle_id, Device.quarantined, Device.present, Device.attached_to)
            .join(DeviceTag, DeviceTag.device_id == Device.id)
            .where(DeviceTag.tag == target.value, Device.present)
            .order_by(Device.id)
        ).all()
        if not devices:
            raise NotFound(f"no device is tagged {target.value!r}")
        ids = [d.id for d in devices]
        busy = set(
            c.scalars(
                select(Lease.device_id).where(
                    Lease.device_id.in_(ids), Lease.state == LeaseState.ACTIVE, Lease.expires_at > now
                )
            )
        )
        online = {i for (i,) in c.execute(select(Dongle.id).where(Dongle.status == DongleStatus.ONLINE))}
        for d in devices:
            if d.id in excluded or d.id in busy:
                continue
            free = derive_device_state(
                quarantined=d.quarantined,
                present=d.present,
                dongle_online=d.dongle_id in online,
                attached=d.attached_to is not None,
                leased=False,
            )
            if free is DeviceState.FREE:
                return int(d.id)
        raise Conflict(
            f"all {len(devices)} devices tagged {target.value!r} are leased, attached, offline or quarantined"
        )

    def _clear_or_refuse(self, c: Connection, dev: DeviceRow, now: datetime) -> list[Outgoing]:
        """Expire a lease on ``dev`` that ran out, or refuse if one is running
        or the device cannot be used; returns the commands to send."""
        outbox: list[Outgoing] = []
        if dev.held_id is not None:
            if dev.held_expires_at > now:
                raise self._conflict(dev, dev.held_id, dev.held_expires_at, dev.holder)
            held = LeaseRow(dev.held_id, LeaseState.ACTIVE.value, [], now, dev.held_expires_at, None, None)
            outbox.append(self._expire_one(c, held, dev, now, refresh=False))
        if dev.quarantined:
            raise Conflict(f"{device_label(dev)} is quarantined by an admin")
        if not dev.present:
            raise Conflict(f"{device_label(dev)} is not plugged in (last seen {iso(dev.last_seen)})")
        if dev.dongle_status != DongleStatus.ONLINE:
            raise Conflict(f"{device_label(dev)} is on dongle {dev.dongle_id}, which is {dev.dongle_status}")
        return outbox

    def _held_conflict(self, device_id: int) -> Conflict:
        with self._engine.connect() as c:
            row = c.execute(_PICK_BY_ID, {"ref": device_id}).first()
        assert row is not None
        dev = DeviceRow(*row)
        if dev.held_id is None:  # the winner already let go; the caller may simply retry
            return Conflict(f"{device_label(dev)} was being leased by someone else at the same moment; retry")
        return self._conflict(dev, dev.held_id, dev.held_expires_at, dev.holder)

    @staticmethod
    def _conflict(dev: Any, lease_id: int, expires_at: datetime, holder: str) -> Conflict:
        until = iso(expires_at)
        return Conflict(
            f"{device_label(dev)} is leased by {holder} until {until}",
            holder=holder,
            until=until,
            lease_id=lease_id,
        )

    # -- changes to a lease --------------------------------------------------------
    def extend(self, actor: Principal, lease_id: int, duration_s: int) -> dict[str, Any]:
        seconds = rules.lease_duration(duration_s, default_s=self.default_s, max_s=self.max_s)
        now = self._clock()
        with self._sf.begin() as s:
            lease, dev, holder, _ = self._load(s, lease_id, actor, "extend")
            new_expiry = max(lease.expires_at, now) + timedelta(seconds=seconds)
            if new_expiry - now > timedelta(seconds=self.max_s):
                raise InvalidInput(
                    "duration_s",
                    f"the lease would run {int((new_expiry - now).total_seconds())} s "
                    f"from now, more than the maximum of {self.max_s} s",
                )
            old = lease.expires_at
            _set_lease(s, lease, expires_at=new_expiry)
            audit(
                s,
                at=now,
                actor=actor.name,
                action="lease.extend",
                target=f"device:{dev.id}",
                detail={"lease_id": lease.id, "from": iso(old), "to": iso(new_expiry)},
            )
            # The dongle enforces the expiry too, so it must hear the new one.
            outbox = [self._grant(s, lease, dev)]
            view = lease_view(lease, dev, holder)
        self._commands.dispatch(outbox)
        return view

    def release(self, actor: Principal, lease_id: int) -> dict[str, Any]:
        return self._end(actor, lease_id, LeaseState.RELEASED, "released", "release")

    def revoke(self, actor: Principal, lease_id: int, reason: str) -> dict[str, Any]:
        if not actor.is_admin:
            raise PermissionDenied("only an admin may revoke a lease; the holder can release it")
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidInput("reason", "say why the lease is revoked")
        if len(reason) > 200:
            raise InvalidInput("reason", "at most 200 characters")
        return self._end(actor, lease_id, LeaseState.REVOKED, reason.strip(), "revoke")

    def _end(
        self, actor: Principal, lease_id: int, state: LeaseState, reason: str, verb: str
    ) -> dict[str, Any]:
        now = self._clock()
        with self._engine.begin() as c:
            row = c.execute(_LOAD_FOR_END, {"lease_id": lease_id}).first()
            if row is None:
                raise NotFound(f"no lease {lease_id}")
            dev = DeviceRow(*row[:_DEVICE_FIELDS])
            user_id, lstate, clients, started_at, ended_at, end_reason = row[_DEVICE_FIELDS:]
            holder = dev.holder
            if user_id != actor.user_id and not actor.is_admin:
                raise PermissionDenied(
                    f"lease {lease_id} is held by {holder}; only they or an admin may {verb} it"
                )
            if lstate != LeaseState.ACTIVE:
                raise Conflict(f"lease {lease_id} has already ended ({lstate} at {iso(ended_at)})")
            assert dev.held_expires_at is not None
            if dev.held_expires_at <= self._clock():
                raise Conflict(f"lease {lease_id} expired at {iso(dev.held_expires_at)}")
            lease = LeaseRow(lease_id, state.value, clients, started_at, dev.held_expires_at, now, reason)
            new_state = derive_device_state(
                quarantined=dev.quarantined,
                present=dev.present,
                dongle_online=dev.dongle_status == DongleStatus.ONLINE,
                attached=dev.attached_to is not None,
                leased=False,
            )
            detail = {"lease_id": lease_id, "holder": holder, "reason": reason}
            why = reason if state is LeaseState.RELEASED else f"{verb}: {reason}"
            if self._pg:  # one statement for all the writes
                cmd = self._commands.draft(
                    dongle_id=dev.dongle_id,
                    name="revoke",
                    args=_revoke_args(lease, dev, why),
                    lease_id=lease_id,
                )
                cid = _pg_write(
                    c,
                    _PG_END,
                    {
                        "lease_id": lease_id,
                        "lease_state": state.value,
                        "ended_at": now,
                        "end_reason": reason,
                        "device_id": dev.id,
                        "new_state": new_state.value,
                        "at": now,
                        "actor": actor.name,
                        "action": f"lease.{verb}",
                        "target": f"device:{dev.id}",
                        "detail": Json(detail, dumps=_dumps),
                        **_cmd_params(cmd),
                    },
                )
                dev.state = new_state.value
                outbox = [Outgoing(cid, dev.dongle_id, "revoke", cmd["payload"])]
            else:
                _set_lease(c, lease, state=state.value, ended_at=now, end_reason=reason)
                _set_state(c, dev, new_state)
                audit(
                    c,
                    at=now,
                    actor=actor.name,
                    action=f"lease.{verb}",
                    target=f"device:{dev.id}",
                    detail=detail,
                )
                outbox = [self._revoke_cmd(c, lease, dev, why)]
        view = lease_view(lease, dev, holder)  # type: ignore[arg-type]
        self._commands.dispatch(outbox)
        return view

    def _load(self, s: Session, lease_id: int, actor: Principal, verb: str) -> tuple[Lease, Device, str, str]:
        row = s.execute(
            select(Lease, Device, User.name, Dongle.status)
            .join(Device, Device.id == Lease.device_id)
            .join(User, User.id == Lease.user_id)
            .join(Dongle, Dongle.id == Device.dongle_id)
            .where(Lease.id == lease_id)
            .with_for_update(of=Lease)
        ).first()
        if row is None:
            raise NotFound(f"no lease {lease_id}")
        lease, dev, holder, dongle_status = row
        if lease.user_id != actor.user_id and not actor.is_admin:
            raise PermissionDenied(
                f"lease {lease_id} is held by {holder}; only they or an admin may {verb} it"
            )
        if lease.state != LeaseState.ACTIVE:
            raise Conflict(f"lease {lease_id} has already ended ({lease.state} at {iso(lease.ended_at)})")
        if lease.expires_at <= self._clock():
            raise Conflict(f"lease {lease_id} expired at {iso(lease.expires_at)}")
        return lease, dev, holder, dongle_status

    # -- expiry ----------------------------------------------------------------------
    def _expire_one(
        self,
        s: Session | Connection,
        lease: Lease | LeaseRow,
        dev: Device | DeviceRow,
        now: datetime,
        *,
        refresh: bool = True,
    ) -> Outgoing:
        # The lease ended when it expired, not when we noticed: that keeps
        # intervals on a device from overlapping a lease granted right after.
        _set_lease(s, lease, state=LeaseState.EXPIRED.value, ended_at=lease.expires_at, end_reason="expired")
        if refresh:
            assert isinstance(s, Session) and isinstance(dev, Device)
            s.flush()
            refresh_states(s, [dev])
        audit(
            s,
            at=now,
            actor="scheduler",
            action="lease.expire",
            target=f"device:{dev.id}",
            detail={"lease_id": lease.id, "expired_at": iso(lease.expires_at)},
        )
        return self._revoke_cmd(s, lease, dev, "expired")

    def expire_due(self, *, limit: int = 500) -> tuple[int, float]:
        """Expire leases past their time; returns (count, worst lateness in seconds)."""
        now = self._clock()
        with self._sf.begin() as s:
            q = (
                select(Lease)
                .where(Lease.state == LeaseState.ACTIVE, Lease.expires_at <= now)
                .order_by(Lease.expires_at)
                .limit(limit)
            )
            if s.get_bind().dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True)
            due = s.scalars(q).all()
            if not due:
                return 0, 0.0
            devices = {
                d.id: d for d in s.scalars(select(Device).where(Device.id.in_({x.device_id for x in due})))
            }
            lag = max((now - x.expires_at).total_seconds() for x in due)
            outbox = [self._expire_one(s, x, devices[x.device_id], now) for x in due]
        self._commands.dispatch(outbox)
        return len(outbox), lag

    # -- commands --------------------------------------------------------------------
    def regrant_for_dongles(self, s: Session, dongle_ids: set[str]) -> list[Outgoing]:
        """Grant commands for every active lease on these dongles, recorded in ``s``.

        A dongle that reboots or reconnects has lost (or may have lost) its
        grant table; its leases are still valid, so their holders must be
        able to re-attach without asking anyone."""
        if not dongle_ids:
            return []
        now = self._clock()
        rows = s.execute(
            select(Lease, Device)
            .join(Device, Device.id == Lease.device_id)
            .where(
                Device.dongle_id.in_(dongle_ids),
                Lease.state == LeaseState.ACTIVE.value,
                Lease.expires_at > now,
            )
            .order_by(Lease.id)
        ).all()
        return [self._grant(s, lease, dev) for lease, dev in rows]

    def _grant(self, s: Session | Connection, lease: Lease | LeaseRow, dev: Device | DeviceRow) -> Outgoing:
        return self._commands.record(
            s,
            dongle_id=dev.dongle_id,
            name="grant",
            lease_id=lease.id,
            args=_grant_args(lease, dev),
        )

    def _revoke_cmd(
        self, s: Session | Connection, lease: Lease | LeaseRow, dev: Device | DeviceRow, reason: str
    ) -> Outgoing:
        return self._commands.record(
            s,
            dongle_id=dev.dongle_id,
            name="revoke",
            lease_id=lease.id,
            args=_revoke_args(lease, dev, reason),
        )

    # -- queries ---------------------------------------------------------------------
    def get(self, lease_id: int) -> dict[str, Any]:
        with self._sf() as s:
            row = s.execute(
                select(Lease, Device, User.name)
                .join(Device, Device.id == Lease.device_id)
                .join(User, User.id == Lease.user_id)
                .where(Lease.id == lease_id)
            ).first()
            if row is None:
                raise NotFound(f"no lease {lease_id}")
            return lease_view(*row)

    def list(
        self,
        *,
        state: str | None = None,
        device: str | None = None,
        holder: str | None = None,
        dongle: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> dict[str, Any]:
        limit, offset = clamp_page(limit, offset)
        if state is not None and state not in LeaseState.__members__.values():
            raise InvalidInput("state", f"{state!r} is not one of {', '.join(LeaseState)}")
        q = (
            select(Lease, Device, User.name)
            .join(Device, Device.id == Lease.device_id)
            .join(User, User.id == Lease.user_id)
        )
        if state:
            q = q.where(Lease.state == state)
        if holder:
            q = q.where(User.name == holder)
        if dongle:
            q = q.where(Device.dongle_id == dongle)
        with self._sf() as s:
            if device:
                q = q.where(Lease.device_id == resolve_device(s, device).id)
            total = s.scalar(select(func.count()).select_from(q.with_only_columns(Lease.id).subquery())) or 0
            rows = s.execute(q.order_by(Lease.id.desc()).limit(limit).offset(offset)).all()
            items = [lease_view(*r) for r in rows]
        return {"items": items, "total": total, "limit": limit, "offset": offset}


@dataclass(slots=True)
class DeviceRow:
    """A device as the lease hot path reads it, with its dongle's status and
    the active lease on it (if any). Attribute names match ``Device`` so the
    views and messages take either."""

    id: int
    name: str | None
    dongle_id: str
    busid: str
    state: str
    present: bool
    quarantined: bool
    attached_to: str | None
    last_seen: datetime
    dongle_status: str
    held_id: int | None
    held_expires_at: datetime | None
    holder: str | None


@dataclass(slots=True)
class LeaseRow:
    """The lease fields the views and commands need (attribute names as ``Lease``)."""

    id: int
    state: str
    clients: list[str]
    started_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    end_reason: str | None


_DEVICE_COLUMNS = (
    Device.id,
    Device.name,
    Device.dongle_id,
    Device.busid,
    Device.state,
    Device.present,
    Device.quarantined,
    Device.attached_to,
    Device.last_seen,
    Dongle.status,
    Lease.id,
    Lease.expires_at,
    User.name,
)
_DEVICE_FIELDS = len(_DEVICE_COLUMNS)
# One round trip finds the device, its dongle's status and the lease holding it.
_PICK = (
    select(*_DEVICE_COLUMNS)
    .join(Dongle, Dongle.id == Device.dongle_id)
    .outerjoin(Lease, and_(Lease.device_id == Device.id, Lease.state == LeaseState.ACTIVE.value))
    .outerjoin(User, User.id == Lease.user_id)
)
_PICK_BY_ID = _PICK.where(Device.id == bindparam("ref"))
_PICK_BY_NAME = _PICK.where(Device.name == bindparam("ref"))
# Everything release/revoke needs, with the lease and device rows locked.
_LOAD_FOR_END = (
    select(
        *_DEVICE_COLUMNS,
        Lease.user_id,
        Lease.state,
        Lease.clients,
        Lease.started_at,
        Lease.ended_at,
        Lease.end_reason,
    )
    .select_from(Lease)
    .join(Device, Device.id == Lease.device_id)
    .join(Dongle, Dongle.id == Device.dongle_id)
    .join(User, User.id == Lease.user_id)
    .where(Lease.id == bindparam("lease_id"))
    .with_for_update(of=[Lease, Device])
)
# PostgreSQL: the lease's id comes with the read, from the table's sequence,
# and the device row is locked. Every transaction that starts or ends a lease
# locks its device first, so they take turns per device. Without that, an
# acquire could read its start time, then wait in the unique index for a
# release still in flight and succeed once it committed: a lease recorded as
# starting a few milliseconds before the previous one ended (seen under load
# with 50 clients racing for 25 devices). SQLite needs no lock: BEGIN
# IMMEDIATE already serialises writers.
_NEXT_LEASE_ID = func.nextval("leases_id_seq")
_PICK_BY_ID_PG = _PICK_BY_ID.add_columns(_NEXT_LEASE_ID).with_for_update(of=Device)
_PICK_BY_NAME_PG = _PICK_BY_NAME.add_columns(_NEXT_LEASE_ID).with_for_update(of=Device)
_INSERT_LEASE = insert(Lease.__table__).returning(Lease.__table__.c.id)
_UPDATE_LEASE = Lease.__table__.update().where(Lease.__table__.c.id == bindparam("lease_id"))
_UPDATE_DEVICE_STATE = (
    Device.__table__.update()
    .where(Device.__table__.c.id == bindparam("device_id"))
    .values(state=bindparam("new_state"))
)


# Plain UPDATEs instead of dirtying ORM objects: the lease paths then skip the
# unit-of-work flush. Loaded ORM objects are kept in step for the views built
# from them; the hot path's rows are plain dataclasses updated in place.
def _set_lease(s: Session | Connection, lease: Lease | LeaseRow, **values: Any) -> None:
    # Without .values() the SET clause comes from the parameter names, so one
    # prebuilt statement per column set is cached and reused.
    s.execute(_UPDATE_LEASE, {"lease_id": lease.id, **values})
    for k, v in values.items():
        if isinstance(lease, Lease):
            set_committed_value(lease, k, v)
        else:
            setattr(lease, k, v)


def _set_state(s: Session | Connection, dev: Device | DeviceRow, state: DeviceState) -> None:
    if dev.state != state:
        s.execute(_UPDATE_DEVICE_STATE, {"device_id": dev.id, "new_state": state.value})
        if isinstance(dev, Device):
            set_committed_value(dev, "state", state.value)
        else:
            dev.state = state.value


def _grant_args(lease: Lease | LeaseRow, dev: Device | DeviceRow) -> dict[str, Any]:
    return {
        "busid": dev.busid,
        "clients": list(lease.clients),
        "lease_id": lease.id,
        "expires_at": math.ceil(lease.expires_at.timestamp()),
    }


def _revoke_args(lease: Lease | LeaseRow, dev: Device | DeviceRow, reason: str) -> dict[str, Any]:
    return {"busid": dev.busid, "lease_id": lease.id, "reason": reason[:128]}


def _acquire_detail(lease: LeaseRow, dev: DeviceRow) -> dict[str, Any]:
    return {
        "lease_id": lease.id,
        "device": device_label(dev),
        "expires_at": iso(lease.expires_at),
        "clients": lease.clients,
    }


# -- PostgreSQL: every write of a lease operation in one statement ---------------------------
# A lease operation was eight round trips (BEGIN, read, four writes, COMMIT),
# and each costs the service and the database more CPU than the work in it.
# Data-modifying CTEs run the lease, device-state, audit and command writes in
# one statement of the same transaction; the unique index on active leases and
# the foreign keys are checked as before (at the end of the statement). The
# SQL is sent straight to psycopg, which prepares it once per connection.
_PG_WRITE_TAIL = """
d AS (UPDATE devices SET state = %(new_state)s WHERE id = %(device_id)s AND state <> %(new_state)s),
a AS (INSERT INTO audit (at, actor, action, target, detail)
      VALUES (%(at)s, %(actor)s, %(action)s, %(target)s, %(detail)s))
INSERT INTO commands (request_id, dongle_id, name, lease_id, payload, state, attempts, created_at, sent_at)
VALUES (%(cmd_request_id)s, %(cmd_dongle_id)s, %(cmd_name)s, %(lease_id)s, %(cmd_payload)s, %(cmd_state)s,
        %(cmd_attempts)s, %(cmd_created_at)s, %(cmd_sent_at)s)
RETURNING id
"""
_PG_ACQUIRE = (
    """
WITH l AS (INSERT INTO leases (id, device_id, user_id, state, clients, started_at, expires_at)
           VALUES (%(lease_id)s, %(device_id)s, %(user_id)s, %(lease_state)s, %(clients)s, %(started_at)s,
                   %(expires_at)s)),"""
    + _PG_WRITE_TAIL
)
_PG_END = (
    """
WITH l AS (UPDATE leases SET state = %(lease_state)s, ended_at = %(ended_at)s, end_reason = %(end_reason)s
           WHERE id = %(lease_id)s),"""
    + _PG_WRITE_TAIL
)


def _dumps(v: Any) -> str:
    return orjson.dumps(v).decode()


def _cmd_params(cmd: dict[str, Any]) -> dict[str, Any]:
    out = {f"cmd_{k}": v for k, v in cmd.items() if k != "lease_id"}
    out["cmd_payload"] = Json(cmd["payload"], dumps=_dumps)
    return out


def _pg_write(c: Connection, sql: str, params: dict[str, Any]) -> int:
    raw = c.connection.driver_connection
    assert raw is not None
    try:
        with raw.cursor() as cur:
            cur.execute(sql, params, prepare=True)
            row = cur.fetchone()
    # Raised as SQLAlchemy would, so callers and the API's handlers need not
    # know this statement bypassed it (a lost race is an IntegrityError, a
    # database that went away an OperationalError = 503).
    except psycopg.IntegrityError as exc:
        raise sa_exc.IntegrityError(sql, None, exc) from exc
    except psycopg.OperationalError as exc:
        raise sa_exc.OperationalError(sql, None, exc) from exc
    assert row is not None
    return int(row[0])
