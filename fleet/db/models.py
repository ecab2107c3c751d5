"""Tables of the fleet service (SQLAlchemy 2 typed declarative models).

The schema is produced by the Alembic migrations in ``migrations/``;
``tests/service/test_migrations.py`` proves both agree on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fleet.db.types import UTCDateTime

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT on PostgreSQL, INTEGER on SQLite so it stays an alias of ROWID
# (autoincrementing primary key).
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class Dongle(Base):
    __tablename__ = "dongles"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="unknown", index=True)
    status_reason: Mapped[str | None] = mapped_column(String(32))
    chip_model: Mapped[str | None] = mapped_column(String(32))
    chip_revision: Mapped[int | None]
    firmware_version: Mapped[str | None] = mapped_column(String(64))
    idf_version: Mapped[str | None] = mapped_column(String(64))
    boot_slot: Mapped[str | None] = mapped_column(String(32))
    ota_state: Mapped[str | None] = mapped_column(String(32))
    ip: Mapped[str | None] = mapped_column(String(64))
    mac: Mapped[str | None] = mapped_column(String(32))
    usbip_port: Mapped[int | None]
    heap_free: Mapped[int | None] = mapped_column(BigInteger)
    heap_min_free: Mapped[int | None] = mapped_column(BigInteger)
    dma_free: Mapped[int | None] = mapped_column(BigInteger)
    rssi: Mapped[int | None]
    uptime_s: Mapped[int | None] = mapped_column(BigInteger)
    last_seq: Mapped[int | None] = mapped_column(BigInteger)
    via_mqtt: Mapped[bool] = mapped_column(Boolean, default=False)
    via_mdns: Mapped[bool] = mapped_column(Boolean, default=False)
    mdns_present: Mapped[bool] = mapped_column(Boolean, default=False)
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (
        # Only one device can sit on a port at a time; vanished ones keep
        # their last location for history and identity matching.
        Index(
            "ux_devices_location_present",
            "dongle_id",
            "busid",
            unique=True,
            sqlite_where=text("present"),
            postgresql_where=text("present"),
        ),
        Index("ix_devices_dongle_id_busid", "dongle_id", "busid"),
        # Covers the metrics' GROUP BY so a scrape reads the index, not the table.
        Index("ix_devices_present_state", "present", "state"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    dongle_id: Mapped[str] = mapped_column(ForeignKey("dongles.id", ondelete="CASCADE"))
    busid: Mapped[str] = mapped_column(String(32))
    present: Mapped[bool] = mapped_column(Boolean, default=True)
    state: Mapped[str] = mapped_column(String(16), default="free", index=True)
    quarantined: Mapped[bool] = mapped_column(Boolean, default=False)
    name: Mapped[str | None] = mapped_column(String(64), unique=True)
    vid: Mapped[int]
    pid: Mapped[int]
    bcd_device: Mapped[int | None]
    serial: Mapped[str | None] = mapped_column(String(128), index=True)
    manufacturer: Mapped[str | None] = mapped_column(String(128))
    product: Mapped[str | None] = mapped_column(String(128))
    device_class: Mapped[int | None]
    device_subclass: Mapped[int | None]
    device_protocol: Mapped[int | None]
    speed: Mapped[str | None] = mapped_column(String(16))
    interfaces: Mapped[list[Any] | None]
    attached_to: Mapped[str | None] = mapped_column(String(64))
    urbs: Mapped[int | None] = mapped_column(BigInteger)
    bytes_in: Mapped[int | None] = mapped_column(BigInteger)
    bytes_out: Mapped[int | None] = mapped_column(BigInteger)
    errors: Mapped[dict[str, Any] | None]
    latency_us: Mapped[dict[str, Any] | None]
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]
    removed_at: Mapped[datetime | None]


class DeviceTag(Base):
    __tablename__ = "device_tags"

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # SHA-256 of the token: tokens are 256-bit random, so a fast hash is enough
    # and lets every request find its token with one index lookup.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Lease(Base):
    __tablename__ = "leases"
    __table_args__ = (
        # The exclusivity guarantee: at most one active lease per device, held
        # by the database whatever the number of API replicas or threads.
        Index(
            "ux_leases_active_device",
            "device_id",
            unique=True,
            sqlite_where=text("state = 'active'"),
            postgresql_where=text("state = 'active'"),
        ),
        Index("ix_leases_state_expires_at", "state", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(16))
    clients: Mapped[list[Any]]
    started_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(String(256))


class AuditEntry(Base):
    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(32), index=True)
    action: Mapped[str] = mapped_column(String(48), index=True)
    target: Mapped[str] = mapped_column(String(128), index=True)
    detail: Mapped[dict[str, Any] | None]


class Command(Base):
    __tablename__ = "commands"
    __table_args__ = (Index("ix_commands_state_created_at", "state", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(36), unique=True)
    dongle_id: Mapped[str] = mapped_column(ForeignKey("dongles.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(32))
    lease_id: Mapped[int | None] = mapped_column(ForeignKey("leases.id", ondelete="SET NULL"), index=True)
    payload: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    answered_at: Mapped[datetime | None]
    # Long-running commands (ota) report progress after their cmd-result: the last report and
    # where the command ended up, see fleet.services.ingest.
    progress: Mapped[dict[str, Any] | None]
    outcome: Mapped[str | None] = mapped_column(String(16))


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_dongle_id_received_at", "dongle_id", "received_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    dongle_id: Mapped[str] = mapped_column(ForeignKey("dongles.id", ondelete="CASCADE"))
    seq: Mapped[int | None] = mapped_column(BigInteger)
    uptime_s: Mapped[int | None] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(32), index=True)
    busid: Mapped[str | None] = mapped_column(String(32))
    client: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any] | None]
    received_at: Mapped[datetime]


class TelemetrySample(Base):
    __tablename__ = "telemetry_samples"
    __table_args__ = (Index("ix_telemetry_samples_dongle_id_received_at", "dongle_id", "received_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # No foreign key: the hot ingest path inserts these in bulk and retention
    # pruning deletes them by time, neither should pay for constraint checks.
    dongle_id: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int | None] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(index=True)
    payload: Mapped[dict[str, Any]]


class Firmware(Base):
    """An uploaded firmware image; its bytes are ``<firmware_dir>/<sha256>.bin``."""

    __tablename__ = "firmware"
    __table_args__ = (
        # "ota --version V" must name exactly one image per chip.
        Index("ux_firmware_chip_version", "chip", "version", unique=True),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    version: Mapped[str] = mapped_column(String(32))
    chip: Mapped[str] = mapped_column(String(16))
    chip_id: Mapped[int]
    min_rev: Mapped[int]
    max_rev: Mapped[int]
    secure_version: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    filename: Mapped[str | None] = mapped_column(String(255))
    notes: Mapped[str | None] = mapped_column(Text)
    uploaded_at: Mapped[datetime]
    uploaded_by: Mapped[str] = mapped_column(String(32))


class SchedulerLock(Base):
    """Leader election: the replica whose lock row is fresh runs the jobs."""

    __tablename__ = "scheduler_locks"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime]


__all__ = [
    "ApiToken",
    "AuditEntry",
    "Base",
    "Command",
    "Device",
    "DeviceTag",
    "Dongle",
    "Event",
    "Firmware",
    "Lease",
    "SchedulerLock",
    "TelemetrySample",
    "User",
]
