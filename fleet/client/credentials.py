"""Where the CLI finds its server and token.

Precedence: FLEET_URL / FLEET_TOKEN (CI jobs) over ``$XDG_CONFIG_HOME/fleet/credentials.json``
(default ``~/.config/fleet``), written by ``fleet login`` with mode 600 because the token
is as good as a password.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fleet.client.errors import EXIT_USAGE, ClientError


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "fleet"


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


@dataclass(frozen=True)
class Credentials:
    url: str
    token: str
    user: str | None = None


def normalize_url(url: str) -> str:
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(
            f"the server URL must look like http(s)://HOST[:PORT], got {url!r}", exit_code=EXIT_USAGE
        )
    if parts.query or parts.fragment:
        raise ClientError(f"the server URL must not carry a query or fragment: {url!r}", exit_code=EXIT_USAGE)
    return url.rstrip("/")


def save(creds: Credentials) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    # Create with 600 from the start: a chmod after writing would leave a window.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": creds.url, "token": creds.token, "user": creds.user}, f, indent=1)
        f.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def _stored() -> dict[str, object]:
    path = credentials_path()
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise ClientError(f"{path} is not valid JSON ({e})", fix="run `fleet login URL` again") from None
    if not isinstance(data, dict):
        raise ClientError(f"{path} must hold a JSON object", fix="run `fleet login URL` again")
    return data


def load() -> Credentials:
    stored = _stored()
    url = os.environ.get("FLEET_URL") or stored.get("url")
    token = os.environ.get("FLEET_TOKEN") or stored.get("token")
    user = os.environ.get("FLEET_USER") or stored.get("user")
    if not url or not isinstance(url, str):
        raise ClientError(
            "no fleet server configured", fix="run `fleet login http://SERVER:8080` or set FLEET_URL"
        )
    if not token or not isinstance(token, str):
        raise ClientError("no API token configured", fix="run `fleet login URL` or set FLEET_TOKEN")
    return Credentials(normalize_url(url), token.strip(), user if isinstance(user, str) else None)
