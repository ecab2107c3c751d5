"""Faults a lab really has, made with `fleet sim` and seen by the real service: one dongle
loses power (its Last Will marks it offline, the others stay online) and comes back; one
dongle's network is cut (the broker notices the silence) and restored (it reconnects
by itself)."""

from __future__ import annotations

from pathlib import Path

import pytest
from simlab import SimLab, wait_for

from fleet.usbip import client as usbip

pytestmark = [pytest.mark.dongle, pytest.mark.mosquitto]

KEEPALIVE = 5  # the broker gives up after 1.5 x this


@pytest.fixture
def lab(tmp_path: Path):
    lab = SimLab(tmp_path, dongles=3, devices="msc,hid", base_address="127.79.0.1",
                 sim_args=["--mqtt-keepalive", str(KEEPALIVE)])
    try:
        yield lab.start()
    finally:
        lab.stop()


def _statuses(lab: SimLab) -> list[str | None]:
    return [lab.status(d) for d in lab.ids]


def test_killed_dongle_goes_offline_alone_and_powers_back_on(lab: SimLab) -> None:
    victim, others = lab.ids[0], lab.ids[1:]
    r = lab.simctl("kill", victim)
    assert r.returncode == 0, r.stderr

    got = wait_for(lambda: lab.status(victim) == "offline" and lab.dongle(victim), 5, "Last Will of the killed dongle")
    assert got["status_reason"] == "lwt"
    assert all(x["state"] == "offline" for x in lab.devices(victim))
    assert [lab.status(d) for d in others] == ["online", "online"]
    with pytest.raises(OSError):
        usbip.devlist("127.79.0.1", timeout=2)  # no power, no listener

    r = lab.simctl("plug", victim, "probe")
    assert r.returncode == 1 and "powered off" in r.stderr, (r.stdout, r.stderr)
    r = lab.simctl("start", others[0])
    assert r.returncode == 1 and "already running" in r.stderr, (r.stdout, r.stderr)

    r = lab.simctl("start", victim)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: lab.status(victim) == "online", 15, "the dongle back online")
    devs = wait_for(
        lambda: sorted((x["busid"], x["state"]) for x in lab.devices(victim) if x["state"] == "free"), 10,
        "its devices free again"
    )
    assert devs == [("1-1", "free"), ("1-2", "free")]
    assert {x.busid for x in usbip.devlist("127.79.0.1", timeout=5)} == {"1-1", "1-2"}
    assert _statuses(lab) == ["online"] * 3


def test_cut_network_is_noticed_by_the_broker_and_restored(lab: SimLab) -> None:
    victim = lab.ids[1]
    boots = len(lab.events(victim, "rebooted"))
    assert lab.simctl("net", victim, "off").returncode == 0
    got = wait_for(lambda: lab.status(victim) == "offline" and lab.dongle(victim), 1.5 * KEEPALIVE + 8,
                   "Last Will after the keepalive")
    assert got["status_reason"] == "lwt"
    assert [lab.status(d) for d in (lab.ids[0], lab.ids[2])] == ["online", "online"]
    with pytest.raises(OSError):  # its USB/IP port answers nothing while the link is down
        usbip.devlist("127.79.0.2", timeout=1)

    assert lab.simctl("net", victim, "on").returncode == 0
    wait_for(lambda: lab.status(victim) == "online", 2 * KEEPALIVE + 10, "the dongle reconnected")
    assert {x.busid for x in usbip.devlist("127.79.0.2", timeout=5)} == {"1-1", "1-2"}
    # a cut link is not a power cycle: the dongle kept running, it did not boot again
    assert len(lab.events(victim, "rebooted")) == boots


def test_plug_and_unplug_through_fleet_sim(lab: SimLab) -> None:
    d = lab.ids[2]
    r = lab.simctl("plug", d, "cdc")
    assert r.returncode == 0 and r.stdout.strip() == "1-3", (r.stdout, r.stderr)
    wait_for(lambda: any(x["busid"] == "1-3" for x in lab.devices(d)), 2, "the plugged device in the service")
    assert lab.simctl("unplug", d, "1-1").returncode == 0
    wait_for(lambda: {x["busid"] for x in lab.devices(d) if x["state"] != "offline"} == {"1-2", "1-3"}, 2,
             "the unplug in the service")
    r = lab.simctl("unplug", d, "9-9")
    assert r.returncode == 1 and "9-9" in r.stderr, (r.stdout, r.stderr)
    r = lab.simctl("kill", "esp-000000000bad")
    assert r.returncode == 1 and "esp-000000000bad" in r.stderr, (r.stdout, r.stderr)
