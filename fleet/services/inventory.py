"""Inventory queries and the changes people make to it (names, tags, quarantine)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Select, delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from fleet.db.models import Device, DeviceTag, Dongle, Event, Lease, User
from fleet.domain import rules
from fleet.domain.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from fleet.domain.model import DeviceState, DongleStatus, LeaseState, Principal, derive_device_state
from fleet.services.common import Clock, audit, clamp_page, utcnow
from fleet.services.views import device_view, dongle_view, event_view


def refresh_states(session: Session, devices: Sequence[Device]) -> list[Device]:
    """Recompute the stored ``state`` of ``devices`` from their facts; return the changed ones."""
    if not devices:
        return []
    ids = [d.id for d in devices]
    leased = set(
        session.scalars(
            select(Lease.device_id).where(Lease.device_id.in_(ids), Lease.state == LeaseState.ACTIVE)
        )
    )
    online = {
        dongle_id: status == DongleStatus.ONLINE
        for dongle_id, status in session.execute(
            select(Dongle.id, Dongle.status).where(Dongle.id.in_({d.dongle_id for d in devices}))
        )
    }
    changed = []
    for d in devices:
        new = derive_device_state(
            quarantined=d.quarantined,
            present=d.present,
            dongle_online=online.get(d.dongle_id, False),
            attached=d.attached_to is not None,
            leased=d.id in leased,
        )
        if d.state != new:
            d.state = new.value
            changed.append(d)
    return changed


def resolve_device(session: Session, ref: str | int, *, for_update: bool = False) -> Device:
    """A device by id (``42``) or name (``jlink-3``)."""
    q = select(Device)
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        q = q.where(Device.id == int(ref))
    else:
        q = q.where(Device.name == ref)
    if for_update:
        q = q.with_for_update()
    dev = session.scalar(q)
    if dev is None:
        raise NotFound(f"no device with id or name {ref!r}")
    return dev


def tags_of(session: Session, ids: Iterable[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    ids = list(ids)
    if ids:
        for did, t in session.execute(
            select(DeviceTag.device_id, DeviceTag.tag).where(DeviceTag.device_id.in_(ids))
        ):
            out.setdefault(did, []).append(t)
    return out


def active_leases_of(session: Session, ids: Iterable[int]) -> dict[int, tuple[Lease, str]]:
    ids = list(ids)
    if not ids:
        return {}
    rows = session.execute(
        select(Lease, User.name)
        .join(User, User.id == Lease.user_id)
        .where(Lease.device_id.in_(ids), Lease.state == LeaseState.ACTIVE)
    ).all()
    return {lease.device_id: (lease, name) for lease, name in rows}


def _enum_filter(value: str | None, allowed: Iterable[str], field: str) -> str | None:
    allowed = list(allowed)
    if value is not None and value not in allowed:
        raise InvalidInput(field, f"{value!r} is not one of {', '.join(allowed)}")
    return value


class InventoryService:
    def __init__(self, session_factory: sessionmaker[Session], clock: Clock = utcnow):
        self._sf = session_factory
        self._clock = clock

    # -- dongles ---------------------------------------------------------------
    def list_dongles(
        self, *, status: str | None = None, q: str | None = None, limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        limit, offset = clamp_page(limit, offset)
        _enum_filter(status, DongleStatus, "status")
        query = select(Dongle)
        if status:
            query = query.where(Dongle.status == status)
        if q:
            like = f"%{q.lower()}%"
            query = query.where(
                or_(func.lower(Dongle.id).like(like), func.lower(func.coalesce(Dongle.ip, "")).like(like))
            )
        with self._sf() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = s.scalars(query.order_by(Dongle.id).limit(limit).offset(offset)).all()
            counts = dict(
                s.execute(
                    select(Device.dongle_id, func.count())
                    .where(Device.dongle_id.in_([d.id for d in rows]), Device.present)
                    .group_by(Device.dongle_id)
                ).all()
            )
            items = [dongle_view(d, device_count=counts.get(d.id, 0)) for d in rows]
        return {"items": items, "total": total, "limit": limit, "offset": offset}

    def get_dongle(self, dongle_id: str) -> dict[str, Any]:
        with self._sf() as s:
            d = s.get(Dongle, dongle_id)
            if d is None:
                raise NotFound(f"no dongle {dongle_id!r}")
            devices = s.scalars(
                select(Device).where(Device.dongle_id == dongle_id, Device.present).order_by(Device.busid)
            ).all()
            view = dongle_view(d, device_count=len(devices))
            view["devices"] = self._device_views(s, devices)
            return view

    # -- events ----------------------------------------------------------------
    def list_events(
        self,
        *,
        dongle_id: str | None = None,
        type: str | None = None,
        after_id: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> dict[str, Any]:
        """What dongles reported (hot-plug, attach, OTA steps, self-tests), newest first;
        ``after_id`` lets a poller fetch only what is new."""
        limit, offset = clamp_page(limit, offset)
        query = select(Event)
        if dongle_id:
            query = query.where(Event.dongle_id == dongle_id)
        if type:
            query = query.where(Event.type == type)
        if after_id is not None:
            query = query.where(Event.id > after_id)
        with self._sf() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = s.scalars(query.order_by(Event.id.desc()).limit(limit).offset(offset)).all()
            items = [event_view(e) for e in rows]
        return {"items": items, "total": total, "limit": limit, "offset": offset}

    # -- devices ---------------------------------------------------------------
    def list_devices(
        self,
        *,
        state: str | None = None,
        tag: str | None = None,
        dongle: str | None = None,
        vid: str | int | None = None,
        pid: str | int | None = None,
        q: str | None = None,
        present: bool | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> dict[str, Any]:
        limit, offset = clamp_page(limit, offset)
        _enum_filter(state, DeviceState, "state")
        query: Select[tuple[Device]] = select(Device)
        if state:
            query = query.where(Device.state == state)
        if tag:
            query = query.where(
                Device.id.in_(select(DeviceTag.device_id).where(DeviceTag.tag == rules.tag(tag, "tag")))
            )
        if dongle:
            query = query.where(Device.dongle_id == dongle)
        if vid is not None:
            query = query.where(Device.vid == rules.usb_id(vid, "vid"))
        if pid is not None:
            query = query.where(Device.pid == rules.usb_id(pid, "pid"))
        if present is not None:
            query = query.where(Device.present == present)
        if q:
            like = f"%{q.lower()}%"
            query = query.where(
                or_(
                    *(
                        func.lower(func.coalesce(c, "")).like(like)
                        for c in (
                            Device.name,
                            Device.product,
                            Device.manufacturer,
                            Device.serial,
                            Device.busid,
                        )
                    )
                )
            )
        with self._sf() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = s.scalars(query.order_by(Device.id).limit(limit).offset(offset)).all()
            items = self._device_views(s, rows)
        return {"items": items, "total": total, "limit": limit, "offset": offset}

    def get_device(self, ref: str | int) -> dict[str, Any]:
        with self._sf() as s:
            return self._device_views(s, [resolve_device(s, ref)])[0]

    def update_device(
        self,
        ref: str | int,
        *,
        actor: Principal,
        name: str | None = None,
        clear_name: bool = False,
        tags: Sequence[str] | None = None,
        add_tags: Sequence[str] = (),
        remove_tags: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Rename and/or retag a device; ``tags`` replaces, ``add``/``remove`` edit."""
        if name is not None:
            name = rules.device_name(name)
        new_tags = rules.tags(tags) if tags is not None else None
        add = rules.tags(add_tags, "add_tags")
        remove = rules.tags(remove_tags, "remove_tags")
        now = self._clock()
        try:
            with self._sf.begin() as s:
                dev = resolve_device(s, ref, for_update=True)
                label_before = dev.name or f"device:{dev.id}"
                if name is not None or clear_name:
                    if name is not None and name != dev.name:
                        holder = s.scalar(select(Device.id).where(Device.name == name))
                        if holder is not None:
                            raise Conflict(
                                f"the name {name!r} is already used by device {holder}", holder=holder
                            )
                    old = dev.name
                    dev.name = None if clear_name else name
                    audit(
                        s,
                        at=now,
                        actor=actor.name,
                        action="device.rename",
                        target=f"device:{dev.id}",
                        detail={"from": old, "to": dev.name},
                    )
                current = set(tags_of(s, [dev.id]).get(dev.id, []))
                wanted = set(new_tags) if new_tags is not None else set(current)
                wanted = (wanted | set(add)) - set(remove)
                if len(wanted) > rules.MAX_TAGS:
                    raise InvalidInput("tags", f"at most {rules.MAX_TAGS} tags per device")
                if wanted != current:
                    if current - wanted:
                        s.execute(
                            delete(DeviceTag).where(
                                DeviceTag.device_id == dev.id, DeviceTag.tag.in_(current - wanted)
                            )
                        )
                    s.add_all(DeviceTag(device_id=dev.id, tag=t) for t in sorted(wanted - current))
                    audit(
                        s,
                        at=now,
                        actor=actor.name,
                        action="device.tags",
                        target=f"device:{dev.id}",
                        detail={
                            "added": sorted(wanted - current),
                            "removed": sorted(current - wanted),
                            "device": label_before,
                        },
                    )
                s.flush()
                return self._device_views(s, [dev])[0]
        except IntegrityError:
            # Two renames racing for one name: the unique index decided.
            raise Conflict(f"the name {name!r} is already used by another device") from None

    def set_quarantine(
        self, ref: str | int, on: bool, *, actor: Principal, reason: str | None = None
    ) -> dict[str, Any]:
        if not actor.is_admin:
            raise PermissionDenied("only an admin may quarantine or release a device")
        now = self._clock()
        with self._sf.begin() as s:
            dev = resolve_device(s, ref, for_update=True)
            if on:
                leased = s.scalar(
                    select(Lease.id).where(Lease.device_id == dev.id, Lease.state == LeaseState.ACTIVE)
                )
                if leased is not None:
                    raise Conflict(
                        f"{dev.name or dev.id} has active lease {leased}; revoke it first", lease_id=leased
                    )
            dev.quarantined = on
            refresh_states(s, [dev])
            audit(
                s,
                at=now,
                actor=actor.name,
                action="device.quarantine" if on else "device.unquarantine",
                target=f"device:{dev.id}",
                detail={"reason": reason} if reason else None,
            )
            s.flush()
            return self._device_views(s, [dev])[0]

    @staticmethod
    def _device_views(s: Session, rows: Sequence[Device]) -> list[dict[str, Any]]:
        ids = [d.id for d in rows]
        tags = tags_of(s, ids)
        leases = active_leases_of(s, ids)
        out = []
        for d in rows:
            lease, holder = leases.get(d.id, (None, None))
            out.append(device_view(d, tags.get(d.id, []), lease, holder))
        return out
