"""Leases: exclusive, time-limited use of a USB device.

Exclusivity is the database's job: the partial unique index
``ux_leases_active_device`` admits one ``active`` lease per device, whatever
the number of threads or API replicas racing. This service adds the rules
around it (who may do what, durations, clients), the audit trail and the
``grant``/``revoke`` commands that make the dongle enforce the lease.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
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
        self._commands = commands
        self.default_s = default_s
        self.max_s = max_s
        self._clock = clock

    # -- acquire -------------------------------------------------------------------
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
                with self._sf.begin() as s:
                    dev, dongle_status = self._pick(s, target, excluded, now)
                    dev_id = dev.id
                    outbox = self._clear_or_refuse(s, dev, dongle_status, now)
                    # Read the clock again now that any previous lease is seen
                    # as ended: its end time was taken before it committed, so
                    # this lease cannot start before it (no overlap on record).
                    start = self._clock()
                    values = {
                        "device_id": dev.id,
                        "user_id": actor.user_id,
                        "state": LeaseState.ACTIVE.value,
                        "clients": addrs,
                        "started_at": start,
                        "expires_at": start + timedelta(seconds=seconds),
                    }
                    # The unique index speaks here if another request won.
                    lease_id = s.execute(insert(Lease).values(**values).returning(Lease.id)).scalar_one()
                    lease = Lease(id=lease_id, **values)  # transient: for the view and the command only
                    _set_state(s, dev, DeviceState.ATTACHED if dev.attached_to else DeviceState.LEASED)
                    audit(
                        s,
                        at=start,
                        actor=actor.name,
                        action="lease.acquire",
                        target=f"device:{dev.id}",
                        detail={
                            "lease_id": lease.id,
                            "device": device_label(dev),
                            "expires_at": iso(lease.expires_at),
                            "clients": addrs,
                        },
                    )
                    outbox.append(self._grant(s, lease, dev))
                    view = lease_view(lease, dev, actor.name)
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

    def _pick(
        self, s: Session, target: rules.Target, excluded: set[int], now: datetime
    ) -> tuple[Device, str]:
        if target.kind != "tag":
            q = select(Device, Dongle.status).join(Dongle, Dongle.id == Device.dongle_id)
            if target.kind == "id":
                q = q.where(Device.id == int(target.value))
            else:
                q = q.where(Device.name == target.value)
            row = s.execute(q).first()
            if row is None:
                raise NotFound(f"no device with id or name {target.value!r}")
            return row[0], row[1]
        devices = s.scalars(
            select(Device)
            .join(DeviceTag, DeviceTag.device_id == Device.id)
            .where(DeviceTag.tag == target.value, Device.present)
            .order_by(Device.id)
        ).all()
        if not devices:
            raise NotFound(f"no device is tagged {target.value!r}")
        ids = [d.id for d in devices]
        busy = set(
            s.scalars(
                select(Lease.device_id).where(
                    Lease.device_id.in_(ids), Lease.state == LeaseState.ACTIVE, Lease.expires_at > now
                )
            )
        )
        online = {i for (i,) in s.execute(select(Dongle.id).where(Dongle.status == DongleStatus.ONLINE))}
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
                return d, DongleStatus.ONLINE
        raise Conflict(
            f"all {len(devices)} devices tagged {target.value!r} are leased, attached, offline or quarantined"
        )

    def _clear_or_refuse(self, s: Session, dev: Device, dongle_status: str, now: datetime) -> list[Outgoing]:
        """Expire a lease on ``dev`` that ran out, or refuse if one is running
        or the device cannot be used; returns the commands to send."""
        outbox: list[Outgoing] = []
        held = s.execute(
            select(Lease, User.name)
            .join(User, User.id == Lease.user_id)
            .where(Lease.device_id == dev.id, Lease.state == LeaseState.ACTIVE)
        ).first()
        if held is not None:
            lease, holder = held
            if lease.expires_at > now:
                raise self._conflict(dev, lease, holder)
            outbox.append(self._expire_one(s, lease, dev, now, refresh=False))
        if dev.quarantined:
            raise Conflict(f"{device_label(dev)} is quarantined by an admin")
        if not dev.present:
            raise Conflict(f"{device_label(dev)} is not plugged in (last seen {iso(dev.last_seen)})")
        if dongle_status != DongleStatus.ONLINE:
            raise Conflict(f"{device_label(dev)} is on dongle {dev.dongle_id}, which is {dongle_status}")
        return outbox

    def _held_conflict(self, device_id: int) -> Conflict:
        with self._sf() as s:
            dev = s.get(Device, device_id)
            held = s.execute(
                select(Lease, User.name)
                .join(User, User.id == Lease.user_id)
                .where(Lease.device_id == device_id, Lease.state == LeaseState.ACTIVE)
            ).first()
            assert dev is not None
            if held is None:  # the winner already let go; the caller may simply retry
                return Conflict(
                    f"{device_label(dev)} was being leased by someone else at the same moment; retry"
                )
            return self._conflict(dev, held[0], held[1])

    @staticmethod
    def _conflict(dev: Device, lease: Lease, holder: str) -> Conflict:
        until = iso(lease.expires_at)
        return Conflict(
            f"{device_label(dev)} is leased by {holder} until {until}",
            holder=holder,
            until=until,
            lease_id=lease.id,
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
        with self._sf.begin() as s:
            lease, dev, holder, dongle_status = self._load(s, lease_id, actor, verb)
            _set_lease(s, lease, state=state.value, ended_at=now, end_reason=reason)
            _set_state(
                s,
                dev,
                derive_device_state(
                    quarantined=dev.quarantined,
                    present=dev.present,
                    dongle_online=dongle_status == DongleStatus.ONLINE,
                    attached=dev.attached_to is not None,
                    leased=False,
                ),
            )
            audit(
                s,
                at=now,
                actor=actor.name,
                action=f"lease.{verb}",
                target=f"device:{dev.id}",
                detail={"lease_id": lease.id, "holder": holder, "reason": reason},
            )
            outbox = [
                self._revoke_cmd(
                    s, lease, dev, reason if state is LeaseState.RELEASED else f"{verb}: {reason}"
                )
            ]
            view = lease_view(lease, dev, holder)
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
        self, s: Session, lease: Lease, dev: Device, now: datetime, *, refresh: bool = True
    ) -> Outgoing:
        # The lease ended when it expired, not when we noticed: that keeps
        # intervals on a device from overlapping a lease granted right after.
        _set_lease(s, lease, state=LeaseState.EXPIRED.value, ended_at=lease.expires_at, end_reason="expired")
        if refresh:
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
    def _grant(self, s: Session, lease: Lease, dev: Device) -> Outgoing:
        return self._commands.record(
            s,
            dongle_id=dev.dongle_id,
            name="grant",
            lease_id=lease.id,
            args={
                "busid": dev.busid,
                "clients": list(lease.clients),
                "lease_id": lease.id,
                "expires_at": math.ceil(lease.expires_at.timestamp()),
            },
        )

    def _revoke_cmd(self, s: Session, lease: Lease, dev: Device, reason: str) -> Outgoing:
        return self._commands.record(
            s,
            dongle_id=dev.dongle_id,
            name="revoke",
            lease_id=lease.id,
            args={"busid": dev.busid, "lease_id": lease.id, "reason": reason[:128]},
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


# Plain UPDATEs instead of dirtying ORM objects: the lease hot path then skips
# the unit-of-work flush, which was most of its CPU time. The loaded objects
# are kept in step for the views built from them.
def _set_lease(s: Session, lease: Lease, **values: Any) -> None:
    s.execute(update(Lease).where(Lease.id == lease.id).values(**values))
    for k, v in values.items():
        set_committed_value(lease, k, v)


def _set_state(s: Session, dev: Device, state: DeviceState) -> None:
    if dev.state != state:
        s.execute(update(Device).where(Device.id == dev.id).values(state=state.value))
        set_committed_value(dev, "state", state.value)
