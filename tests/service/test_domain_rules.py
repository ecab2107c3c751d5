"""Validation and state rules of the domain (no database)."""

from __future__ import annotations

import pytest

from fleet.domain import rules
from fleet.domain.errors import InvalidInput
from fleet.domain.model import DeviceState, derive_device_state


def test_lease_duration_defaults_and_limits() -> None:
    assert rules.lease_duration(None, default_s=600, max_s=3600) == 600
    assert rules.lease_duration(3600, default_s=600, max_s=3600) == 3600
    with pytest.raises(InvalidInput, match="longer than the maximum lease of 3600 s"):
        rules.lease_duration(3601, default_s=600, max_s=3600)
    with pytest.raises(InvalidInput, match="at least 1 second"):
        rules.lease_duration(0, default_s=600, max_s=3600)
    with pytest.raises(InvalidInput, match="whole number"):
        rules.lease_duration(True, default_s=600, max_s=3600)  # type: ignore[arg-type]


def test_client_addresses_are_ip_addresses() -> None:
    assert rules.client_addresses(["127.0.0.1", "::1", "127.0.0.1"]) == ["127.0.0.1", "::1"]
    with pytest.raises(InvalidInput) as e:
        rules.client_addresses(["127.0.0.1", "workstation.local"])
    assert e.value.field == "clients[1]" and "not an IPv4 or IPv6 address" in e.value.message
    with pytest.raises(InvalidInput, match="at least one"):
        rules.client_addresses([])
    with pytest.raises(InvalidInput, match="at most 16"):
        rules.client_addresses([f"127.0.0.{i}" for i in range(1, 18)])


def test_lease_target_forms() -> None:
    assert rules.lease_target("jlink-3") == rules.Target("name", "jlink-3")
    assert rules.lease_target("42") == rules.Target("id", 42)
    assert rules.lease_target(42) == rules.Target("id", 42)
    assert rules.lease_target("tag:probe") == rules.Target("tag", "probe")
    for bad in ("tag:", "tag:Bad Tag", "", "3jlink", "has space", 0):
        with pytest.raises(InvalidInput):
            rules.lease_target(bad)


def test_names_tags_and_ids() -> None:
    assert rules.device_name("jlink-3") == "jlink-3"
    with pytest.raises(InvalidInput, match="start with a letter"):
        rules.device_name("42")
    assert rules.tags(["stm32", "probe", "probe"]) == ["probe", "stm32"]
    with pytest.raises(InvalidInput, match=r"tags\[0\]"):
        rules.tags(["UPPER"])
    assert rules.dongle_id("esp-a1b2c3d4e5f6") == "esp-a1b2c3d4e5f6"
    with pytest.raises(InvalidInput):
        rules.dongle_id("esp-A1B2C3D4E5F6")
    assert rules.usb_id("0x1366", "vid") == 0x1366 and rules.usb_id("1366", "vid") == 0x1366
    with pytest.raises(InvalidInput, match="16-bit hex"):
        rules.usb_id("12345", "vid")
    with pytest.raises(InvalidInput):
        rules.busid("1-0")
    assert rules.busid("1-2.3") == "1-2.3"


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ({}, DeviceState.FREE),
        ({"leased": True}, DeviceState.LEASED),
        ({"leased": True, "attached": True}, DeviceState.ATTACHED),
        ({"leased": True, "dongle_online": False}, DeviceState.OFFLINE),
        ({"present": False}, DeviceState.OFFLINE),
        ({"quarantined": True, "present": False}, DeviceState.QUARANTINED),
    ],
)
def test_device_state_derivation(facts: dict[str, bool], expected: DeviceState) -> None:
    base = {"quarantined": False, "present": True, "dongle_online": True, "attached": False, "leased": False}
    assert derive_device_state(**{**base, **facts}) is expected
