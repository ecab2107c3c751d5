"""Request dependencies: the services and who is calling."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from fleet.domain.errors import AuthenticationError, PermissionDenied
from fleet.domain.model import Principal
from fleet.services.container import Services


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]


def current_principal(request: Request, services: ServicesDep) -> Principal:
    header = request.headers.get("authorization")
    if not header:
        raise AuthenticationError("missing Authorization: Bearer <token> header")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("the Authorization header must be 'Bearer <token>'")
    principal = services.users.authenticate(token.strip())
    if principal is None:
        raise AuthenticationError("unknown or revoked token")
    return principal


def admin_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not principal.is_admin:
        raise PermissionDenied(f"{principal.name} is a {principal.role}; this needs the admin role")
    return principal


User = Annotated[Principal, Depends(current_principal)]
Admin = Annotated[Principal, Depends(admin_principal)]
