"""Fixtures for the C agent's tests: where the C build put its programs."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_support import BUILD, built_binary


@pytest.fixture(scope="session")
def payload_dump() -> Path:
    return built_binary("FLEET_AGENT_DUMP_BIN", BUILD / "test-agent" / "agent_payload_dump")


@pytest.fixture(scope="session")
def live_bin() -> Path:
    return built_binary("FLEET_AGENT_LIVE_BIN", BUILD / "test-agent" / "agent_live")


@pytest.fixture(scope="session")
def dongle_bin() -> Path:
    return built_binary("FLEET_DONGLE_BIN", BUILD / "fleet-dongle")
