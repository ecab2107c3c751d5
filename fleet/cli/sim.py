"""``fleet sim``: a lab without hardware.

Runs simulated dongles (the firmware's Linux build, ``fleet-dongle``, in its
multi-dongle mode: one process, one loopback address and port 3240 per
dongle) against an MQTT broker, so the service sees them exactly as it would
see real ones. ``fleet sim ctl`` talks to the running simulator's control
channel (plug/unplug devices, grants, stats).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from fleet.domain.errors import InvalidInput

app = typer.Typer(help="Simulated dongles (no hardware needed).", no_args_is_help=True)

# Short device names accepted by --devices, and the fleet-dongle spec each one means.
DEVICE_SPECS = {
    "msc": "msc:size=64M",
    "hid": "hid-keyboard",
    "cdc": "cdc-acm",
    "probe": "probe",
}

REPO = Path(__file__).resolve().parents[2]


def default_sim_dir() -> Path:
    """Where `fleet sim` keeps per-dongle state and its control socket."""
    return Path(os.environ.get("FLEET_DATA_DIR", Path.home() / ".local/share/fleet")) / "sim"


def dongle_binary() -> Path:
    """$FLEET_DONGLE_BIN, else the CMake build in this checkout, else fleet-dongle on PATH."""
    env = os.environ.get("FLEET_DONGLE_BIN")
    if env:
        return Path(env)
    built = REPO / "agent_fw/host/build/fleet-dongle"
    if built.exists():
        return built
    found = shutil.which("fleet-dongle")
    if found:
        return Path(found)
    raise InvalidInput(
        "fleet-dongle",
        "not found: build it with `cmake -S agent_fw/host -B agent_fw/host/build && "
        "cmake --build agent_fw/host/build` or set FLEET_DONGLE_BIN",
    )


def device_specs(devices: str) -> list[str]:
    names = [d.strip() for d in devices.split(",") if d.strip()]
    if not names:
        raise InvalidInput("--devices", "needs at least one of: " + ", ".join(DEVICE_SPECS))
    unknown = [n for n in names if n not in DEVICE_SPECS]
    if unknown:
        raise InvalidInput(
            "--devices", f"unknown device {unknown[0]!r} (choose from {', '.join(DEVICE_SPECS)})"
        )
    return [DEVICE_SPECS[n] for n in names]


def check_base_address(addr: str, dongles: int) -> None:
    try:
        ip = ipaddress.IPv4Address(addr)
    except ValueError:
        raise InvalidInput("--base-address", f"{addr!r} is not an IPv4 address") from None
    last = ipaddress.IPv4Address(int(ip) + dongles - 1) if int(ip) + dongles - 1 < 2**32 else None
    loopback = ipaddress.IPv4Network("127.0.0.0/8")
    if ip not in loopback or last is None or last not in loopback:
        raise InvalidInput("--base-address", f"{dongles} dongles from {addr} must stay inside 127.0.0.0/8")


def sim_command(
    *,
    binary: Path,
    dongles: int,
    specs: list[str],
    broker: str,
    base_address: str,
    base_mac: str,
    state_dir: Path,
    control: Path,
    mdns: bool,
    enforce_grants: bool,
    telemetry_interval: int,
) -> list[str]:
    cmd = [
        str(binary),
        "--dongles",
        str(dongles),
        "--base-address",
        base_address,
        "--base-mac",
        base_mac,
        "--mqtt",
        broker,
        "--state-dir",
        str(state_dir),
        "--control",
        str(control),
        "--telemetry-interval",
        str(telemetry_interval),
    ]
    for spec in specs:
        cmd += ["--device", spec]
    if mdns:
        cmd.append("--mdns")
    if enforce_grants:
        cmd.append("--enforce-grants")
    return cmd


@app.command("run")
def run(
    dongles: Annotated[int, typer.Option(min=1, max=5000, help="How many dongles.")] = 20,
    devices: Annotated[
        str, typer.Option(help="Devices on every dongle: " + ",".join(DEVICE_SPECS))
    ] = "msc,hid,probe",
    broker: Annotated[str, typer.Option(help="MQTT broker the dongles report to.")] = "mqtt://127.0.0.1:1883",
    base_address: Annotated[str, typer.Option(help="First dongle's loopback address.")] = "127.1.0.1",
    base_mac: Annotated[
        str, typer.Option(help="First dongle's simulated base MAC (12 hex digits); ids follow from it.")
    ] = "02f1ee000001",
    state_dir: Annotated[
        Path | None, typer.Option(help="Per-dongle config and OTA slots [default: $FLEET_DATA_DIR/sim].")
    ] = None,
    mdns: Annotated[bool, typer.Option("--mdns/--no-mdns", help="Advertise _usbip._tcp.")] = True,
    enforce_grants: Annotated[
        bool, typer.Option("--enforce-grants/--no-enforce-grants", help="Only leased clients may import.")
    ] = True,
    telemetry_interval: Annotated[int, typer.Option(min=1, max=3600, help="Seconds between telemetry.")] = 10,
) -> None:
    """Run simulated dongles in the foreground until Ctrl-C."""
    specs = device_specs(devices)
    check_base_address(base_address, dongles)
    if not re.fullmatch(r"[0-9a-fA-F]{12}", base_mac) or int(base_mac, 16) + dongles > 2**48:
        raise InvalidInput(
            "--base-mac", f"{base_mac!r}: expected 12 hex digits with room for {dongles} dongles"
        )
    if not broker.startswith(("mqtt://", "mqtts://")):
        raise InvalidInput("--broker", f"{broker!r}: expected mqtt://HOST[:PORT]")
    state_dir = state_dir or default_sim_dir()
    state_dir.mkdir(parents=True, exist_ok=True)
    control = state_dir / "control.sock"
    cmd = sim_command(
        binary=dongle_binary(),
        dongles=dongles,
        specs=specs,
        broker=broker,
        base_address=base_address,
        base_mac=base_mac.lower(),
        state_dir=state_dir,
        control=control,
        mdns=mdns,
        enforce_grants=enforce_grants,
        telemetry_interval=telemetry_interval,
    )
    typer.echo(
        f"fleet sim: {dongles} dongles from {base_address}, broker {broker}, control {control}", err=True
    )
    proc = subprocess.Popen(cmd)
    # The child gets Ctrl-C from the terminal too; forward SIGTERM ourselves.
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        rc = proc.wait()
    raise typer.Exit(0 if rc in (0, -signal.SIGTERM, -signal.SIGINT) else rc)


@app.command("ctl")
def ctl(
    command: Annotated[list[str], typer.Argument(help="e.g. `esp-02f1ee000001 plug msc:size=8M` or `stats`")],
    control: Annotated[
        Path | None, typer.Option(help="Control socket of `fleet sim run` [default: $FLEET_DATA_DIR/sim/].")
    ] = None,
) -> None:
    """Send one control command to the running simulator; a dongle id first addresses that dongle."""
    control = control or default_sim_dir() / "control.sock"
    words = list(command)
    if words and words[0].startswith("esp-"):
        words[0] = "@" + words[0]
    line = " ".join(words)
    if "\n" in line:
        raise InvalidInput("command", "a control command is one line")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(control))
            s.sendall(line.encode() + b"\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
    except OSError as e:
        raise InvalidInput(
            "--control",
            f"cannot reach the simulator at {control}: {e.strerror or e} (is `fleet sim run` up?)",
        ) from None
    text = reply.decode(errors="replace").strip()
    typer.echo(text)
    if not text.startswith("ok"):
        sys.exit(1)
