"""``fleet sim``: a lab without hardware.

Runs simulated dongles (the firmware's Linux build, ``fleet-dongle``, in its
multi-dongle mode: one process, one loopback address and port 3240 per
dongle) against an MQTT broker, so the service sees them exactly as it would
see real ones. The other subcommands talk to the running simulator's control
socket: plug and unplug devices, pull a dongle's power (``kill``, then
``start``), cut its network (``net DONGLE off``), and ``ctl`` for anything else
the control protocol knows (grants, stats, device commands).
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
from enum import Enum
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


def implicit_run(argv: list[str]) -> list[str]:
    """``fleet sim --dongles 20 ...`` means ``fleet sim run --dongles 20 ...``."""
    if len(argv) >= 2 and argv[0] == "sim" and argv[1].startswith("-") and argv[1] not in ("-h", "--help"):
        return ["sim", "run", *argv[1:]]
    return argv


def default_sim_dir() -> Path:
    """Where `fleet sim` keeps per-dongle state and its control socket."""
    return Path(os.environ.get("FLEET_DATA_DIR", Path.home() / ".local/share/fleet")) / "sim"


def default_ota_pubkey() -> Path | None:
    """The public half of the service's OTA signing key, when the service shares our data dir."""
    data = Path(os.environ.get("FLEET_DATA_DIR", Path.home() / ".local/share/fleet"))
    key = data / "ota" / "signing-key.pub.pem"
    return key if key.is_file() else None


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
    mqtt_keepalive: int = 30,
    ota_pubkey: Path | None = None,
    ota_rate: int = 0,
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
        "--mqtt-keepalive",
        str(mqtt_keepalive),
    ]
    if ota_pubkey is not None:
        cmd += ["--ota-pubkey", str(ota_pubkey)]
    if ota_rate:
        cmd += ["--ota-rate", str(ota_rate)]
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
    mqtt_keepalive: Annotated[
        int,
        typer.Option(
            min=5, max=3600, help="MQTT keepalive: a cut network becomes a Last Will after 1.5x this."
        ),
    ] = 30,
    ota_pubkey: Annotated[
        Path | None,
        typer.Option(
            help="Public key OTA manifests must be signed with "
            "[default: the service's $FLEET_DATA_DIR/ota/signing-key.pub.pem when it exists]."
        ),
    ] = None,
    ota_rate: Annotated[
        int, typer.Option(min=0, help="Cap OTA downloads at this many bytes/s (the dongle's Wi-Fi); 0 = none.")
    ] = 0,
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
    if ota_pubkey is None:
        ota_pubkey = default_ota_pubkey()
    elif not ota_pubkey.is_file():
        raise InvalidInput("--ota-pubkey", f"{ota_pubkey}: no such file")
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
        mqtt_keepalive=mqtt_keepalive,
        ota_pubkey=ota_pubkey,
        ota_rate=ota_rate,
    )
    if ota_pubkey is None:
        typer.echo("fleet sim: no OTA public key (--ota-pubkey): the dongles will refuse OTA", err=True)
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


ControlOpt = Annotated[
    Path | None, typer.Option(help="Control socket of `fleet sim run` [default: $FLEET_DATA_DIR/sim/].")
]
DongleArg = Annotated[str, typer.Argument(help="Dongle id, e.g. esp-02f1ee000001.")]


def send_control(control: Path | None, words: list[str]) -> str:
    """One command line to the simulator; returns its reply without the leading ``ok``.

    A dongle id as the first word addresses that dongle. A reply that is not
    ``ok`` exits 1 with the simulator's own message, which names the problem.
    """
    control = control or default_sim_dir() / "control.sock"
    if words and words[0].startswith("esp-"):
        if not re.fullmatch(r"esp-[0-9a-f]{12}", words[0]):
            raise InvalidInput("dongle", f"{words[0]!r} is not a dongle id (esp- and 12 lowercase hex digits)")
        words = ["@" + words[0], *words[1:]]
    line = " ".join(words)
    if not line or "\n" in line:
        raise InvalidInput("command", "a control command is one non-empty line")
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
    if text != "ok" and not text.startswith("ok "):
        typer.echo(f"fleet sim: {text.removeprefix('err').strip() or 'no reply'}", err=True)
        raise typer.Exit(1)
    return text[3:]


@app.command("ctl")
def ctl(
    command: Annotated[list[str], typer.Argument(help="e.g. `esp-02f1ee000001 plug msc:size=8M` or `stats`")],
    control: ControlOpt = None,
) -> None:
    """Send one raw control command; a dongle id first addresses that dongle."""
    reply = send_control(control, list(command))
    typer.echo(f"ok {reply}" if reply else "ok")


@app.command("ls")
def ls(dongle: DongleArg, control: ControlOpt = None) -> None:
    """The devices plugged into a dongle (JSON)."""
    typer.echo(send_control(control, [dongle, "list"]))


@app.command("plug")
def plug(
    dongle: DongleArg,
    device: Annotated[
        str, typer.Argument(help=f"{', '.join(DEVICE_SPECS)}, or a full fleet-dongle spec (msc:size=8M)")
    ],
    control: ControlOpt = None,
) -> None:
    """Plug a virtual device into a dongle; prints its bus id."""
    typer.echo(send_control(control, [dongle, "plug", DEVICE_SPECS.get(device, device)]))


@app.command("unplug")
def unplug(
    dongle: DongleArg,
    busid: Annotated[str, typer.Argument(help="Bus id of the device, e.g. 1-2.")],
    control: ControlOpt = None,
) -> None:
    """Pull a device out of a dongle."""
    send_control(control, [dongle, "unplug", busid])


@app.command("kill")
def kill(dongle: DongleArg, control: ControlOpt = None) -> None:
    """Pull a dongle's power: no goodbye, so the broker publishes its Last Will. `start` powers it on."""
    send_control(control, [dongle, "crash"])


@app.command("start")
def start(dongle: DongleArg, control: ControlOpt = None) -> None:
    """Power a killed dongle on again: it boots from its OTA slots with the same devices plugged."""
    send_control(control, [dongle, "start"])


class Link(str, Enum):
    off = "off"
    on = "on"


@app.command("net")
def net(
    dongle: DongleArg,
    state: Annotated[Link, typer.Argument(help="off: cut the dongle's network; on: restore it.")],
    control: ControlOpt = None,
) -> None:
    """Cut or restore a dongle's network (cut, it sends nothing and the broker sees it gone after 1.5x the keepalive; restored, it reconnects by itself)."""
    send_control(control, [dongle, "net", state.value])
