"""``fleet users add | list | token | revoke-token`` (direct database access)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from fleet.cli.context import CLI_ACTOR, services

app = typer.Typer(help="Users and API tokens.", no_args_is_help=True)


@app.command()
def add(
    ctx: typer.Context,
    name: str,
    role: Annotated[str, typer.Option(help="admin or user")] = "user",
) -> None:
    """Create a user; the new API token is printed as the last line."""
    user, token = services(ctx).users.add(name, role, actor=CLI_ACTOR)
    typer.echo(f"created user {user['name']} ({user['role']}); API token (shown once):")
    typer.echo(token)


@app.command("list")
def list_(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List users and their tokens (ids and prefixes only)."""
    items = services(ctx).users.list()
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    for u in items:
        active = [t for t in u["tokens"] if not t["revoked_at"]]
        ids = ", ".join(f"{t['id']}:{t['prefix']}…" for t in active) or "-"
        typer.echo(f"{u['name']:<20} {u['role']:<6} tokens {ids}")


@app.command()
def token(ctx: typer.Context, name: str) -> None:
    """Issue another API token for NAME (printed as the last line)."""
    tok = services(ctx).users.issue_token(name, actor=CLI_ACTOR)
    typer.echo(f"new API token for {name} (shown once):")
    typer.echo(tok)


@app.command("revoke-token")
def revoke_token(
    ctx: typer.Context, token_or_id: Annotated[str, typer.Argument(metavar="TOKEN_OR_ID")]
) -> None:
    """Revoke a token, given the token itself or its id from `fleet users list`."""
    res = services(ctx).users.revoke_token(token_or_id, actor=CLI_ACTOR)
    typer.echo(f"revoked token {res['id']} ({res['prefix']}…) of {res['user']}")
