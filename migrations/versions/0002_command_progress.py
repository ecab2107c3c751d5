"""Command tracking: the last progress report and the outcome of long-running commands (ota).

Revision ID: 0002_command_progress
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_command_progress"
# 0001_initial.py declares its revision id as plain "0001".
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("commands", sa.Column("progress", sa.JSON(), nullable=True))
    op.add_column("commands", sa.Column("outcome", sa.String(length=16), nullable=True))


def downgrade() -> None:
    # batch mode because older SQLite versions cannot DROP COLUMN in place.
    with op.batch_alter_table("commands") as batch:
        batch.drop_column("outcome")
        batch.drop_column("progress")
