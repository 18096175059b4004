"""The request id of the Slack request that started a watched backup, so the reply's log lines
and audit row carry the same id as the create (see bot/logs.py).

Revision ID: 0011_watch_request_id
Revises: 0010_backup_health
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_watch_request_id"
down_revision: str | None = "0010_backup_health"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("watch_jobs", sa.Column("request_id", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("watch_jobs") as batch:
        batch.drop_column("request_id")
