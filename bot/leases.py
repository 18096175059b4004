"""Row leases for durable jobs (watch jobs, approvals): one worker at a time acts on a row.

A worker claims due rows by writing its name and a lease end into them (`FOR UPDATE SKIP LOCKED`
where the database has it, and a conditional UPDATE that also guards SQLite), writes only while
its lease holds, and releases the rows when done. A dead worker's lease runs out and another
worker takes the rows over.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

Row = TypeVar("Row")


def worker_name() -> str:
    """Unique per process; fits a String(64) column whatever the host name (pods' are long)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Leases:
    """Claims, writes and releases rows of `model` (which has `id`, `lease_owner` and
    `lease_expires_at` columns) on behalf of one worker, `owner`."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        model: Any,
        owner: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessions = sessions
        self._model = model
        self.owner = owner
        self._clock = clock

    def claim(
        self,
        due: ColumnElement[bool],
        *,
        now: datetime,
        lease: timedelta,
        order_by: Any,
        limit: int,
    ) -> list[Any]:
        """Lease up to `limit` rows matching `due` whose lease is free; returns them."""
        model = self._model
        free = or_(model.lease_expires_at.is_(None), model.lease_expires_at < now)
        claimable = and_(due, free)
        until = now + lease
        with self._sessions.begin() as session:
            ids = list(
                session.scalars(
                    select(model.id)
                    .where(claimable)
                    .order_by(order_by)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            )
            if not ids:
                return []
            session.execute(
                update(model)
                .where(model.id.in_(ids), claimable)
                .values(lease_owner=self.owner, lease_expires_at=until)
                .execution_options(synchronize_session=False)
            )
        with self._sessions() as session:
            return list(
                session.scalars(
                    select(model).where(
                        model.id.in_(ids),
                        model.lease_owner == self.owner,
                        model.lease_expires_at == until,
                    )
                )
            )

    def save(self, row: Any, *conditions: ColumnElement[bool], **values: object) -> bool:
        """Write `values` into `row` only while this worker holds a live lease on it (and
        `conditions` hold); mirrors them onto `row`. False: the lease (or a condition) was lost.
        A lease that ran out is lost even if nobody took it yet: another worker may any moment."""
        model = self._model
        held = and_(model.lease_owner == self.owner, model.lease_expires_at > self._clock())
        with self._sessions.begin() as session:
            result = session.execute(
                update(model)
                .where(model.id == row.id, held, *conditions)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        for key, value in values.items():
            setattr(row, key, value)
        return True

    def release(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        model = self._model
        with self._sessions.begin() as session:
            session.execute(
                update(model)
                .where(model.id.in_(ids), model.lease_owner == self.owner)
                .values(lease_owner=None, lease_expires_at=None)
                .execution_options(synchronize_session=False)
            )
