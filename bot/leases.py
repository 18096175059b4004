"""Row leases for durable jobs (watch jobs, approvals): one worker at a time acts on a row.

A worker claims due rows by writing a fresh **claim token**, its name and a lease end into them
(`SELECT … FOR UPDATE SKIP LOCKED` where the database has it, then a conditional
`UPDATE … RETURNING`, which also guards SQLite). Every later write names that token and holds only
while the lease is live; renewing extends it; releasing clears it. A dead worker's lease runs out
and another worker claims the rows with a token of its own, after which the first worker's writes
fail: the token, not a timestamp or a host name, says whose claim a row is under.

**Lease times come from the database's clock**, never the host's: instances whose clocks differ by
minutes still agree on when a lease ends, because only one clock is ever read. (SQLite is one
file on one host, so its clock is that host's; it is read through SQLite all the same.)
What a job does on its own schedule (when to poll next, when to give up) is the caller's business
and uses the caller's clock; a skewed host only polls early or late, it never double-claims.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, or_, select, text, update
from sqlalchemy.orm import Session, sessionmaker

Row = TypeVar("Row")


def worker_name() -> str:
    """Unique per process; fits a String(64) column whatever the host name (pods' are long)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def database_now(session: Session) -> datetime:
    """The database server's clock, now (aware, UTC): the one clock every instance shares."""
    if session.get_bind().dialect.name == "postgresql":
        # clock_timestamp(): the time now, not the transaction's start (that is now()).
        value = session.execute(text("SELECT clock_timestamp()")).scalar_one()
        return value.astimezone(UTC)
    raw = session.execute(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
    return datetime.fromisoformat(raw).replace(tzinfo=UTC)


def database_clock(sessions: sessionmaker[Session]) -> Callable[[], datetime]:
    """A clock that reads the database's (for expiry times several instances must agree on)."""

    def now() -> datetime:
        with sessions() as session:
            return database_now(session)

    return now


class Leases:
    """Claims, writes, renews and releases rows of `model` (which has `id`, `lease_owner`,
    `lease_token` and `lease_expires_at` columns) on behalf of one worker, `owner`.

    Rows returned by `claim` carry their `lease_token`; `save`, `renew` and `release` act only on
    rows whose token is still theirs."""

    def __init__(self, sessions: sessionmaker[Session], model: Any, owner: str) -> None:
        self._sessions = sessions
        self._model = model
        self.owner = owner

    def now(self) -> datetime:
        """The database's clock (what leases are measured against)."""
        return database_clock(self._sessions)()

    def claim(
        self,
        due: ColumnElement[bool],
        *,
        lease: timedelta,
        order_by: Any,
        limit: int,
    ) -> list[Any]:
        """Lease up to `limit` rows matching `due` whose lease is free; returns them."""
        model = self._model
        token = uuid.uuid4().hex
        with self._sessions.begin() as session:
            now = database_now(session)
            free = or_(model.lease_expires_at.is_(None), model.lease_expires_at <= now)
            claimable = and_(due, free)
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
            # Conditional: on SQLite (no row locks) another worker may have claimed some of
            # these meanwhile; RETURNING (or, without it, the token) says which are ours.
            claimed = _updated(
                session,
                model,
                update(model)
                .where(model.id.in_(ids), claimable)
                .values(lease_owner=self.owner, lease_token=token, lease_expires_at=now + lease),
                model.lease_token == token,
            )
        if not claimed:
            return []
        with self._sessions() as session:
            return list(
                session.scalars(
                    select(model)
                    .where(model.id.in_(claimed), model.lease_token == token)
                    .order_by(order_by)
                )
            )

    def _held(self, row: Any, now: datetime) -> ColumnElement[bool]:
        model = self._model
        return and_(
            model.id == row.id,
            model.lease_token == row.lease_token,
            model.lease_expires_at > now,
        )

    def save(self, row: Any, *conditions: ColumnElement[bool], **values: object) -> bool:
        """Write `values` into `row` only while its claim (token) holds a live lease (and
        `conditions` hold); mirrors them onto `row`. False: the lease (or a condition) was lost.
        A lease that ran out is lost even if nobody took it yet: another worker may any moment."""
        if row.lease_token is None:
            return False
        model = self._model
        with self._sessions.begin() as session:
            now = database_now(session)
            result = session.execute(
                update(model)
                .where(self._held(row, now), *conditions)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        for key, value in values.items():
            setattr(row, key, value)
        return True

    def renew(self, rows: Iterable[Row], lease: timedelta) -> list[Row]:
        """Extend the lease of each of `rows` still held to `lease` from now (database time);
        returns the rows still held: the others were lost and must not be acted on."""
        rows = list(rows)
        if not rows:
            return []
        model = self._model
        kept: set[int] = set()
        with self._sessions.begin() as session:
            now = database_now(session)
            until = now + lease
            for token, ids in _by_token(rows).items():
                mine = and_(model.id.in_(ids), model.lease_token == token)
                kept.update(
                    _updated(
                        session,
                        model,
                        update(model)
                        .where(mine, model.lease_expires_at > now)
                        .values(lease_expires_at=until),
                        and_(mine, model.lease_expires_at == until),
                    )
                )
        held = [row for row in rows if row.id in kept]  # type: ignore[attr-defined]
        for row in held:
            row.lease_expires_at = until  # type: ignore[attr-defined]
        return held

    def release(self, rows: Sequence[Any]) -> None:
        """Give up the claims on `rows` (those still ours; a row taken over is left alone)."""
        if not rows:
            return
        model = self._model
        with self._sessions.begin() as session:
            for token, ids in _by_token(rows).items():
                session.execute(
                    update(model)
                    .where(model.id.in_(ids), model.lease_token == token)
                    .values(lease_owner=None, lease_token=None, lease_expires_at=None)
                    .execution_options(synchronize_session=False)
                )


def _updated(
    session: Session, model: Any, statement: Any, written: ColumnElement[bool]
) -> list[int]:
    """Run an UPDATE; the ids of the rows it changed: by RETURNING where the database has it,
    else (SQLite before 3.35) the rows now matching `written`, in the same transaction."""
    statement = statement.execution_options(synchronize_session=False)
    if session.get_bind().dialect.update_returning:
        return list(session.scalars(statement.returning(model.id)))
    session.execute(statement)
    return list(session.scalars(select(model.id).where(written)))


def _by_token(rows: Iterable[Any]) -> dict[str, list[int]]:
    """Row ids by the claim they are held under (rows never claimed are left out)."""
    groups: dict[str, list[int]] = {}
    for row in rows:
        if row.lease_token is not None:
            groups.setdefault(row.lease_token, []).append(row.id)
    return groups
