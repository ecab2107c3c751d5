"""mDNS tests run on the loopback interface only."""

from __future__ import annotations

import subprocess

import pytest


@pytest.fixture(scope="session")
def loopback_multicast() -> None:
    """Multicast must be enabled on ``lo`` for mDNS over 127.0.0.1.

    Turned on when missing and left on: other suites may rely on it concurrently.
    """
    flags = subprocess.run(["ip", "link", "show", "lo"], capture_output=True, text=True, check=True).stdout
    if "MULTICAST" not in flags.split(">")[0]:
        subprocess.run(["ip", "link", "set", "lo", "multicast", "on"], check=True)
        flags = subprocess.run(
            ["ip", "link", "show", "lo"], capture_output=True, text=True, check=True
        ).stdout
    assert "MULTICAST" in flags.split(">")[0], f"cannot enable multicast on lo: {flags}"
