"""Deletes behind approvals (DELETE_REQUIRES_APPROVAL): an approval's `kind` is now checked
("restore" or "delete"), a delete being sent has its own state (`deleting`, written before the
DELETE like `restoring` before a restore), and the backup's status when it was asked is kept for
the card (a failed backup may be deleted; a restore's is always "completed").

Only `approvals` is altered (batch mode rebuilds it on SQLite; it has no triggers). Never
`batch_alter_table` on `audit_events` here: on SQLite it would drop the append-only triggers.

Revision ID: 0012_approval_deletes
Revises: 0011_watch_request_id
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_approval_deletes"
down_revision: str | None = "0011_watch_request_id"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATES = (
    "'pending', 'approved', 'safety_backup', 'ready', 'restoring', 'done', "
    "'failed', 'rejected', 'cancelled', 'expired'"
)
STATES = (
    "'pending', 'approved', 'safety_backup', 'ready', 'restoring', 'deleting', 'done', "
    "'failed', 'rejected', 'cancelled', 'expired'"
)


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(
            sa.Column("backup_status", sa.String(32), nullable=False, server_default="completed")
        )
        batch.drop_constraint("ck_approvals_state", type_="check")
        batch.create_check_constraint("ck_approvals_state", f"state IN ({STATES})")
        batch.create_check_constraint("ck_approvals_kind", "kind IN ('restore', 'delete')")


def downgrade() -> None:
    # Before this revision every approval is a restore: a delete left here would be run as one.
    op.execute("DELETE FROM approvals WHERE kind = 'delete' OR state = 'deleting'")
    with op.batch_alter_table("approvals") as batch:
        batch.drop_constraint("ck_approvals_kind", type_="check")
        batch.drop_constraint("ck_approvals_state", type_="check")
        batch.create_check_constraint("ck_approvals_state", f"state IN ({OLD_STATES})")
        batch.drop_column("backup_status")
