"""``fleet db upgrade | downgrade | current``."""

from __future__ import annotations

from typing import Annotated

import typer

from fleet.cli.context import open_db, state

app = typer.Typer(help="Database schema migrations (Alembic).", no_args_is_help=True)


@app.command()
def upgrade(ctx: typer.Context, revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    from fleet.db import migrate

    engine = open_db(state(ctx).settings(), upgrade=False)
    migrate.upgrade(engine, revision)
    typer.echo(f"database at revision {migrate.current(engine)}")


@app.command()
def downgrade(ctx: typer.Context, revision: Annotated[str, typer.Argument()] = "-1") -> None:
    """Revert migrations down to REVISION (default: one step; 'base' = empty)."""
    from fleet.db import migrate

    engine = open_db(state(ctx).settings(), upgrade=False)
    migrate.downgrade(engine, revision)
    typer.echo(f"database at revision {migrate.current(engine) or 'base'}")


@app.command()
def current(ctx: typer.Context) -> None:
    """Show the database's revision and the latest one."""
    from fleet.db import migrate

    engine = open_db(state(ctx).settings(), upgrade=False)
    cur, head = migrate.current(engine), migrate.head()
    typer.echo(f"current: {cur or 'base (empty)'}\nlatest:  {head}")
