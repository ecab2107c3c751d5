"""Unauthenticated endpoints for load balancers and Prometheus."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from fleet import metrics
from fleet.api.deps import ServicesDep

router = APIRouter(tags=["system"])


@router.get("/healthz")
def healthz(svc: ServicesDep) -> Any:
    try:
        with svc.session_factory() as s:
            s.execute(text("SELECT 1"))
    except Exception as exc:
        return JSONResponse(
            {"status": "error", "database": f"unreachable: {type(exc).__name__}"}, status_code=503
        )
    return {"status": "ok", "database": "ok"}


@router.get("/metrics")
def prometheus(request: Request) -> Response:
    return Response(metrics.render(request.app.state.inventory_metrics), media_type=metrics.CONTENT_TYPE)
