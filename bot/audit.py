"""The audit table: who asked for what, where, when, and what came of it. Rows are only added.

Rows are hash-chained: each row's `row_hash` is a SHA-256 over its content and the previous row's
hash (`prev_hash`), so `backupbot audit verify` finds a row that was edited, removed or reordered.
Writes are serialized (a PostgreSQL advisory lock across instances; SQLite's own write lock) so
the chain stays a line. Removing the newest rows leaves a shorter valid chain: compare the head
hash `verify` prints with one recorded earlier to catch that too.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from sqlalchemy import or_, select, text
from sqlalchemy.orm import Session, sessionmaker

from bot.db import AuditEvent, Outcome, utcnow

log = logging.getLogger(__name__)

_DETAIL_LIMIT = 2000
GENESIS = "0" * 64
# The columns a row's hash covers, in this order (changing it needs a migration re-chaining rows).
HASHED_FIELDS = (
    "id",
    "occurred_at",
    "actor_user_id",
    "actor_name",
    "actor_team_id",
    "channel_id",
    "action",
    "server_id",
    "backup_id",
    "parameters",
    "outcome",
    "provider_status",
    "detail",
)
OPTIONAL_HASHED_FIELDS = ("actor_enterprise_id", "approval_id")
_ADVISORY_LOCK = 0x6261636B  # "back": one writer at a time across instances (PostgreSQL)


@dataclass(frozen=True)
class Actor:
    """A person acting through Slack (or the console), as Slack named them at the time.

    `direct`: they are talking to the bot in their DM with it (the edge knows; the policy asks).
    """

    user_id: str
    name: str = ""
    team_id: str | None = None
    channel_id: str | None = None
    direct: bool = False
    enterprise_id: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    """One audit row as a reviewer sees it (a plain copy, detached from the database)."""

    id: int
    occurred_at: datetime
    actor_user_id: str
    actor_name: str
    channel_id: str | None
    action: str
    server_id: int | None
    backup_id: int | None
    outcome: str
    provider_status: int | None
    detail: str
    approval_id: int | None

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEntry:
        return cls(**{field: getattr(event, field) for field in cls.__dataclass_fields__})


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return value


def row_digest(previous: str, row: Mapping[str, Any]) -> str:
    """The hash of one row given the previous row's hash.

    Columns added later (`OPTIONAL_HASHED_FIELDS`) are hashed only when set, so rows written
    before them keep their hashes.
    """
    fields = [_canonical(row[name]) for name in HASHED_FIELDS]
    fields += [
        [name, _canonical(row[name])]
        for name in OPTIONAL_HASHED_FIELDS
        if row.get(name) is not None
    ]
    content = [previous, fields]
    data = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()


def _row(event: AuditEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in (*HASHED_FIELDS, *OPTIONAL_HASHED_FIELDS)}


@dataclass(frozen=True)
class Verification:
    rows: int
    head: str  # the newest row's hash (GENESIS for an empty table)
    broken_at: int | None = None  # id of the first row that does not fit
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_at is None


class AuditLog:
    """Writes audit rows in their own short transaction, so a failed use-case is still recorded."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def record(
        self,
        actor: Actor,
        action: str,
        outcome: Outcome,
        *,
        server_id: int | None = None,
        backup_id: int | None = None,
        parameters: Mapping[str, Any] | None = None,
        provider_status: int | None = None,
        detail: str = "",
        approval_id: int | None = None,
    ) -> AuditEvent:
        event = AuditEvent(
            occurred_at=utcnow(),
            actor_user_id=actor.user_id,
            actor_name=actor.name[:255],
            actor_team_id=actor.team_id,
            actor_enterprise_id=actor.enterprise_id,
            channel_id=actor.channel_id,
            action=action,
            server_id=server_id,
            backup_id=backup_id,
            parameters=json.loads(json.dumps(dict(parameters or {}), default=str)),
            outcome=outcome.value,
            provider_status=provider_status,
            detail=detail[:_DETAIL_LIMIT],
            approval_id=approval_id,
        )
        with self._sessions.begin() as session:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK})
            # Insert first: on SQLite that takes the database's write lock, so no other writer
            # (thread or process) can slip a row in between reading the previous hash and ours.
            session.add(event)
            session.flush()
            last = session.scalar(
                select(AuditEvent.row_hash)
                .where(AuditEvent.id < event.id)
                .order_by(AuditEvent.id.desc())
                .limit(1)
            )
            event.prev_hash = last or GENESIS
            event.row_hash = row_digest(event.prev_hash, _row(event))
        log.info(
            "audit: %s %s by %s -> %s%s",
            action,
            backup_id if backup_id is not None else server_id or "",
            actor.user_id,
            outcome.value,
            f" ({provider_status})" if provider_status else "",
        )
        return event

    def recent(
        self,
        limit: int = 20,
        *,
        user_id: str | None = None,
        server_id: int | None = None,
        action: str | None = None,
        since: datetime | None = None,
        approval_id: int | None = None,
        outcome: str | None = None,
        before_id: int | None = None,
        after_id: int | None = None,
    ) -> list[AuditEntry]:
        """Newest first. `action` matches itself and its sub-actions (delete → delete.request).
        `before_id`/`after_id` page: the `limit` rows older than one row, or newer."""
        where = _filters(user_id, server_id, action, since, approval_id, outcome)
        if before_id is not None:
            where.append(AuditEvent.id < before_id)
        if after_id is not None:
            where.append(AuditEvent.id > after_id)
        order = AuditEvent.id.asc() if after_id is not None else AuditEvent.id.desc()
        query = select(AuditEvent).where(*where).order_by(order).limit(limit)
        with self._sessions() as session:
            rows = [AuditEntry.of(event) for event in session.scalars(query)]
        return rows[::-1] if after_id is not None else rows

    def export(self, out: IO[str], fmt: str = "csv", **filters: Any) -> int:
        """The rows matching `filters` (those of `recent`), oldest first, as CSV or JSON Lines;
        read in batches, so memory stays flat whatever the size. Returns how many.

        A CSV text cell starting with `=`, `+`, `-`, `@`, tab or CR gets a leading `'`, so a
        display name like `=HYPERLINK(…)` is shown, not run, by a spreadsheet (CSV injection).
        """
        query = select(AuditEvent).where(*_filters(**filters)).order_by(AuditEvent.id)
        columns = (*HASHED_FIELDS, *OPTIONAL_HASHED_FIELDS, "prev_hash", "row_hash")
        writer = csv.writer(out) if fmt == "csv" else None
        if writer is not None:
            writer.writerow(columns)
        count = 0
        with self._sessions() as session:
            for event in session.scalars(query.execution_options(yield_per=500)):
                row = {**_row(event), "prev_hash": event.prev_hash, "row_hash": event.row_hash}
                row["occurred_at"] = _canonical(row["occurred_at"])
                if writer is None:
                    out.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
                else:
                    row["parameters"] = json.dumps(
                        row["parameters"], sort_keys=True, ensure_ascii=False
                    )
                    writer.writerow([_inert(row[name]) for name in columns])
                count += 1
        return count

    def _rows(self, since: datetime | None = None) -> Iterator[AuditEvent]:
        query = select(AuditEvent).order_by(AuditEvent.id)
        if since is not None:
            query = query.where(AuditEvent.occurred_at >= since)
        with self._sessions() as session:
            yield from session.scalars(query.execution_options(yield_per=500))

    def verify(self) -> Verification:
        """Walk the chain from the oldest row; the first row that does not fit is reported."""
        previous, count = GENESIS, 0
        for event in self._rows():
            count += 1
            if event.prev_hash != previous:
                return Verification(
                    count, previous, event.id, "the row before it was removed or changed"
                )
            if event.row_hash != row_digest(previous, _row(event)):
                return Verification(count, previous, event.id, "its content was changed")
            previous = event.row_hash
        return Verification(count, previous)

    def export_csv(self, out: IO[str], since: datetime | None = None) -> int:
        """Rows as CSV (parameters as JSON), oldest first; returns how many."""
        return self.export(out, "csv", since=since)


def _filters(
    user_id: str | None = None,
    server_id: int | None = None,
    action: str | None = None,
    since: datetime | None = None,
    approval_id: int | None = None,
    outcome: str | None = None,
) -> list[Any]:
    where: list[Any] = []
    if user_id is not None:
        where.append(AuditEvent.actor_user_id == user_id)
    if server_id is not None:
        where.append(AuditEvent.server_id == server_id)
    if action is not None:
        where.append(or_(AuditEvent.action == action, AuditEvent.action.startswith(f"{action}.")))
    if since is not None:
        where.append(AuditEvent.occurred_at >= since)
    if approval_id is not None:
        where.append(AuditEvent.approval_id == approval_id)
    if outcome is not None:
        where.append(AuditEvent.outcome == outcome)
    return where


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _inert(cell: Any) -> Any:
    if isinstance(cell, str) and cell.startswith(_FORMULA_STARTS):
        return "'" + cell
    return cell
