"""Small helpers shared by the services."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from fleet.db.models import AuditEntry, Device
from fleet.domain.errors import InvalidInput

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def from_unix(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def audit(
    session: Session,
    *,
    at: datetime,
    actor: str,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
) -> None:
    # A plain INSERT, not a pending ORM object: no unit-of-work bookkeeping on
    # the lease hot path, where every change writes one of these.
    session.execute(
        insert(AuditEntry).values(at=at, actor=actor, action=action, target=target[:128], detail=detail)
    )


def device_label(device: Device) -> str:
    """How messages name a device: its user-given name, else its id and location."""
    return device.name or f"device {device.id} ({device.dongle_id} {device.busid})"


def clamp_page(limit: int, offset: int) -> tuple[int, int]:
    if limit < 1 or limit > 1000:
        raise InvalidInput("limit", f"must be between 1 and 1000, got {limit}")
    if offset < 0:
        raise InvalidInput("offset", f"must not be negative, got {offset}")
    return limit, offset
