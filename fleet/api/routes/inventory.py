"""/api/v1/dongles and /api/v1/devices."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from fleet.api.deps import Admin, ServicesDep, User
from fleet.api.routes import API_PREFIX
from fleet.api.schemas import DevicePatch, Quarantine

router = APIRouter(prefix=API_PREFIX, tags=["inventory"])

Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0)]


@router.get("/dongles")
def list_dongles(
    svc: ServicesDep,
    _: User,
    status: str | None = None,
    q: str | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    return svc.inventory.list_dongles(status=status, q=q, limit=limit, offset=offset)


@router.get("/dongles/{dongle_id}")
def get_dongle(dongle_id: str, svc: ServicesDep, _: User) -> dict[str, Any]:
    return svc.inventory.get_dongle(dongle_id)


@router.get("/events")
def list_events(
    svc: ServicesDep,
    _: User,
    dongle: str | None = None,
    type: str | None = Query(default=None, description="e.g. ota_progress, selftest, device_added"),
    after_id: int | None = Query(default=None, ge=0, description="only events newer than this id"),
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """What the dongles reported, newest first."""
    return svc.inventory.list_events(dongle_id=dongle, type=type, after_id=after_id, limit=limit, offset=offset)


@router.get("/devices")
def list_devices(
    svc: ServicesDep,
    _: User,
    state: str | None = None,
    tag: str | None = None,
    dongle: str | None = None,
    vid: str | None = Query(default=None, description="hex, e.g. 1366"),
    pid: str | None = Query(default=None, description="hex, e.g. 0101"),
    q: str | None = Query(
        default=None, description="substring of name, product, manufacturer, serial or busid"
    ),
    present: bool | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    return svc.inventory.list_devices(
        state=state,
        tag=tag,
        dongle=dongle,
        vid=vid,
        pid=pid,
        q=q,
        present=present,
        limit=limit,
        offset=offset,
    )


@router.get("/devices/{ref}")
def get_device(ref: str, svc: ServicesDep, _: User) -> dict[str, Any]:
    return svc.inventory.get_device(ref)


@router.patch("/devices/{ref}")
def patch_device(ref: str, body: DevicePatch, svc: ServicesDep, who: User) -> dict[str, Any]:
    clear = "name" in body.model_fields_set and body.name is None
    return svc.inventory.update_device(
        ref,
        actor=who,
        name=body.name,
        clear_name=clear,
        tags=body.tags,
        add_tags=body.add_tags,
        remove_tags=body.remove_tags,
    )


@router.post("/devices/{ref}/quarantine")
def quarantine_device(ref: str, body: Quarantine, svc: ServicesDep, who: Admin) -> dict[str, Any]:
    return svc.inventory.set_quarantine(ref, body.quarantined, actor=who, reason=body.reason)
