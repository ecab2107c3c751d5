"""/api/v1/dongles/{id}/{reboot,ports/{busid}/power,config} and /api/v1/commands/{request_id} (admin)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fleet.api.deps import Admin, ServicesDep
from fleet.api.routes import API_PREFIX
from fleet.api.schemas import ConfigRequest, PortPowerRequest, RebootRequest

router = APIRouter(prefix=API_PREFIX, tags=["commands"])


@router.post("/dongles/{dongle_id}/reboot", status_code=202)
def reboot(dongle_id: str, svc: ServicesDep, who: Admin, body: RebootRequest | None = None) -> dict[str, Any]:
    """Restart the dongle; the answer is the command, its ``state`` moves on with the dongle's cmd-result."""
    return svc.commands.reboot(dongle_id, reason=body.reason if body else None, actor=who)


@router.post("/dongles/{dongle_id}/ports/{busid}/power", status_code=202)
def port_power(
    dongle_id: str, busid: str, svc: ServicesDep, who: Admin, body: PortPowerRequest | None = None
) -> dict[str, Any]:
    return svc.commands.port_power(dongle_id, busid, action=body.action if body else "cycle", actor=who)


@router.post("/dongles/{dongle_id}/config", status_code=202)
def configure(dongle_id: str, body: ConfigRequest, svc: ServicesDep, who: Admin) -> dict[str, Any]:
    return svc.commands.configure(dongle_id, body.model_dump(exclude_unset=True), actor=who)


@router.get("/commands/{request_id}")
def command(request_id: str, svc: ServicesDep, _: Admin) -> dict[str, Any]:
    return svc.commands.get(request_id)
