"""Run the Alembic migrations in ``migrations/`` from any working directory.

The migration scripts live in the repository's top-level ``migrations/``;
a wheel installs them under ``<prefix>/share/fleet/migrations`` (see
``[tool.setuptools.data-files]``). ``FLEET_MIGRATIONS_DIR`` overrides both.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine


def migrations_dir() -> Path:
    candidates = []
    if env := os.environ.get("FLEET_MIGRATIONS_DIR"):
        candidates.append(Path(env))
    candidates.append(Path(__file__).resolve().parents[2] / "migrations")
    candidates.append(Path(sysconfig.get_path("data")) / "share" / "fleet" / "migrations")
    for c in candidates:
        if (c / "env.py").is_file():
            return c
    raise FileNotFoundError(
        "cannot find the fleet migrations (looked in " + ", ".join(map(str, candidates)) + ")"
    )


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str = "-1") -> None:
    command.downgrade(alembic_config(engine), revision)


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head() -> str | None:
    return ScriptDirectory(str(migrations_dir())).get_current_head()
