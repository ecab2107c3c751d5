"""Identity matching: the pure rule that keeps names, tags and history attached to a device."""

from __future__ import annotations

from fleet.domain.identity import KnownDevice, SeenDevice, is_meaningful_serial, match_device

NOW = 1_800_000_000.0
A, B = "esp-a1b2c3d4e5f6", "esp-0a0b0c0d0e0f"


def known(
    id: int,
    dongle: str = A,
    busid: str = "1-1",
    vid: int = 0x1366,
    pid: int = 0x0101,
    serial: str | None = "000683012345",
    present: bool = False,
    removed_at: float | None = NOW - 5,
    dongle_online: bool = True,
) -> KnownDevice:
    return KnownDevice(
        id, dongle, busid, vid, pid, serial, present, None if present else removed_at, dongle_online
    )


def seen(
    dongle: str = A,
    busid: str = "1-1",
    vid: int = 0x1366,
    pid: int = 0x0101,
    serial: str | None = "000683012345",
) -> SeenDevice:
    return SeenDevice(dongle, busid, vid, pid, serial)


def test_bogus_serials_are_not_identities() -> None:
    for s in (None, "", "0", "000000000000", "00000000", "FFFFFFFF", "123456789", " 0 "):
        assert not is_meaningful_serial(s), s
    assert is_meaningful_serial("000683012345")
    assert is_meaningful_serial("VHCI0001")


def test_same_serial_on_another_dongle_is_the_same_device_moved() -> None:
    assert match_device(seen(dongle=B, busid="1-3"), [known(7)], NOW) == 7


def test_same_serial_still_present_on_an_online_dongle_elsewhere_is_a_clone() -> None:
    assert match_device(seen(dongle=B, busid="1-3"), [known(7, present=True)], NOW) is None


def test_same_serial_present_on_an_offline_dongle_is_a_move() -> None:
    # The old dongle went away without reporting the unplug.
    assert match_device(seen(dongle=B), [known(7, present=True, dongle_online=False)], NOW) == 7


def test_replug_on_the_same_port_keeps_identity_without_serial() -> None:
    assert match_device(seen(serial=None), [known(3, serial=None, removed_at=NOW - 3600)], NOW) == 3


def test_bootloader_vid_pid_change_within_window_is_the_same_device() -> None:
    old = known(4, vid=0x0483, pid=0x374B, serial=None, removed_at=NOW - 2)
    assert match_device(seen(vid=0x0483, pid=0xDF11, serial=None), [old], NOW) == 4


def test_vid_pid_change_after_the_window_is_a_new_device() -> None:
    old = known(4, vid=0x0483, pid=0x374B, serial=None, removed_at=NOW - 300)
    assert match_device(seen(vid=0x0483, pid=0xDF11, serial=None), [old], NOW, window_s=30) is None


def test_vid_pid_change_replacing_a_present_device_in_one_snapshot_is_the_same_device() -> None:
    old = known(4, vid=0x0483, pid=0x374B, serial=None, present=True)
    assert match_device(seen(vid=0x0483, pid=0xDF11, serial=None), [old], NOW) == 4


def test_different_meaningful_serials_on_one_port_are_different_devices() -> None:
    old = known(5, serial="AAAA1111", removed_at=NOW - 1)
    assert match_device(seen(serial="BBBB2222"), [old], NOW) is None


def test_serial_match_wins_over_port_match() -> None:
    other_at_port = known(1, serial=None, removed_at=NOW - 1)
    moved_here = known(2, dongle=B, busid="1-4")
    assert match_device(seen(), [other_at_port, moved_here], NOW) == 2


def test_bogus_serial_does_not_pull_a_device_from_elsewhere() -> None:
    elsewhere = known(9, dongle=B, serial="0")
    assert match_device(seen(serial="0"), [elsewhere], NOW) is None


def test_claimed_devices_are_not_matched_twice() -> None:
    k = known(6, serial=None, present=True)
    assert match_device(seen(serial=None), [k], NOW, claimed=frozenset({6})) is None
