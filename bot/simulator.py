"""The VPS Backups API simulator: a stateful fake of the provider, served over loopback HTTP.

It honours `VPS-BACKUPS-API.md` (paths, bodies, status codes, Bearer auth) and adds what a test or a
demo needs on top: time-driven backup completion, random faults (`FaultConfig`), scripted one-shot
faults (`Simulator.inject`), and a record of every request it received.

Only the standard library is used: `http.server.ThreadingHTTPServer` on daemon threads, HTTP/1.1
with keep-alive and a Content-Length on every answer. Backup progress is computed lazily whenever
state is read, so there is no background clock thread. All state sits behind one lock.

Decisions where the contract is silent (the real API is Django REST framework, so we answer as it
would): validation errors are `{"field": ["message"]}`; numeric strings such as `"12345"` are
accepted where an integer is expected (DRF's IntegerField does), booleans and floats are not; an
empty `server_id`/`backup_type` query value means "no filter" (django-filter does); paths without
the trailing `/` are 404; a 204 carries no body and no Content-Length (RFC 9110 forbids one).

More decisions, where the contract's example or its silence leaves a choice:

- Automatic backups expire one calendar month after creation, as in the original's example
  (2025-01-16 -> 2025-02-16), the day clamped at the month's end (Jan 31 -> Feb 28/29). An
  automatic backup whose `expires_at` has passed disappears the next time state is read; no new
  daily backups are made while the simulator runs.
- Seeded ids do not follow creation time (in the original's example 499 is older than 495): they
  are shuffled with the simulator's random stream (`FaultConfig.seed` makes them reproducible),
  and for every server the highest id is never its newest backup, so a client taking "highest id"
  for "newest" is caught. The first seeded id (101) always goes to the first server's oldest
  backup, so tests can name a known one. Backups created over HTTP get rising ids from 1000.
- The two manual backups are seeded whatever `history_days` is (0 included).
- Statuses and fields the contract does not name: 409 when a backup is created for, or a restore
  asked of, a server with a backup or restore in progress, and when an in-progress backup is
  deleted; 202 (not 200) for an accepted restore; 400 for bad `server_id`/`backup_type` filters;
  404 for a bad `?page=` (only with `page_size`); 405 with an `Allow` header for a method a path
  does not take; 411 for a chunked body; a failed backup carries an `error` field.
- Authentication comes before random faults: a request with a bad or missing token is always
  401, never a random 5xx/429 or hang. Scripted `inject()` faults still come first of all.
- A random timeout (`timeout_rate`) hangs before or after processing (`timeout_mode`, 50/50 by
  default), so a client's "did my POST land?" check meets both cases.
- `Retry-After` is whole seconds (HTTP allows no fraction): the configured value rounded up.
- The request record keeps the newest `max_recorded_requests` requests (100 000 by default).
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import random
import re
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = [
    "FaultConfig",
    "RecordedRequest",
    "SimServer",
    "Simulator",
    "add_arguments",
    "run_from_args",
]

log = logging.getLogger("bot.simulator")

API_ROOT = "/api/v1"
OUTCOMES = ("completed", "failed", "vanish")
BACKUP_TYPES = ("manual", "automatic")
DEFAULT_SERVERS = ((12345, "web-server-01"), (12346, "db-server-01"), (12347, "cache-01"))
FAILED_BACKUP_ERROR = "Disk snapshot failed"
CREATED_MESSAGE = "Backup is being created. This may take several minutes depending on server size."
RESTORE_MESSAGE = "Server restore started."
BUSY_DETAIL = "A backup or restore is already in progress for this server."
STILL_RUNNING_DETAIL = "Backup is still in progress and cannot be deleted."
NO_CREDENTIALS_DETAIL = "Authentication credentials were not provided."
BAD_CREDENTIALS_DETAIL = "Invalid token."
NOT_FOUND_DETAIL = "Not found."
DESCRIPTION_MAX = 255
FIRST_SEEDED_ID = 101
FIRST_CREATED_ID = 1000
MAX_RECORDED_REQUESTS = 100_000
TIMEOUT_MODES = ("before", "after", "mixed")

_INT_TEXT = re.compile(r"\s*-?[0-9]+\s*", re.ASCII)
_BACKUPS_PATH = re.compile(r"/backups/", re.ASCII)
_BACKUP_PATH = re.compile(r"/backups/([0-9]+)/", re.ASCII)
_RESTORE_PATH = re.compile(r"/servers/([0-9]+)/restore/", re.ASCII)


@dataclass
class FaultConfig:
    """Random misbehaviour applied to API requests; mutable while the simulator runs."""

    latency: float = 0.0
    failure_rate: float = 0.0
    failure_statuses: tuple[int, ...] = (500, 503, 429)
    retry_after: float = 1.0
    timeout_rate: float = 0.0
    hang_seconds: float = 30.0
    timeout_mode: str = "mixed"  # a random timeout hangs "before" or "after" processing, or either
    fail_rate: float = 0.0
    vanish_rate: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("failure_rate", "timeout_rate", "fail_rate", "vanish_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        for name in ("latency", "retry_after", "hang_seconds"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value!r}")
        if self.timeout_mode not in TIMEOUT_MODES:
            raise ValueError(
                f"timeout_mode must be one of {TIMEOUT_MODES}, got {self.timeout_mode!r}"
            )
        if self.fail_rate + self.vanish_rate > 1.0:
            raise ValueError("fail_rate + vanish_rate must not exceed 1")
        self.failure_statuses = tuple(self.failure_statuses)
        if not self.failure_statuses:
            raise ValueError("failure_statuses must name at least one status")
        for status in self.failure_statuses:
            if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
                raise ValueError(f"failure_statuses must be 4xx/5xx codes, got {status!r}")


@dataclass(frozen=True)
class SimServer:
    """A server the simulated account owns."""

    id: int
    name: str


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the simulator received it, and the status it answered (0: none sent)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int
    authorized: bool
    at: float


@dataclass
class _Backup:
    id: int
    server_id: int
    backup_type: str
    status: str
    size_mb: int | None
    created_at: datetime
    expires_at: datetime | None
    description: str
    due_at: float | None = None  # monotonic time an in-progress backup reaches its outcome
    outcome: str = "completed"
    error: str | None = None


@dataclass
class _Injection:
    method: str | None
    path: str | None
    status: int | None
    body: Any
    headers: dict[str, str]
    hang: float | None
    after_processing: bool
    count: int

    def matches(self, method: str, relative_path: str | None) -> bool:
        if self.method is not None and self.method != method:
            return False
        if self.path is None:
            return True
        return relative_path is not None and relative_path.startswith(self.path)


@dataclass
class _Answer:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Incoming:
    method: str
    path: str
    relative_path: str | None  # path below API_ROOT, None when outside it
    query: dict[str, str]
    raw_body: bytes
    auth_failure: str | None  # None when the Bearer token is right
    host: str


def _json_answer(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Answer:
    body = json.dumps(payload).encode()
    return _Answer(status, body, "application/json", dict(headers or {}))


def _detail(status: int, detail: str) -> _Answer:
    return _json_answer(status, {"detail": detail})


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _retry_after(seconds: float) -> str:
    """Retry-After as HTTP has it: whole seconds, rounded up (0.5 -> 1; 0 stays 0)."""
    return str(math.ceil(seconds))


def _one_month_after(moment: datetime) -> datetime:
    """The same time one calendar month later, the day clamped at the month's end."""
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def _connectable_host(host: str) -> str:
    """The host a local client can use for a listening address (a wildcard means loopback)."""
    if not host:  # "" binds every IPv4 interface
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return host


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _scramble(backup_id: int) -> int:
    # The real API lists backups in no date order; a fixed hash keeps ours stable between calls.
    return (backup_id * 2654435761) & 0xFFFFFFFF


def _as_int(value: Any) -> int | None:
    """An integer as DRF's IntegerField accepts it (ints and numeric strings, not bools)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT_TEXT.fullmatch(value):
        return int(value)
    return None


def _int_errors(data: dict[str, Any], name: str) -> list[str]:
    if name not in data:
        return ["This field is required."]
    if data[name] is None:
        return ["This field may not be null."]
    if _as_int(data[name]) is None:
        return ["A valid integer is required."]
    return []


def _parse_body(raw: bytes) -> Any:
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _relative(path: str) -> str | None:
    if path.startswith(API_ROOT + "/"):
        return path[len(API_ROOT) :]
    return None


def _path_filter(path: str) -> str:
    """A path filter given relative to the API root (the full `/api/v1/...` is accepted too)."""
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/', got {path!r}")
    return _relative(path) or path


class Simulator:
    """The provider's Backups API with an in-memory account, served on loopback HTTP."""

    def __init__(
        self,
        token: str,
        *,
        complete_after: float = 30.0,
        restore_after: float | None = None,
        faults: FaultConfig | None = None,
        page_size: int | None = None,
        seed_data: bool = True,
        history_days: int = 7,
        max_recorded_requests: int | None = MAX_RECORDED_REQUESTS,
    ) -> None:
        if not isinstance(token, str) or not token:
            raise ValueError("token must be a non-empty string")
        if complete_after < 0:
            raise ValueError(f"complete_after must not be negative, got {complete_after!r}")
        if restore_after is not None and restore_after < 0:
            raise ValueError(f"restore_after must not be negative, got {restore_after!r}")
        if page_size is not None and page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size!r}")
        if history_days < 0:
            raise ValueError(f"history_days must not be negative, got {history_days!r}")
        if max_recorded_requests is not None and max_recorded_requests < 0:
            raise ValueError(
                f"max_recorded_requests must not be negative, got {max_recorded_requests!r}"
            )
        self._token = token.encode()
        self.complete_after = complete_after
        self.restore_after = complete_after if restore_after is None else restore_after
        self.page_size = page_size
        self._lock = threading.Lock()
        self._faults = faults if faults is not None else FaultConfig()
        self._rng = random.Random(self._faults.seed)
        self.servers: dict[int, SimServer] = {}
        # The newest requests received, oldest first; None as the cap keeps every one.
        self.requests: list[RecordedRequest] = []
        self.max_recorded_requests = max_recorded_requests
        self._backups: dict[int, _Backup] = {}
        self._base_sizes: dict[int, int] = {}
        self._restores: list[dict[str, Any]] = []
        self._restoring_until: dict[int, float] = {}
        self._injections: list[_Injection] = []
        self._next_id = FIRST_SEEDED_ID
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._lifecycle = threading.Lock()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None
        if seed_data:
            for server_id, name in DEFAULT_SERVERS:
                self.add_server(server_id, name)
            self.seed_history(history_days)
        self._next_id = max(self._next_id, FIRST_CREATED_ID)

    # -- configuration -------------------------------------------------------------------------

    @property
    def faults(self) -> FaultConfig:
        """The random faults in force; mutate its fields or assign a new one at any time."""
        return self._faults

    @faults.setter
    def faults(self, value: FaultConfig) -> None:
        # A new config that names a seed restarts the random stream, so the faults it draws
        # are reproducible from that point on.
        with self._lock:
            self._faults = value
            if value.seed is not None:
                self._rng.seed(value.seed)

    def add_server(self, server_id: int, name: str) -> SimServer:
        """Add (or rename) a server of the account."""
        if isinstance(server_id, bool) or not isinstance(server_id, int):
            raise TypeError(f"server_id must be an int, got {server_id!r}")
        server = SimServer(server_id, name)
        with self._lock:
            self.servers[server_id] = server
        return server

    def seed_history(self, days: int = 7, now: datetime | None = None) -> None:
        """Add `days` daily automatic backups (03:00 UTC) per server and two manual ones.

        Ids come from one block but are shuffled (see the module's decisions): id order is not
        creation order, the block's first id goes to the first server's oldest backup, and no
        server's highest id is its newest backup.
        """
        if days < 0:
            raise ValueError(f"days must not be negative, got {days!r}")
        now = _utc_now() if now is None else now
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        now = now.astimezone(UTC)
        latest = now.replace(hour=3, minute=0, second=0, microsecond=0)
        if latest > now:
            latest -= timedelta(days=1)
        with self._lock:
            servers = sorted(self.servers.values(), key=lambda s: s.id)
            planned: list[tuple[datetime, int, str, str]] = [
                (latest - timedelta(days=day), server.id, "automatic", "Automatic daily backup")
                for day in range(days)
                for server in servers
            ]
            if servers:
                first, today = servers[0].id, now.replace(second=0, microsecond=0)
                planned += [
                    (
                        today.replace(hour=10, minute=30) - timedelta(days=2),
                        first,
                        "manual",
                        "Pre-update backup",
                    ),
                    (
                        today.replace(hour=16, minute=15) - timedelta(days=5),
                        first,
                        "manual",
                        "Before kernel upgrade",
                    ),
                ]
            planned.sort(key=lambda item: (item[0], item[1]))  # creation order
            ids = self._shuffled_ids(
                [server_id for _, server_id, _, _ in planned],
                servers[0].id if servers else None,
            )
            for backup_id, (created_at, server_id, backup_type, description) in zip(
                ids, planned, strict=True
            ):
                self._insert(
                    server_id,
                    backup_id=backup_id,
                    backup_type=backup_type,
                    status="completed",
                    size_mb=None,
                    created_at=created_at,
                    expires_at=None,
                    description=description,
                )

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
            backup = self._insert(
                server_id,
                backup_type=backup_type,
                status=status,
                size_mb=size_mb,
                created_at=created_at,
                expires_at=expires_at,
                description=description,
            )
            return self._render(backup)

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
        count: int = 1,
    ) -> None:
        """Script a fault for the next `count` matching API requests (first in, first used)."""
        if status is None and hang is None:
            raise ValueError("inject() needs a status, a hang, or both")
        if status is not None and not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {status!r}")
        if status is None and (body is not None or headers):
            raise ValueError("body and headers are only sent with an injected status")
        if hang is not None and hang < 0:
            raise ValueError(f"hang must not be negative, got {hang!r}")
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count!r}")
        injection = _Injection(
            method=method.upper() if method else None,
            path=_path_filter(path) if path is not None else None,
            status=status,
            body=body,
            headers=dict(headers or {}),
            hang=hang,
            after_processing=after_processing,
            count=count,
        )
        with self._lock:
            self._injections.append(injection)

    # -- driving and inspecting state ----------------------------------------------------------

    def finish(self, backup_id: int, outcome: str = "completed") -> None:
        """End an in-progress backup now with `outcome` (completed, failed or vanish)."""
        self._check_outcome(outcome)
        with self._lock:
            self._settle(self._in_progress(backup_id), outcome)

    def set_outcome(self, backup_id: int, outcome: str) -> None:
        """Decide how an in-progress backup ends when its time comes."""
        self._check_outcome(outcome)
        with self._lock:
            self._in_progress(backup_id).outcome = outcome

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
        wanted = _path_filter(path) if path is not None else None
        with self._lock:
            recorded = list(self.requests)
        calls = []
        for request in recorded:
            if method is not None and request.method != method.upper():
                continue
            if wanted is not None:
                relative = _relative(request.path)
                if relative is None or not relative.startswith(wanted):
                    continue
            calls.append(request)
        return calls

    # -- serving -------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on `host:port` (0 picks a free port) in a daemon thread; return the base URL."""
        with self._lifecycle:
            if self._server is not None:
                raise RuntimeError("the simulator is already running")
            server_class = _HTTPServer6 if ":" in host else _HTTPServer
            server = server_class((host, port), self)
            self._stopping.clear()
            bound_port = server.server_address[1]
            # A wildcard address is no place to connect to: show loopback, which reaches it.
            reachable = _connectable_host(host)
            shown_host = f"[{reachable}]" if ":" in reachable else reachable
            self._base_url = f"http://{shown_host}:{bound_port}{API_ROOT}"
            # A short poll interval keeps stop() fast; serve_forever only checks it between polls.
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"vps-simulator-{bound_port}",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread
        log.info("VPS Backups API simulator listening on %s", self._base_url)
        return self._base_url

    @property
    def base_url(self) -> str:
        """`http://HOST:PORT/api/v1` of the running (or last run) server."""
        if self._base_url is None:
            raise RuntimeError("the simulator has not been started")
        return self._base_url

    def stop(self) -> None:
        """Stop serving, close the socket and any open connection; safe to call twice."""
        with self._lifecycle:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        self._stopping.set()  # wakes requests sleeping in a latency or a hang
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=5)
        log.info("VPS Backups API simulator on %s stopped", self._base_url)

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals: state (callers hold self._lock) --------------------------------------------

    @staticmethod
    def _check_outcome(outcome: str) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")

    def _in_progress(self, backup_id: int) -> _Backup:
        self._advance()
        backup = self._backups.get(backup_id)
        if backup is None:
            raise KeyError(f"no backup {backup_id}")
        if backup.status != "in_progress":
            raise ValueError(f"backup {backup_id} is {backup.status}, not in progress")
        return backup

    def _new_id(self) -> int:
        backup_id = self._next_id
        self._next_id += 1
        return backup_id

    def _shuffled_ids(self, owners: list[int], first_server: int | None) -> list[int]:
        """Ids for backups given oldest first by their servers' ids, in no creation order."""
        block = [self._new_id() for _ in owners]
        pinned = owners.index(first_server) if first_server in owners else None
        rest = block[1:] if pinned is not None else list(block)
        self._rng.shuffle(rest)
        if pinned is not None:
            rest.insert(pinned, block[0])
        ids = rest
        positions: dict[int, list[int]] = {}
        for index, owner in enumerate(owners):
            positions.setdefault(owner, []).append(index)
        for indexes in positions.values():
            newest = indexes[-1]
            if len(indexes) < 2 or ids[newest] != max(ids[i] for i in indexes):
                continue
            # The server's newest holds its highest id: trade it with one of its older backups.
            older = [i for i in indexes[:-1] if i != pinned] or indexes[:-1]
            other = self._rng.choice(older)
            ids[newest], ids[other] = ids[other], ids[newest]
        return ids

    def _draw_size(self, server_id: int) -> int:
        # Sizes stay near a per-server base, as a real disk's do from one day to the next.
        base = self._base_sizes.setdefault(server_id, self._rng.randint(1500, 8000))
        return base + self._rng.randint(-350, 350)

    def _draw_outcome(self) -> str:
        faults = self._faults
        if faults.fail_rate == 0 and faults.vanish_rate == 0:
            return "completed"
        roll = self._rng.random()
        if roll < faults.fail_rate:
            return "failed"
        if roll < faults.fail_rate + faults.vanish_rate:
            return "vanish"
        return "completed"

    def _insert(
        self,
        server_id: int,
        *,
        backup_type: str,
        status: str,
        size_mb: int | None,
        created_at: datetime | None,
        expires_at: datetime | None,
        description: str,
        backup_id: int | None = None,
    ) -> _Backup:
        created_at = (_utc_now() if created_at is None else created_at).astimezone(UTC)
        created_at = created_at.replace(microsecond=0)
        if expires_at is None and backup_type == "automatic":
            expires_at = _one_month_after(created_at)
        if size_mb is None and status == "completed":
            size_mb = self._draw_size(server_id)
        backup = _Backup(
            id=self._new_id() if backup_id is None else backup_id,
            server_id=server_id,
            backup_type=backup_type,
            status=status,
            size_mb=size_mb,
            created_at=created_at,
            expires_at=expires_at,
            description=description,
        )
        if status == "in_progress":
            backup.due_at = time.monotonic() + self.complete_after
            backup.outcome = self._draw_outcome()
        elif status == "failed":
            backup.error = FAILED_BACKUP_ERROR
        self._backups[backup.id] = backup
        return backup

    def _settle(self, backup: _Backup, outcome: str) -> None:
        backup.due_at = None
        if outcome == "vanish":
            del self._backups[backup.id]
        elif outcome == "failed":
            backup.status, backup.size_mb, backup.error = "failed", None, FAILED_BACKUP_ERROR
        else:
            backup.status, backup.size_mb = "completed", self._draw_size(backup.server_id)

    def _advance(self) -> None:
        now = time.monotonic()
        due = [b for b in self._backups.values() if b.due_at is not None and b.due_at <= now]
        for backup in sorted(due, key=lambda b: b.id):
            self._settle(backup, backup.outcome)
        today = datetime.now(UTC)
        expired = [
            b.id
            for b in self._backups.values()
            if b.backup_type == "automatic" and b.expires_at is not None and b.expires_at <= today
        ]
        for backup_id in expired:
            del self._backups[backup_id]

    def _server_json(self, server_id: int) -> dict[str, Any]:
        server = self.servers.get(server_id) or SimServer(server_id, f"server-{server_id}")
        return {"id": server.id, "name": server.name}

    def _render(self, backup: _Backup) -> dict[str, Any]:
        rendered: dict[str, Any] = {
            "id": backup.id,
            "server": self._server_json(backup.server_id),
            "backup_type": backup.backup_type,
            "status": backup.status,
            "size_mb": backup.size_mb,
            "created_at": _iso(backup.created_at),
            "expires_at": _iso(backup.expires_at),
            "description": backup.description,
        }
        if backup.error is not None:
            rendered["error"] = backup.error
        return rendered

    def _busy(self, server_id: int) -> bool:
        if self._restoring_until.get(server_id, 0.0) > time.monotonic():
            return True
        return any(
            b.server_id == server_id and b.status == "in_progress" for b in self._backups.values()
        )

    # -- internals: the HTTP API ---------------------------------------------------------------

    def _authenticate(self, header: str | None) -> str | None:
        """None when the Bearer token is right, else the 401 detail."""
        scheme, _, credentials = (header or "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return NO_CREDENTIALS_DETAIL
        given = credentials.strip().encode("utf-8", errors="replace")
        if not hmac.compare_digest(given, self._token):
            return BAD_CREDENTIALS_DETAIL
        return None

    def _record(self, incoming: _Incoming, body: Any, received: float) -> RecordedRequest:
        record = RecordedRequest(
            method=incoming.method,
            path=incoming.path,
            query=dict(incoming.query),
            body=body,
            status=0,
            authorized=incoming.auth_failure is None,
            at=received,
        )
        with self._lock:
            cap = self.max_recorded_requests
            if cap is not None and len(self.requests) >= cap:
                # Drop a tenth at once, so the list is not shifted on every append.
                del self.requests[: len(self.requests) - cap + max(1, cap // 10)]
            if cap != 0:
                self.requests.append(record)
        return record

    def _complete_record(self, record: RecordedRequest, status: int) -> RecordedRequest:
        # Recorded on arrival (status 0) so a test sees a request whose answer is still pending;
        # found by identity so that a test clearing `requests` meanwhile breaks nothing.
        completed = replace(record, status=status)
        with self._lock:
            for index in range(len(self.requests) - 1, -1, -1):
                if self.requests[index] is record:
                    self.requests[index] = completed
                    break
        return completed

    def _take_injection(self, method: str, relative_path: str | None) -> _Injection | None:
        with self._lock:
            for index, injection in enumerate(self._injections):
                if injection.matches(method, relative_path):
                    injection.count -= 1
                    if injection.count == 0:
                        del self._injections[index]
                    return replace(injection)
        return None

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _answer(self, incoming: _Incoming) -> _Answer:
        """Latency, then a scripted fault; else authentication, random faults, the API itself."""
        faults = self._faults
        self._sleep(faults.latency)
        injection = self._take_injection(incoming.method, incoming.relative_path)
        if injection is None:
            if incoming.auth_failure is not None:
                return self._process(incoming)  # 401, whatever the random faults
            with self._lock:
                hang = faults.timeout_rate > 0 and self._rng.random() < faults.timeout_rate
                hang_after = hang and (
                    faults.timeout_mode == "after"
                    or (faults.timeout_mode == "mixed" and self._rng.random() < 0.5)
                )
                failure = None
                if (
                    not hang
                    and faults.failure_rate > 0
                    and self._rng.random() < faults.failure_rate
                ):
                    failure = self._rng.choice(faults.failure_statuses)
            if failure is not None:
                return self._simulated_failure(failure, faults.retry_after)
            if not hang:
                return self._process(incoming)
            log.debug(
                "%s %s: simulated timeout, hanging %s processing",
                incoming.method,
                incoming.path,
                "after" if hang_after else "before",
            )
            if not hang_after:
                self._sleep(faults.hang_seconds)
                return self._process(incoming)
            answer = self._process(incoming)
            self._sleep(faults.hang_seconds)
            return answer
        if not injection.after_processing:
            self._sleep(injection.hang or 0.0)
            if injection.status is not None:
                return self._injected_answer(injection)
            return self._process(incoming)
        answer = self._process(incoming)
        self._sleep(injection.hang or 0.0)
        return answer if injection.status is None else self._injected_answer(injection)

    @staticmethod
    def _simulated_failure(status: int, retry_after: float) -> _Answer:
        headers = {"Retry-After": _retry_after(retry_after)} if status in (429, 503) else {}
        return _json_answer(status, {"detail": f"Simulated {_phrase(status)}."}, headers)

    @staticmethod
    def _injected_answer(injection: _Injection) -> _Answer:
        status, body = cast(int, injection.status), injection.body
        if isinstance(body, str | bytes):
            raw = body.encode() if isinstance(body, str) else body
            return _Answer(status, raw, "text/html; charset=utf-8", dict(injection.headers))
        payload = {"detail": _phrase(status)} if body is None else body
        return _json_answer(status, payload, injection.headers)

    def _process(self, incoming: _Incoming) -> _Answer:
        if incoming.auth_failure is not None:
            return _json_answer(
                401, {"detail": incoming.auth_failure}, {"WWW-Authenticate": 'Bearer realm="api"'}
            )
        relative = incoming.relative_path
        method = "GET" if incoming.method == "HEAD" else incoming.method
        routes: tuple[tuple[re.Pattern[str], dict[str, Callable[..., _Answer]]], ...] = (
            (_BACKUPS_PATH, {"GET": self._list, "POST": self._create}),
            (_BACKUP_PATH, {"DELETE": self._delete}),
            (_RESTORE_PATH, {"POST": self._restore}),
        )
        for pattern, handlers in routes:
            match = pattern.fullmatch(relative) if relative is not None else None
            if match is None:
                continue
            handler = handlers.get(method)
            if handler is None:
                return _json_answer(
                    405,
                    {"detail": f'Method "{incoming.method}" not allowed.'},
                    {"Allow": ", ".join(handlers)},
                )
            with self._lock:
                self._advance()
                return handler(incoming, *(int(group) for group in match.groups()))
        return _detail(404, NOT_FOUND_DETAIL)

    def _list(self, incoming: _Incoming) -> _Answer:
        errors: dict[str, list[str]] = {}
        server_text = incoming.query.get("server_id", "")
        server_id = _as_int(server_text) if server_text else None
        if server_text and server_id is None:
            errors["server_id"] = ["A valid integer is required."]
        backup_type = incoming.query.get("backup_type", "")
        if backup_type and backup_type not in BACKUP_TYPES:
            errors["backup_type"] = [
                f"Select a valid choice. {backup_type} is not one of the available choices."
            ]
        if errors:
            return _json_answer(400, errors)
        chosen = [
            b
            for b in self._backups.values()
            if (server_id is None or b.server_id == server_id)
            and (not backup_type or b.backup_type == backup_type)
        ]
        chosen.sort(key=lambda b: _scramble(b.id))
        if self.page_size is None:
            return _json_answer(
                200, {"count": len(chosen), "results": [self._render(b) for b in chosen]}
            )
        return self._page(incoming, chosen, self.page_size)

    def _page(self, incoming: _Incoming, chosen: list[_Backup], size: int) -> _Answer:
        """DRF's PageNumberPagination: `?page=N`, absolute next/previous links keeping filters."""
        pages = max(1, -(-len(chosen) // size))
        wanted = incoming.query.get("page", "1")
        number = pages if wanted == "last" else _as_int(wanted)
        if number is None or not 1 <= number <= pages:
            return _detail(404, "Invalid page.")

        def link(target: int) -> str:
            query = dict(incoming.query)
            query.pop("page", None)
            if target > 1:  # DRF drops the parameter for the first page
                query["page"] = str(target)
            url = f"http://{incoming.host}{incoming.path}"
            return f"{url}?{urlencode(query)}" if query else url

        return _json_answer(
            200,
            {
                "count": len(chosen),
                "next": link(number + 1) if number < pages else None,
                "previous": link(number - 1) if number > 1 else None,
                "results": [self._render(b) for b in chosen[(number - 1) * size : number * size]],
            },
        )

    @staticmethod
    def _json_object(incoming: _Incoming) -> dict[str, Any] | _Answer:
        """The body as a JSON object, or the 400 DRF answers when it is not one."""
        if not incoming.raw_body.strip():
            return {}
        try:
            data = json.loads(incoming.raw_body.decode("utf-8"))
        except ValueError as exc:  # UnicodeDecodeError is a ValueError too
            return _detail(400, f"JSON parse error - {exc}")
        if not isinstance(data, dict):
            kind = type(data).__name__
            return _json_answer(
                400, {"non_field_errors": [f"Invalid data. Expected a dictionary, but got {kind}."]}
            )
        return data

    def _create(self, incoming: _Incoming) -> _Answer:
        data = self._json_object(incoming)
        if isinstance(data, _Answer):
            return data
        errors: dict[str, list[str]] = {}
        if server_errors := _int_errors(data, "server_id"):
            errors["server_id"] = server_errors
        description = data.get("description", "")
        if description is None:
            errors["description"] = ["This field may not be null."]
        elif not isinstance(description, str):
            errors["description"] = ["Not a valid string."]
        elif len(description) > DESCRIPTION_MAX:
            errors["description"] = [
                f"Ensure this field has no more than {DESCRIPTION_MAX} characters."
            ]
        if errors:
            return _json_answer(400, errors)
        server_id = cast(int, _as_int(data["server_id"]))
        if server_id not in self.servers:
            return _detail(404, NOT_FOUND_DETAIL)
        if self._busy(server_id):
            return _detail(409, BUSY_DETAIL)
        backup = self._insert(
            server_id,
            backup_type="manual",
            status="in_progress",
            size_mb=None,
            created_at=None,
            expires_at=None,
            description=description,
        )
        return _json_answer(201, {**self._render(backup), "message": CREATED_MESSAGE})

    def _delete(self, incoming: _Incoming, backup_id: int) -> _Answer:
        backup = self._backups.get(backup_id)
        if backup is None:
            return _detail(404, NOT_FOUND_DETAIL)
        if backup.status == "in_progress":
            return _detail(409, STILL_RUNNING_DETAIL)
        del self._backups[backup_id]
        return _Answer(204)

    def _restore(self, incoming: _Incoming, server_id: int) -> _Answer:
        if server_id not in self.servers:
            return _detail(404, NOT_FOUND_DETAIL)
        data = self._json_object(incoming)
        if isinstance(data, _Answer):
            return data
        if backup_errors := _int_errors(data, "backup_id"):
            return _json_answer(400, {"backup_id": backup_errors})
        backup_id = cast(int, _as_int(data["backup_id"]))
        backup = self._backups.get(backup_id)
        if backup is None:
            return _detail(404, "Backup not found.")
        if backup.server_id != server_id:
            problem = f"Backup {backup_id} does not belong to server {server_id}."
            return _json_answer(400, {"backup_id": [problem]})
        if backup.status != "completed":
            return _json_answer(400, {"backup_id": [f"Backup {backup_id} is not completed."]})
        if self._busy(server_id):
            return _detail(409, BUSY_DETAIL)
        self._restoring_until[server_id] = time.monotonic() + self.restore_after
        self._restores.append({"server_id": server_id, "backup_id": backup_id, "at": _utc_now()})
        return _json_answer(
            202,
            {
                "server": self._server_json(server_id),
                "backup_id": backup_id,
                "status": "in_progress",
                "message": RESTORE_MESSAGE,
            },
        )


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False  # a request hanging on purpose must not hold up stop()

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):  # a client resetting is no simulator fault
            log.debug("connection from %s reset: %s", client_address[0], error)
            return
        log.exception("simulator connection from %s failed", client_address[0])


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    """Turns one HTTP exchange into an `_Incoming`, and the simulator's `_Answer` into bytes."""

    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes; with Nagle on, each answer waits for a delayed ACK.
    disable_nagle_algorithm = True
    server_version = "VPSBackupsSimulator/1.0"
    sys_version = ""

    @property
    def simulator(self) -> Simulator:
        return cast(_HTTPServer, self.server).simulator

    def setup(self) -> None:
        super().setup()
        with self.simulator._lock:
            self.simulator._connections.add(self.connection)

    def finish(self) -> None:
        with self.simulator._lock:
            self.simulator._connections.discard(self.connection)
        with contextlib.suppress(ConnectionError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: one line per request goes to the `bot.simulator` logger instead."""

    def do_GET(self) -> None:
        self._exchange()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _read_body(self) -> bytes | _Answer | None:
        """The body read by Content-Length; an answer for bad framing; None if the client left."""
        if self.headers.get("Transfer-Encoding"):
            return _detail(411, "Send a Content-Length; chunked bodies are not supported.")
        length_text = self.headers.get("Content-Length", "0")
        length = _as_int(length_text)
        if length is None or length < 0:
            return _detail(400, "Invalid Content-Length.")
        raw = self.rfile.read(length) if length else b""
        return raw if len(raw) == length else None

    def _exchange(self) -> None:
        received = time.monotonic()
        sim = self.simulator
        target = urlsplit(self.path)
        body = self._read_body()
        if body is None:
            self.close_connection = True
            return
        incoming = _Incoming(
            method=self.command,
            path=target.path,
            relative_path=_relative(target.path),
            query=dict(parse_qsl(target.query, keep_blank_values=True)),
            raw_body=body if isinstance(body, bytes) else b"",
            auth_failure=sim._authenticate(self.headers.get("Authorization")),
            host=self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2]),
        )
        record = sim._record(incoming, _parse_body(incoming.raw_body), received)
        if isinstance(body, _Answer):
            # The body was not read, so the connection cannot carry another request.
            answer = body
            answer.headers["Connection"] = "close"
        else:
            try:
                answer = sim._answer(incoming)
            except Exception:
                log.exception("simulator failed on %s %s", incoming.method, incoming.path)
                answer = _detail(500, "Internal simulator error.")
        elapsed_ms = (time.monotonic() - received) * 1000
        if self._client_gone():
            self.close_connection = True
            sim._complete_record(record, 0)
            log.info(
                "%s %s no answer (%d): the client went away after %.0fms",
                incoming.method,
                incoming.path,
                answer.status,
                elapsed_ms,
            )
            return
        # Final before the bytes go out, so whoever has read the answer finds the record final too.
        record = sim._complete_record(record, answer.status)
        log.info("%s %s %d %.0fms", incoming.method, incoming.path, answer.status, elapsed_ms)
        if not self._send(answer):
            self.close_connection = True
            sim._complete_record(record, 0)
            log.info(
                "%s %s: the client went away during the answer", incoming.method, incoming.path
            )

    def _client_gone(self) -> bool:
        """True when the client closed its end (a read would see EOF), e.g. after a timeout."""
        # poll, not select: select refuses descriptors above 1023, common in a big test process.
        poller = select.poll()
        try:
            poller.register(self.connection, select.POLLIN)
            if not poller.poll(0):
                return False
            return self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except ConnectionError:
            return True
        except (OSError, ValueError):
            return False  # cannot tell: try the write, which reports a broken connection

    def _send(self, answer: _Answer) -> bool:
        """Write the answer; False when the connection broke on the way."""
        status = answer.status
        bodiless = status < 200 or status in (204, 304)
        try:
            self.send_response(status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            custom_type = any(name.lower() == "content-type" for name in answer.headers)
            if not bodiless:
                if answer.content_type and not custom_type:
                    self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if not bodiless and self.command != "HEAD":
                self.wfile.write(answer.body)
        except ConnectionError:
            return False
        return True


# -- command line (the `backupbot simulator` command) ---------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator's options, for the `backupbot simulator` command."""
    faults = FaultConfig()
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    add("--port", type=int, default=8099, help="port to listen on (default: %(default)s)")
    add("--token", default=None, help="Bearer token clients must send (default: $VPS_API_TOKEN)")
    add(
        "--complete-after",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds a new backup stays in_progress (default: %(default)s)",
    )
    add(
        "--restore-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds a server stays busy after a restore (default: --complete-after)",
    )
    add(
        "--latency",
        type=float,
        default=faults.latency,
        metavar="SECONDS",
        help="delay before every answer",
    )
    add(
        "--failure-rate",
        type=float,
        default=faults.failure_rate,
        help="probability [0-1] a request is answered with an error status",
    )
    add(
        "--failure-statuses",
        default=",".join(str(s) for s in faults.failure_statuses),
        help="comma-separated statuses for such failures (default: %(default)s)",
    )
    add(
        "--retry-after",
        type=float,
        default=faults.retry_after,
        metavar="SECONDS",
        help="Retry-After sent with 429 and 503, rounded up to whole seconds "
        "(default: %(default)s)",
    )
    add(
        "--timeout-rate",
        type=float,
        default=faults.timeout_rate,
        help="probability [0-1] a request hangs --hang-seconds (see --timeout-mode)",
    )
    add(
        "--timeout-mode",
        choices=TIMEOUT_MODES,
        default=faults.timeout_mode,
        help="whether such a hang comes before processing, after it, or either at random "
        "(default: %(default)s)",
    )
    add(
        "--hang-seconds",
        type=float,
        default=faults.hang_seconds,
        metavar="SECONDS",
        help="length of such a hang (default: %(default)s)",
    )
    add(
        "--fail-rate",
        type=float,
        default=faults.fail_rate,
        help="probability [0-1] a new backup ends failed",
    )
    add(
        "--vanish-rate",
        type=float,
        default=faults.vanish_rate,
        help="probability [0-1] a new backup disappears instead of completing",
    )
    add("--seed", type=int, default=None, help="random seed, for reproducible faults and sizes")
    add("--page-size", type=int, default=None, help="paginate lists with ?page=N (default: off)")
    add(
        "--history-days",
        type=int,
        default=7,
        help="days of daily automatic backups seeded per server; two manual backups are "
        "seeded as well (default: %(default)s)",
    )
    add("--no-seed-data", action="store_true", help="start with no servers and no backups")


def _parse_statuses(text: str) -> tuple[int, ...]:
    statuses = []
    for part in text.split(","):
        status = _as_int(part) if part.strip() else None
        if status is None:
            raise ValueError(
                f"--failure-statuses must be comma-separated status codes, got {text!r}"
            )
        statuses.append(status)
    return tuple(statuses)


def run_from_args(
    args: argparse.Namespace, token: str, *, stop: threading.Event | None = None
) -> int:
    """Serve until SIGINT/SIGTERM (or until `stop` is set, for callers off the main thread)."""
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535, got {args.port}")
    faults = FaultConfig(
        latency=args.latency,
        failure_rate=args.failure_rate,
        failure_statuses=_parse_statuses(args.failure_statuses),
        retry_after=args.retry_after,
        timeout_rate=args.timeout_rate,
        hang_seconds=args.hang_seconds,
        timeout_mode=args.timeout_mode,
        fail_rate=args.fail_rate,
        vanish_rate=args.vanish_rate,
        seed=args.seed,
    )
    simulator = Simulator(
        token,
        complete_after=args.complete_after,
        restore_after=args.restore_after,
        faults=faults,
        page_size=args.page_size,
        seed_data=not args.no_seed_data,
        history_days=args.history_days,
    )
    stop = stop if stop is not None else threading.Event()
    signalled: list[int] = []  # a signal handler must not take locks that Event.wait holds
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda num, _frame: signalled.append(num))
    try:
        base_url = simulator.start(args.host, args.port)
        with simulator._lock:
            simulator._advance()
            backups = len(simulator._backups)
        print(
            f"VPS Backups API simulator on {base_url} ({len(simulator.servers)} servers, "
            f"{backups} backups). Ctrl-C stops it.",
            flush=True,
        )
        if not _is_loopback(args.host):
            print(
                f"Warning: listening on {args.host or 'all interfaces'}, so the simulator is "
                "reachable from other machines; --host 127.0.0.1 keeps it local.",
                file=sys.stderr,
                flush=True,
            )
        while not signalled and not stop.wait(0.2):
            pass
    finally:
        simulator.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
