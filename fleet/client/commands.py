"""``fleet login | ls | attach | detach | release | who | extend | lease | completion``.

Thin Typer adapters: parse arguments, call session/api, print. Every ClientError is
printed as ``fleet: <what is wrong>`` plus ``fix: <what to do>`` and becomes the exit status.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from fleet.client import credentials, session, state
from fleet.client.api import Api
from fleet.client.errors import EXIT_LEASE_ENDED, EXIT_USAGE, ClientError
from fleet.client.keeper import Keeper, spawn

F = TypeVar("F", bound=Callable[..., Any])


def _reported(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except ClientError as e:
            typer.echo(f"fleet: {e.message}", err=True)
            if e.fix:
                typer.echo(f"  fix: {e.fix}", err=True)
            raise typer.Exit(e.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _api() -> Api:
    return Api(credentials.load())


def _say(msg: str) -> None:
    typer.echo(f"fleet: {msg}", err=True)


# -- login ----------------------------------------------------------------------------
def login(
    url: Annotated[str, typer.Argument(help="the fleet server, e.g. http://fleet.lab:8080")],
    token: Annotated[str | None, typer.Option(help="API token (asked for when omitted)")] = None,
    user: Annotated[str | None, typer.Option(help="your user name, for `ls --mine` on older servers")] = None,
) -> None:
    """Store the server URL and your token in ~/.config/fleet (mode 600)."""
    url = credentials.normalize_url(url)
    if token is None:
        token = typer.prompt("API token", hide_input=True)
    token = token.strip()
    if not token:
        raise ClientError("the token is empty", exit_code=EXIT_USAGE)
    creds = credentials.Credentials(url, token, user)
    with Api(creds) as api:
        api.devices(limit=1)  # proves both reachability and the token
        user = api.whoami() or user
    path = credentials.save(credentials.Credentials(url, token, user))
    typer.echo(f"logged in to {url}{f' as {user}' if user else ''}; credentials in {path}")


# -- ls ---------------------------------------------------------------------------------
COLUMNS = [
    "DEVICE", "ID", "STATE", "HOLDER", "UNTIL", "DONGLE", "PORT", "SPEED", "VID:PID", "PRODUCT", "TAGS",
]


def _row(d: dict[str, Any]) -> list[str]:
    lease = d.get("lease") or {}
    return [
        d.get("name") or "-",
        str(d.get("id")),
        str(d.get("state")),
        lease.get("holder") or "-",
        lease.get("expires_at") or "-",
        str(d.get("dongle_id")),
        str(d.get("busid")),
        str(d.get("speed") or "-"),
        str(d.get("vid_pid") or "-"),
        str(d.get("product") or "-"),
        ",".join(d.get("tags") or []) or "-",
    ]


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows])
    return "\n".join(line.rstrip() for line in lines)


def _me(api: Api) -> str:
    me = api.whoami() or api.creds.user
    if not me:
        raise ClientError(
            "cannot tell who you are: the server has no /me endpoint and no user name is stored",
            fix="run `fleet login URL --user YOURNAME` or set FLEET_USER",
        )
    return me


def ls(
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="only devices with this tag (repeatable)")
    ] = None,
    free: Annotated[bool, typer.Option("--free", help="only devices nobody holds")] = False,
    mine: Annotated[bool, typer.Option("--mine", help="only devices you hold")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List devices: state, holder and until when, dongle, port, speed, tags."""
    with _api() as api:
        tags = tag or []
        devices = api.devices(tag=tags[0]) if tags else api.devices()
        devices = [d for d in devices if all(t in (d.get("tags") or []) for t in tags)]
        if free:
            devices = [d for d in devices if d.get("state") == "free"]
        if mine:
            me = _me(api)
            devices = [d for d in devices if (d.get("lease") or {}).get("holder") == me]
    if as_json:
        typer.echo(json.dumps(devices, indent=1))
        return
    if not devices:
        typer.echo("no devices match" if (tags or free or mine) else "no devices known yet")
        return
    typer.echo(table([_row(d) for d in devices], COLUMNS))


# -- attach -----------------------------------------------------------------------------
def _print_attached(a: session.Attached) -> None:
    att = a.attachment
    typer.echo(
        f"{att.device} attached: vhci port {att.vhci_port}, {a.local.describe()} "
        f"(from {att.dongle_id} {att.busid}, lease {att.lease_id} until {a.lease.get('expires_at')})"
    )


def attach(
    target: Annotated[str, typer.Argument(help="device name or id, or tag:TAG for the next free one")],
    for_: Annotated[str, typer.Option("--for", help="lease duration: 90s, 30m, 2h")] = "1h",
    wait: Annotated[bool, typer.Option("--wait", help="wait in line when it is taken")] = False,
    wait_timeout: Annotated[float | None, typer.Option(help="give up waiting after N seconds")] = None,
    foreground: Annotated[bool, typer.Option("--foreground", help="keep the lease from here")] = False,
    renew: Annotated[bool, typer.Option("--renew/--no-renew", help="renew the lease while attached")] = True,
    client_address: Annotated[
        str | None, typer.Option(help="the address the dongle sees for this machine (behind NAT)")
    ] = None,
    interval: Annotated[float, typer.Option(help="seconds between the keeper's checks")] = 1.0,
) -> None:
    """Lease a device, attach it through vhci-hcd and keep it while attached."""
    duration = session.parse_duration(for_)
    host = session.Host.from_env(client_address)
    with _api() as api:
        a = session.attach(api, host, target, duration, wait=wait, wait_timeout=wait_timeout)
        _print_attached(a)
        if foreground:
            _say("keeping the lease in the foreground; Ctrl-C detaches and releases")
            k = Keeper(api, host, a.attachment, duration_s=duration, renew=renew, interval_s=interval)
            try:
                rc = k.run()
            except KeyboardInterrupt:
                rc = 0
                k.stop()
            if rc == 0:
                session.detach(api, host, a.attachment)
                _say(f"{a.attachment.device} detached and released")
            raise typer.Exit(rc)
    pid = spawn(a.attachment, duration, renew=renew, interval_s=interval)
    _say(f"keeper running (pid {pid}); `fleet detach {a.attachment.device}` ends it")


def _attachment(ref: str) -> state.Attachment:
    att = state.find(ref)
    if att is None:
        raise ClientError(
            f"{ref} is not attached by fleet on this machine",
            fix="`fleet who` lists leases; `fleet release DEVICE` releases one that is not attached",
        )
    return att


def detach(device: Annotated[str, typer.Argument(help="device name or id")]) -> None:
    """usbip detach + release the lease."""
    att = _attachment(device)
    with _api() as api:
        session.detach(api, session.Host.from_env(), att)
    typer.echo(f"{att.device} detached and lease {att.lease_id} released")


def _my_leases(api: Api, device: str | None) -> list[dict[str, Any]]:
    me = api.whoami() or api.creds.user
    if me is None and device is None:
        me = _me(api)  # explains how to tell us who you are
    # Without a name, a device's active lease is the candidate; the service refuses
    # (with the holder's name) if it is not ours.
    return api.leases(state="active", device=device, holder=me)


def release(
    device: Annotated[str | None, typer.Argument(help="device name or id (default: all of yours)")] = None,
) -> None:
    """Release your lease(s); detaches first when attached here."""
    host = session.Host.from_env()
    with _api() as api:
        leases = _my_leases(api, device)
        if not leases:
            raise ClientError(f"you hold no active lease{f' on {device}' if device else ''}")
        for lease in leases:
            att = state.load(int(lease["id"]))
            if att is not None:
                session.detach(api, host, att)
            else:
                api.release(int(lease["id"]))
            typer.echo(f"released {session.device_label(lease['device'])} (lease {lease['id']})")


def who(
    device: Annotated[str | None, typer.Argument(help="one device (default: all active leases)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Who holds what, until when."""
    with _api() as api:
        leases = api.leases(state="active", device=device)
    if as_json:
        typer.echo(json.dumps(leases, indent=1))
        return
    if not leases:
        typer.echo(f"nobody holds {device}" if device else "no active leases")
        return
    rows = [
        [
            session.device_label(x["device"]),
            x["holder"],
            x.get("expires_at") or "-",
            str(x["id"]),
            ",".join(x.get("clients") or []),
        ]
        for x in leases
    ]
    typer.echo(table(rows, ["DEVICE", "HOLDER", "UNTIL", "LEASE", "CLIENTS"]))


def extend(
    device: Annotated[str, typer.Argument(help="device name or id")],
    for_: Annotated[str, typer.Option("--for", help="time to add: 30m, 2h")] = "30m",
) -> None:
    """Add time to your lease on a device."""
    seconds = session.parse_duration(for_)
    with _api() as api:
        leases = _my_leases(api, device)
        if not leases:
            raise ClientError(f"you hold no active lease on {device}")
        out = api.extend(int(leases[0]["id"]), seconds)
    typer.echo(f"{session.device_label(out['device'])}: lease {out['id']} now ends {out['expires_at']}")


# -- lease -- command ------------------------------------------------------------------
def lease(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="device name or id, or tag:TAG")],
    for_: Annotated[str, typer.Option("--for", help="lease duration: 30m, 1h")] = "1h",
    wait: Annotated[bool, typer.Option("--wait", help="wait in line when it is taken")] = False,
    wait_timeout: Annotated[float | None, typer.Option(help="give up waiting after N seconds")] = None,
    client_address: Annotated[
        str | None, typer.Option(help="the address the dongle sees for this machine")
    ] = None,
    interval: Annotated[float, typer.Option(help="seconds between lease checks")] = 1.0,
) -> None:
    """Lease, attach, run COMMAND (after --) with FLEET_* variables, then detach and release
    whatever happens. Exits with the command's status."""
    cmd = list(ctx.args)
    if not cmd:
        raise ClientError(
            "no command given: fleet lease DEVICE --for 1h -- COMMAND [ARGS...]", exit_code=EXIT_USAGE
        )
    duration = session.parse_duration(for_)
    host = session.Host.from_env(client_address)
    with _api() as api:
        a = session.attach(api, host, target, duration, wait=wait, wait_timeout=wait_timeout)
        _print_attached(a)
        keeper = Keeper(api, host, a.attachment, duration_s=duration, interval_s=interval)
        kt = threading.Thread(target=lambda: setattr(keeper, "rc", keeper.run()), daemon=True)
        keeper.rc = None  # type: ignore[attr-defined]
        rc = 1
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        child: subprocess.Popen[bytes] | None = None

        def forward(signum: int, _frame: object) -> None:
            if child is not None and child.poll() is None:
                child.send_signal(signum)

        try:
            for s in old:
                signal.signal(s, forward)
            kt.start()
            try:
                child = subprocess.Popen(cmd, env={**os.environ, **lease_env(a)})
            except OSError as e:
                raise ClientError(f"cannot run {cmd[0]}: {e.strerror}", exit_code=127) from None
            while True:
                try:
                    rc = child.wait()
                    break
                except KeyboardInterrupt:
                    continue
            rc = rc if rc >= 0 else 128 - rc
        finally:
            keeper.stop()
            kt.join(10)
            for s, h in old.items():
                signal.signal(s, h)
            if keeper.rc == EXIT_LEASE_ENDED:  # type: ignore[attr-defined]
                rc = rc or EXIT_LEASE_ENDED
            else:
                try:
                    session.detach(api, host, a.attachment)
                    _say(f"{a.attachment.device} detached and released")
                except ClientError as e:
                    _say(f"cleaning up {a.attachment.device} failed: {e}")
    raise typer.Exit(rc)


def lease_env(a: session.Attached) -> dict[str, str]:
    att, local = a.attachment, a.local
    env = {
        "FLEET_DEVICE": att.device,
        "FLEET_DEVICE_ID": str(att.device_id),
        "FLEET_LEASE_ID": str(att.lease_id),
        "FLEET_DONGLE": att.dongle_id,
        "FLEET_BUSID": att.busid,
        "FLEET_VHCI_PORT": "" if att.vhci_port is None else str(att.vhci_port),
        "FLEET_DEV_NODES": " ".join(local.nodes),
        "FLEET_DEV": local.nodes[0] if local.nodes else (local.usb_node or ""),
        "FLEET_USB_NODE": local.usb_node or "",
        "FLEET_LEASE_UNTIL": str(a.lease.get("expires_at") or ""),
    }
    return env


# -- completion ---------------------------------------------------------------------------
def completion(
    ctx: typer.Context,
    shell: Annotated[str, typer.Argument(help="bash, zsh or fish")],
) -> None:
    """Print the shell completion script: e.g. `fleet completion bash > /etc/bash_completion.d/fleet`."""
    # Typer vendors click and answers completion requests with its own classes and
    # instruction format (complete_bash); its script generator is the matching half.
    from typer._completion_shared import get_completion_script

    if shell not in ("bash", "zsh", "fish"):
        raise ClientError(f"no completion for {shell!r}: choose bash, zsh or fish", exit_code=EXIT_USAGE)
    root = ctx.find_root()
    prog = root.info_name or "fleet"
    var = "_" + prog.replace("-", "_").upper() + "_COMPLETE"
    typer.echo(get_completion_script(prog_name=prog, complete_var=var, shell=shell))


def register(app: typer.Typer) -> None:
    from typer._completion_classes import completion_init

    # The root app is built with add_completion=False, which skips this registration;
    # without it the shell's completion requests find no handler.
    completion_init()
    app.command("login")(_reported(login))
    app.command("ls")(_reported(ls))
    app.command("attach")(_reported(attach))
    app.command("detach")(_reported(detach))
    app.command("release")(_reported(release))
    app.command("who")(_reported(who))
    app.command("extend")(_reported(extend))
    app.command("lease", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
        _reported(lease)
    )
    app.command("completion")(_reported(completion))
    # Imported here: these modules build on this module's helpers; importing
    # firmware_cmds also adds `ota` to the dongles group.
    from fleet.client import firmware_cmds
    from fleet.client.dongles_cmds import dongles_app

    app.add_typer(dongles_app, name="dongles")
    firmware_cmds.register(app)
