"""Local record of what this user attached: one JSON file per lease under
``$XDG_STATE_HOME/fleet/attachments`` (default ``~/.local/state/fleet``).

attach writes it, the keeper updates it (vhci port after a re-attach), detach and
release read it to find the port and the keeper, and remove it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fleet"


def log_path() -> Path:
    """Where the keeper writes what happened (no desktop needed to read it)."""
    return state_dir() / "keeper.log"


@dataclass
class Attachment:
    lease_id: int
    device_id: int
    device: str  # the name the user knows (name, else dongle/busid)
    dongle_id: str
    host: str
    tcp_port: int
    busid: str
    vhci_port: int | None = None
    keeper_pid: int | None = None
    expires_at: str | None = None

    def matches(self, ref: str) -> bool:
        return ref in (self.device, str(self.device_id), f"{self.dongle_id}/{self.busid}", str(self.lease_id))


def _dir() -> Path:
    d = state_dir() / "attachments"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def save(a: Attachment) -> None:
    path = _dir() / f"{a.lease_id}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(a), indent=1) + "\n")
    os.replace(tmp, path)


def load(lease_id: int) -> Attachment | None:
    try:
        return _from(json.loads((_dir() / f"{lease_id}.json").read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def remove(lease_id: int) -> None:
    (_dir() / f"{lease_id}.json").unlink(missing_ok=True)


def all_attachments() -> list[Attachment]:
    out = []
    for f in sorted(_dir().glob("*.json")):
        try:
            out.append(_from(json.loads(f.read_text())))
        except (ValueError, TypeError):
            continue  # a half-written or foreign file is not ours to interpret
    return out


def find(ref: str) -> Attachment | None:
    return next((a for a in all_attachments() if a.matches(ref)), None)


def _from(d: dict[str, Any]) -> Attachment:
    return Attachment(**{k: d[k] for k in Attachment.__dataclass_fields__ if k in d})
