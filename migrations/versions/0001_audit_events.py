"""Baseline: the audit table.

Revision ID: 0001_audit_events
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.db

revision: str = "0001_audit_events"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", bot.db.BigId, primary_key=True),
        sa.Column("occurred_at", bot.db.UTCDateTime(), nullable=False),
        sa.Column("actor_user_id", sa.String(32), nullable=False),
        sa.Column("actor_name", sa.String(255), nullable=False),
        sa.Column("actor_team_id", sa.String(32), nullable=True),
        sa.Column("channel_id", sa.String(32), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("server_id", sa.BigInteger(), nullable=True),
        sa.Column("backup_id", sa.BigInteger(), nullable=True),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("provider_status", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.CheckConstraint("outcome IN ('ok', 'denied', 'error')", name="ck_audit_events_outcome"),
    )
    op.create_index("ix_audit_events_occurred_at", "audit_events", ["occurred_at"])
    op.create_index("ix_audit_events_actor_user_id", "audit_events", ["actor_user_id"])
    op.create_index("ix_audit_events_action", "audit_events", ["action"])
    op.create_index("ix_audit_events_server_id", "audit_events", ["server_id"])


def downgrade() -> None:
    op.drop_table("audit_events")
