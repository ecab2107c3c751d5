"""Fixtures for the USB/IP integration tests: real fleet-dongle processes on the
loopback, driven through their control socket, and sessions that are closed
whatever the test does."""

from __future__ import annotations

import pytest

from fleet.usbip import import_device
from fleet.usbip.simdongle import SimDongle

# Ports are fixed so busids are predictable: busid = port path.
DEFAULT_DEVICES = (
    "msc:size=16M,port=1-1",
    "hid-keyboard:port=1-2",
    "probe:port=1-3",
    "probe:delay_ms=300,port=1-4",
)


@pytest.fixture
def start_dongle():
    """start_dongle(devices, args) -> running SimDongle, stopped at teardown
    (which also checks it exits cleanly on SIGTERM)."""
    started: list[SimDongle] = []

    def start(devices=DEFAULT_DEVICES, args=()) -> SimDongle:
        d = SimDongle(list(devices), list(args)).start()
        started.append(d)
        return d

    yield start
    for d in started:
        was_alive = d.alive()
        rc = d.stop()
        if was_alive:
            assert rc == 0, f"fleet-dongle exited {rc} on SIGTERM; output:\n{''.join(d.output)}"


@pytest.fixture
def dongle(start_dongle) -> SimDongle:
    return start_dongle()


@pytest.fixture
def open_session():
    """open_session(dongle, busid, configure=True, **kw) -> imported Session, closed
    at teardown. Like the kernel client after attach, it selects configuration 1
    unless told not to."""
    sessions = []

    def open_(d: SimDongle, busid: str, configure: bool = True, **kw):
        s = import_device(d.host, d.port, busid, **kw)
        sessions.append(s)
        if configure:
            s.set_configuration(1)
        return s

    yield open_
    for s in sessions:
        s.close()
