"""Approvals: restore requests, their decisions and their execution as a durable job; the
approval an audit row belongs to, so the whole story of one restore can be read back; and whether
a watch job's reply may rewrite its thread's parent (not when the parent is an approval card).

Revision ID: 0005_approvals
Revises: 0004_seen_requests
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.db

revision: str = "0005_approvals"
down_revision: str | None = "0004_seen_requests"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATES = (
    "'pending', 'approved', 'safety_backup', 'ready', 'restoring', 'done', "
    "'failed', 'rejected', 'cancelled', 'expired'"
)


def upgrade() -> None:
    when = bot.db.UTCDateTime
    op.create_table(
        "approvals",
        sa.Column("id", bot.db.BigId, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("server_id", sa.BigInteger(), nullable=False),
        sa.Column("server_name", sa.String(255), nullable=False),
        sa.Column("backup_id", sa.BigInteger(), nullable=False),
        sa.Column("backup_type", sa.String(32), nullable=False),
        sa.Column("backup_created_at", when(), nullable=False),
        sa.Column("backup_size_mb", sa.Float(), nullable=True),
        sa.Column("backup_description", sa.Text(), nullable=False),
        sa.Column("requester_id", sa.String(32), nullable=False),
        sa.Column("requester_name", sa.String(255), nullable=False),
        sa.Column("team_id", sa.String(32), nullable=True),
        sa.Column("channel_id", sa.String(32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("card_channel_id", sa.String(32), nullable=True),
        sa.Column("card_ts", sa.String(32), nullable=True),
        sa.Column("required_approvals", sa.Integer(), nullable=False),
        sa.Column("approvers", sa.JSON(), nullable=False),
        sa.Column("created_at", when(), nullable=False),
        sa.Column("expires_at", when(), nullable=False),
        sa.Column("decided_by", sa.String(32), nullable=True),
        sa.Column("decided_at", when(), nullable=True),
        sa.Column("safety_backup", sa.Boolean(), nullable=False),
        sa.Column("safety_backup_id", sa.BigInteger(), nullable=True),
        sa.Column("safety_started_at", when(), nullable=True),
        sa.Column("safety_requested_at", when(), nullable=True),
        sa.Column("restore_requested_at", when(), nullable=True),
        sa.Column("provider_status", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("finished_at", when(), nullable=True),
        sa.Column("next_attempt_at", when(), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", when(), nullable=True),
        sa.CheckConstraint(f"state IN ({STATES})", name="ck_approvals_state"),
    )
    op.create_index("ix_approvals_due", "approvals", ["state", "next_attempt_at"])
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("approval_id", sa.BigInteger(), nullable=True))
        batch.create_index("ix_audit_events_approval_id", ["approval_id"])
    with op.batch_alter_table("watch_jobs") as batch:
        # A safety backup's thread is an approval card's: its reply must not rewrite the card.
        batch.add_column(
            sa.Column("update_parent", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("watch_jobs") as batch:
        batch.drop_column("update_parent")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_index("ix_audit_events_approval_id")
        batch.drop_column("approval_id")
    op.drop_index("ix_approvals_due", table_name="approvals")
    op.drop_table("approvals")
