"""Fixtures for the vhci tests: a fleet-dongle with a disk and a keyboard, and a
runner that boots the guest for one case and forwards its FLEET-ACT requests to the
dongle's control socket."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from vhci_guest import KBD, MSC, GuestRun, run_guest

from fleet.usbip.simdongle import SimDongle


@pytest.fixture
def dongle():
    with SimDongle([f"msc:size=32M,port={MSC}", f"hid-keyboard:port={KBD}"]) as d:
        yield d


def forward_act(dongle: SimDongle):
    def act(words: list[str]) -> None:
        if words[0] == "type" and len(words) == 3 and re.fullmatch(r"[0-9.-]+", words[1]):
            dongle.dev(words[1], f"type {words[2]}")
        elif words[0] == "unplug" and len(words) == 2:
            dongle.unplug(words[1])
        else:
            raise ValueError(f"guest asked for an unknown action {words!r}")

    return act


@pytest.fixture
def guest(dongle, tmp_path: Path):
    """guest(case) -> GuestRun; the console log is kept in the test's tmp dir and
    printed on failure by pytest's captured output."""

    def run(case: str, timeout: float = 150.0, **params: str) -> GuestRun:
        log = tmp_path / f"guest-{case}.log"
        r = run_guest(
            case, dongle.port, forward_act(dongle), {"msc": MSC, "kbd": KBD, **params}, timeout, log
        )
        print(r.log())
        print("---- fleet-dongle output ----\n" + "".join(dongle.output))
        print(f"[harness] {case}: wall {r.wall_s:.1f} s, log {log}")
        return r

    return run
