"""Lease claim tokens: a claimed watch job or approval carries the token of the claim it is held
under, so a worker's writes name its claim rather than a host name and a timestamp (see
bot/leases.py). Lease times are now the database's clock; existing leases simply run out.

Revision ID: 0009_lease_tokens
Revises: 0008_audit_request_id
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_lease_tokens"
down_revision: str | None = "0008_audit_request_id"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("watch_jobs", "approvals")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("lease_token", sa.String(32), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("lease_token")
