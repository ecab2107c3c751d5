"""Reading the audit log (rows are written by the services that change things)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fleet.db.models import AuditEntry
from fleet.services.common import clamp_page
from fleet.services.views import audit_view


class AuditService:
    def __init__(self, session_factory: sessionmaker[Session]):
        self._sf = session_factory

    def list(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> dict[str, Any]:
        limit, offset = clamp_page(limit, offset)
        q = select(AuditEntry)
        if actor:
            q = q.where(AuditEntry.actor == actor)
        if action:
            # "lease" matches lease.acquire, lease.release, ...
            q = q.where(
                AuditEntry.action.startswith(action) if "." not in action else AuditEntry.action == action
            )
        if target:
            q = q.where(AuditEntry.target == target)
        if since:
            q = q.where(AuditEntry.at >= since)
        with self._sf() as s:
            total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
            rows = s.scalars(q.order_by(AuditEntry.id.desc()).limit(limit).offset(offset)).all()
            return {"items": [audit_view(a) for a in rows], "total": total, "limit": limit, "offset": offset}
