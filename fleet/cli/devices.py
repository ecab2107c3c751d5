"""``fleet devices list | rename | tag | untag`` (direct database access)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from fleet.cli.context import CLI_ACTOR, services

app = typer.Typer(help="USB devices: list, name and tag them.", no_args_is_help=True)


def _line(d: dict[str, Any]) -> str:
    return (
        f"{d['id']:>5} {d['name'] or '-':<16} {d['state']:<11} {d['dongle_id']:<16} {d['busid']:<8} "
        f"{d['vid_pid']} {(d['product'] or '')[:24]:<24} {','.join(d['tags'])}"
    )


@app.command("list")
def list_(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="free, leased, attached, offline or quarantined")] = None,
    tag: Annotated[str | None, typer.Option()] = None,
    dongle: Annotated[str | None, typer.Option()] = None,
    q: Annotated[str | None, typer.Option(help="substring of name, product, serial ...")] = None,
    limit: Annotated[int, typer.Option()] = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List USB devices."""
    page = services(ctx).inventory.list_devices(state=state, tag=tag, dongle=dongle, q=q, limit=limit)
    if as_json:
        typer.echo(json.dumps(page, indent=2))
        return
    typer.echo(
        f"{'id':>5} {'name':<16} {'state':<11} {'dongle':<16} {'busid':<8} vid:pid   {'product':<24} tags"
    )
    for d in page["items"]:
        typer.echo(_line(d))
    if page["total"] > len(page["items"]):
        typer.echo(f"... {page['total'] - len(page['items'])} more (use --limit)")


@app.command()
def rename(ctx: typer.Context, device: str, name: str) -> None:
    """Give DEVICE (id or current name) the name NAME."""
    d = services(ctx).inventory.update_device(device, actor=CLI_ACTOR, name=name)
    typer.echo(f"device {d['id']} is now {d['name']}")


@app.command()
def tag(ctx: typer.Context, device: str, tags: list[str]) -> None:
    """Add TAGS to DEVICE."""
    d = services(ctx).inventory.update_device(device, actor=CLI_ACTOR, add_tags=tags)
    typer.echo(f"device {d['name'] or d['id']} tags: {', '.join(d['tags']) or '-'}")


@app.command()
def untag(ctx: typer.Context, device: str, tags: list[str]) -> None:
    """Remove TAGS from DEVICE."""
    d = services(ctx).inventory.update_device(device, actor=CLI_ACTOR, remove_tags=tags)
    typer.echo(f"device {d['name'] or d['id']} tags: {', '.join(d['tags']) or '-'}")
