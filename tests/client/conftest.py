"""Fixtures: a real fleet service per module and per-test simulated dongles (see labkit.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .labkit import Lab, Service, dongle_binary


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One service per test module (starting one takes seconds); tests use their own dongles."""
    s = Service(tmp_path_factory.mktemp("service"))
    s.start({"admin": "admin", "alice": "user", "bob": "user"})
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def lab(service: Service, tmp_path: Path) -> Iterator[Lab]:
    if not dongle_binary().exists():
        pytest.fail(f"{dongle_binary()} missing: build agent_fw/host or set FLEET_DONGLE_BIN")
    lab = Lab(service, tmp_path)
    try:
        yield lab
    finally:
        lab.close()
