"""A sysfs tree in a temp dir with the kernel's file formats (drivers/usb/usbip/vhci_sysfs.c,
usbip-utils' /var/run/vhci_hcd/portN), for a machine without vhci-hcd."""

from __future__ import annotations

from pathlib import Path

HEADER = "hub port sta spd dev      sockfd local_busid\n"


def port_line(hub: str, port: int, sta: int = 4, spd: int = 0, devid: int = 0, sockfd: int = 0,
              busid: str = "0-0") -> str:
    return f"{hub} {port:04} {sta:03} {spd:03} {devid:08x} {sockfd:06} {busid}\n"


def make_vhci(root: Path, used: dict[int, tuple[int, str]] | None = None, nports: int = 8) -> Path:
    """vhci_hcd.0 with ``nports`` hs + ``nports`` ss ports; ``used`` = {port: (speed, local_busid)}."""
    used = used or {}
    base = root / "sys/devices/platform/vhci_hcd.0"
    base.mkdir(parents=True, exist_ok=True)
    lines = [HEADER]
    for i in range(2 * nports):
        hub = "hs" if i < nports else "ss"
        if i in used:
            spd, busid = used[i]
            lines.append(port_line(hub, i, 6, spd, (1 << 16) | 2, 3, busid))
        else:
            lines.append(port_line(hub, i))
    (base / "status").write_text("".join(lines))
    (base / "nports").write_text(f"{2 * nports}\n")
    return base


def make_usb_device(root: Path, local_busid: str, busnum: int, devnum: int, kind: str) -> None:
    """A USB device as /sys/bus/usb/devices/<busid> -> ../../../devices/platform/vhci_hcd.0/usbN/<busid>."""
    real = root / f"sys/devices/platform/vhci_hcd.0/usb{busnum}/{local_busid}"
    real.mkdir(parents=True, exist_ok=True)
    (real / "busnum").write_text(f"{busnum}\n")
    (real / "devnum").write_text(f"{devnum}\n")
    intf = real / f"{local_busid}:1.0"
    if kind == "disk":
        blk = intf / "host2/target2:0:0/2:0:0:0/block/sdb"
        (blk / "sdb1").mkdir(parents=True)
        (blk / "sdb1" / "partition").write_text("1\n")
    elif kind == "serial":
        (intf / "tty/ttyACM0").mkdir(parents=True)
    elif kind == "keyboard":
        (intf / "0003:046D:C31C.0001/input/input5/event3").mkdir(parents=True)
        (intf / "0003:046D:C31C.0001/hidraw/hidraw0").mkdir(parents=True)
    links = root / "sys/bus/usb/devices"
    links.mkdir(parents=True, exist_ok=True)
    (links / local_busid).symlink_to(real)
