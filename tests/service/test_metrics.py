"""Inventory metrics: right numbers, bounded labels."""

from __future__ import annotations

from fleet import metrics
from fleet.services.container import Services

from .helpers import DONGLE_A, DONGLE_B, bring_online, device, status


def test_counts_by_state_and_per_dongle_up(services: Services) -> None:
    bring_online(services, DONGLE_A, [device("1-1"), device("1-2", serial="X2345678")])
    bring_online(services, DONGLE_B, [device("1-1", serial="Y2345678")])
    services.users.add("alice", "user")
    alice = services.users.authenticate(services.users.issue_token("alice"))
    assert alice is not None
    services.leases.acquire(alice, 1, clients=["127.0.0.1"])
    services.ingest.apply([status(DONGLE_B, "offline", "lwt")])

    text = metrics.render(metrics.InventoryMetrics(services.session_factory, per_dongle=True)).decode()
    for line in (
        'fleet_dongles{status="online"} 1.0',
        'fleet_dongles{status="offline"} 1.0',
        'fleet_usb_devices{state="leased"} 1.0',
        'fleet_usb_devices{state="free"} 1.0',
        'fleet_usb_devices{state="offline"} 1.0',
        'fleet_leases{state="active"} 1.0',
        f'fleet_dongle_up{{dongle="{DONGLE_A}"}} 1.0',
        f'fleet_dongle_up{{dongle="{DONGLE_B}"}} 0.0',
        "fleet_scheduler_lag_seconds",
    ):
        assert line in text, line
    assert "alice" not in text

    aggregate = metrics.render(metrics.InventoryMetrics(services.session_factory))
    assert b"fleet_dongle_up{" not in aggregate and b'fleet_dongles{status="online"} 1.0' in aggregate
