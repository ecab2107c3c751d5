"""/api/v1/firmware, /api/v1/dongles/{id}/ota and the image download /fw/{sha256}.bin."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from fleet.api.deps import Admin, ServicesDep, User
from fleet.api.errors import error_body
from fleet.api.routes import API_PREFIX
from fleet.api.schemas import OtaRequest
from fleet.domain.errors import NotFound
from fleet.services.container import Services
from fleet.services.firmware import FirmwareService

router = APIRouter(prefix=API_PREFIX, tags=["firmware"])
# The dongle has no token: the signed SHA-256 in the manifest pins the bytes, so
# the download needs none either.
download_router = APIRouter(tags=["firmware"])

Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0)]


def _registry(svc: Services) -> FirmwareService:
    if svc.firmware is None:
        raise NotFound("this service process has no firmware registry configured")
    return svc.firmware


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        error_body(
            "too_large",
            f"body: the image is larger than the {limit}-byte limit (setting firmware_max_bytes)",
            field="body",
            limit=limit,
        ),
        status_code=413,
    )


@router.post(
    "/firmware", status_code=201, responses={200: {"description": "these bytes are already registered"}}
)
async def upload_firmware(
    request: Request,
    svc: ServicesDep,
    who: Admin,
    filename: Annotated[str | None, Query(max_length=255)] = None,
    notes: Annotated[str | None, Query(max_length=2000)] = None,
) -> Any:
    """Register a firmware image: the raw bytes as the body (application/octet-stream)."""
    fw = _registry(svc)
    limit = fw.max_image_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return _too_large(limit)
    view, created = await run_in_threadpool(fw.upload, bytes(body), filename=filename, notes=notes, actor=who)
    return JSONResponse(view, status_code=201 if created else 200)


@router.get("/firmware")
def list_firmware(
    svc: ServicesDep,
    _: User,
    chip: str | None = None,
    version: str | None = None,
    sha256: str | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    return _registry(svc).list(chip=chip, version=version, sha256=sha256, limit=limit, offset=offset)


# Declared before /firmware/{firmware_id} so "signing-key" is not read as an id.
@router.get("/firmware/signing-key")
def signing_key(svc: ServicesDep, _: User) -> dict[str, str]:
    """The public key dongles need (``fleet-dongle --ota-pubkey``) to accept this service's manifests."""
    return _registry(svc).public_key()


@router.get("/firmware/{firmware_id}")
def get_firmware(firmware_id: int, svc: ServicesDep, _: User) -> dict[str, Any]:
    return _registry(svc).get(firmware_id)


@router.delete("/firmware/{firmware_id}")
def delete_firmware(firmware_id: int, svc: ServicesDep, who: Admin) -> dict[str, Any]:
    return _registry(svc).delete(firmware_id, actor=who)


@router.post("/dongles/{dongle_id}/ota", status_code=202)
def request_ota(dongle_id: str, body: OtaRequest, svc: ServicesDep, who: Admin) -> dict[str, Any]:
    """Send a signed OTA manifest; follow it with GET /api/v1/commands/{request_id}."""
    return _registry(svc).request_ota(
        dongle_id,
        firmware_id=body.firmware_id,
        version=body.version,
        allow_downgrade=body.allow_downgrade,
        actor=who,
    )


@download_router.get("/fw/{sha256}.bin")
@download_router.head("/fw/{sha256}.bin")
async def download(sha256: str, svc: ServicesDep) -> FileResponse:
    """The image bytes, streamed from disk; Starlette's FileResponse answers Range
    (206 + Content-Range, 416 with ``bytes */size``), which resumed downloads use."""
    path = _registry(svc).path_of(sha256)
    if path is None:
        raise NotFound(f"no firmware image with sha256 {sha256}")
    return FileResponse(path, media_type="application/octet-stream")
