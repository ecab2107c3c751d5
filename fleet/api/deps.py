"""Request dependencies: the services and who is calling.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in
its thread pool, and each hop to a worker thread and back cost more CPU than
the dependency itself (three hops per request before the route even ran).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from fleet.domain.errors import AuthenticationError, PermissionDenied
from fleet.domain.model import Principal
from fleet.services.container import Services


async def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]


async def current_principal(request: Request, services: ServicesDep) -> Principal:
    header = request.headers.get("authorization")
    if not header:
        raise AuthenticationError("missing Authorization: Bearer <token> header")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("the Authorization header must be 'Bearer <token>'")
    users = services.users
    # A cached answer costs no I/O and is read on the event loop; a miss
    # queries the database, which must not block the loop.
    principal = users.cached_principal(token.strip())
    if principal is None:
        principal = await run_in_threadpool(users.authenticate_cached, token.strip())
    if principal is None:
        raise AuthenticationError("unknown or revoked token")
    return principal


async def admin_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not principal.is_admin:
        raise PermissionDenied(f"{principal.name} is a {principal.role}; this needs the admin role")
    return principal


User = Annotated[Principal, Depends(current_principal)]
Admin = Annotated[Principal, Depends(admin_principal)]
