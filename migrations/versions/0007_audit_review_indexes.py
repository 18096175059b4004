"""Audit review indexes: each filter of `/backup audit` (person, server, action, approval,
outcome) as a composite index ending in `id`, so a page, `ORDER BY id DESC LIMIT 20`, reads its
20 rows from the index in order on PostgreSQL too, however old they are (SQLite appends the rowid,
`id`, to every index already). They replace the single-column indexes they start with.

Plain `op.create_index`/`drop_index`: no `batch_alter_table`, which would drop the append-only
triggers on SQLite (0006). On a large PostgreSQL table the index builds block writes meanwhile.

Revision ID: 0007_audit_review_indexes
Revises: 0006_audit_trust
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007_audit_review_indexes"
down_revision: str | None = "0006_audit_trust"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# column -> the single-column index it replaces (None: there was none)
COLUMNS = {
    "actor_user_id": "ix_audit_events_actor_user_id",
    "server_id": "ix_audit_events_server_id",
    "action": "ix_audit_events_action",
    "approval_id": "ix_audit_events_approval_id",
    "outcome": None,
}


def upgrade() -> None:
    for column, old in COLUMNS.items():
        op.create_index(f"ix_audit_events_{column}_id", "audit_events", [column, "id"])
        if old is not None:
            op.drop_index(old, table_name="audit_events")


def downgrade() -> None:
    for column, old in COLUMNS.items():
        if old is not None:
            op.create_index(old, "audit_events", [column])
        op.drop_index(f"ix_audit_events_{column}_id", table_name="audit_events")
