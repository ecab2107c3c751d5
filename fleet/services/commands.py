"""Dongle commands: recorded in the database first, then handed to MQTT.

A command row is written in the same transaction as the change that needs it
(a lease start writes its ``grant``), so the intent is never lost. Publishing
happens after commit, outside any transaction; if the transport refuses, the
row turns ``failed`` with the error and ``resend_failed`` (run by the
scheduler) tries again while the command still matters.

The admin commands (``reboot``, ``port-power``, ``config``) go only to online
dongles: they are not queued for a dongle that is away, since a reboot or a
power cycle hours later would surprise whoever uses the dongle by then.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, case, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from fleet import contracts
from fleet.db.models import Command, Device, Dongle, Lease
from fleet.domain import rules
from fleet.domain.errors import Conflict, InvalidInput, NotFound
from fleet.domain.model import SYSTEM, CommandState, DongleStatus, LeaseState, Principal
from fleet.ports import CommandPublisher
from fleet.services.common import Clock, audit, clamp_page, utcnow
from fleet.services.views import MASK, command_view, masked

log = logging.getLogger(__name__)

# Built once: a Core INSERT on the table skips the ORM bulk-insert machinery.
_INSERT_COMMAND = insert(Command.__table__).returning(Command.__table__.c.id)

MAX_ATTEMPTS = 20

# What a config document holds besides v/request_id/issued_at/version, and the
# values a dongle gets for what neither the request nor an earlier config set.
CONFIG_FIELDS = ("telemetry_interval_s", "enforce_grants", "log_level", "filters", "mqtt")
CONFIG_DEFAULTS: dict[str, Any] = {"telemetry_interval_s": 10, "enforce_grants": True, "log_level": "info"}
PORT_POWER_ACTIONS = ("on", "off", "cycle")
# A reboot or power cycle carried out long after it was asked for surprises whoever
# uses the dongle by then: commands other than a lease's are re-sent only this long.
ADMIN_RESEND_WINDOW = timedelta(minutes=10)
_LEASE_COMMANDS = ("grant", "revoke")


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
        self,
        session_factory: sessionmaker[Session],
        publisher: CommandPublisher,
        clock: Clock = utcnow,
        *,
        dongle_mqtt_url: str = "mqtt://127.0.0.1:1883",
    ):
        self._sf = session_factory
        self.publisher = publisher
        self._clock = clock
        #: the broker a config document points dongles at unless told otherwise
        self.dongle_mqtt_url = dongle_mqtt_url

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
        while no newer lease is active on the device. Any other command (reboot,
        port-power, config, ota) matters only while its dongle is online and for
        ``ADMIN_RESEND_WINDOW`` after it was asked for: those are not queued.
        Re-sending keeps the same ``request_id`` so the dongle can recognise a
        duplicate.
        """
        with self._sf() as s:
            rows = s.execute(
                select(Command, Lease.state, Dongle.status)
                .outerjoin(Lease, Lease.id == Command.lease_id)
                .join(Dongle, Dongle.id == Command.dongle_id)
                .where(Command.state == CommandState.FAILED, Command.attempts < MAX_ATTEMPTS)
                .order_by(Command.id)
                .limit(200)
            ).all()
        since = self._clock() - ADMIN_RESEND_WINDOW
        due = [
            c
            for c, lstate, dstatus in rows
            if (c.name != "grant" or lstate == LeaseState.ACTIVE)
            and (c.name in _LEASE_COMMANDS or (dstatus == DongleStatus.ONLINE and c.created_at >= since))
        ]
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
        values: dict[str, Any] = {
            "state": CommandState.ACKED if ok else CommandState.REJECTED,
            "result": {"ok": ok, **detail},
            "error": None if ok else str(payload.get("error", ""))[:2000],
            "answered_at": at,
        }
        if not ok:
            # An ota answered with an error was refused; a failed download has already
            # said so with its own ota_progress event, which the answer must not overwrite.
            values["outcome"] = case(
                (
                    (Command.name == "ota")
                    & func.coalesce(Command.outcome, "").notin_(("failed", "refused")),
                    "refused",
                ),
                else_=Command.outcome,
            )
        res = session.execute(
            update(Command)
            .where(Command.request_id == str(payload.get("request_id")), Command.dongle_id == dongle_id)
            .values(**values)
        )
        return bool(res.rowcount)

    # -- admin commands ------------------------------------------------------------------
    def get(self, request_id: str) -> dict[str, Any]:
        with self._sf() as s:
            cmd = s.scalar(select(Command).where(Command.request_id == request_id))
            if cmd is None:
                raise NotFound(f"no command {request_id!r}", field="request_id")
            return command_view(cmd)

    def reboot(
        self, dongle_id: str, *, reason: str | None = None, actor: Principal = SYSTEM
    ) -> dict[str, Any]:
        args = {} if reason is None else {"reason": reason}
        return self._send_admin(dongle_id, "reboot", args, actor, action="dongle.reboot")

    def port_power(
        self, dongle_id: str, busid: str, *, action: str = "cycle", actor: Principal = SYSTEM
    ) -> dict[str, Any]:
        rules.busid(busid)
        if action not in PORT_POWER_ACTIONS:
            raise InvalidInput("action", f"{action!r} is not one of {', '.join(PORT_POWER_ACTIONS)}")

        def known_port(s: Session) -> None:
            # Any port the dongle ever reported, present or not: cycling the power of a
            # port whose device dropped off is what brings such a device back.
            if s.scalar(
                select(Device.id).where(Device.dongle_id == dongle_id, Device.busid == busid).limit(1)
            ):
                return
            raise NotFound(f"dongle {dongle_id} has no port {busid}", field="busid")

        return self._send_admin(
            dongle_id,
            "port-power",
            {"busid": busid, "action": action},
            actor,
            action="dongle.port_power",
            check=known_port,
        )

    def configure(
        self, dongle_id: str, changes: dict[str, Any], *, actor: Principal = SYSTEM
    ) -> dict[str, Any]:
        """Send ``dongle_id`` a whole config document: ``changes`` over the last one it was sent.

        Top-level fields replace; ``mqtt`` and ``filters`` merge key by key, where a
        null removes the key (so a new broker URL keeps the stored password). The
        version is one above any config this dongle was ever sent: it refuses an
        older version, and the same one with other content.
        """
        for key in changes:
            if key not in CONFIG_FIELDS:
                raise InvalidInput(key, f"unknown config field; known: {', '.join(CONFIG_FIELDS)}")
        for key in ("mqtt", "filters"):
            if changes.get(key) is not None and not isinstance(changes[key], dict):
                raise InvalidInput(key, "must be an object")

        def document(s: Session) -> dict[str, Any]:
            newest = s.scalar(_LAST_CONFIG.where(Command.dongle_id == dongle_id))
            # The base is the last config the dongle did not refuse: a document it
            # refused (a broker it cannot reach, ...) is no ground to build on.
            base = s.scalar(
                _LAST_CONFIG.where(Command.dongle_id == dongle_id, Command.state != CommandState.REJECTED)
            )
            prev = base.payload if base is not None else {}
            doc: dict[str, Any] = {"version": _config_version(newest) + 1}
            for key in ("telemetry_interval_s", "enforce_grants", "log_level"):
                given = changes.get(key)
                doc[key] = given if given is not None else prev.get(key, CONFIG_DEFAULTS[key])
            doc["mqtt"] = _merge(prev.get("mqtt") or {"url": self.dongle_mqtt_url}, changes.get("mqtt"))
            filters = _merge(prev.get("filters") or {}, changes.get("filters"))
            if any(filters.values()):
                doc["filters"] = filters
            return doc

        return self._send_admin(dongle_id, "config", document, actor, action="dongle.config")

    def _send_admin(
        self,
        dongle_id: str,
        name: str,
        args: dict[str, Any] | Callable[[Session], dict[str, Any]],
        actor: Principal,
        *,
        action: str,
        check: Callable[[Session], None] | None = None,
    ) -> dict[str, Any]:
        """Record, validate, audit and (after commit) publish one admin command; its view."""
        with self._sf.begin() as s:
            # Locked so that concurrent config requests number their versions one after another.
            d = s.get(Dongle, dongle_id, with_for_update=True)
            if d is None:
                raise NotFound(f"no dongle {dongle_id!r}", field="dongle_id")
            if d.status != DongleStatus.ONLINE:
                raise Conflict(f"dongle {dongle_id} is offline; commands are not queued", status=d.status)
            if check is not None:
                check(s)
            out = self.record(s, dongle_id=dongle_id, name=name, args=args(s) if callable(args) else args)
            _check_contract(name, out.payload)
            detail = {k: v for k, v in masked(out.payload).items() if k not in ("v", "issued_at")}
            audit(
                s,
                at=self._clock(),
                actor=actor.name,
                action=action,
                target=f"dongle:{dongle_id}",
                detail=detail,
            )
        self.dispatch([out])
        with self._sf() as s:
            return command_view(s.get_one(Command, out.id))

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


_REQUIRED = re.compile(r"^'([^']+)' is a required property$")
_LAST_CONFIG = select(Command).where(Command.name == "config").order_by(Command.id.desc()).limit(1)


def _config_version(cmd: Command | None) -> int:
    v = cmd.payload.get("version") if cmd is not None else None
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _merge(base: dict[str, Any], changes: dict[str, Any] | None) -> dict[str, Any]:
    out = dict(base)
    for k, v in (changes or {}).items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def _check_contract(name: str, payload: dict[str, Any]) -> None:
    """Refuse, naming the field, what the dongle would refuse to parse."""
    try:
        contracts.validate(f"cmd-{name}", payload)
    except contracts.ContractError as exc:
        path, _, why = exc.message.partition(": ")
        field = path.removeprefix("$").removeprefix(".")
        missing = _REQUIRED.match(why)
        if missing:  # reported on the parent object; name the missing field itself
            field = f"{field}.{missing[1]}" if field else missing[1]
        field = field or name
        password = (
            (payload.get("mqtt") or {}).get("password") if isinstance(payload.get("mqtt"), dict) else None
        )
        if isinstance(password, str) and password:
            why = why.replace(repr(password), repr(MASK)).replace(password, MASK)
        raise InvalidInput(field, why) from None
