"""The workstation side of USB/IP: Linux's ``usbip`` tool and what the kernel's
vhci-hcd and USB core publish in sysfs.

Everything is read under a root directory (``/`` in real use) so tests can point it
at a tree with the kernel's exact file formats; the tool is run through a small
runner so a test can see the argv it would have run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fleet.client.errors import ClientError

# include/uapi/linux/usb/ch9.h: enum usb_device_speed
SPEEDS = {0: "unknown", 1: "low", 2: "full", 3: "high", 4: "wireless", 5: "super", 6: "super-plus"}
# drivers/usb/usbip/usbip_common.h: enum usbip_device_status
ST_NULL, ST_NOTASSIGNED, ST_USED, ST_ERROR = 4, 5, 6, 7
USBIP_PORT = 3240


@dataclass(frozen=True)
class VhciPort:
    """One line of /sys/devices/platform/vhci_hcd.0/status[.N]."""

    hub: str  # "hs" (USB 2.0 root hub: low/full/high speed) or "ss"
    port: int  # global port number, what `usbip detach -p` takes
    status: int
    speed: int
    devid: int  # (busnum << 16) | devnum on the dongle, 0 when free
    sockfd: int
    local_busid: str | None  # the device's name in /sys/bus/usb/devices, once enumerated

    @property
    def free(self) -> bool:
        return self.status == ST_NULL

    @property
    def speed_name(self) -> str:
        return SPEEDS.get(self.speed, str(self.speed))


def parse_status(text: str) -> list[VhciPort]:
    """Parse a vhci status file. Kernels >= 4.13 write
    ``hub port sta spd dev      sockfd local_busid``; older ones lack ``hub``."""
    ports: list[VhciPort] = []
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return ports
    header = lines[0].split()
    if header[:1] not in (["hub"], ["port"], ["prt"]):
        raise ValueError(f"not a vhci status file: first line is {lines[0]!r}")
    has_hub = header[0] == "hub"
    for n, line in enumerate(lines[1:], start=2):
        f = line.split()
        want = 7 if has_hub else 6
        if len(f) != want:
            raise ValueError(f"vhci status line {n} has {len(f)} fields, expected {want}: {line!r}")
        hub = f.pop(0) if has_hub else "hs"
        try:
            port, sta, spd = int(f[0]), int(f[1]), int(f[2])
            devid, sockfd = int(f[3], 16), int(f[4])
        except ValueError:
            raise ValueError(f"vhci status line {n} is malformed: {line!r}") from None
        busid = None if f[5] in ("0-0", "") else f[5]
        ports.append(VhciPort(hub, port, sta, spd, devid, sockfd, busid))
    return ports


@dataclass(frozen=True)
class Imported:
    """What `usbip port` says about one used port: where the device comes from."""

    port: int
    host: str
    tcp_port: int
    remote_busid: str
    local_busid: str | None = None
    speed: str | None = None


_PORT_LINE = re.compile(r"^Port (\d+): <([^>]*)> at (.*)$")
_REMOTE_LINE = re.compile(r"^\s*(\S+) -> usbip://(\[[^\]]+\]|[^/]+?):(\d+)/(\S+)\s*$")


def parse_usbip_port(text: str) -> list[Imported]:
    """Parse `usbip port` (usbip-utils 2.0) output."""
    out: list[Imported] = []
    cur: tuple[int, str] | None = None
    for line in text.splitlines():
        m = _PORT_LINE.match(line.strip())
        if m:
            cur = (int(m.group(1)), m.group(3).split("(")[0].strip().lower())
            continue
        m = _REMOTE_LINE.match(line)
        if m and cur is not None:
            local = m.group(1)
            out.append(
                Imported(
                    port=cur[0],
                    host=m.group(2).strip("[]"),
                    tcp_port=int(m.group(3)),
                    remote_busid=m.group(4),
                    local_busid=None if local in ("0-0", "unknown") else local,
                    speed=cur[1],
                )
            )
            cur = None
    return out


@dataclass
class LocalDevice:
    """What an attached device became on this machine."""

    local_busid: str
    busnum: int | None = None
    devnum: int | None = None
    nodes: list[str] = field(default_factory=list)  # /dev/sdb, /dev/ttyACM0, /dev/input/event3 ...

    @property
    def usb_node(self) -> str | None:
        if self.busnum is None or self.devnum is None:
            return None
        return f"/dev/bus/usb/{self.busnum:03d}/{self.devnum:03d}"

    def describe(self) -> str:
        parts = list(self.nodes)
        if self.busnum is not None:
            parts.append(f"bus {self.busnum:03d} device {self.devnum:03d}")
        return ", ".join(parts) if parts else f"usb {self.local_busid} (no device node yet)"


class Sysfs:
    """Reads the kernel's view, under ``root`` (``/`` for the real machine)."""

    def __init__(self, root: str | Path = "/"):
        self.root = Path(root)

    def _p(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def vhci_loaded(self) -> bool:
        return self._p("/sys/devices/platform/vhci_hcd.0").is_dir()

    def status_files(self) -> list[Path]:
        base = self._p("/sys/devices/platform/vhci_hcd.0")
        files = [base / "status"] if (base / "status").exists() else []
        def index(p: Path) -> int:
            return int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0

        extra = sorted(base.glob("status.*"), key=index)
        return files + extra

    def ports(self) -> list[VhciPort]:
        out: list[VhciPort] = []
        for f in self.status_files():
            out.extend(parse_status(f.read_text()))
        return out

    def port(self, number: int) -> VhciPort | None:
        return next((p for p in self.ports() if p.port == number), None)

    def free_ports(self, hub: str) -> list[VhciPort]:
        return [p for p in self.ports() if p.hub == hub and p.free]

    def imported(self) -> dict[int, tuple[str, int, str]]:
        """/var/run/vhci_hcd/port<N>: "host tcp_port busid", written by `usbip attach`."""
        out: dict[int, tuple[str, int, str]] = {}
        d = self._p("/var/run/vhci_hcd")
        if not d.is_dir():
            return out
        for f in d.glob("port*"):
            num = f.name[4:]
            words = f.read_text().split()
            if num.isdigit() and len(words) == 3 and words[1].isdigit():
                out[int(num)] = (words[0], int(words[1]), words[2])
        return out

    def local_device(self, local_busid: str) -> LocalDevice:
        """Device nodes the kernel created for the USB device ``local_busid`` (e.g. ``3-1``)."""
        dev = LocalDevice(local_busid)
        base = self._p(f"/sys/bus/usb/devices/{local_busid}")
        if not base.exists():
            return dev
        real = base.resolve()
        dev.busnum = _read_int(real / "busnum")
        dev.devnum = _read_int(real / "devnum")
        nodes: list[str] = []
        for dirpath, dirnames, _files in os.walk(real):
            here = Path(dirpath)
            # Never wander into child USB devices (a hub's ports) through links.
            dirnames[:] = [d for d in dirnames if not (here / d).is_symlink()]
            name = here.name
            parent = here.parent.name
            if parent == "block" and not _is_partition(here):
                nodes.append(f"/dev/{name}")
            elif parent == "tty" and name.startswith("tty"):
                nodes.append(f"/dev/{name}")
            elif parent == "hidraw" and name.startswith("hidraw"):
                nodes.append(f"/dev/{name}")
            elif parent.startswith("input") and name.startswith("event"):
                nodes.append(f"/dev/input/{name}")
        dev.nodes = sorted(set(nodes), key=_node_order)
        return dev


def _node_order(node: str) -> tuple[int, str]:
    rank = 0 if node.startswith(("/dev/sd", "/dev/tty")) else 1
    return rank, node


def _is_partition(p: Path) -> bool:
    return (p / "partition").exists()


def _read_int(p: Path) -> int | None:
    try:
        return int(p.read_text().strip())
    except (OSError, ValueError):
        return None


class UsbipError(ClientError):
    """`usbip` failed; ``kind`` tells why when its message is a known one."""


_NOT_GRANTED = "the dongle refused the import (device not granted to this address)"
# Messages of usbip-utils 2.0 (tools/usb/usbip) mapped to what they mean for us.
_KNOWN = [
    ("open vhci_driver", "vhci", "the vhci-hcd kernel module is not loaded", "sudo modprobe vhci-hcd"),
    ("no free port", "no_port", "every vhci port is in use", "detach a device (`fleet detach`)"),
    # usbip-utils' texts for OP_REP_IMPORT status ST_NA (versions differ), which the dongle
    # sends to a client that holds no grant
    ("request failed", "refused", _NOT_GRANTED, None),
    ("request rejected", "refused", _NOT_GRANTED, None),
    ("not available", "refused", _NOT_GRANTED, None),
    ("device busy", "busy", "the device is already attached to another client", None),
    ("tcp connect", "connect", "cannot connect to the dongle", "is the dongle online? (`fleet ls`)"),
    ("permission denied", "perm", "usbip needs root", "run as root or configure sudo"),
    ("operation not permitted", "perm", "usbip needs root", "run as root or configure sudo"),
]


def classify(stderr: str) -> tuple[str, str, str | None]:
    low = stderr.lower()
    for needle, kind, meaning, fix in _KNOWN:
        if needle in low:
            return kind, meaning, fix
    return "other", "usbip failed", None


class Usbip:
    """Runs the usbip tool, with ``sudo -n`` when we are not root."""

    def __init__(self, binary: str | None = None, sudo: bool | None = None, timeout: float = 30.0):
        self.binary = binary or os.environ.get("FLEET_USBIP") or shutil.which("usbip") or "usbip"
        self.sudo = (os.geteuid() != 0) if sudo is None else sudo
        self.timeout = timeout

    def argv(self, args: Sequence[str]) -> list[str]:
        return (["sudo", "-n"] if self.sudo else []) + [self.binary, *args]

    def run(self, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = self.argv(args)
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout)
        except FileNotFoundError:
            raise UsbipError(f"cannot run {argv[0]}: not found", fix=USBIP_PACKAGES) from None
        except subprocess.TimeoutExpired:
            raise UsbipError(f"`{' '.join(argv)}` did not finish in {self.timeout:.0f} s") from None

    def _check(self, args: Sequence[str]) -> str:
        r = self.run(args)
        if r.returncode != 0:
            text = (r.stderr or r.stdout).strip()
            kind, meaning, fix = classify(text)
            raise UsbipError(f"{meaning}: `{' '.join(self.argv(args))}` said: {text}", fix=fix, kind=kind)
        return r.stdout

    def attach(self, host: str, tcp_port: int, busid: str) -> None:
        pre = [] if tcp_port == USBIP_PORT else ["--tcp-port", str(tcp_port)]
        self._check([*pre, "attach", "-r", host, "-b", busid])

    def detach(self, port: int) -> None:
        self._check(["detach", "-p", str(port)])

    def ports(self) -> list[Imported]:
        return parse_usbip_port(self._check(["port"]))


USBIP_PACKAGES = (
    "install the usbip tool: Debian `apt install usbip`, Ubuntu `apt install linux-tools-generic` "
    "(or linux-tools-$(uname -r)), Fedora `dnf install usbip`"
)
