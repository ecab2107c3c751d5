"""Dongle commands: recorded in the database first, then handed to MQTT.

A command row is written in the same transaction as the change that needs it
(a lease start writes its ``grant``), so the intent is never lost. Publishing
happens after commit, outside any transaction; if the transport refuses, the
row turns ``failed`` with the error and ``resend_failed`` (run by the
scheduler) tries again while the command still matters.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from fleet.db.models import Command, Lease
from fleet.domain.errors import InvalidInput
from fleet.domain.model import CommandState, LeaseState
from fleet.ports import CommandPublisher
from fleet.services.common import Clock, clamp_page, utcnow
from fleet.services.views import command_view

log = logging.getLogger(__name__)

# Built once: a Core INSERT on the table skips the ORM bulk-insert machinery.
_INSERT_COMMAND = insert(Command.__table__).returning(Command.__table__.c.id)

MAX_ATTEMPTS = 20


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A recorded command waiting to be published after its transaction commits."""

    id: int
    dongle_id: str
    name: str
    payload: dict[str, Any]


class NoTransport:
    """Publisher used when the service runs without MQTT (``--no-mqtt``)."""

    def publish(self, dongle_id: str, name: str, payload: dict[str, Any]) -> None:
        from fleet.domain.errors import TransportError

        raise TransportError("no MQTT transport is configured (service started with --no-mqtt)")


class CommandService:
    def __init__(
        self, session_factory: sessionmaker[Session], publisher: CommandPublisher, clock: Clock = utcnow
    ):
        self._sf = session_factory
        self.publisher = publisher
        self._clock = clock

    def record(
        self,
        session: Session | Connection,
        *,
        dongle_id: str,
        name: str,
        args: dict[str, Any],
        lease_id: int | None = None,
    ) -> Outgoing:
        row = self.draft(dongle_id=dongle_id, name=name, args=args, lease_id=lease_id)
        cid = session.execute(_INSERT_COMMAND, row).scalar_one()
        return Outgoing(cid, dongle_id, name, row["payload"])

    def draft(
        self, *, dongle_id: str, name: str, args: dict[str, Any], lease_id: int | None = None
    ) -> dict[str, Any]:
        """The ``commands`` row for a new command, for callers that insert it
        themselves (the lease fast path writes it in the same statement as the lease)."""
        now = self._clock()
        payload = {"v": 1, "request_id": str(uuid.uuid4()), "issued_at": round(now.timestamp(), 3), **args}
        return {
            "request_id": payload["request_id"],
            "dongle_id": dongle_id,
            "name": name,
            "lease_id": lease_id,
            "payload": payload,
            "state": CommandState.SENT.value,
            "attempts": 1,
            "created_at": now,
            "sent_at": now,
        }

    def dispatch(self, commands: Sequence[Outgoing | Command]) -> None:
        """Publish commands recorded by a committed transaction."""
        failed: list[tuple[int, str]] = []
        for cmd in commands:
            try:
                self.publisher.publish(cmd.dongle_id, cmd.name, cmd.payload)
            except Exception as exc:  # any transport failure is recorded, not raised
                log.warning(
                    "command %s %s to %s not sent: %s",
                    cmd.name,
                    cmd.payload.get("request_id"),
                    cmd.dongle_id,
                    exc,
                )
                failed.append((cmd.id, str(exc) or type(exc).__name__))
        if failed:
            with self._sf.begin() as s:
                for cid, err in failed:
                    s.execute(
                        update(Command)
                        .where(Command.id == cid, Command.state == CommandState.SENT)
                        .values(state=CommandState.FAILED, error=err[:2000])
                    )

    def resend_failed(self) -> int:
        """Re-send failed commands that still matter; returns how many went out.

        A ``grant`` matters while its lease is active; a ``revoke`` matters
        while no newer lease is active on the device. Re-sending keeps the same
        ``request_id`` so the dongle can recognise a duplicate.
        """
        with self._sf() as s:
            rows = s.execute(
                select(Command, Lease.state)
                .outerjoin(Lease, Lease.id == Command.lease_id)
                .where(Command.state == CommandState.FAILED, Command.attempts < MAX_ATTEMPTS)
                .order_by(Command.id)
                .limit(200)
            ).all()
        due = [c for c, lstate in rows if c.name != "grant" or lstate == LeaseState.ACTIVE]
        sent = 0
        for cmd in due:
            now = self._clock()
            try:
                self.publisher.publish(cmd.dongle_id, cmd.name, cmd.payload)
                values: dict[str, Any] = {"state": CommandState.SENT, "error": None, "sent_at": now}
                sent += 1
            except Exception as exc:
                values = {"error": (str(exc) or type(exc).__name__)[:2000]}
            with self._sf.begin() as s:
                s.execute(
                    update(Command)
                    .where(Command.id == cmd.id, Command.state == CommandState.FAILED)
                    .values(attempts=Command.attempts + 1, **values)
                )
        return sent

    @staticmethod
    def apply_result(session: Session, dongle_id: str, payload: dict[str, Any], at: Any) -> bool:
        """Record a dongle's ``cmd-result``; False when no such command was sent to it."""
        ok = bool(payload.get("ok"))
        detail = {k: payload[k] for k in ("error", "detail") if k in payload}
        res = session.execute(
            update(Command)
            .where(Command.request_id == str(payload.get("request_id")), Command.dongle_id == dongle_id)
            .values(
                state=CommandState.ACKED if ok else CommandState.REJECTED,
                result={"ok": ok, **detail},
                error=None if ok else str(payload.get("error", ""))[:2000],
                answered_at=at,
            )
        )
        return bool(res.rowcount)

    def list(
        self,
        *,
        dongle_id: str | None = None,
        state: str | None = None,
        name: str | None = None,
        lease_id: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> dict[str, Any]:
        limit, offset = clamp_page(limit, offset)
        if state is not None and state not in CommandState.__members__.values():
            raise InvalidInput("state", f"{state!r} is not one of {', '.join(CommandState)}")
        q = select(Command)
        if dongle_id:
            q = q.where(Command.dongle_id == dongle_id)
        if state:
            q = q.where(Command.state == state)
        if name:
            q = q.where(Command.name == name)
        if lease_id is not None:
            q = q.where(Command.lease_id == lease_id)
        with self._sf() as s:
            total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
            rows = s.scalars(q.order_by(Command.id.desc()).limit(limit).offset(offset)).all()
            return {
                "items": [command_view(c) for c in rows],
                "total": total,
                "limit": limit,
                "offset": offset,
            }
