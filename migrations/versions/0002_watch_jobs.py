"""Watch jobs: durable "reply in the thread when backup N finishes".

Revision ID: 0002_watch_jobs
Revises: 0001_audit_events
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.db

revision: str = "0002_watch_jobs"
down_revision: str | None = "0001_audit_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    when = bot.db.UTCDateTime
    op.create_table(
        "watch_jobs",
        sa.Column("id", bot.db.BigId, primary_key=True),
        sa.Column("backup_id", sa.BigInteger(), nullable=False, unique=True),
        sa.Column("server_id", sa.BigInteger(), nullable=False),
        sa.Column("server_name", sa.String(255), nullable=False),
        sa.Column("channel_id", sa.String(32), nullable=True),
        sa.Column("thread_ts", sa.String(32), nullable=True),
        sa.Column("requester_id", sa.String(32), nullable=False),
        sa.Column("requester_name", sa.String(255), nullable=False),
        sa.Column("team_id", sa.String(32), nullable=True),
        sa.Column("backup_created_at", when(), nullable=False),
        sa.Column("registered_at", when(), nullable=False),
        sa.Column("finished_at", when(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("size_mb", sa.Float(), nullable=True),
        sa.Column("expires_at", when(), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("next_poll_at", when(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("misses", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", when(), nullable=True),
        sa.Column("notified_at", when(), nullable=True),
        sa.Column("notify_attempts", sa.Integer(), nullable=False),
        sa.Column("reply_channel_id", sa.String(32), nullable=True),
        sa.Column("reply_ts", sa.String(32), nullable=True),
        sa.CheckConstraint(
            "state IN ('watching', 'completed', 'failed', 'vanished', 'gave_up')",
            name="ck_watch_jobs_state",
        ),
    )
    op.create_index("ix_watch_jobs_server_id", "watch_jobs", ["server_id"])
    op.create_index("ix_watch_jobs_due", "watch_jobs", ["notified_at", "next_poll_at"])


def downgrade() -> None:
    op.drop_table("watch_jobs")
