"""``fleet dongles ls | show | events | reboot | power | config | commands``: dongle administration
over the REST API (reading needs any token; commands need an admin token).

The group is shared: fleet.client.firmware_cmds adds ``ota`` to it.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from fleet.client import credentials
from fleet.client.api import Api, _seg
from fleet.client.commands import _reported, table
from fleet.client.errors import EXIT_USAGE, ClientError

dongles_app = typer.Typer(help="Dongles: list, inspect and command them (admin).", no_args_is_help=True)

DongleArg = Annotated[str, typer.Argument(help="the dongle's id, e.g. esp-a1b2c3d4e5f6")]
Wait = Annotated[bool, typer.Option("--wait", help="wait for the dongle's answer (its cmd-result)")]
Timeout = Annotated[float, typer.Option(min=0.1, help="with --wait: give up after S seconds")]


class DonglesApi(Api):
    """The dongle and command endpoints on top of the CLI's REST client."""

    def _dc(self, method: str, path: str, **kw: Any) -> Any:
        try:
            return self._call(method, path, **kw)
        except ClientError as e:
            if e.extra.get("status") == 404 and e.fix and "fleet ls" in e.fix:
                e.fix = "`fleet dongles ls` lists the dongles, `fleet dongles show ID` their ports"
            raise

    def dongles(self, **filters: Any) -> list[dict[str, Any]]:
        return self._pages("/dongles", filters)

    def dongle(self, dongle_id: str) -> dict[str, Any]:
        return self._dc("GET", f"/dongles/{_seg(dongle_id)}")  # type: ignore[no-any-return]

    def send(self, dongle_id: str, what: str, body: dict[str, Any] | None) -> dict[str, Any]:
        return self._dc("POST", f"/dongles/{_seg(dongle_id)}/{what}", json=body)  # type: ignore[no-any-return]

    def command(self, request_id: str) -> dict[str, Any]:
        return self._dc("GET", f"/commands/{_seg(request_id)}")  # type: ignore[no-any-return]

    def commands(self, **filters: Any) -> list[dict[str, Any]]:
        return self._pages("/commands", filters)

    def events(self, **filters: Any) -> list[dict[str, Any]]:
        """Newest first, one page (``limit``)."""
        params = {k: v for k, v in filters.items() if v is not None}
        return self._dc("GET", "/events", params=params)["items"]  # type: ignore[no-any-return]


def _api() -> DonglesApi:
    return DonglesApi(credentials.load())


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True))


# -- reading ------------------------------------------------------------------------------
DONGLE_COLUMNS = ["DONGLE", "STATUS", "FIRMWARE", "CHIP", "IP", "DEVICES", "LAST SEEN"]


def ls(
    status: Annotated[
        str | None, typer.Option(help="only dongles with this status: online, offline, unknown")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List the dongles: status, firmware, chip, address, number of devices."""
    with _api() as api:
        items = api.dongles(status=status)
    if as_json:
        _print_json(items)
        return
    rows = [
        [
            d["id"],
            str(d.get("status")),
            str((d.get("firmware") or {}).get("version") or "-"),
            str((d.get("chip") or {}).get("model") or "-"),
            str(d.get("ip") or "-"),
            str(d.get("device_count", "-")),
            str(d.get("last_seen") or "-"),
        ]
        for d in items
    ]
    typer.echo(table(rows, DONGLE_COLUMNS))


def show(dongle: DongleArg) -> None:
    """Everything the service knows about one dongle, with its devices (JSON)."""
    with _api() as api:
        _print_json(api.dongle(dongle))


EVENT_COLUMNS = ["RECEIVED", "TYPE", "BUSID", "CLIENT", "DETAIL"]


def _event_row(e: dict[str, Any]) -> list[str]:
    detail = json.dumps(e["detail"], sort_keys=True, separators=(",", ":")) if e.get("detail") else "-"
    return [str(e.get("received_at")), e["type"], str(e.get("busid") or "-"), str(e.get("client") or "-"),
            detail if len(detail) <= 100 else detail[:97] + "..."]


def events(
    dongle: DongleArg,
    type: Annotated[
        str | None, typer.Option("--type", help="e.g. ota_progress, selftest, attached, import_refused")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="how many of the newest")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new events until Ctrl-C")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output (one object per line)")] = False,
) -> None:
    """What a dongle reported: hot-plug, attach/detach, refused imports, OTA steps, self-tests."""
    with _api() as api:
        api.dongle(dongle)  # an unknown dongle is an error, not an empty list
        shown = list(reversed(api.events(dongle=dongle, type=type, limit=limit)))
        if as_json:
            for e in shown:
                typer.echo(json.dumps(e, sort_keys=True))
        elif shown or not follow:
            typer.echo(table([_event_row(e) for e in shown], EVENT_COLUMNS))
        last = shown[-1]["id"] if shown else 0
        while follow:
            time.sleep(1)
            new = list(reversed(api.events(dongle=dongle, type=type, after_id=last, limit=1000)))
            for e in new:
                typer.echo(json.dumps(e, sort_keys=True) if as_json else "  ".join(_event_row(e)))
            if new:
                last = new[-1]["id"]


COMMAND_COLUMNS = ["REQUEST", "NAME", "STATE", "OUTCOME", "SENT", "ANSWERED", "ERROR"]


def commands(
    dongle: DongleArg,
    state: Annotated[str | None, typer.Option(help="sent, failed, acked or rejected")] = None,
    name: Annotated[str | None, typer.Option(help="grant, revoke, reboot, port-power, config or ota")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """The commands the service sent a dongle, newest first (admin)."""
    with _api() as api:
        api.dongle(dongle)  # an unknown dongle is an error, not an empty list
        items = api.commands(dongle=dongle, state=state, name=name)
    if as_json:
        _print_json(items)
        return
    rows = [
        [
            c["request_id"],
            c["name"],
            c["state"],
            str(c.get("outcome") or "-"),
            str(c.get("sent_at") or "-"),
            str(c.get("answered_at") or "-"),
            str(c.get("error") or "-"),
        ]
        for c in items
    ]
    typer.echo(table(rows, COMMAND_COLUMNS))


# -- commands -----------------------------------------------------------------------------
def _send(dongle: str, what: str, body: dict[str, Any] | None, wait: bool, timeout: float) -> None:
    with _api() as api:
        cmd = api.send(dongle, what, body)
        label = f"{cmd['name']} to {dongle}"
        if cmd["state"] == "failed":
            # recorded; the scheduler re-sends it when the broker is back
            typer.echo(f"{label}: request {cmd['request_id']} recorded, not sent yet ({cmd.get('error')})")
        else:
            typer.echo(f"{label}: request {cmd['request_id']} sent")
        if wait:
            cmd = _wait(api, cmd, timeout)
            detail = (cmd.get("result") or {}).get("detail")
            typer.echo(f"{label}: done" + (f" {json.dumps(detail, sort_keys=True)}" if detail else ""))


def _wait(api: DonglesApi, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Poll the command until the dongle answers; the answered command, or ClientError."""
    deadline = time.monotonic() + timeout
    while cmd["state"] not in ("acked", "rejected"):
        if time.monotonic() >= deadline:
            raise ClientError(
                f"{cmd['name']} to {cmd['dongle_id']}: no answer within {timeout:g} s (state {cmd['state']})",
                fix=f"`fleet dongles commands {cmd['dongle_id']}` shows it when the answer comes",
            )
        time.sleep(0.2)
        cmd = api.command(cmd["request_id"])
    if cmd["state"] == "rejected":
        raise ClientError(
            f"{cmd['dongle_id']} refused {cmd['name']}: {cmd.get('error') or 'no reason given'}"
        )
    return cmd


def reboot(
    dongle: DongleArg,
    reason: Annotated[
        str | None, typer.Option(help="why (at most 128 characters; the dongle logs it)")
    ] = None,
    wait: Wait = False,
    timeout: Timeout = 30,
) -> None:
    """Restart a dongle (admin). Its devices drop off and come back."""
    _send(dongle, "reboot", {"reason": reason} if reason is not None else None, wait, timeout)


def power(
    dongle: DongleArg,
    busid: Annotated[str, typer.Argument(help="the port, e.g. 1-1 or 1-2.3 (`fleet dongles show ID`)")],
    action: Annotated[str, typer.Option(help="on, off or cycle (off, then on again)")] = "cycle",
    wait: Wait = False,
    timeout: Timeout = 30,
) -> None:
    """Switch or power-cycle the VBUS of one port of a dongle (admin)."""
    _send(dongle, f"ports/{_seg(busid)}/power", {"action": action}, wait, timeout)


def _filter(text: str, option: str) -> dict[str, int]:
    """``VID:PID`` (hex) or ``class:N`` (decimal or 0x hex) as a config filter entry."""
    try:
        if text.lower().startswith("class:"):
            return {"class": int(text[6:], 0)}
        vid, sep, pid = text.partition(":")
        if sep:
            return {"vid": int(vid, 16), "pid": int(pid, 16)}
    except ValueError:
        pass
    raise ClientError(
        f"{option} {text!r}: give VID:PID in hex (1366:0101) or class:N (class:3)", exit_code=EXIT_USAGE
    )


def config(
    dongle: DongleArg,
    telemetry_interval: Annotated[
        int | None, typer.Option("--telemetry-interval", help="seconds between telemetry messages, 1..3600")
    ] = None,
    enforce_grants: Annotated[
        bool | None,
        typer.Option("--enforce-grants/--no-enforce-grants", help="refuse USB/IP imports without a grant"),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="error, warn, info or debug")] = None,
    allow: Annotated[
        list[str] | None, typer.Option("--allow", help="export only these: VID:PID or class:N (repeatable)")
    ] = None,
    deny: Annotated[
        list[str] | None, typer.Option("--deny", help="never export these: VID:PID or class:N (repeatable)")
    ] = None,
    mqtt_url: Annotated[str | None, typer.Option(help="the broker the dongle connects to")] = None,
    wait: Wait = False,
    timeout: Timeout = 30,
) -> None:
    """Change a dongle's configuration (admin); what is not given stays as last sent."""
    body: dict[str, Any] = {}
    if telemetry_interval is not None:
        body["telemetry_interval_s"] = telemetry_interval
    if enforce_grants is not None:
        body["enforce_grants"] = enforce_grants
    if log_level is not None:
        body["log_level"] = log_level
    filters = {
        key: [_filter(t, f"--{key}") for t in given]
        for key, given in (("allow", allow), ("deny", deny))
        if given
    }
    if filters:
        body["filters"] = filters
    if mqtt_url is not None:
        body["mqtt"] = {"url": mqtt_url}
    _send(dongle, "config", body, wait, timeout)


dongles_app.command("ls")(_reported(ls))
dongles_app.command("show")(_reported(show))
dongles_app.command("events")(_reported(events))
dongles_app.command("reboot")(_reported(reboot))
dongles_app.command("power")(_reported(power))
dongles_app.command("config")(_reported(config))
dongles_app.command("commands")(_reported(commands))
