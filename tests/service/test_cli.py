"""The installed ``fleet`` command, run as a subprocess against a real database."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleet.cli import main
from fleet.db import migrate
from fleet.db.engine import make_engine, make_session_factory
from fleet.services.commands import NoTransport
from fleet.services.container import build_services

from .helpers import DONGLE_A, bring_online, device

# The console script pip generated from [project.scripts].
FLEET_SCRIPT = Path(sys.executable).parent / "fleet"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Run ``fleet ARGS`` in-process (fast) with exactly the given FLEET_* environment."""

    def _run(args: list[str], env: dict[str, str], ok: bool = True) -> Result:
        with monkeypatch.context() as m:
            for k in [k for k in os.environ if k.startswith("FLEET_")]:
                m.delenv(k)
            for k, v in env.items():
                m.setenv(k, v)
            capsys.readouterr()
            code = main(args)
            out = capsys.readouterr()
        r = Result(code, out.out, out.err)
        if ok:
            assert r.returncode == 0, r.stderr
        return r

    return _run


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"FLEET_DATA_DIR": str(tmp_path / "data")}


def test_installed_command_prints_the_token_last(env: dict[str, str], tmp_path: Path) -> None:
    full = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")} | env
    p = subprocess.run(
        [str(FLEET_SCRIPT), "users", "add", "zoe", "--role", "user"],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    token = p.stdout.strip().splitlines()[-1]
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'fleet.db'}")
    who = build_services(make_session_factory(engine), NoTransport()).users.authenticate(token)
    engine.dispose()
    assert who is not None and who.name == "zoe" and not who.is_admin
    bad = subprocess.run(
        [str(FLEET_SCRIPT), "users", "list"],
        env=full | {"FLEET_API_PORT": "http"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "api_port" in bad.stderr and "Traceback" not in bad.stderr


def test_users_add_prints_a_working_token_last(run, env: dict[str, str], tmp_path: Path) -> None:
    out = run(["users", "add", "alice", "--role", "admin"], env).stdout
    token = out.strip().splitlines()[-1]
    assert token.startswith("fleet_")
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'fleet.db'}")
    svc = build_services(make_session_factory(engine), NoTransport())
    who = svc.users.authenticate(token)
    assert who is not None and who.name == "alice" and who.is_admin

    second = run(["users", "token", "alice"], env).stdout.strip().splitlines()[-1]
    assert second != token and svc.users.authenticate(second) is not None
    listing = run(["users", "list"], env).stdout
    assert "alice" in listing and "admin" in listing and token not in listing
    run(["users", "revoke-token", token], env)
    assert svc.users.authenticate(token) is None and svc.users.authenticate(second) is not None

    dup = run(["users", "add", "alice"], env, ok=False)
    assert dup.returncode == 1 and "already exists" in dup.stderr
    bad = run(["users", "add", "alice", "--role", "root"], env, ok=False)
    assert bad.returncode == 2 and "use admin or user" in bad.stderr
    engine.dispose()


def test_devices_rename_tag_untag_list(run, env: dict[str, str], tmp_path: Path) -> None:
    run(["db", "upgrade"], env)
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'fleet.db'}")
    svc = build_services(make_session_factory(engine), NoTransport())
    bring_online(svc, DONGLE_A, [device("1-1")])
    assert "device 1 is now jlink-3" in run(["devices", "rename", "1", "jlink-3"], env).stdout
    assert "probe, swd" in run(["devices", "tag", "jlink-3", "probe", "swd"], env).stdout
    assert "tags: probe" in run(["devices", "untag", "jlink-3", "swd"], env).stdout
    listing = run(["devices", "list", "--tag", "probe"], env).stdout
    assert "jlink-3" in listing and "1366:0101" in listing
    assert svc.inventory.get_device("jlink-3")["tags"] == ["probe"]
    bad = run(["devices", "tag", "jlink-3", "Not Valid"], env, ok=False)
    assert bad.returncode == 2 and "not a valid tag" in bad.stderr
    missing = run(["devices", "rename", "nothing", "x1"], env, ok=False)
    assert missing.returncode == 1 and "no device with id or name 'nothing'" in missing.stderr
    engine.dispose()


def test_db_commands(run, env: dict[str, str]) -> None:
    head = migrate.head()
    assert f"database at revision {head}" in run(["db", "upgrade"], env).stdout
    assert f"current: {head}" in run(["db", "current"], env).stdout
    assert "at revision base" in run(["db", "downgrade", "base"], env).stdout
    assert "current: base" in run(["db", "current"], env).stdout


def test_bad_configuration_exits_2_with_one_line_per_problem(
    run, env: dict[str, str], tmp_path: Path
) -> None:
    p = run(
        ["users", "list"], env | {"FLEET_API_PORT": "99999", "FLEET_MQTT_URL": "http://127.0.0.1"}, ok=False
    )
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert "api_port (environment FLEET_API_PORT): Input should be less than or equal to 65535" in p.stderr
    assert "mqtt_url (environment FLEET_MQTT_URL): must look like mqtt://HOST:PORT" in p.stderr

    cfg = tmp_path / "fleet.toml"
    cfg.write_text('lease_max_seconds = 60\nlease_default_seconds = 600\ncolour = "blue"\n')
    p = run(["--config", str(cfg), "users", "list"], env, ok=False)
    assert p.returncode == 2 and "'colour' is not a fleet setting" in p.stderr

    cfg.write_text("this is = not toml [")
    p = run(["users", "list"], env | {"FLEET_CONFIG": str(cfg)}, ok=False)
    assert p.returncode == 2 and "not valid TOML" in p.stderr

    p = run(
        ["serve", "--no-mqtt", "--no-mdns"], env | {"FLEET_DATABASE_URL": "mysql://127.0.0.1/x"}, ok=False
    )
    assert p.returncode == 2 and "database_url" in p.stderr and "sqlite:///PATH" in p.stderr


def test_config_file_values_apply_and_environment_wins(env: dict[str, str], tmp_path: Path) -> None:
    from fleet.config import load_settings

    cfg = tmp_path / "fleet.toml"
    cfg.write_text(f'data_dir = "{tmp_path}/d"\napi_port = 9001\nmdns_interfaces = ["lo"]\n')
    os.environ["FLEET_API_PORT"] = "9002"
    try:
        s = load_settings(cfg)
    finally:
        del os.environ["FLEET_API_PORT"]
    assert s.api_port == 9002 and s.mdns_interfaces == ["lo"]
    assert s.database_url == f"sqlite:///{tmp_path}/d/fleet.db"
