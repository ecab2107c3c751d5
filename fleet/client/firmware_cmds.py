"""``fleet firmware add | ls | show | rm | pubkey | sim-image`` and ``fleet dongles ota``.

Thin Typer adapters over the REST API with the stored token (``sim-image`` is
local). Importing this module adds ``ota`` to the shared ``fleet dongles`` group;
``register(app)`` adds the ``firmware`` group to the root command.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fleet.client import credentials
from fleet.client.commands import _reported, table
from fleet.client.dongles_cmds import DonglesApi, dongles_app
from fleet.client.errors import EXIT_USAGE, ClientError
from fleet.domain.errors import InvalidInput
from fleet.domain.firmware import SIM_FAULTS, sim_image

firmware_app = typer.Typer(
    help="Firmware images for OTA: upload, list, remove; the service's signing key.", no_args_is_help=True
)

# Outcomes after which an OTA command will not change any more.
DONE_OK = {"confirmed"}
DONE_BAD = {"refused", "failed", "rolled_back"}


class FirmwareApi(DonglesApi):
    """The firmware endpoints on top of the dongles' REST client (``send``, ``command``)."""

    def _fw(self, method: str, path: str, **kw: Any) -> Any:
        try:
            return self._call(method, path, **kw)
        except ClientError as e:
            if e.extra.get("status") == 404 and e.fix and "fleet ls" in e.fix:
                e.fix = "`fleet firmware ls` lists the images"
            raise

    def upload(self, data: bytes, filename: str | None, notes: str | None) -> dict[str, Any]:
        params = {k: v for k, v in (("filename", filename), ("notes", notes)) if v is not None}
        return self._fw(  # type: ignore[no-any-return]
            "POST",
            "/firmware",
            content=data,
            params=params,
            headers={"Content-Type": "application/octet-stream"},
        )

    def firmware_list(self, **filters: Any) -> list[dict[str, Any]]:
        return self._pages("/firmware", filters)

    def firmware(self, firmware_id: int) -> dict[str, Any]:
        return self._fw("GET", f"/firmware/{int(firmware_id)}")  # type: ignore[no-any-return]

    def remove(self, firmware_id: int) -> dict[str, Any]:
        return self._fw("DELETE", f"/firmware/{int(firmware_id)}")  # type: ignore[no-any-return]

    def signing_key(self) -> dict[str, Any]:
        return self._fw("GET", "/firmware/signing-key")  # type: ignore[no-any-return]

    def ota(self, dongle_id: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.send(dongle_id, "ota", body)
        except ClientError as e:
            if "running" in e.extra and "requested" in e.extra:  # the service refused a downgrade
                e.fix = "add --allow-downgrade to install it anyway"
            raise


def _api() -> FirmwareApi:
    return FirmwareApi(credentials.load())


def _describe(f: dict[str, Any]) -> str:
    return f"firmware {f['id']}: {f['chip']} {f['version']}, {f['size']} bytes, sha256 {f['sha256']}"


# -- fleet firmware ... -------------------------------------------------------------------
@firmware_app.command("add")
@_reported
def add(
    file: Annotated[Path, typer.Argument(help="the image: an ESP app .bin or a posix-sim image")],
    notes: Annotated[str | None, typer.Option(help="free text shown with the image")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the registry's record as JSON")] = False,
) -> None:
    """Upload an image to the registry (admin). The same bytes again are not stored twice."""
    try:
        data = file.read_bytes()
    except OSError as e:
        raise ClientError(f"cannot read {file}: {e.strerror or e}", exit_code=EXIT_USAGE) from None
    with _api() as api:
        known = api.firmware_list(sha256=hashlib.sha256(data).hexdigest())
        view = api.upload(data, file.name, notes)
    if as_json:
        typer.echo(json.dumps(view, indent=1))
        return
    known = " (already registered)" if known else ""
    typer.echo(f"{_describe(view)}{known}")


COLUMNS = ["ID", "VERSION", "CHIP", "SIZE", "SECURE", "REVS", "SHA256", "UPLOADED", "BY", "FILE"]


@firmware_app.command("ls")
@_reported
def ls(
    chip: Annotated[str | None, typer.Option(help="only images for this chip")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List the registered images, newest first."""
    with _api() as api:
        items = api.firmware_list(chip=chip)
    if as_json:
        typer.echo(json.dumps(items, indent=1))
        return
    if not items:
        typer.echo("no firmware registered" + (f" for {chip}" if chip else ""))
        return
    rows = [
        [
            str(f["id"]),
            f["version"],
            f["chip"],
            str(f["size"]),
            str(f["secure_version"]),
            f"{f['min_rev']}-{f['max_rev']}",
            f["sha256"][:12],
            f["uploaded_at"] or "-",
            f["uploaded_by"],
            f["filename"] or "-",
        ]
        for f in items
    ]
    typer.echo(table(rows, COLUMNS))


@firmware_app.command("show")
@_reported
def show(firmware_id: Annotated[int, typer.Argument(help="the image's id")]) -> None:
    """Everything the registry knows about one image, with its download URL."""
    with _api() as api:
        typer.echo(json.dumps(api.firmware(firmware_id), indent=1))


@firmware_app.command("rm")
@_reported
def rm(firmware_id: Annotated[int, typer.Argument(help="the image's id")]) -> None:
    """Remove an image and its file (admin)."""
    with _api() as api:
        view = api.remove(firmware_id)
    typer.echo(f"removed {_describe(view)}")


@firmware_app.command("pubkey")
@_reported
def pubkey() -> None:
    """Print the service's OTA public key (PEM), for ``fleet-dongle --ota-pubkey`` or provisioning."""
    with _api() as api:
        typer.echo(api.signing_key()["public_key_pem"], nl=False)


@firmware_app.command("sim-image")
@_reported
def sim_image_cmd(
    version: Annotated[str, typer.Option("--version", help="SemVer, e.g. 0.5.0")],
    output: Annotated[Path, typer.Option("--output", "-o", help="where to write the image")],
    fault: Annotated[
        str | None, typer.Option(help=f"make the booted firmware misbehave: {', '.join(SIM_FAULTS)}")
    ] = None,
    payload_size: Annotated[int, typer.Option(min=0, max=16 * 1024 * 1024, help="payload bytes")] = 1000,
    secure_version: Annotated[int, typer.Option(min=0)] = 0,
    min_rev: Annotated[int, typer.Option(min=0, max=65535)] = 0,
    max_rev: Annotated[int, typer.Option(min=0, max=65535)] = 99,
) -> None:
    """Build a posix-sim image for the simulated dongle (local; no server involved)."""
    # A recognisable, deterministic payload (the agent's test fixture uses the same pattern).
    payload = bytes((3 + 7 * i) & 0xFF for i in range(payload_size))
    try:
        data = sim_image(
            version,
            secure_version=secure_version,
            min_rev=min_rev,
            max_rev=max_rev,
            payload=payload,
            fault=fault,
        )
    except InvalidInput as e:
        raise ClientError(e.message, exit_code=EXIT_USAGE) from None
    try:
        output.write_bytes(data)
    except OSError as e:
        raise ClientError(f"cannot write {output}: {e.strerror or e}", exit_code=EXIT_USAGE) from None
    typer.echo(f"{output}: posix-sim {version}, {len(data)} bytes" + (f", fault {fault}" if fault else ""))


def register(app: typer.Typer) -> None:
    app.add_typer(firmware_app, name="firmware")


# -- fleet dongles ota ---------------------------------------------------------------------
def _progress_line(cmd: dict[str, Any]) -> str:
    p = cmd.get("progress") or {}
    parts = [str(cmd.get("outcome") or cmd.get("state")).replace("_", " ")]
    if p.get("step"):
        parts.append(f"step {p['step']}")
    if p.get("total"):
        parts.append(f"{p.get('bytes', 0)}/{p['total']} bytes")
    if p.get("reason"):
        parts.append(f"({p['reason']})")
    return " ".join(parts)


def _reason(cmd: dict[str, Any]) -> str:
    p = cmd.get("progress") or {}
    result = cmd.get("result") or {}
    return str(p.get("reason") or result.get("error") or cmd.get("error") or "no reason given")


def ota(
    dongle: Annotated[str, typer.Argument(help="the dongle's id, e.g. esp-a1b2c3d4e5f6")],
    version: Annotated[
        str | None, typer.Option("--version", help="the registered version for its chip")
    ] = None,
    firmware: Annotated[int | None, typer.Option("--firmware", help="the registered image's id")] = None,
    allow_downgrade: Annotated[
        bool, typer.Option("--allow-downgrade", help="also install an older or the same version")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="follow the update until it is confirmed or fails")
    ] = False,
    timeout: Annotated[float, typer.Option(min=1, help="with --wait: give up after S seconds")] = 600,
) -> None:
    """Update a dongle's firmware over the air (admin): sends a signed manifest."""
    if (version is None) == (firmware is None):
        raise ClientError("give exactly one of --version V or --firmware ID", exit_code=EXIT_USAGE)
    body: dict[str, Any] = {"allow_downgrade": allow_downgrade}
    body.update({"version": version} if version is not None else {"firmware_id": firmware})
    with _api() as api:
        cmd = api.ota(dongle, body)
        payload = cmd.get("payload") or {}
        if cmd["state"] == "failed":
            # recorded; the scheduler re-sends it when the broker is back
            typer.echo(
                f"ota {payload.get('version')} to {dongle}: request {cmd['request_id']} recorded, "
                f"not sent yet ({cmd.get('error')})"
            )
        else:
            typer.echo(f"ota {payload.get('version')} sent to {dongle}: request {cmd['request_id']}")
        if not wait:
            return
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            cmd = api.command(cmd["request_id"])
            line = _progress_line(cmd)
            if line != last:
                typer.echo(f"  {line}")
                last = line
            outcome = cmd.get("outcome")
            if outcome in DONE_OK:
                typer.echo(f"{dongle} runs {payload.get('version')} (confirmed)")
                return
            if outcome in DONE_BAD or (outcome is None and cmd.get("state") == "rejected"):
                what = (outcome or "refused").replace("_", " ")
                raise ClientError(f"ota {payload.get('version')} to {dongle} {what}: {_reason(cmd)}")
            if time.monotonic() >= deadline:
                raise ClientError(
                    f"ota to {dongle}: no final outcome within {timeout:g} s (last: {line})",
                    fix=f"check later with GET /api/v1/commands/{cmd['request_id']}",
                )
            time.sleep(0.5)


dongles_app.command("ota")(_reported(ota))
