"""Small helpers shared by the services."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert
from sqlalchemy.orm import Session

from fleet.db.models import AuditEntry, Device
from fleet.domain.errors import InvalidInput

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def from_unix(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def audit(
    session: Session | Connection,
    *,
    at: datetime,
    actor: str,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
) -> None:
    # One prebuilt Core INSERT, not a pending ORM object nor a statement built
    # per call: the lease hot path writes one of these per operation.
    session.execute(
        _INSERT_AUDIT, {"at": at, "actor": actor, "action": action, "target": target[:128], "detail": detail}
    )


_INSERT_AUDIT = insert(AuditEntry.__table__)


def device_label(device: Device | Any) -> str:
    """How messages name a device: its user-given name, else its id and location."""
    return device.name or f"device {device.id} ({device.dongle_id} {device.busid})"


def clamp_page(limit: int, offset: int) -> tuple[int, int]:
    if limit < 1 or limit > 1000:
        raise InvalidInput("limit", f"must be between 1 and 1000, got {limit}")
    if offset < 0:
        raise InvalidInput("offset", f"must not be negative, got {offset}")
    return limit, offset
