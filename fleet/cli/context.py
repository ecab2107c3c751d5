"""What every subcommand needs: settings and, for database commands, services."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import typer
from sqlalchemy import Engine

from fleet.config import Settings, load_settings
from fleet.domain.model import Principal, Role


@dataclass
class CliState:
    config: Path | None = None
    _settings: Settings | None = field(default=None, repr=False)

    def settings(self, **overrides: object) -> Settings:
        if self._settings is None or overrides:
            self._settings = load_settings(self.config, **overrides)
        return self._settings


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    assert isinstance(obj, CliState)
    return obj


def open_db(settings: Settings, *, upgrade: bool = True) -> Engine:
    """An engine on a database brought up to the current schema."""
    from fleet.db import migrate
    from fleet.db.engine import make_engine

    engine = make_engine(settings.database_url, pool_size=2)
    if upgrade and migrate.current(engine) != migrate.head():
        migrate.upgrade(engine)
    return engine


def services(ctx: typer.Context):  # type: ignore[no-untyped-def]
    from fleet.db.engine import make_session_factory
    from fleet.services.commands import NoTransport
    from fleet.services.container import build_services

    s = state(ctx).settings()
    engine = open_db(s)
    return build_services(
        make_session_factory(engine),
        NoTransport(),
        lease_default_s=s.lease_default_seconds,
        lease_max_s=s.lease_max_seconds,
    )


CLI_ACTOR = Principal(user_id=None, name="cli", role=Role.ADMIN)
