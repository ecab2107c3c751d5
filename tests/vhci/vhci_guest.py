"""Boot the vhci test guest under QEMU (TCG) and run one case of guest/guest_init.sh.

The guest reaches the USB/IP server only through slirp's guestfwd (restrict=on: no
other address is reachable), which runs relay.py toward 127.0.0.1:<port>.
The guest prints FLEET-STEP / FLEET-ACT / FLEET-DONE lines on its serial console;
this module reads them as they come, hands each FLEET-ACT to a callback (which
typically forwards it to the dongle's control socket) and collects the verdicts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
GUEST_ADDR = "198.18.0.100"  # RFC 2544 benchmark range, inside slirp only
# busids the cases use for the disk and the keyboard (the dongle is started with these ports)
MSC = "1-1"
KBD = "1-2"


def cache_dir() -> Path:
    if os.environ.get("FLEET_VHCI_DIR"):
        return Path(os.environ["FLEET_VHCI_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "fleet-vhci"
    return Path("/tmp/fleet-vhci")


def ensure_built() -> Path:
    """Kernel + initramfs up to date (a no-op taking milliseconds when they are)."""
    r = subprocess.run([str(HERE / "guest" / "build_initramfs.sh")], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"building the vhci guest failed (run scripts/setup-vhci.sh):\n{r.stderr}")
    return cache_dir()


@dataclass
class GuestRun:
    lines: list[str] = field(default_factory=list)
    steps: dict[str, tuple[bool, str]] = field(default_factory=dict)
    acts: list[str] = field(default_factory=list)
    done_rc: int | None = None
    qemu_rc: int | None = None
    wall_s: float = 0.0

    def ok(self, step: str) -> bool:
        return self.steps.get(step, (False, ""))[0]

    def detail(self, step: str) -> str:
        return self.steps.get(step, (False, "<missing>"))[1]

    def failed(self) -> list[str]:
        return [f"{k}: {v[1]}" for k, v in self.steps.items() if not v[0]]

    def log(self) -> str:
        return "".join(self.lines)


def run_guest(
    case: str,
    port: int,
    on_act: Callable[[list[str]], None] | None = None,
    params: dict[str, str] | None = None,
    timeout: float = 90.0,
    log_path: Path | None = None,
    forwards: tuple[int, ...] = (),
    share_host_root: bool = False,
) -> GuestRun:
    """``forwards``: more 127.0.0.1 ports the guest reaches at GUEST_ADDR:<same port>;
    ``share_host_root``: the host's / read-only as virtfs tag "hostroot" (the "host" case)."""
    out = ensure_built()
    kernel = out / "vmlinux" if (out / "vmlinux").exists() else out / "vmlinuz"
    kargs = [
        "console=ttyS0",
        "quiet",
        "panic=-1",
        "usb-storage.delay_use=0",
        f"fleet_case={case}",
        f"fleet_port={port}",
        f"fleet_server={GUEST_ADDR}",
    ]
    kargs += [f"fleet_{k}={v}" for k, v in (params or {}).items()]
    # commas inside a -netdev value must be doubled
    relay = f"{sys.executable} {HERE / 'relay.py'} 127.0.0.1 {port}"
    netdev = (
        "user,id=n0,restrict=on,ipv6=off,net=198.18.0.0/24,host=198.18.0.2,dns=198.18.0.3,"
        f"guestfwd=tcp:{GUEST_ADDR}:{port}-cmd:{relay}"
    )
    for extra in forwards:
        netdev += f",guestfwd=tcp:{GUEST_ADDR}:{extra}-cmd:{sys.executable} {HERE / 'relay.py'} 127.0.0.1 {extra}"
    cmd = [
        "qemu-system-x86_64",
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-machine",
        "q35",
        "-smp",
        "2",
        "-m",
        "384M",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
        str(kernel),
        "-initrd",
        str(out / "initramfs.cpio.gz"),
        "-append",
        " ".join(kargs),
        "-netdev",
        netdev,
        "-device",
        "virtio-net-pci,netdev=n0,romfile=",
    ]
    if share_host_root:
        # multidevs=remap: / spans several file systems (/proc, /sys, ...) whose inode
        # numbers collide; unmapped, the guest confuses their directories.
        cmd += ["-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"]
    run = GuestRun()
    t0 = time.monotonic()
    # own session: stopping the group also stops the relays QEMU spawned
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    act_errors: list[str] = []

    def reader() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").replace("\r", "")
            run.lines.append(line)
            words = line.split()
            if not words:
                continue
            if words[0] == "FLEET-STEP" and len(words) >= 3:
                run.steps[words[1]] = (words[2] == "OK", " ".join(words[3:]))
            elif words[0] == "FLEET-ACT":
                run.acts.append(" ".join(words[1:]))
                if on_act is not None:
                    try:
                        on_act(words[1:])
                    except Exception as e:  # reported below, the guest will time out on its own
                        act_errors.append(f"{' '.join(words[1:])}: {e!r}")
            elif words[0] == "FLEET-DONE" and words[1].startswith("rc="):
                run.done_rc = int(words[1][3:])

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        run.qemu_rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        run.lines.append(f"\n[harness] guest timed out after {timeout} s\n")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        t.join(5)
    run.wall_s = time.monotonic() - t0
    for e in act_errors:
        run.lines.append(f"[harness] host action failed: {e}\n")
        run.steps[f"host_action:{e.split(':')[0]}"] = (False, e)
    if log_path is not None:
        log_path.write_text(run.log())
    return run
