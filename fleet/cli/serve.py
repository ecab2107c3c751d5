"""``fleet serve``: migrate the database, start adapters, serve the API."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from fleet.cli.context import state


def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="API address (default: api_host setting)")] = None,
    port: Annotated[int | None, typer.Option(help="API port (default: api_port setting)")] = None,
    mqtt: Annotated[bool, typer.Option("--mqtt/--no-mqtt", help="run MQTT ingestion and commands")] = True,
    mdns: Annotated[bool, typer.Option("--mdns/--no-mdns", help="browse mDNS for dongles")] = True,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file")] = None,
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
