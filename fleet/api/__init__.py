"""REST adapter: FastAPI routes over ``fleet.services``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI

from fleet import metrics
from fleet.api import errors
from fleet.api.routes import API_PREFIX, admin, dongles, firmware, inventory, leases, system
from fleet.services.container import Services

__all__ = ["API_PREFIX", "create_api"]


class LatencyMiddleware:
    """Records each request in ``fleet_api_request_duration_seconds``.

    The route label is the matched template (``/api/v1/leases/{lease_id}``),
    never the raw path, so cardinality stays bounded.
    """

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def _send(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics.API_LATENCY.labels(scope["method"], template, f"{status[0] // 100}xx").observe(
                time.perf_counter() - t0
            )


def create_api(
    services: Services,
    *,
    inventory_metrics: metrics.InventoryMetrics | None = None,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    threads: int = 8,
) -> FastAPI:
    if threads < 1:
        raise ValueError(f"threads {threads}: must be at least 1")

    @asynccontextmanager
    async def _lifespan(app_: FastAPI) -> AsyncIterator[None]:
        # Sync routes run in anyio's thread pool (40 threads by default). The
        # work they do holds the GIL, so 40 threads only take turns, and the
        # hand-offs between them (GIL convoys, futex wake-ups) cost more CPU
        # than the requests. A few threads keep the database busy: a lease
        # operation spends well under a millisecond waiting on it.
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        if lifespan is None:
            yield
        else:
            async with lifespan(app_):
                yield

    app = FastAPI(
        title="fleet",
        version="1",
        summary="Network USB dongles for a hardware lab: inventory, leases, audit",
        lifespan=_lifespan,
    )
    app.state.services = services
    app.state.inventory_metrics = inventory_metrics
    errors.install(app)
    app.include_router(system.router)
    for r in (
        inventory.router,
        leases.router,
        admin.router,
        dongles.router,
        firmware.router,
        firmware.download_router,
    ):
        app.include_router(r)
    app.add_middleware(LatencyMiddleware)
    return app
