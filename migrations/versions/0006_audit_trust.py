"""Audit trust: signed checkpoints (and prune anchors) kept apart from the rows, and triggers that
make `audit_events` and `audit_checkpoints` append-only on PostgreSQL and SQLite.

The one removal the triggers allow: deleting audit rows up to the newest prune anchor's
`last_row_id` (an anchor is written, signed, in the same transaction as the prune's DELETE).

Note for later migrations: on SQLite, `batch_alter_table` on `audit_events` rebuilds the table
and drops its triggers; such a migration must create them again (`create_triggers` below).

Revision ID: 0006_audit_trust
Revises: 0005_approvals
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.db

revision: str = "0006_audit_trust"
down_revision: str | None = "0005_approvals"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PRUNED = "(SELECT COALESCE(MAX(last_row_id), 0) FROM audit_checkpoints WHERE kind = 'anchor')"

POSTGRES_TRIGGERS = (
    f"""
    CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_events' AND OLD.id <= {_PRUNED} THEN
            RETURN OLD;  -- covered by a prune anchor: the one sanctioned removal
        END IF;
        RAISE EXCEPTION 'audit rows are append-only: % on % refused', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END
    $$
    """,
    "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
    "FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
    "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()",
    "CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints "
    "FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
    "CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()",
)

SQLITE_TRIGGERS = (
    "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events BEGIN "
    "SELECT RAISE(ABORT, 'audit rows are append-only: UPDATE on audit_events refused'); END",
    f"CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
    f"WHEN OLD.id > {_PRUNED} BEGIN "
    "SELECT RAISE(ABORT, 'audit rows are append-only: DELETE on audit_events refused'); END",
    "CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints BEGIN "
    "SELECT RAISE(ABORT, 'audit rows are append-only: UPDATE on audit_checkpoints refused'); END",
    "CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints BEGIN "
    "SELECT RAISE(ABORT, 'audit rows are append-only: DELETE on audit_checkpoints refused'); END",
)

POSTGRES_DROP = (
    "DROP TRIGGER IF EXISTS audit_checkpoints_no_truncate ON audit_checkpoints",
    "DROP TRIGGER IF EXISTS audit_checkpoints_append_only ON audit_checkpoints",
    "DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events",
    "DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events",
    "DROP FUNCTION IF EXISTS audit_append_only()",
)

SQLITE_DROP = (
    "DROP TRIGGER IF EXISTS audit_checkpoints_no_delete",
    "DROP TRIGGER IF EXISTS audit_checkpoints_no_update",
    "DROP TRIGGER IF EXISTS audit_events_no_delete",
    "DROP TRIGGER IF EXISTS audit_events_no_update",
)


def create_triggers() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for statement in POSTGRES_TRIGGERS if postgres else SQLITE_TRIGGERS:
        op.execute(statement)


def drop_triggers() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for statement in POSTGRES_DROP if postgres else SQLITE_DROP:
        op.execute(statement)


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", bot.db.BigId, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", bot.db.UTCDateTime(), nullable=False),
        sa.Column("row_count", sa.BigInteger(), nullable=False),
        sa.Column("last_row_id", sa.BigInteger(), nullable=True),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(64), nullable=False),
        sa.CheckConstraint("kind IN ('checkpoint', 'anchor')", name="ck_audit_checkpoints_kind"),
    )
    op.create_index("ix_audit_checkpoints_kind", "audit_checkpoints", ["kind"])
    create_triggers()


def downgrade() -> None:
    drop_triggers()
    op.drop_index("ix_audit_checkpoints_kind", table_name="audit_checkpoints")
    op.drop_table("audit_checkpoints")
