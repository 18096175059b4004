"""Backup health: incidents (one open per server and kind, alerted once, its recovery replied in
the alert's thread), the daily digests (one row a day), and the sweep's own row (when it last ran
and which backups it saw in progress).

Revision ID: 0010_backup_health
Revises: 0009_lease_tokens
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.db

revision: str = "0010_backup_health"
down_revision: str | None = "0009_lease_tokens"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    when = bot.db.UTCDateTime
    op.create_table(
        "health_incidents",
        sa.Column("id", bot.db.BigId, primary_key=True),
        sa.Column("server_id", sa.BigInteger(), nullable=False),
        sa.Column("server_name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("open_key", sa.String(64), nullable=True, unique=True),
        sa.Column("opened_at", when(), nullable=False),
        sa.Column("backup_id", sa.BigInteger(), nullable=True),
        sa.Column("backup_created_at", when(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("resolved_at", when(), nullable=True),
        sa.Column("resolved_by_backup_id", sa.BigInteger(), nullable=True),
        sa.Column("alert_state", sa.String(16), nullable=False),
        sa.Column("alert_channel_id", sa.String(32), nullable=True),
        sa.Column("alert_ts", sa.String(32), nullable=True),
        sa.Column("reply_state", sa.String(16), nullable=True),
        sa.Column("reply_ts", sa.String(32), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", when(), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_token", sa.String(32), nullable=True),
        sa.Column("lease_expires_at", when(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('stale', 'failed', 'vanished')", name="ck_health_incidents_kind"
        ),
    )
    op.create_index("ix_health_incidents_server_id", "health_incidents", ["server_id"])
    op.create_index("ix_health_incidents_due", "health_incidents", ["next_attempt_at"])
    op.create_table(
        "health_digests",
        sa.Column("id", bot.db.BigId, primary_key=True),
        sa.Column("day", sa.String(10), nullable=False, unique=True),
        sa.Column("due_at", when(), nullable=False),
        sa.Column("since", when(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("channel_id", sa.String(32), nullable=True),
        sa.Column("ts", sa.String(32), nullable=True),
        sa.Column("posted_at", when(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", when(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_token", sa.String(32), nullable=True),
        sa.Column("lease_expires_at", when(), nullable=True),
    )
    op.create_table(
        "health_sweeps",
        sa.Column("id", bot.db.BigId, primary_key=True),
        sa.Column("last_sweep_at", when(), nullable=True),
        sa.Column("running", sa.JSON(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_token", sa.String(32), nullable=True),
        sa.Column("lease_expires_at", when(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("health_sweeps")
    op.drop_table("health_digests")
    op.drop_table("health_incidents")
