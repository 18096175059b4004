"""Seen requests: signed Slack requests already acted on, so a replay within the signature's
lifetime (or an event retry) is answered without acting again; the enterprise id of an audit
row's actor in its own column (org-wide installs); and when a watched backup was last seen still
running, so a reply can say how long it took within what is known.

Revision ID: 0004_seen_requests
Revises: 0003_audit_hash_chain
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.db

revision: str = "0004_seen_requests"
down_revision: str | None = "0003_audit_hash_chain"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "seen_requests",
        sa.Column("fingerprint", sa.String(64), primary_key=True),
        sa.Column("expires_at", bot.db.UTCDateTime(), nullable=False),
    )
    op.create_index("ix_seen_requests_expires_at", "seen_requests", ["expires_at"])
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("actor_enterprise_id", sa.String(32), nullable=True))
    with op.batch_alter_table("watch_jobs") as batch:
        batch.add_column(sa.Column("seen_running_at", bot.db.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("watch_jobs") as batch:
        batch.drop_column("seen_running_at")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("actor_enterprise_id")
    op.drop_index("ix_seen_requests_expires_at", table_name="seen_requests")
    op.drop_table("seen_requests")
