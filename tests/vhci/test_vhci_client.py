"""The Linux kernel's own USB/IP client (vhci-hcd + usbip attach, in a QEMU guest)
against fleet-dongle. Each test boots one guest; see guest/guest_init.sh for the
steps of each case."""

from __future__ import annotations

import pytest
from vhci_guest import KBD, MSC

pytestmark = [pytest.mark.vhci, pytest.mark.dongle, pytest.mark.timeout(200)]

KEYS = "keys=22 31 48 23 25"  # KEY_U KEY_S KEY_B KEY_I KEY_P


def _passed(r, *steps):
    assert r.qemu_rc == 0, f"QEMU exit status {r.qemu_rc}"
    assert r.done_rc == 0, f"guest reported failures: {r.failed()}"
    for s in steps:
        assert r.ok(s), f"step {s}: {r.detail(s)}"


def test_msc_filesystem_write_remount_read_back(guest, dongle):
    r = guest("msc", files="3", mib="3")  # 9 MiB: several MiB, ~30 s under TCG
    _passed(r, "list", f"attach_{MSC}", "disk", "mkfs", "write", "readback", f"detach_{MSC}")
    assert "id=1209:0001" in r.detail(f"attach_{MSC}")
    sums = [line.split() for line in r.lines if line.startswith("FLEET-SUM")]
    assert len(sums) == 3 and len({s[2] for s in sums}) == 3  # three distinct random files
    dev = dongle.device_stats(MSC)
    assert dev["bytes_out"] >= 9 * 1024 * 1024  # the files really crossed USB/IP
    assert dongle.alive()


def test_hid_keyboard_delivers_typed_keys(guest):
    r = guest("hid")
    _passed(r, f"attach_{KBD}", "input", "keys", f"detach_{KBD}")
    assert "id=1209:0002" in r.detail(f"attach_{KBD}")
    assert KEYS in r.detail("keys")
    assert r.acts == [f"type {KBD} usbip"]


def test_two_devices_attached_at_once(guest):
    r = guest("two")
    _passed(r, f"attach_{MSC}", f"attach_{KBD}", "both", "keys", "read", f"detach_{KBD}", f"detach_{MSC}")
    assert "ports=2" in r.detail("both")
    assert KEYS in r.detail("keys")


def test_detach_and_reattach_same_busid(guest, dongle):
    r = guest("reattach")
    _passed(r, "io_round1", "io_round2")
    attaches = [line for line in r.lines if line.startswith(f"FLEET-STEP attach_{MSC} OK")]
    assert len(attaches) == 2
    assert not dongle.list()[0]["attached_to"]  # released after the second detach


def test_unplug_during_transfer_kernel_sees_disconnect_other_device_survives(guest, dongle):
    r = guest("unplug")
    _passed(r, "reading", "gone", "reader", "survivor", "keys_after")
    assert "USB disconnect" in r.detail("gone")
    assert KEYS in r.detail("keys_after")
    assert r.acts == [f"unplug {MSC}", f"type {KBD} usbip"]
    assert [d["busid"] for d in dongle.list()] == [KBD]
    assert dongle.alive()
