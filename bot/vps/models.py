"""Typed models of what the Backups API returns, parsed leniently where the contract is silent.

Dates become aware UTC datetimes; `size_mb` and `expires_at` may be null; unknown fields are
ignored and an unknown `status` is kept as text and treated as still running.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Literal, TypeAlias

from bot.vps.errors import UnexpectedResponse

log = logging.getLogger(__name__)

BackupType: TypeAlias = Literal["manual", "automatic"]
BACKUP_TYPES: tuple[BackupType, ...] = ("manual", "automatic")  # the `backup_type` filter's values

COMPLETED_STATUSES = frozenset({"completed"})
RUNNING_STATUSES = frozenset({"in_progress", "pending", "queued", "creating", "running"})
# Not in the contract; seen in other providers' APIs and produced by our simulator's faults.
FAILED_STATUSES = frozenset({"failed", "error", "errored", "cancelled", "canceled", "aborted"})

_warned_statuses: set[str] = set()


class Phase(Enum):
    """Where a backup is in its life, derived from the provider's free-text status."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ServerRef:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class Backup:
    id: int
    server: ServerRef
    backup_type: str
    status: str
    size_mb: float | None
    created_at: datetime
    expires_at: datetime | None
    description: str
    message: str | None = None

    @property
    def phase(self) -> Phase:
        if self.status in COMPLETED_STATUSES:
            return Phase.COMPLETED
        if self.status in FAILED_STATUSES:
            return Phase.FAILED
        if self.status not in RUNNING_STATUSES and self.status not in _warned_statuses:
            # An unknown status is never taken for "finished": we keep watching and say so once.
            _warned_statuses.add(self.status)
            log.warning(
                "unknown backup status %r (backup %s): treated as running", self.status, self.id
            )
        return Phase.RUNNING

    @property
    def is_manual(self) -> bool:
        return self.backup_type == "manual"


@dataclass(frozen=True, slots=True)
class BackupList:
    """One answer of `GET /backups/`: `count` as the provider reports it, backups in its order.

    A row of the wrong shape is left out rather than failing the whole list: `unreadable` counts
    such rows, and `unreadable_ids` names those whose id could still be read (a watcher must not
    take "unreadable" for "gone").
    """

    count: int
    backups: tuple[Backup, ...]
    unreadable: int = 0
    unreadable_ids: frozenset[int] = frozenset()

    def newest_first(self) -> list[Backup]:
        return sorted(self.backups, key=lambda b: (b.created_at, b.id), reverse=True)


@dataclass(frozen=True, slots=True)
class RestoreAccepted:
    """The provider accepted a restore (any 2xx); `detail` is its message, if it sent one."""

    server_id: int
    backup_id: int
    status_code: int
    detail: str | None


class DeleteOutcome(Enum):
    DELETED = "deleted"
    # A retried DELETE answered 404: our first attempt most likely deleted it.
    ALREADY_DELETED = "already_deleted"


def parse_datetime(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise UnexpectedResponse(f"The provider sent {field}={value!r}, not a date.")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        raise UnexpectedResponse(f"The provider sent {field}={value!r}, not a date.") from None
    if parsed.tzinfo is None:
        # The contract's dates all end in Z; a bare one is taken as UTC rather than local time.
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _integer(value: Any, field: str) -> int:
    problem = UnexpectedResponse(f"The provider sent {field}={value!r}, not a whole number.")
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise problem
    try:
        return int(value)
    except ValueError:
        raise problem from None


def parse_backup(data: Any) -> Backup:
    if not isinstance(data, dict):
        raise UnexpectedResponse("The provider sent a backup that is not a JSON object.")
    try:
        server = data["server"]
        status = data["status"]
        created_at = data["created_at"]
        backup_id = data["id"]
    except KeyError as missing:
        field = missing.args[0]
        raise UnexpectedResponse(f"The provider sent a backup without {field!r}.") from None
    if isinstance(server, dict) and "id" in server:
        server_ref = ServerRef(
            id=_integer(server["id"], "server.id"), name=str(server.get("name") or server["id"])
        )
    else:
        # Some APIs send the bare id; keep going rather than fail the whole list.
        server_ref = ServerRef(id=_integer(server, "server"), name=str(server))
    size = _size(data.get("size_mb"), data.get("id"))
    expires = data.get("expires_at")
    # The contract names only `message` (on create); for a failed backup, take whatever reason
    # the provider gives under the usual names.
    message = next(
        (data[key] for key in ("message", "error", "detail", "failure_reason") if data.get(key)),
        None,
    )
    return Backup(
        id=_integer(backup_id, "id"),
        server=server_ref,
        backup_type=str(data.get("backup_type") or "unknown"),
        status=str(status),
        size_mb=size,
        created_at=parse_datetime(created_at, "created_at"),
        expires_at=None if expires is None else parse_datetime(expires, "expires_at"),
        description=str(data.get("description") or ""),
        message=str(message) if message is not None else None,
    )


def _size(value: Any, backup_id: Any) -> float | None:
    """`size_mb`, or None when it is missing or not a number (a size is not worth a lost row)."""
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    log.warning("backup %r: size_mb=%r is not a number; size shown as unknown", backup_id, value)
    return None


@dataclass
class BackupPage:
    """One page of a list answer, as far as it could be read."""

    count: int
    backups: list[Backup]
    following: str | None = None
    unreadable: int = 0
    unreadable_ids: set[int] = field(default_factory=set)


def parse_backup_page(data: Any) -> BackupPage:
    """One list answer; rows of the wrong shape are counted and left out, not fatal."""
    if isinstance(data, list):
        # A bare array is not the documented shape, but it carries the same facts.
        rows, count, following = data, len(data), None
    elif isinstance(data, dict) and isinstance(data.get("results"), list):
        rows = data["results"]
        count = data.get("count", len(rows))
        if isinstance(count, bool) or not isinstance(count, int):
            raise UnexpectedResponse(f"The provider sent count={count!r}, not a whole number.")
        following = data.get("next")
        following = following if isinstance(following, str) and following else None
    else:
        raise UnexpectedResponse("The provider's backup list has no 'results' array.")
    page = BackupPage(count, [], following)
    for row in rows:
        try:
            page.backups.append(parse_backup(row))
        except UnexpectedResponse as problem:
            page.unreadable += 1
            backup_id = row.get("id") if isinstance(row, dict) else None
            log.warning("left out a backup row the provider sent: %s", problem.message)
            with contextlib.suppress(UnexpectedResponse):
                page.unreadable_ids.add(_integer(backup_id, "id"))
    return page
