"""``fleet serve``: migrate the database, start adapters, serve the API."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fleet.cli.context import state
from fleet.domain.errors import ConfigError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from fleet.config import Settings

# How ``--workers`` hands the resolved settings to the worker processes.
_SETTINGS_ENV = "FLEET_SERVE_WORKER_SETTINGS"


def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="API address (default: api_host setting)")] = None,
    port: Annotated[int | None, typer.Option(help="API port (default: api_port setting)")] = None,
    mqtt: Annotated[bool, typer.Option("--mqtt/--no-mqtt", help="run MQTT ingestion and commands")] = True,
    mdns: Annotated[bool, typer.Option("--mdns/--no-mdns", help="browse mDNS for dongles")] = True,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="API processes on one port; more than 1 makes API-only replicas (needs --no-mqtt --no-mdns)",
        ),
    ] = 1,
) -> None:
    """Run the service (REST API, /metrics, MQTT ingestion, mDNS discovery, schedulers)."""
    import uvicorn

    from fleet.app import build_runtime, create_app

    st = state(ctx)
    if config is not None:
        st.config = config
    settings = st.settings(api_host=host, api_port=port)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if workers > 1:
        if mqtt or mdns:
            # One MQTT client id and one embedded broker cannot be shared by
            # processes; API-only replicas leave ingestion and commands to one
            # `fleet serve` with MQTT (its scheduler re-sends the grants they
            # record), as in the multi-replica deployment.
            raise ConfigError(
                [
                    f"--workers {workers}: worker processes serve the API only; add --no-mqtt --no-mdns "
                    "and run one `fleet serve` with MQTT beside them"
                ]
            )
        _serve_workers(settings, workers)
        return
    runtime = build_runtime(settings, mqtt=mqtt, mdns=mdns)
    typer.echo(f"fleet: database {runtime.engine.url.render_as_string(hide_password=True)}", err=True)
    runtime.start()
    try:
        app = create_app(runtime, manage_lifecycle=False)
        uvicorn.run(
            app,
            host=settings.api_host,
            port=settings.api_port,
            log_level=settings.log_level,
            access_log=settings.log_level == "debug",
        )
    finally:
        runtime.stop()


def _serve_workers(settings: Settings, workers: int) -> None:
    """Several processes on one socket: a lease request is CPU-bound Python
    under the GIL, so one process uses at most one core. Exclusivity stays
    the database's job (PostgreSQL, or SQLite's BEGIN IMMEDIATE across
    processes); token lookups are cached per process, so a revocation through
    one worker reaches the others within the cache lifetime (2 s)."""
    import uvicorn

    from fleet.db import migrate
    from fleet.db.engine import make_engine
    from fleet.services.firmware import ensure_signing_key

    engine = make_engine(settings.database_url)
    typer.echo(
        f"fleet: database {engine.url.render_as_string(hide_password=True)}, {workers} API processes",
        err=True,
    )
    migrate.upgrade(engine)  # once, before the workers race to do it
    engine.dispose()
    assert settings.ota_signing_key is not None
    ensure_signing_key(settings.ota_signing_key)  # likewise the OTA key, which they all sign with
    os.environ[_SETTINGS_ENV] = settings.model_dump_json()
    uvicorn.run(
        "fleet.cli.serve:worker_app",
        factory=True,
        workers=workers,
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
    )


def worker_app() -> FastAPI:
    """The app of one ``--workers`` process: API and schedulers, no MQTT or mDNS."""
    from fleet.app import build_runtime, create_app
    from fleet.config import Settings

    settings = Settings.model_validate_json(os.environ[_SETTINGS_ENV])
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return create_app(build_runtime(settings, mqtt=False, mdns=False, upgrade_db=False))
