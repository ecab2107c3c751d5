"""/api/v1/audit, /api/v1/commands, /api/v1/users."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from fleet.api.deps import Admin, ServicesDep, User
from fleet.api.routes import API_PREFIX
from fleet.api.schemas import TokenRevoke, UserCreate

router = APIRouter(prefix=API_PREFIX)

Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0)]


@router.get("/audit", tags=["audit"])
def audit(
    svc: ServicesDep,
    _: User,
    actor: str | None = None,
    action: str | None = Query(default=None, description="lease.acquire, or a prefix such as lease"),
    target: str | None = Query(default=None, description="e.g. device:42 or user:alice"),
    since: datetime | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    return svc.audit.list(actor=actor, action=action, target=target, since=since, limit=limit, offset=offset)


@router.get("/commands", tags=["commands"])
def commands(
    svc: ServicesDep,
    _: Admin,
    dongle: str | None = None,
    state: str | None = None,
    name: str | None = None,
    lease_id: int | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    return svc.commands.list(
        dongle_id=dongle, state=state, name=name, lease_id=lease_id, limit=limit, offset=offset
    )


@router.get("/me", tags=["users"])
def me(who: User) -> dict[str, Any]:
    """Who the token belongs to."""
    return {"user_id": who.user_id, "name": who.name, "role": who.role.value}


@router.get("/users", tags=["users"])
def list_users(svc: ServicesDep, _: Admin) -> dict[str, Any]:
    items = svc.users.list()
    return {"items": items, "total": len(items)}


@router.post("/users", tags=["users"], status_code=201)
def add_user(body: UserCreate, svc: ServicesDep, who: Admin) -> dict[str, Any]:
    user, token = svc.users.add(body.name, body.role, actor=who)
    return {**user, "token": token}


@router.post("/users/{name}/tokens", tags=["users"], status_code=201)
def issue_token(name: str, svc: ServicesDep, who: Admin) -> dict[str, Any]:
    return {"user": name, "token": svc.users.issue_token(name, actor=who)}


@router.post("/tokens/revoke", tags=["users"])
def revoke_token(body: TokenRevoke, svc: ServicesDep, who: Admin) -> dict[str, Any]:
    return svc.users.revoke_token(body.token, actor=who)
