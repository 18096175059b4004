"""Audit rows store the id of the Slack request they were written for (`request_id`, nullable:
rows written before, and by background work, have none), indexed to find a request's rows from
the reference a person was shown.

Plain `op.add_column` (SQLite supports ADD COLUMN): no `batch_alter_table`, which on SQLite would
copy the table and drop its append-only triggers (0006). Existing rows keep their hashes: the
chain hashes `request_id` only when it is set (bot/audit.py `OPTIONAL_HASHED_FIELDS`).

Revision ID: 0008_audit_request_id
Revises: 0007_audit_review_indexes
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_audit_request_id"
down_revision: str | None = "0007_audit_review_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("request_id", sa.String(32), nullable=True))
    op.create_index("ix_audit_events_request_id", "audit_events", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_request_id", table_name="audit_events")
    # SQLite 3.35+ drops a column in place (the triggers stay); PostgreSQL always could.
    op.drop_column("audit_events", "request_id")
