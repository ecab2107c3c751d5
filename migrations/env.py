"""Alembic environment: the target is fleet's model metadata.

``fleet db upgrade`` and ``fleet serve`` pass their engine in
``config.attributes["engine"]``; plain ``alembic`` use falls back to the URL
in the config or ``FLEET_DATABASE_URL``.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Engine

from fleet.db.engine import make_engine
from fleet.db.models import Base

config = context.config
target_metadata = Base.metadata


def _engine() -> Engine:
    engine = config.attributes.get("engine")
    if engine is not None:
        return engine
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("FLEET_DATABASE_URL")
    if not url:
        raise RuntimeError("no database URL: set sqlalchemy.url or FLEET_DATABASE_URL")
    return make_engine(url)


def run_migrations_online() -> None:
    engine = _engine()
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_type=True,
            # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; run against a database")
run_migrations_online()
