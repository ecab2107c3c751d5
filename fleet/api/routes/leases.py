"""/api/v1/leases."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from fleet.api.deps import Admin, ServicesDep, User
from fleet.api.fastjson import FastJSON
from fleet.api.routes import API_PREFIX
from fleet.api.schemas import LeaseExtend, LeaseRequest, LeaseRevoke

router = APIRouter(prefix=API_PREFIX + "/leases", tags=["leases"])


@router.post("", status_code=201)
def acquire(body: LeaseRequest, svc: ServicesDep, who: User) -> FastJSON:
    view = svc.leases.acquire(who, body.device, duration_s=body.duration_s, clients=body.clients)
    return FastJSON(view, status_code=201)


@router.get("")
def list_leases(
    svc: ServicesDep,
    _: User,
    state: str | None = None,
    device: str | None = None,
    holder: str | None = None,
    dongle: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    return svc.leases.list(
        state=state, device=device, holder=holder, dongle=dongle, limit=limit, offset=offset
    )


@router.get("/{lease_id}")
def get_lease(lease_id: int, svc: ServicesDep, _: User) -> FastJSON:
    return FastJSON(svc.leases.get(lease_id))


@router.post("/{lease_id}/extend")
def extend(lease_id: int, body: LeaseExtend, svc: ServicesDep, who: User) -> FastJSON:
    return FastJSON(svc.leases.extend(who, lease_id, body.duration_s))


@router.post("/{lease_id}/release")
def release(lease_id: int, svc: ServicesDep, who: User) -> FastJSON:
    return FastJSON(svc.leases.release(who, lease_id))


@router.post("/{lease_id}/revoke")
def revoke(lease_id: int, body: LeaseRevoke, svc: ServicesDep, who: Admin) -> FastJSON:
    return FastJSON(svc.leases.revoke(who, lease_id, body.reason))
