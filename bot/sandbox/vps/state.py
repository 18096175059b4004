"""The simulated provider account: servers, backups, faults and the request record; no HTTP here.

Where `VPS-BACKUPS-API.md` is silent we answer as the real API (Django REST framework) would:
errors are `{"field": ["message"]}` or `{"detail": "…"}`; numeric strings pass as integers,
booleans and floats do not; an empty filter is none. Beyond the contract: 409 to create a backup
for, or restore, a server with a backup or restore in progress, or to delete an in-progress backup;
202 for an accepted restore; 400 for bad filters; a failed backup carries an `error` field.

Progress is lazy: whenever state is read, due backups reach their outcome (completed with a size,
failed, or vanished) and automatic backups past `expires_at` (one calendar month after creation, as
in the original's example, the day clamped at the month's end) disappear. No clock thread.

Seeded ids do not follow creation time (in the original's example 499 is older than 495): they are
shuffled with the random stream (`FaultConfig.seed` makes them reproducible), no server's highest
id is its newest backup, and the first (101) is the first server's oldest backup. Two manual
backups are seeded whatever `history_days` is; later ones get ids from 1000. Lists come in a stable
order that is not by date.
"""

from __future__ import annotations

import calendar
import math
import random
import re
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

from bot.vps.models import BACKUP_TYPES  # the contract's own words, one copy

API_ROOT = "/api/v1"
OUTCOMES = ("completed", "failed", "vanish")
TIMEOUT_MODES = ("before", "after", "mixed")
DEFAULT_SERVERS = {12345: "web-server-01", 12346: "db-server-01", 12347: "cache-01"}
FAILED_BACKUP_ERROR = "Disk snapshot failed"
CREATED_MESSAGE = "Backup is being created. This may take several minutes depending on server size."
BUSY_DETAIL = "A backup or restore is already in progress for this server."
NOT_FOUND_DETAIL = "Not found."
DESCRIPTION_MAX = 255
TOO_LONG = f"Ensure this field has no more than {DESCRIPTION_MAX} characters."
_INT_TEXT = re.compile(r"\s*-?[0-9]+\s*", re.ASCII)


class ApiError(Exception):
    """The provider refuses: a status and the DRF-style body it answers with."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status, body)
        self.status, self.body = status, body


def _detail(status: int, text: str) -> ApiError:
    return ApiError(status, {"detail": text})


def phrase(status: int) -> str:
    """The reason phrase of a status ("Error" for one HTTP does not name)."""
    return next((known.phrase for known in HTTPStatus if known == status), "Error")


@dataclass
class FaultConfig:
    """Random misbehaviour applied to API requests; mutable while the simulator runs."""

    latency: float = 0.0  # seconds before every answer
    failure_rate: float = 0.0  # answered with one of failure_statuses, not processed
    failure_statuses: tuple[int, ...] = (500, 503, 429)
    retry_after: float = 1.0  # sent with a 429 or 503, rounded up to whole seconds
    timeout_rate: float = 0.0  # hangs hang_seconds before or after processing (timeout_mode)
    hang_seconds: float = 30.0
    timeout_mode: str = "mixed"  # "before", "after", or either at random
    fail_rate: float = 0.0  # a new backup ends failed
    vanish_rate: float = 0.0  # a new backup disappears instead of completing
    seed: int | None = None  # of the random stream, read when the simulator is made

    def __post_init__(self) -> None:
        for name in ("failure_rate", "timeout_rate", "fail_rate", "vanish_rate"):
            if not 0.0 <= (value := getattr(self, name)) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        for name in ("latency", "retry_after", "hang_seconds"):
            if (value := getattr(self, name)) < 0:
                raise ValueError(f"{name} must not be negative, got {value!r}")
        if self.timeout_mode not in TIMEOUT_MODES:
            raise ValueError(f"timeout_mode must be one of {TIMEOUT_MODES}: {self.timeout_mode!r}")
        if self.fail_rate + self.vanish_rate > 1.0:
            raise ValueError("fail_rate + vanish_rate must not exceed 1")
        statuses = self.failure_statuses = tuple(self.failure_statuses)
        if not statuses or any(type(s) is not int or not 400 <= s <= 599 for s in statuses):
            raise ValueError(f"failure_statuses must be 4xx/5xx codes, got {statuses}")


@dataclass
class RecordedRequest:
    """One request as the simulator received it, and the status it answered (0: none sent)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorized: bool
    at: float
    status: int = 0


@dataclass
class Fault:
    """What to do to one request (see `inject()`); `FaultConfig` draws them at random too."""

    method: str | None = None
    path: str | None = None  # a prefix of the API-relative path
    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    hang: float = 0.0
    after_processing: bool = False
    corrupt: tuple[dict[str, Any], ...] = ()
    count: int = 1


@dataclass
class _Backup:
    server_id: int
    backup_type: str
    status: str
    description: str = ""
    size_mb: int | None = None
    created_at: datetime | None = None
    expires_at: datetime | None = None
    id: int = 0  # 0: the next free one
    due_at: float | None = None  # monotonic time an in-progress backup reaches its outcome
    outcome: str = "completed"


def one_month_after(moment: datetime) -> datetime:
    """The same time one calendar month later, the day clamped at the month's end."""
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return moment.replace(
        year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1])
    )


def as_int(value: Any) -> int | None:
    """An integer as DRF's IntegerField accepts it (ints and numeric strings, not bools)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, str) and _INT_TEXT.fullmatch(value) else None


def _int_field(data: Any, name: str) -> int:
    """`data[name]` as a serializer's required IntegerField takes it, `data` a JSON object."""
    if not isinstance(data, dict):
        problem = f"Invalid data. Expected a dictionary, but got {type(data).__name__}."
        raise ApiError(400, {"non_field_errors": [problem]})
    if name not in data:
        raise ApiError(400, {name: ["This field is required."]})
    if data[name] is None:
        raise ApiError(400, {name: ["This field may not be null."]})
    if (number := as_int(data[name])) is None:
        raise ApiError(400, {name: ["A valid integer is required."]})
    return number


def relative_path(path: str) -> str | None:
    """A path below API_ROOT (`/backups/`), or None outside it."""
    return path[len(API_ROOT) :] if path.startswith(API_ROOT + "/") else None


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class ProviderState:
    """The provider's account in memory; every method is thread-safe behind one lock."""

    def __init__(
        self,
        token: str,
        *,
        complete_after: float = 30.0,
        faults: FaultConfig | None = None,
        page_size: int | None = None,
        seed_data: bool = True,
        history_days: int = 7,
        max_recorded_requests: int | None = 100_000,
    ) -> None:
        if not isinstance(token, str) or not token:
            raise ValueError("token must be a non-empty string")
        for name, value, least in (
            ("complete_after", complete_after, 0),
            ("page_size", page_size, 1),
            ("history_days", history_days, 0),
            ("max_recorded_requests", max_recorded_requests, 0),
        ):
            if value is not None and value < least:
                raise ValueError(f"{name} must be at least {least}, got {value!r}")
        self.token = token
        self.complete_after = complete_after  # also how long a restore keeps its server busy
        self.page_size = page_size
        self.max_recorded_requests = max_recorded_requests  # None: keep every request
        self.servers: dict[int, str] = {}
        self.requests: list[RecordedRequest] = []  # the newest, oldest first
        self._lock = threading.Lock()
        self.faults = faults or FaultConfig()  # mutable, or replaced, at any time
        self._rng = random.Random(self.faults.seed)
        self._backups: dict[int, _Backup] = {}
        self._base_sizes: dict[int, int] = {}
        self._restores: list[dict[str, Any]] = []
        self._restoring_until: dict[int, float] = {}
        self._scripted: list[Fault] = []
        self._next_id = 101
        if seed_data:
            for server_id, name in DEFAULT_SERVERS.items():
                self.add_server(server_id, name)
            self.seed_history(history_days)
        self._next_id = max(self._next_id, 1000)

    def add_server(self, server_id: int, name: str) -> None:
        """Add (or rename) a server of the account."""
        if isinstance(server_id, bool) or not isinstance(server_id, int):
            raise TypeError(f"server_id must be an int, got {server_id!r}")
        with self._lock:
            self.servers[server_id] = name

    def seed_history(self, days: int = 7, now: datetime | None = None) -> None:
        """Add `days` daily automatic backups (03:00 UTC) per server and two manual ones, with
        shuffled ids (see the module's decisions)."""
        if days < 0 or (now is not None and now.tzinfo is None):
            raise ValueError(f"days must not be negative ({days!r}), now timezone-aware ({now!r})")
        now = (now or _utc_now()).astimezone(UTC)
        latest = now.replace(hour=3, minute=0, second=0, microsecond=0)
        latest -= timedelta(days=1 if latest > now else 0)
        with self._lock:
            servers = sorted(self.servers)
            planned = [
                (latest - timedelta(days=day), server, "automatic", "Automatic daily backup")
                for day in range(days)
                for server in servers
            ]
            manual = ((10, 30, 2, "Pre-update backup"), (16, 15, 5, "Before kernel upgrade"))
            for hour, minute, days_ago, text in manual:
                created = now.replace(hour=hour, minute=minute, second=0) - timedelta(days=days_ago)
                planned += [(created, server, "manual", text) for server in servers[:1]]
            planned.sort(key=lambda item: (item[0], item[1]))  # creation order
            ids = self._shuffled_ids([server for _, server, _, _ in planned])
            for backup_id, (created, server, kind, text) in zip(ids, planned, strict=True):
                self._insert(_Backup(server, kind, "completed", text, None, created, id=backup_id))

    def add_backup(
        self,
        server_id: int,
        *,
        backup_type: str = "manual",
        status: str = "completed",
        size_mb: int | None = None,
        created_at: datetime | None = None,
        expires_at: datetime | None = None,
        description: str = "",
    ) -> dict[str, Any]:
        """Add a backup without HTTP; an `in_progress` one runs its course like a created one."""
        if backup_type not in BACKUP_TYPES:
            raise ValueError(f"backup_type must be one of {BACKUP_TYPES}, got {backup_type!r}")
        if created_at is not None and created_at.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")
        with self._lock:
            if server_id not in self.servers:
                raise KeyError(f"no server {server_id}")
            fields = (backup_type, status, description, size_mb, created_at, expires_at)
            return self._render(self._insert(_Backup(server_id, *fields)))

    def inject(
        self,
        *,
        method: str | None = None,
        path: str | None = None,
        status: int | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        hang: float | None = None,
        after_processing: bool = False,
        corrupt: list[dict[str, Any]] | None = None,
        count: int = 1,
    ) -> None:
        """Script a fault for the next `count` requests matching `method` and `path` (a prefix,
        API-relative); the first scripted is the first used, before any random fault.

        `hang` seconds pass before processing (a slow answer, or a timeout for a client that
        gives up first), or after it with `after_processing`. `status` (with `body`: JSON, or a
        str sent as HTML; and `headers`) answers instead of processing, or after processing with
        `after_processing` (the change happened, the answer says otherwise). `corrupt` overrides
        fields of the first rows of a list answer, e.g. `[{"size_mb": "4 GB"}, {"id": None}]`.
        """
        if status is None and hang is None and not corrupt:
            raise ValueError("inject() needs a status, a hang, or rows to corrupt")
        if status is not None and (corrupt or not 100 <= status <= 599):
            raise ValueError(f"status must be an HTTP status, and no rows to corrupt: {status!r}")
        if status is None and (body is not None or headers):
            raise ValueError("body and headers are only sent with an injected status")
        if (hang or 0) < 0 or count < 1:
            raise ValueError(f"hang must not be negative, count at least 1: {hang!r}, {count!r}")
        where = (relative_path(path) or path) if path is not None else None
        fault = Fault(method and method.upper(), where, status, body, dict(headers or {}))
        fault.hang, fault.after_processing, fault.count = hang or 0.0, after_processing, count
        fault.corrupt = tuple(corrupt or ())
        with self._lock:
            self._scripted.append(fault)

    def finish(self, backup_id: int, outcome: str = "completed") -> None:
        """End an in-progress backup now with `outcome` (completed, failed or vanish)."""
        with self._lock:
            self._settle(self._in_progress(backup_id, outcome), outcome)

    def set_outcome(self, backup_id: int, outcome: str) -> None:
        """Decide how an in-progress backup ends when its time comes."""
        with self._lock:
            self._in_progress(backup_id, outcome).outcome = outcome

    def backup(self, backup_id: int) -> dict[str, Any] | None:
        """A backup as the API shows it now, or None once deleted, vanished or never made."""
        with self._lock:
            self._advance()
            backup = self._backups.get(backup_id)
            return None if backup is None else self._render(backup)

    @property
    def restores(self) -> list[dict[str, Any]]:
        """Every restore accepted: server_id, backup_id and `at` (aware UTC)."""
        with self._lock:
            return [dict(restore) for restore in self._restores]

    def api_calls(
        self, method: str | None = None, path: str | None = None
    ) -> list[RecordedRequest]:
        """Recorded requests with this method and a path starting with `path` (API-relative)."""
        wanted = (relative_path(path) or path) if path is not None else None
        with self._lock:
            recorded = list(self.requests)
        return [
            request
            for request in recorded
            if (method is None or request.method == method.upper())
            and (wanted is None or (relative_path(request.path) or "\0").startswith(wanted))
        ]

    def record(self, request: RecordedRequest) -> None:
        """Keep a request on arrival (its status comes later), dropping the oldest tenth if full."""
        with self._lock:
            cap = self.max_recorded_requests
            if cap is not None and len(self.requests) >= cap:
                del self.requests[: len(self.requests) - cap + max(1, cap // 10)]
            if cap != 0:
                self.requests.append(request)

    def take_fault(self, method: str, path: str | None, authorized: bool) -> Fault | None:
        """The first scripted fault matching this request; else, if its token is right (a bad
        one is always plainly 401), one drawn from `faults`; else None."""
        with self._lock:
            for index, fault in enumerate(self._scripted):
                if fault.method in (None, method) and (
                    fault.path is None or (path or "\0").startswith(fault.path)
                ):
                    fault.count -= 1
                    if fault.count == 0:
                        del self._scripted[index]
                    return replace(fault)
            config, rng = self.faults, self._rng
            if not authorized:
                return None
            if config.timeout_rate > 0 and rng.random() < config.timeout_rate:
                mode = config.timeout_mode
                after = mode == "after" or (mode == "mixed" and rng.random() < 0.5)
                return Fault(hang=config.hang_seconds, after_processing=after)
            if config.failure_rate > 0 and rng.random() < config.failure_rate:
                status = rng.choice(config.failure_statuses)
                fault = Fault(status=status, body={"detail": f"Simulated {phrase(status)}."})
                if status in (429, 503):
                    fault.headers["Retry-After"] = str(math.ceil(config.retry_after))
                return fault
        return None

    def list_backups(self, query: dict[str, str]) -> list[dict[str, Any]]:
        """`GET /backups/` with these filters (this and the next three raise ApiError to refuse)."""
        errors: dict[str, list[str]] = {}
        server_text, kind = query.get("server_id", ""), query.get("backup_type", "")
        server_id = as_int(server_text) if server_text else None
        if server_text and server_id is None:
            errors["server_id"] = ["A valid integer is required."]
        if kind and kind not in BACKUP_TYPES:
            choice = f"Select a valid choice. {kind} is not one of the available choices."
            errors["backup_type"] = [choice]
        if errors:
            raise ApiError(400, errors)
        with self._lock:
            self._advance()
            chosen = [
                b
                for b in self._backups.values()
                if server_id in (None, b.server_id) and kind in ("", b.backup_type)
            ]
            chosen.sort(key=lambda b: (b.id * 2654435761) & 0xFFFFFFFF)  # a stable shuffle
            return [self._render(b) for b in chosen]

    def create_backup(self, data: Any) -> dict[str, Any]:
        """`POST /backups/`: a manual backup, in progress."""
        errors: dict[str, list[str]] = {}
        try:
            server_id = _int_field(data, "server_id")
        except ApiError as refused:
            if "non_field_errors" in refused.body:
                raise
            errors.update(refused.body)
        description = data.get("description", "")
        if description is None:
            errors["description"] = ["This field may not be null."]
        elif not isinstance(description, str):
            errors["description"] = ["Not a valid string."]
        elif len(description) > DESCRIPTION_MAX:
            errors["description"] = [TOO_LONG]
        if errors:
            raise ApiError(400, errors)
        with self._lock:
            self._advance()
            if server_id not in self.servers:
                raise _detail(404, NOT_FOUND_DETAIL)
            if self._busy(server_id):
                raise _detail(409, BUSY_DETAIL)
            backup = self._insert(_Backup(server_id, "manual", "in_progress", description))
            return {**self._render(backup), "message": CREATED_MESSAGE}

    def delete_backup(self, backup_id: int) -> None:
        """`DELETE /backups/{id}/`."""
        with self._lock:
            self._advance()
            backup = self._backups.get(backup_id)
            if backup is None:
                raise _detail(404, NOT_FOUND_DETAIL)
            if backup.status == "in_progress":
                raise _detail(409, "Backup is still in progress and cannot be deleted.")
            del self._backups[backup_id]

    def restore(self, server_id: int, data: Any) -> dict[str, Any]:
        """`POST /servers/{id}/restore/`: accepted, the server busy for `complete_after`."""
        if server_id not in self.servers:
            raise _detail(404, NOT_FOUND_DETAIL)
        backup_id = _int_field(data, "backup_id")
        with self._lock:
            self._advance()
            backup = self._backups.get(backup_id)
            if backup is None:
                raise _detail(404, "Backup not found.")
            if backup.server_id != server_id:
                problem = f"Backup {backup_id} does not belong to server {server_id}."
                raise ApiError(400, {"backup_id": [problem]})
            if backup.status != "completed":
                raise ApiError(400, {"backup_id": [f"Backup {backup_id} is not completed."]})
            if self._busy(server_id):
                raise _detail(409, BUSY_DETAIL)
            self._restoring_until[server_id] = time.monotonic() + self.complete_after
            restore = {"server_id": server_id, "backup_id": backup_id, "at": _utc_now()}
            self._restores.append(restore)
            answer = {"server": self._render(backup)["server"], "backup_id": backup_id}
            return {**answer, "status": "in_progress", "message": "Server restore started."}

    # Internals: callers hold self._lock.
    def _in_progress(self, backup_id: int, outcome: str) -> _Backup:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        self._advance()
        backup = self._backups.get(backup_id)
        if backup is None:
            raise KeyError(f"no backup {backup_id}")
        if backup.status != "in_progress":
            raise ValueError(f"backup {backup_id} is {backup.status}, not in progress")
        return backup

    def _shuffled_ids(self, owners: list[int]) -> list[int]:
        """Ids for backups given oldest first with their servers' ids, in no creation order."""
        block = list(range(self._next_id, self._next_id + len(owners)))
        self._next_id += len(owners)
        ids = block[1:]
        self._rng.shuffle(ids)
        pinned = owners.index(min(owners)) if owners else None  # the first server's oldest
        if pinned is not None:
            ids.insert(pinned, block[0])
        positions: dict[int, list[int]] = {}
        for index, owner in enumerate(owners):
            positions.setdefault(owner, []).append(index)
        for indexes in positions.values():
            newest = indexes[-1]
            if len(indexes) > 1 and ids[newest] == max(ids[i] for i in indexes):
                # The server's newest holds its highest id: trade it with an older backup's.
                other = self._rng.choice([i for i in indexes[:-1] if i != pinned] or indexes[:-1])
                ids[newest], ids[other] = ids[other], ids[newest]
        return ids

    def _draw_size(self, server_id: int) -> int:
        # Sizes stay near a per-server base, as a real disk's do from one day to the next.
        base = self._base_sizes.setdefault(server_id, self._rng.randint(1500, 8000))
        return base + self._rng.randint(-350, 350)

    def _insert(self, backup: _Backup) -> _Backup:
        created_at = (backup.created_at or _utc_now()).astimezone(UTC).replace(microsecond=0)
        backup.created_at = created_at
        if backup.expires_at is None and backup.backup_type == "automatic":
            backup.expires_at = one_month_after(created_at)
        if backup.size_mb is None and backup.status == "completed":
            backup.size_mb = self._draw_size(backup.server_id)
        if not backup.id:
            backup.id, self._next_id = self._next_id, self._next_id + 1
        faults = self.faults
        if backup.status == "in_progress":
            backup.due_at = time.monotonic() + self.complete_after
            if faults.fail_rate or faults.vanish_rate:
                roll = self._rng.random()
                if roll < faults.fail_rate + faults.vanish_rate:
                    backup.outcome = "failed" if roll < faults.fail_rate else "vanish"
        self._backups[backup.id] = backup
        return backup

    def _settle(self, backup: _Backup, outcome: str) -> None:
        backup.due_at = None
        if outcome == "vanish":
            del self._backups[backup.id]
        elif outcome == "failed":
            backup.status, backup.size_mb = "failed", None
        else:
            backup.status, backup.size_mb = "completed", self._draw_size(backup.server_id)

    def _advance(self) -> None:
        now, today = time.monotonic(), datetime.now(UTC)
        due = [b for b in self._backups.values() if b.due_at is not None and b.due_at <= now]
        for backup in sorted(due, key=lambda b: b.id):
            self._settle(backup, backup.outcome)
        for backup in list(self._backups.values()):
            if backup.backup_type == "automatic" and (backup.expires_at or today) <= today:
                del self._backups[backup.id]

    def _busy(self, server_id: int) -> bool:
        if self._restoring_until.get(server_id, 0.0) > time.monotonic():
            return True
        backups = self._backups.values()
        return any(b.server_id == server_id and b.status == "in_progress" for b in backups)

    def _render(self, backup: _Backup) -> dict[str, Any]:
        name = self.servers.get(backup.server_id, f"server-{backup.server_id}")
        rendered: dict[str, Any] = {
            "id": backup.id,
            "server": {"id": backup.server_id, "name": name},
            "backup_type": backup.backup_type,
            "status": backup.status,
            "size_mb": backup.size_mb,
            "created_at": _iso(backup.created_at),
            "expires_at": _iso(backup.expires_at),
            "description": backup.description,
        }
        if backup.status == "failed":
            rendered["error"] = FAILED_BACKUP_ERROR
        return rendered
