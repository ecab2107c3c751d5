"""The Alembic migrations produce exactly the models' schema, and go back down."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from fleet.db import migrate
from fleet.db.engine import make_engine
from fleet.db.models import Base


def _diff(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return list(compare_metadata(ctx, Base.metadata))


def _roundtrip(engine: Engine) -> None:
    migrate.upgrade(engine)
    assert migrate.current(engine) == migrate.head()
    assert set(inspect(engine).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}
    assert _diff(engine) == []
    # The exclusivity index must really be partial and unique on both backends.
    idx = {i["name"]: i for i in inspect(engine).get_indexes("leases")}
    assert idx["ux_leases_active_device"]["unique"]

    migrate.downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    assert migrate.current(engine) is None

    migrate.upgrade(engine)
    assert _diff(engine) == []


def test_sqlite_migrations_match_models(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        _roundtrip(engine)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_migrations_match_models(pg_empty_url: str) -> None:
    engine = make_engine(pg_empty_url)
    try:
        _roundtrip(engine)
    finally:
        engine.dispose()


def test_comparison_detects_a_missing_column(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        migrate.upgrade(engine)
        with engine.begin() as c:
            c.exec_driver_sql("ALTER TABLE dongles DROP COLUMN rssi")
        assert any("rssi" in str(d) for d in _diff(engine))
    finally:
        engine.dispose()
