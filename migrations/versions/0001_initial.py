"""Initial schema: inventory, users and tokens, leases, commands, audit, events, telemetry.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# BIGINT on PostgreSQL; INTEGER on SQLite so primary keys stay ROWID aliases.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=48), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit")),
    )
    op.create_index("ix_audit_action", "audit", ["action"], unique=False)
    op.create_index("ix_audit_actor", "audit", ["actor"], unique=False)
    op.create_index("ix_audit_at", "audit", ["at"], unique=False)
    op.create_index("ix_audit_target", "audit", ["target"], unique=False)

    op.create_table(
        "dongles",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.String(length=32), nullable=True),
        sa.Column("chip_model", sa.String(length=32), nullable=True),
        sa.Column("chip_revision", sa.Integer(), nullable=True),
        sa.Column("firmware_version", sa.String(length=64), nullable=True),
        sa.Column("idf_version", sa.String(length=64), nullable=True),
        sa.Column("boot_slot", sa.String(length=32), nullable=True),
        sa.Column("ota_state", sa.String(length=32), nullable=True),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("mac", sa.String(length=32), nullable=True),
        sa.Column("usbip_port", sa.Integer(), nullable=True),
        sa.Column("heap_free", sa.BigInteger(), nullable=True),
        sa.Column("heap_min_free", sa.BigInteger(), nullable=True),
        sa.Column("dma_free", sa.BigInteger(), nullable=True),
        sa.Column("rssi", sa.Integer(), nullable=True),
        sa.Column("uptime_s", sa.BigInteger(), nullable=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=True),
        sa.Column("via_mqtt", sa.Boolean(), nullable=False),
        sa.Column("via_mdns", sa.Boolean(), nullable=False),
        sa.Column("mdns_present", sa.Boolean(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dongles")),
    )
    op.create_index("ix_dongles_status", "dongles", ["status"], unique=False)

    op.create_table(
        "scheduler_locks",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scheduler_locks")),
    )
    op.create_table(
        "telemetry_samples",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("dongle_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telemetry_samples")),
    )
    op.create_index(
        "ix_telemetry_samples_dongle_id_received_at",
        "telemetry_samples",
        ["dongle_id", "received_at"],
        unique=False,
    )
    op.create_index("ix_telemetry_samples_received_at", "telemetry_samples", ["received_at"], unique=False)

    op.create_table(
        "users",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"], unique=False)

    op.create_table(
        "devices",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("dongle_id", sa.String(length=32), nullable=False),
        sa.Column("busid", sa.String(length=32), nullable=False),
        sa.Column("present", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("quarantined", sa.Boolean(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=True),
        sa.Column("vid", sa.Integer(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("bcd_device", sa.Integer(), nullable=True),
        sa.Column("serial", sa.String(length=128), nullable=True),
        sa.Column("manufacturer", sa.String(length=128), nullable=True),
        sa.Column("product", sa.String(length=128), nullable=True),
        sa.Column("device_class", sa.Integer(), nullable=True),
        sa.Column("device_subclass", sa.Integer(), nullable=True),
        sa.Column("device_protocol", sa.Integer(), nullable=True),
        sa.Column("speed", sa.String(length=16), nullable=True),
        sa.Column("interfaces", sa.JSON(), nullable=True),
        sa.Column("attached_to", sa.String(length=64), nullable=True),
        sa.Column("urbs", sa.BigInteger(), nullable=True),
        sa.Column("bytes_in", sa.BigInteger(), nullable=True),
        sa.Column("bytes_out", sa.BigInteger(), nullable=True),
        sa.Column("errors", sa.JSON(), nullable=True),
        sa.Column("latency_us", sa.JSON(), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["dongle_id"], ["dongles.id"], name=op.f("fk_devices_dongle_id_dongles"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
        sa.UniqueConstraint("name", name=op.f("uq_devices_name")),
    )
    op.create_index("ix_devices_dongle_id_busid", "devices", ["dongle_id", "busid"], unique=False)
    op.create_index("ix_devices_present_state", "devices", ["present", "state"], unique=False)
    op.create_index("ix_devices_serial", "devices", ["serial"], unique=False)
    op.create_index("ix_devices_state", "devices", ["state"], unique=False)
    op.create_index(
        "ux_devices_location_present",
        "devices",
        ["dongle_id", "busid"],
        unique=True,
        sqlite_where=sa.text("present"),
        postgresql_where=sa.text("present"),
    )

    op.create_table(
        "events",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("dongle_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("uptime_s", sa.BigInteger(), nullable=True),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("busid", sa.String(length=32), nullable=True),
        sa.Column("client", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dongle_id"], ["dongles.id"], name=op.f("fk_events_dongle_id_dongles"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index("ix_events_dongle_id_received_at", "events", ["dongle_id", "received_at"], unique=False)
    op.create_index("ix_events_type", "events", ["type"], unique=False)

    op.create_table(
        "device_tags",
        sa.Column("device_id", BigId, nullable=False),
        sa.Column("tag", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_device_tags_device_id_devices"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("device_id", "tag", name=op.f("pk_device_tags")),
    )
    op.create_index("ix_device_tags_tag", "device_tags", ["tag"], unique=False)

    op.create_table(
        "leases",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("device_id", BigId, nullable=False),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("clients", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(length=256), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_leases_device_id_devices"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_leases_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leases")),
    )
    op.create_index("ix_leases_device_id", "leases", ["device_id"], unique=False)
    op.create_index("ix_leases_state_expires_at", "leases", ["state", "expires_at"], unique=False)
    op.create_index("ix_leases_user_id", "leases", ["user_id"], unique=False)
    op.create_index(
        "ux_leases_active_device",
        "leases",
        ["device_id"],
        unique=True,
        sqlite_where=sa.text("state = 'active'"),
        postgresql_where=sa.text("state = 'active'"),
    )

    op.create_table(
        "commands",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("dongle_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("lease_id", BigId, nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["dongle_id"], ["dongles.id"], name=op.f("fk_commands_dongle_id_dongles"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["lease_id"], ["leases.id"], name=op.f("fk_commands_lease_id_leases"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commands")),
        sa.UniqueConstraint("request_id", name=op.f("uq_commands_request_id")),
    )
    op.create_index("ix_commands_dongle_id", "commands", ["dongle_id"], unique=False)
    op.create_index("ix_commands_lease_id", "commands", ["lease_id"], unique=False)
    op.create_index("ix_commands_state_created_at", "commands", ["state", "created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_commands_state_created_at", table_name="commands")
    op.drop_index("ix_commands_lease_id", table_name="commands")
    op.drop_index("ix_commands_dongle_id", table_name="commands")

    op.drop_table("commands")
    op.drop_index("ux_leases_active_device", table_name="leases")
    op.drop_index("ix_leases_user_id", table_name="leases")
    op.drop_index("ix_leases_state_expires_at", table_name="leases")
    op.drop_index("ix_leases_device_id", table_name="leases")

    op.drop_table("leases")
    op.drop_index("ix_device_tags_tag", table_name="device_tags")

    op.drop_table("device_tags")
    op.drop_index("ix_events_type", table_name="events")
    op.drop_index("ix_events_dongle_id_received_at", table_name="events")

    op.drop_table("events")
    op.drop_index("ux_devices_location_present", table_name="devices")
    op.drop_index("ix_devices_state", table_name="devices")
    op.drop_index("ix_devices_serial", table_name="devices")
    op.drop_index("ix_devices_present_state", table_name="devices")
    op.drop_index("ix_devices_dongle_id_busid", table_name="devices")

    op.drop_table("devices")
    op.drop_index("ix_api_tokens_user_id", table_name="api_tokens")

    op.drop_table("api_tokens")
    op.drop_table("users")
    op.drop_index("ix_telemetry_samples_received_at", table_name="telemetry_samples")
    op.drop_index("ix_telemetry_samples_dongle_id_received_at", table_name="telemetry_samples")

    op.drop_table("telemetry_samples")
    op.drop_table("scheduler_locks")
    op.drop_index("ix_dongles_status", table_name="dongles")

    op.drop_table("dongles")
    op.drop_index("ix_audit_target", table_name="audit")
    op.drop_index("ix_audit_at", table_name="audit")
    op.drop_index("ix_audit_actor", table_name="audit")
    op.drop_index("ix_audit_action", table_name="audit")

    op.drop_table("audit")
