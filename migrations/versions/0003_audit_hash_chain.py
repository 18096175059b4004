"""Audit hash chain: prev_hash and row_hash on every audit row, existing rows chained in order.

Revision ID: 0003_audit_hash_chain
Revises: 0002_watch_jobs
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_audit_hash_chain"
down_revision: str | None = "0002_watch_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("row_hash", sa.String(64), nullable=True))
    # Chain the rows written before this revision, oldest first, as the code would have.
    from bot.audit import GENESIS, HASHED_FIELDS, row_digest
    from bot.db import UTCDateTime

    table = sa.table(
        "audit_events",
        *(sa.column(name) for name in HASHED_FIELDS if name not in ("occurred_at", "parameters")),
        sa.column("occurred_at", UTCDateTime()),
        sa.column("parameters", sa.JSON()),
        sa.column("prev_hash"),
        sa.column("row_hash"),
    )
    connection = op.get_bind()
    previous = GENESIS
    rows = connection.execute(sa.select(table).order_by(table.c.id)).mappings().all()
    for row in rows:
        digest = row_digest(previous, row)
        connection.execute(
            table.update()
            .where(table.c.id == row["id"])
            .values(prev_hash=previous, row_hash=digest)
        )
        previous = digest


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("row_hash")
        batch.drop_column("prev_hash")
