"""Fixtures for the service tests: real SQLite files and a real PostgreSQL.

PostgreSQL: one database per test session, created with a unique name on the
server named by ``FLEET_TEST_PG_URL`` (default: trust auth as ``postgres`` on
127.0.0.1) and dropped at the end; tables are emptied between tests.
SQLite: a migrated template file copied for each test.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from fleet.db import migrate
from fleet.db.engine import make_engine, make_session_factory
from fleet.db.models import Base
from fleet.services.container import Services, build_services

from .helpers import Db, RecordingPublisher

PG_ADMIN_URL = os.environ.get("FLEET_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _admin_engine() -> Engine:
    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session."""
    yield from _pg_database()


@pytest.fixture
def pg_empty_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    yield from _pg_database()


def _pg_database() -> Iterator[str]:
    name = f"fleet_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = _admin_engine()
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_migrated_url(pg_server_url: str) -> str:
    engine = make_engine(pg_server_url)
    migrate.upgrade(engine)
    engine.dispose()
    return pg_server_url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tpl") / "fleet.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()  # closing the last connection folds the WAL into the file we copy
    return path


def _truncate(engine: Engine) -> None:
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as c:
        c.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


def _sqlite_db(template: Path, tmp_path: Path) -> Db:
    path = tmp_path / "fleet.db"
    shutil.copy(template, path)
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    return Db("sqlite", url, engine, make_session_factory(engine))


def _pg_db(request: pytest.FixtureRequest) -> Db:
    url = request.getfixturevalue("pg_migrated_url")
    engine = make_engine(url, pool_size=30)
    _truncate(engine)
    return Db("postgres", url, engine, make_session_factory(engine))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, sqlite_template: Path, tmp_path: Path) -> Iterator[Db]:
    d = _sqlite_db(sqlite_template, tmp_path) if request.param == "sqlite" else _pg_db(request)
    yield d
    d.engine.dispose()


@pytest.fixture
def sqlite_db(sqlite_template: Path, tmp_path: Path) -> Iterator[Db]:
    d = _sqlite_db(sqlite_template, tmp_path)
    yield d
    d.engine.dispose()


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def services(db: Db, publisher: RecordingPublisher) -> Services:
    return build_services(db.sf, publisher, lease_default_s=600, lease_max_s=3600)
