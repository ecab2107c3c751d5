"""The set of services one process runs, built around one session factory."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from fleet.ports import CommandPublisher
from fleet.services.audit import AuditService
from fleet.services.commands import CommandService
from fleet.services.common import Clock, utcnow
from fleet.services.firmware import FirmwareService, FirmwareSettings
from fleet.services.ingest import InventoryIngestSink
from fleet.services.inventory import InventoryService
from fleet.services.leases import LeaseService
from fleet.services.users import UserService


@dataclass
class Services:
    session_factory: sessionmaker[Session]
    users: UserService
    inventory: InventoryService
    leases: LeaseService
    commands: CommandService
    audit: AuditService
    ingest: InventoryIngestSink
    # None when the process was built without firmware settings (see fleet.app.build_runtime).
    firmware: FirmwareService | None = None


def build_services(
    session_factory: sessionmaker[Session],
    publisher: CommandPublisher,
    *,
    lease_default_s: int = 3600,
    lease_max_s: int = 7 * 86400,
    clock: Clock = utcnow,
    firmware: FirmwareSettings | None = None,
    dongle_mqtt_url: str = "mqtt://127.0.0.1:1883",
) -> Services:
    commands = CommandService(session_factory, publisher, clock, dongle_mqtt_url=dongle_mqtt_url)
    leases = LeaseService(session_factory, commands, default_s=lease_default_s, max_s=lease_max_s, clock=clock)
    return Services(
        session_factory=session_factory,
        users=UserService(session_factory, clock),
        inventory=InventoryService(session_factory, clock),
        leases=leases,
        commands=commands,
        audit=AuditService(session_factory),
        ingest=InventoryIngestSink(
            session_factory, regrant=leases.regrant_for_dongles, dispatch=commands.dispatch
        ),
        firmware=None if firmware is None else FirmwareService(session_factory, commands, firmware, clock),
    )
