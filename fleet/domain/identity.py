"""Following a USB device across re-plugs, bootloader VID:PID changes and moves.

The service keys a device by where it is (dongle id, busid = port path) but
remembers what it is (VID:PID, serial), so a name, tags and history given to
``jlink-3`` stay with that probe. ``match_device`` is the whole rule; it is a
pure function so the cases are tested without a database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Serial strings that many cheap devices share; matching on them would merge
# unrelated devices into one identity.
_BOGUS_SERIALS = frozenset(
    {
        "",
        "0",
        "1",
        "none",
        "null",
        "n/a",
        "serial",
        "0123456789",
        "123456789",
        "1234567890",
        "0123456789abcdef",
        "000000000000",
        "ffffffffffff",
    }
)

#: How long after a device vanished from a port another VID:PID appearing on
#: the same port is taken as the same device (re-enumerated by its bootloader).
BOOTLOADER_WINDOW_S = 30.0


def is_meaningful_serial(serial: str | None) -> bool:
    if serial is None:
        return False
    s = serial.strip().lower()
    if s in _BOGUS_SERIALS:
        return False
    return len(set(s)) > 1  # "00000000", "FFFFFFFF", ...


@dataclass(frozen=True, slots=True)
class SeenDevice:
    """A device as a dongle reports it now."""

    dongle_id: str
    busid: str
    vid: int
    pid: int
    serial: str | None


@dataclass(frozen=True, slots=True)
class KnownDevice:
    """A device the inventory already has.

    ``present`` is false once it vanished; ``removed_at`` (unix time) says when.
    ``dongle_online`` tells whether its last dongle can still vouch for it.
    """

    id: int
    dongle_id: str
    busid: str
    vid: int
    pid: int
    serial: str | None
    present: bool
    removed_at: float | None
    dongle_online: bool = True


def match_device(
    seen: SeenDevice,
    known: Iterable[KnownDevice],
    now: float,
    *,
    window_s: float = BOOTLOADER_WINDOW_S,
    claimed: frozenset[int] = frozenset(),
) -> int | None:
    """Return the id of the known device ``seen`` is, or None for a new device.

    Order: (1) the same meaningful serial anywhere in the fleet, if that device
    is not at the same time present on a reachable dongle elsewhere (two live
    devices with one serial are clones, not a move); (2) the same port with the
    same VID:PID; (3) the same port with another VID:PID when the previous
    device left it less than ``window_s`` ago, or is being replaced in this very
    snapshot (a bootloader re-enumerating) — unless both carry meaningful,
    different serials. ``claimed`` are ids already matched in the same snapshot.
    """
    candidates = [k for k in known if k.id not in claimed]
    here = (seen.dongle_id, seen.busid)

    if is_meaningful_serial(seen.serial):
        same_serial = [k for k in candidates if k.serial == seen.serial]
        # Prefer the one on this very port, then one that is gone, then one
        # whose dongle went offline (its removal may simply not have arrived).
        for k in sorted(same_serial, key=lambda k: ((k.dongle_id, k.busid) != here, k.present, k.id)):
            if (k.dongle_id, k.busid) == here or not k.present or not k.dongle_online:
                return k.id

    at_port = [k for k in candidates if (k.dongle_id, k.busid) == here]
    for k in at_port:
        if (k.vid, k.pid) == (seen.vid, seen.pid) and not _different_serials(k.serial, seen.serial):
            return k.id
    for k in sorted(at_port, key=lambda k: -(k.removed_at or now)):
        if _different_serials(k.serial, seen.serial):
            continue
        recently_gone = k.removed_at is not None and now - k.removed_at <= window_s
        if k.present or recently_gone:
            return k.id
    return None


def _different_serials(a: str | None, b: str | None) -> bool:
    return is_meaningful_serial(a) and is_meaningful_serial(b) and a != b
