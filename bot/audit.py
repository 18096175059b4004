"""The audit table: who asked for what, where, when, and what came of it. Rows are only added.

Rows are hash-chained: each row's `row_hash` is a SHA-256 over its content and the previous row's
hash (`prev_hash`), so `backupbot audit verify` finds a row that was edited, removed or reordered.
Writes are serialized (a PostgreSQL advisory lock across instances, taken under READ COMMITTED
with a bounded wait; SQLite's own write lock) so the chain stays a line.

A chain alone cannot show its newest rows being cut off, nor a chain rewritten consistently from
some row on. Checkpoints can (as CloudTrail's digest files do): a checkpoint states the row count,
the newest row and its hash, signed with HMAC-SHA256 under AUDIT_SIGNING_KEY, which is never
stored. They are kept in `audit_checkpoints` and printed as a JSON line to be kept elsewhere too.
A prune writes an "anchor": a signed checkpoint of the last row it removed, where `verify` then
starts the chain.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from sqlalchemy import delete, func, or_, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from bot.db import AuditCheckpoint, AuditEvent, Outcome, utcnow
from bot.logs import current_request_id
from bot.rounds import Rounds

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
# Hashed only when set (so older rows keep their hashes); setting, changing or clearing one breaks
# the row's hash. `request_id` (0008): the Slack request the row was written for.
OPTIONAL_HASHED_FIELDS = ("actor_enterprise_id", "approval_id", "request_id")
_ADVISORY_LOCK = 0x6261636B  # "back": one writer at a time across instances (PostgreSQL)
_VERIFY_BATCH = 5000  # rows read at a time by `verify`: memory stays flat
LOCK_TIMEOUT_SECONDS = 5.0  # how long an audit write waits for the chain's lock
_LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's lock_timeout error


class AuditUnavailable(RuntimeError):
    """An audit row could not be written in time (its lock was held too long): nothing was
    recorded. The message is fit for a person."""


class CheckpointError(ValueError):
    """A checkpoint given to `verify` could not be read; the message says why."""


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
    request_id: str | None = None

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
    return _digest(
        previous,
        [row[name] for name in HASHED_FIELDS],
        [row.get(name) for name in OPTIONAL_HASHED_FIELDS],
    )


def _digest(previous: str, hashed: Sequence[Any], optional: Sequence[Any]) -> str:
    """`row_digest` of the values of `HASHED_FIELDS` and `OPTIONAL_HASHED_FIELDS`, in order
    (`verify` reads them as plain tuples in that order: no lookups by name per row)."""
    return hashlib.sha256(canonical_bytes(previous, hashed, optional)).hexdigest()


def canonical_bytes(previous: str, hashed: Sequence[Any], optional: Sequence[Any]) -> bytes:
    """The bytes a row's hash is taken of: the previous hash and the row's values as JSON."""
    fields: list[Any] = [_canonical(value) for value in hashed]
    fields += [
        [name, _canonical(value)]
        for name, value in zip(OPTIONAL_HASHED_FIELDS, optional, strict=True)
        if value is not None
    ]
    content = [previous, fields]
    data = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return data.encode()


def _row(event: AuditEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in (*HASHED_FIELDS, *OPTIONAL_HASHED_FIELDS)}


@dataclass(frozen=True)
class Checkpoint:
    """The chain's state at one moment: `rows` in the chain from its first row ever up to and
    including row `last_id` (None: no row yet), whose hash is `head`. Signed; the key is not kept.

    `kind`: "checkpoint", or "anchor" (written by a prune: its last removed row). `id`: its row in
    `audit_checkpoints` (None for one not stored); not signed.
    """

    kind: str
    rows: int
    last_id: int | None
    head: str
    created_at: datetime
    signature: str
    id: int | None = None

    def payload(self) -> bytes:
        content = {
            "kind": self.kind,
            "rows": self.rows,
            "last_id": self.last_id,
            "head": self.head,
            "created_at": _canonical(self.created_at),
        }
        return json.dumps(content, sort_keys=True, separators=(",", ":")).encode()

    def signed_by(self, key: str) -> bool:
        expected = _sign(key, self.payload())
        return hmac.compare_digest(expected.encode(), self.signature.encode())

    def to_json(self) -> str:
        """One JSON line: what to keep elsewhere (a ticket, a file) and give to `verify`."""
        data = json.loads(self.payload())
        data["signature"] = self.signature
        if self.id is not None:
            data["id"] = self.id
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> Checkpoint:
        try:
            data = json.loads(line)
            kind = data["kind"]
            rows, last_id = data["rows"], data["last_id"]
            checkpoint = cls(
                kind=kind if kind in ("checkpoint", "anchor") else "checkpoint",
                rows=int(rows),
                last_id=None if last_id is None else int(last_id),
                head=str(data["head"]),
                created_at=datetime.fromisoformat(data["created_at"]).astimezone(UTC),
                signature=str(data["signature"]),
                id=None if data.get("id") is None else int(data["id"]),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CheckpointError(
                f"not a checkpoint (one JSON line from `backupbot audit checkpoint`): {exc!r}"
            ) from None
        if kind != checkpoint.kind:
            raise CheckpointError(f"not a checkpoint: unknown kind {kind!r}")
        return checkpoint

    @classmethod
    def of(cls, row: AuditCheckpoint) -> Checkpoint:
        facts = (row.kind, row.row_count, row.last_row_id, row.head_hash, row.created_at)
        return cls(*facts, signature=row.signature, id=row.id)

    def describe(self) -> str:
        where = f"#{self.id}" if self.id is not None else "(given)"
        up_to = f"row {self.last_id}" if self.last_id is not None else "no row"
        when = self.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        name = "prune anchor" if self.kind == "anchor" else "checkpoint"
        rows = f"{self.rows} row{'' if self.rows == 1 else 's'}"
        return f"{name} {where} of {when} ({rows}, up to {up_to})"


def _sign(key: str, payload: bytes) -> str:
    return hmac.new(key.encode(), payload, hashlib.sha256).hexdigest()


def sign_checkpoint(
    key: str, kind: str, rows: int, last_id: int | None, head: str, created_at: datetime
) -> Checkpoint:
    created_at = created_at.astimezone(UTC)
    unsigned = Checkpoint(kind, rows, last_id, head, created_at, "")
    return Checkpoint(kind, rows, last_id, head, created_at, _sign(key, unsigned.payload()))


@dataclass(frozen=True)
class Verification:
    rows: int  # rows present (and walked)
    head: str  # the newest row's hash (GENESIS for an empty table)
    broken_at: int | None = None  # id of the first row that does not fit
    reason: str = ""
    # What the rows were checked against (None: the chain only).
    checkpoint: Checkpoint | None = None
    keyed: bool = False  # a signing key was given: checkpoints' signatures were checked
    anchor: Checkpoint | None = None  # the prune anchor the chain starts from
    checkpoint_failed: str = ""  # a checkpoint that does not hold (or is forged), and why
    checkpoints_checked: int = 0

    @property
    def ok(self) -> bool:
        return self.broken_at is None and not self.checkpoint_failed


@dataclass(frozen=True)
class PruneResult:
    checkpoint: Checkpoint  # taken before removing anything
    anchor: Checkpoint | None  # the last removed row (None: nothing was old enough)
    removed: int


class AuditBroken(RuntimeError):
    """The audit log does not verify (so a prune refuses to run)."""


class AuditLog:
    """Writes audit rows in their own short transaction, so a failed use-case is still recorded."""

    def __init__(
        self, sessions: sessionmaker[Session], *, lock_timeout: float = LOCK_TIMEOUT_SECONDS
    ) -> None:
        self._sessions = sessions
        self._lock_timeout = lock_timeout

    def _lock_chain(self, session: Session) -> None:
        """Begin an audit write: READ COMMITTED (pinned, not inherited) and the chain's lock,
        waiting at most `lock_timeout` for it (PostgreSQL: lock_timeout; SQLite: busy_timeout,
        the write lock being taken by the first write)."""
        milliseconds = max(1, int(self._lock_timeout * 1000))
        if session.get_bind().dialect.name == "postgresql":
            session.connection(execution_options={"isolation_level": "READ COMMITTED"})
            session.execute(text(f"SET LOCAL lock_timeout = {milliseconds}"))
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK})
        else:
            session.execute(text(f"PRAGMA busy_timeout = {milliseconds}"))
            # A write that changes nothing takes SQLite's write lock (waiting busy_timeout for
            # it): no other writer, thread or process, until this transaction ends.
            session.execute(text("DELETE FROM audit_events WHERE 0 = 1"))

    def _next_id(self, session: Session) -> int:
        """The new row's id, chosen before the insert (its hash covers it; UPDATEs are refused).
        Never an id a prune removed: SQLite would otherwise reuse ids after the newest row."""
        if session.get_bind().dialect.name == "postgresql":
            sequence = "SELECT nextval(pg_get_serial_sequence('audit_events', 'id'))"
            return int(session.execute(text(sequence)).scalar_one())
        newest = session.scalar(select(func.max(AuditEvent.id))) or 0
        pruned = session.scalar(
            select(func.max(AuditCheckpoint.last_row_id)).where(AuditCheckpoint.kind == "anchor")
        )
        return max(newest, pruned or 0) + 1

    def _previous_hash(self, session: Session, before: int) -> str:
        last = session.scalar(
            select(AuditEvent.row_hash)
            .where(AuditEvent.id < before)
            .order_by(AuditEvent.id.desc())
            .limit(1)
        )
        if last is not None:
            return last
        anchor = session.scalar(
            select(AuditCheckpoint.head_hash)
            .where(AuditCheckpoint.kind == "anchor")
            .order_by(AuditCheckpoint.id.desc())
            .limit(1)
        )
        return anchor or GENESIS

    def _unavailable(self, exc: OperationalError) -> AuditUnavailable | None:
        """The typed error for a lock wait that ran out (None for any other database error)."""
        original = exc.orig
        timed_out = getattr(original, "sqlstate", None) == _LOCK_NOT_AVAILABLE or (
            "database is locked" in str(original)
        )
        if not timed_out:
            return None
        return AuditUnavailable(
            f"the audit log is busy: its lock was held by another writer for more than "
            f"{self._lock_timeout:g} s, so nothing was recorded; try again shortly"
        )

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
        """One row, in its own transaction; it stores the current Slack request's id."""
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
            request_id=current_request_id(),
        )
        try:
            with self._sessions.begin() as session:
                # Under the chain's lock no other writer can slip a row in between reading
                # the previous hash and inserting ours, whole (the table refuses UPDATEs).
                self._lock_chain(session)
                event.id = self._next_id(session)
                event.prev_hash = self._previous_hash(session, event.id)
                event.row_hash = row_digest(event.prev_hash, _row(event))
                session.add(event)
        except OperationalError as exc:
            unavailable = self._unavailable(exc)
            if unavailable is None:
                raise
            log.warning("audit: %s (%s by %s not recorded)", unavailable, action, actor.user_id)
            raise unavailable from exc
        log.info(
            "audit: %s %s by %s -> %s%s",
            action,
            backup_id if backup_id is not None else server_id or "",
            actor.user_id,
            outcome.value,
            f" ({provider_status})" if provider_status else "",
        )
        return event

    def reachable(self) -> None:
        """Raise the database's error unless it answers now (before an act that must be
        recorded: better refused than done and unrecorded)."""
        with self._sessions() as session:
            session.execute(text("SELECT 1"))

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

    def _rows(self, since: datetime | None = None, after: int = 0) -> Iterator[Any]:
        """The rows' hashed columns and hashes, oldest first, as plain rows (not ORM objects:
        `verify` reads millions, and building objects costs more than the hashing)."""
        columns = (*HASHED_FIELDS, *OPTIONAL_HASHED_FIELDS, "prev_hash", "row_hash")
        query = select(*(getattr(AuditEvent, name) for name in columns)).order_by(AuditEvent.id)
        if since is not None:
            query = query.where(AuditEvent.occurred_at >= since)
        with self._sessions() as session:
            # Core, not the ORM's execute: these are plain rows, and the ORM's per-row loading
            # costs as much again as the hashing. Batches by id (keyset), each a plain buffered
            # query, in one REPEATABLE READ snapshot on PostgreSQL so they fit together.
            options = {}
            if session.get_bind().dialect.name == "postgresql":
                options["isolation_level"] = "REPEATABLE READ"
            connection = session.connection(execution_options=options)
            while True:
                batch = connection.execute(
                    query.where(AuditEvent.id > after).limit(_VERIFY_BATCH)
                ).all()
                yield from batch
                if len(batch) < _VERIFY_BATCH:
                    return
                after = batch[-1].id

    # -- checkpoints ---------------------------------------------------------------------

    def checkpoint(self, key: str, *, now: datetime | None = None) -> Checkpoint:
        """Sign and store the chain's state now (rows, newest row, its hash); return it.

        What a worker calls every AUDIT_CHECKPOINT_HOURS, and what would be posted to
        AUDIT_CHANNEL (`Checkpoint.to_json()` / `describe()`)."""
        with self._sessions.begin() as session:
            # The chain's lock: the count and the head are of one moment, and no prune between.
            self._lock_chain(session)
            anchor = self._trusted_anchor(session, key)
            after = anchor.last_id if anchor and anchor.last_id is not None else 0
            count, newest = session.execute(
                select(func.count(), func.max(AuditEvent.id)).where(AuditEvent.id > after)
            ).one()
            rows = (anchor.rows if anchor else 0) + count
            if newest is None:
                last_id, head = (anchor.last_id, anchor.head) if anchor else (None, GENESIS)
            else:
                last_id = newest
                head = session.scalar(select(AuditEvent.row_hash).where(AuditEvent.id == newest))
            signed = sign_checkpoint(
                key, "checkpoint", rows, last_id, head or GENESIS, now or utcnow()
            )
            stored = self._store(session, signed)
        log.info("audit: checkpoint %s", stored.describe())
        return stored

    def checkpoint_if_due(self, key: str, every: timedelta) -> Checkpoint | None:
        """A new checkpoint when the newest stored one is older than `every` (for a worker)."""
        latest = self.checkpoints(kind="checkpoint")
        if latest and utcnow() - latest[-1].created_at < every:
            return None
        return self.checkpoint(key)

    def checkpoints(self, *, kind: str | None = None) -> list[Checkpoint]:
        """The stored checkpoints and anchors, oldest first (signatures not checked)."""
        query = select(AuditCheckpoint).order_by(AuditCheckpoint.id)
        if kind is not None:
            query = query.where(AuditCheckpoint.kind == kind)
        with self._sessions() as session:
            return [Checkpoint.of(row) for row in session.scalars(query)]

    @staticmethod
    def _store(session: Session, checkpoint: Checkpoint) -> Checkpoint:
        row = AuditCheckpoint(
            kind=checkpoint.kind,
            created_at=checkpoint.created_at,
            row_count=checkpoint.rows,
            last_row_id=checkpoint.last_id,
            head_hash=checkpoint.head,
            signature=checkpoint.signature,
        )
        session.add(row)
        session.flush()
        return Checkpoint.of(row)

    @staticmethod
    def _trusted_anchor(session: Session, key: str | None) -> Checkpoint | None:
        """The newest prune anchor (whose signature holds, given a key)."""
        query = (
            select(AuditCheckpoint)
            .where(AuditCheckpoint.kind == "anchor")
            .order_by(AuditCheckpoint.id.desc())
        )
        for row in session.scalars(query):
            anchor = Checkpoint.of(row)
            if key is None or anchor.signed_by(key):
                return anchor
        return None

    # -- verification --------------------------------------------------------------------

    def verify(self, key: str | None = None, checkpoint: Checkpoint | None = None) -> Verification:
        """Walk the chain from its start (GENESIS, or the newest prune anchor) and check it
        against the checkpoints: with a key, every stored one whose signature holds (any that
        does not is reported as forged) or only `checkpoint` when given; without a key, none.
        """
        stored = self.checkpoints()
        forged = [c for c in stored if key is not None and not c.signed_by(key)]
        if checkpoint is not None and key is not None and not checkpoint.signed_by(key):
            forged.insert(0, checkpoint)
        anchors = [c for c in stored if c.kind == "anchor" and c not in forged]
        anchor = anchors[-1] if anchors else None
        if checkpoint is not None:
            trusted = [checkpoint] if key is not None and checkpoint not in forged else []
        elif key is not None:
            trusted = [c for c in stored if c not in forged]
        else:
            trusted = []
        walk = replace(self._walk(anchor, trusted), keyed=key is not None)
        if not forged:
            return walk
        more = f" ({len(forged) - 1} more like it)" if len(forged) > 1 else ""
        found = (
            f"{forged[0].describe()} is forged: its signature does not hold under "
            f"AUDIT_SIGNING_KEY, so it is not trusted{more}"
        )
        also = f"; also, {walk.checkpoint_failed}" if walk.checkpoint_failed else ""
        return replace(walk, checkpoint_failed=found + also)

    def _walk(self, anchor: Checkpoint | None, checkpoints: list[Checkpoint]) -> Verification:
        after = anchor.last_id if anchor and anchor.last_id is not None else 0
        previous = anchor.head if anchor else GENESIS
        position = anchor.rows if anchor else 0
        wanted: dict[int, list[Checkpoint]] = {}
        for checkpoint in checkpoints:
            if checkpoint.last_id is not None and checkpoint.last_id > after:
                wanted.setdefault(checkpoint.last_id, []).append(checkpoint)
        seen: dict[int, tuple[int, str]] = {}  # checkpoint row id -> (position, row hash)
        count = 0
        hashed, optional = len(HASHED_FIELDS), len(HASHED_FIELDS) + len(OPTIONAL_HASHED_FIELDS)
        for event in self._rows(after=after):
            count += 1
            position += 1
            if event.prev_hash != previous:
                reason = "the row before it was removed or changed"
            elif event.row_hash != _digest(previous, event[:hashed], event[hashed:optional]):
                reason = "its content was changed"
            else:
                previous = event.row_hash
                reason = ""
            if reason:
                return Verification(count, previous, event.id, anchor=anchor, reason=reason)
            if event.id in wanted:
                seen[event.id] = (position, previous)
        result = Verification(count, previous, anchor=anchor, checkpoints_checked=len(checkpoints))
        total = position
        # The checkpoints in the order of their rows: the first that fails tells where.
        holding: Checkpoint | None = None
        for checkpoint in sorted(checkpoints, key=lambda c: (c.last_id or 0, c.id or 0)):
            failure = self._against(checkpoint, anchor, seen, total)
            if failure:
                since = (
                    f"; {holding.describe()} still holds, so rows after {holding.last_id} "
                    "were touched"
                    if holding is not None and holding.last_id is not None
                    else ""
                )
                broken = checkpoint.last_id if checkpoint.last_id is not None else None
                return replace(
                    result,
                    broken_at=broken,
                    checkpoint=checkpoint,
                    checkpoint_failed=f"{failure} ({checkpoint.describe()}){since}",
                )
            holding = checkpoint
        newest = max(checkpoints, key=lambda c: (c.last_id or 0, c.id or 0), default=None)
        return replace(result, checkpoint=newest)

    @staticmethod
    def _against(
        checkpoint: Checkpoint,
        anchor: Checkpoint | None,
        seen: Mapping[int, tuple[int, str]],
        total: int,
    ) -> str:
        """Why the chain does not hold against this checkpoint ("" if it does)."""
        if checkpoint.last_id is None:
            return ""  # taken on an empty log: nothing to hold
        if (
            anchor is not None
            and anchor.last_id is not None
            and checkpoint.last_id <= anchor.last_id
        ):
            if checkpoint.last_id == anchor.last_id and (
                checkpoint.head != anchor.head or checkpoint.rows != anchor.rows
            ):
                return f"row {checkpoint.last_id} was pruned with another hash or position"
            return ""  # its rows were pruned since: the anchor took over
        if checkpoint.last_id not in seen:
            if total < checkpoint.rows:
                return (
                    f"the newest rows were removed: the log has {total} rows, the checkpoint "
                    f"counted {checkpoint.rows}; its head row {checkpoint.last_id} is missing"
                )
            return f"row {checkpoint.last_id}, the checkpoint's head, is missing"
        position, digest = seen[checkpoint.last_id]
        if digest != checkpoint.head:
            return (
                f"row {checkpoint.last_id} is not the checkpoint's head: the chain was rewritten "
                f"at or before row {checkpoint.last_id}"
            )
        if position != checkpoint.rows:
            return (
                f"row {checkpoint.last_id} is row {position} of the chain, the checkpoint "
                f"counted {checkpoint.rows}"
            )
        return ""

    # -- retention -----------------------------------------------------------------------

    def prune(self, key: str, older_than: timedelta, *, now: datetime | None = None) -> PruneResult:
        """The one sanctioned removal: checkpoint, then delete the oldest rows (a prefix of the
        chain, every row older than `older_than`) together with a signed anchor naming the last
        one removed, where `verify` then starts. Refused while the log does not verify."""
        before = self.verify(key)
        if not before.ok:
            raise AuditBroken(
                "the audit log does not verify, so nothing was pruned (that would remove the "
                f"evidence): {before.reason or before.checkpoint_failed}"
            )
        checkpoint = self.checkpoint(key, now=now)
        cutoff = (now or utcnow()) - older_than
        with self._sessions.begin() as session:
            self._lock_chain(session)
            anchor = self._trusted_anchor(session, key)
            after = anchor.last_id if anchor and anchor.last_id is not None else 0
            first_kept = session.scalar(
                select(func.min(AuditEvent.id)).where(
                    AuditEvent.id > after, AuditEvent.occurred_at >= cutoff
                )
            )
            removable = select(func.count(), func.max(AuditEvent.id)).where(AuditEvent.id > after)
            if first_kept is not None:
                removable = removable.where(AuditEvent.id < first_kept)
            count, last = session.execute(removable).one()
            if not count:
                return PruneResult(checkpoint, None, 0)
            head = session.scalar(select(AuditEvent.row_hash).where(AuditEvent.id == last))
            signed = sign_checkpoint(
                key,
                "anchor",
                (anchor.rows if anchor else 0) + count,
                last,
                head or GENESIS,
                now or utcnow(),
            )
            new_anchor = self._store(session, signed)  # first: the triggers allow rows up to it
            session.execute(delete(AuditEvent).where(AuditEvent.id <= last))
        log.info("audit: pruned %s rows up to row %s (%s)", count, last, new_anchor.describe())
        return PruneResult(checkpoint, new_anchor, count)

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
    request_id: str | None = None,
) -> list[Any]:
    where: list[Any] = []
    if request_id is not None:
        where.append(AuditEvent.request_id == request_id)
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


class CheckpointWriter(Rounds):
    """Writes a signed checkpoint whenever one is due (`every`), checking each `tick` on its own
    daemon thread. Several instances may each write one: harmless. `on_checkpoint` receives each
    new checkpoint (posting it to AUDIT_CHANNEL is the Slack side's job); its errors are logged."""

    def __init__(
        self,
        audit: AuditLog,
        key: str,
        every: timedelta,
        *,
        tick: float = 60.0,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
    ) -> None:
        self._audit, self._key, self._every = audit, key, every
        self.on_checkpoint = on_checkpoint
        super().__init__("audit-checkpoints", lambda: tick)

    def run_once(self) -> Checkpoint | None:
        try:
            checkpoint = self._audit.checkpoint_if_due(self._key, self._every)
            if checkpoint is not None and self.on_checkpoint is not None:
                self.on_checkpoint(checkpoint)
            return checkpoint
        except Exception as exc:  # a worker: log and try again next tick
            log.warning("audit checkpoint failed: %s", type(exc).__name__)
            return None


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _inert(cell: Any) -> Any:
    if isinstance(cell, str) and cell.startswith(_FORMULA_STARTS):
        return "'" + cell
    return cell
