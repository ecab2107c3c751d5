"""Command tree: fleet serve | db | users | devices | sim, plus the workstation commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fleet.cli import db, devices, serve, sim, users
from fleet.cli.context import CliState
from fleet.client.commands import register as register_client_commands

app = typer.Typer(
    help="fleet: network USB dongles for a hardware lab.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML config file (default: $FLEET_CONFIG)")
    ] = None,
) -> None:
    ctx.obj = CliState(config=config)


# Service-side administration (talks to the database directly).
app.command("serve")(serve.serve)
app.add_typer(db.app, name="db")
app.add_typer(users.app, name="users")
app.add_typer(devices.app, name="devices")
app.add_typer(sim.app, name="sim")

# The lab engineer's workstation commands (talk to the REST API): login, ls,
# lease, attach, detach, extend, release, who.
register_client_commands(app)
