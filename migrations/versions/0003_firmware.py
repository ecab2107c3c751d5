"""Firmware registry: uploaded images for OTA (the bytes live in firmware_dir).

Revision ID: 0003_firmware
Revises: 0002_command_progress
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# BIGINT on PostgreSQL; INTEGER on SQLite so primary keys stay ROWID aliases.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0003_firmware"
down_revision = "0002_command_progress"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "firmware",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("chip", sa.String(length=16), nullable=False),
        sa.Column("chip_id", sa.Integer(), nullable=False),
        sa.Column("min_rev", sa.Integer(), nullable=False),
        sa.Column("max_rev", sa.Integer(), nullable=False),
        sa.Column("secure_version", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("uploaded_by", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_firmware")),
        sa.UniqueConstraint("sha256", name=op.f("uq_firmware_sha256")),
    )
    op.create_index("ux_firmware_chip_version", "firmware", ["chip", "version"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_firmware_chip_version", table_name="firmware")
    op.drop_table("firmware")
