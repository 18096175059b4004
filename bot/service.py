"""The use-cases, whole: each checks the policy, calls the provider, writes its audit rows, returns.

Nothing here knows Slack or writes mrkdwn. A use-case returns facts (`Listing`, `CreateResult`, …)
or raises a typed `ServiceError`; the edge (`bot/slack/`, the console) turns both into words. Where
a flow must talk back mid-way — the "started" message whose `ts` becomes the thread of a new
backup — it goes through a port (`StartAnnouncer`) that the edge implements.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.exc import InterfaceError, OperationalError

from bot.audit import Actor, AuditEntry, AuditLog, AuditUnavailable, Checkpoint
from bot.db import Outcome
from bot.health import StatusReport
from bot.policy import REQUIRED_ROLE, Action, Decision, Policy
from bot.vps.client import BackupsClient
from bot.vps.errors import NotFound, VpsError
from bot.vps.models import Backup, DeleteOutcome, Phase, ServerRef

log = logging.getLogger(__name__)


# -- errors: what went wrong, as facts ------------------------------------------------------------


class ServiceError(Exception):
    """A use-case could not be done. `str()` is a plain line for logs; the edge words it."""


class Denied(ServiceError):
    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


class UnknownServer(ServiceError):
    """`name` matches no server (`candidates`: names containing it) or several (`ambiguous`)."""

    def __init__(
        self, name: str, candidates: tuple[ServerRef, ...] = (), *, ambiguous: bool = False
    ) -> None:
        kind = "several servers are" if ambiguous else "no server is"
        super().__init__(f"{kind} named {name!r}")
        self.name = name
        self.candidates = candidates
        self.ambiguous = ambiguous


class NoSuchBackup(ServiceError):
    def __init__(self, backup_id: int) -> None:
        super().__init__(f"no backup {backup_id}")
        self.backup_id = backup_id


class ProviderError(ServiceError):
    """The provider refused or failed while doing what the person asked (`action` on `server`
    or `backup_id`); `error` is the client's typed error, whose message gives the reason."""

    def __init__(
        self,
        error: VpsError,
        action: Action,
        *,
        server: ServerRef | None = None,
        server_name: str | None = None,
        backup_id: int | None = None,
    ) -> None:
        super().__init__(error.message)
        self.error = error
        self.action = action
        self.server = server
        # The server as the person named it, when it could not even be looked up.
        self.server_name = server.name if server is not None else server_name
        self.backup_id = backup_id
        self.status_code = error.status_code


class StorageUnavailable(ServiceError):
    """The bot's database did not answer: what needs recording was not done (a create was not
    sent: a backup started then could be neither audited nor followed)."""


class AuditBusy(ServiceError):
    """An audit row could not be written in time (another writer held the chain's lock past its
    wait): the use-case stopped there. Changes made before it record their own outcome."""


# What the database driver raises when it cannot be reached (connection refused, reset, locked).
_UNREACHABLE = (OperationalError, InterfaceError)


class BackupNotFinished(ServiceError):
    """The backup is still being made: it can be neither deleted nor restored yet."""

    def __init__(self, backup: Backup) -> None:
        super().__init__(f"backup {backup.id} is still {backup.status}")
        self.backup = backup


class ApprovalRequired(ServiceError):
    """DELETE_REQUIRES_APPROVAL: a delete is asked for on an approval card, never done directly."""

    def __init__(self, backup_id: int) -> None:
        super().__init__(f"deleting backup {backup_id} needs an approval")
        self.backup_id = backup_id


def count_words(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


# -- ports: what the use-cases need from the world around them -----------------------------------


class BackupWatch(Protocol):
    """The durable watcher, as the create flow sees it (`bot.watch.Watcher`)."""

    def watch(self, backup: Backup, actor: Actor) -> int: ...

    def threads_of(self, backup_ids: set[int]) -> Mapping[int, tuple[str, str]]: ...

    def attach_thread(
        self,
        job_id: int,
        channel_id: str | None,
        thread_ts: str | None,
        *,
        update_parent: bool = True,
    ) -> None: ...


@dataclass(frozen=True)
class Announcement:
    """Where the "started" message went. `channel_id`/`ts` are None when it reached no one;
    `problem` says why it is not in the requester's channel (the chat platform's error code)."""

    channel_id: str | None
    ts: str | None
    problem: str | None = None

    @property
    def in_channel(self) -> bool:
        return self.problem is None and self.ts is not None


class HealthStatus(Protocol):
    """Backup health per server (`bot.health.HealthMonitor`); raises `VpsError`."""

    def status(self, server: ServerRef | None = None) -> StatusReport: ...


class HealthUnavailable(ServiceError):
    """No health monitor is wired in (a bot built without one)."""


class StartAnnouncer(Protocol):
    """Posts "backup N of SERVER started by …" where the requester is, else in their DM."""

    def announce(self, backup: Backup, actor: Actor) -> Announcement: ...


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    """Backups newest first, with what was asked for (to show in the summary and the pager)."""

    backups: tuple[Backup, ...]
    server: ServerRef | None = None
    backup_type: str | None = None
    unreadable: int = 0  # rows the provider sent in a shape we could not read (left out)

    @property
    def total_size_mb(self) -> float:
        return sum(b.size_mb or 0 for b in self.backups)


@dataclass(frozen=True)
class CreateResult:
    """A backup the provider started; `tracked`: a reply will come in its thread when it ends."""

    backup: Backup
    announcement: Announcement
    tracked: bool


@dataclass(frozen=True)
class DeleteResult:
    """What a delete did; the backup may have gone before we asked (expired, deleted)."""

    backup_id: int
    outcome: DeleteOutcome | None  # None: it was already gone before we asked


@dataclass(frozen=True)
class AuditQuery:
    """The audit review's filters; None means any. `before_id`/`after_id` page through them."""

    user_id: str | None = None
    server: int | str | None = None
    action: str | None = None
    since: timedelta | None = None
    approval_id: int | None = None
    outcome: str | None = None
    before_id: int | None = None
    after_id: int | None = None


@dataclass(frozen=True)
class AuditPage:
    """One page of audit rows, newest first; `query` has the server resolved to its id."""

    rows: list[AuditEntry]
    query: AuditQuery
    older: bool  # rows older than the last one match too
    newer: bool
    approvers: Mapping[int, tuple[str, ...]]  # approval id → who approved it
    threads: Mapping[str, tuple[str, str]]  # "approval:7" / "backup:501" → (channel, ts)


@dataclass(frozen=True)
class AuditExport:
    rows: int
    filename: str


class FileNotDelivered(ServiceError):
    """The file could not be handed over; `problem` is the chat platform's reason."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"file not delivered: {problem}")
        self.problem = problem


class FileDelivery(Protocol):
    """Hands a file to a person privately (the Slack side uploads it to their DM); raises
    `FileNotDelivered`."""

    def send_file(self, actor: Actor, path: Path, filename: str, title: str) -> None: ...


@dataclass
class _ServerCache:
    expires: float = 0.0
    servers: tuple[ServerRef, ...] = ()
    lock: threading.Lock = field(default_factory=threading.Lock)


class BackupService:
    """Every use-case of Backup Bot, on behalf of an `Actor`. Thread-safe."""

    def __init__(
        self,
        client: BackupsClient,
        audit: AuditLog,
        policy: Policy,
        *,
        watcher: BackupWatch | None = None,
        announcer: StartAnnouncer | None = None,
        server_cache_seconds: float = 60.0,
        answer_within: float = 15.0,
        traces_of: Callable[[set[int]], Mapping[int, Any]] = lambda _: {},
        clock: Callable[[], float] = time.monotonic,
        health: HealthStatus | None = None,
        deletes_need_approval: bool = False,
    ) -> None:
        self.client = client
        self.audit = audit
        self.policy = policy
        self.watcher = watcher
        self.announcer = announcer
        self._server_cache_seconds = server_cache_seconds
        self.answer_within = answer_within
        self.traces_of = traces_of  # approvals' approvers and cards, for the audit review
        self._clock = clock
        self._servers = _ServerCache()
        self.health = health
        # DELETE_REQUIRES_APPROVAL: `delete_backup` refuses; the approval runner deletes instead.
        self.deletes_need_approval = deletes_need_approval

    # -- authorization ----------------------------------------------------------------------

    def authorize(
        self,
        actor: Actor,
        action: Action,
        *,
        server: int | str | None = None,
        backup_id: int | None = None,
        server_id: int | None = None,
        **parameters: Any,
    ) -> None:
        """Raise `Denied` (and audit the denial) unless the actor may do this here.

        A denied row names the server when it can be known without trusting the request: an id
        as given, a name or a backup looked up at best effort, so `server:` filters find it.
        """
        decision = self.policy.check(actor.user_id, action, actor.channel_id, direct=actor.direct)
        if decision.allowed:
            return
        if server_id is None:
            server_id = self._server_of(server, backup_id)
        if server is not None:
            parameters = {"server": server, **parameters}
        self.audit.record(
            actor, action.value, Outcome.DENIED, server_id=server_id, backup_id=backup_id,
            parameters=parameters, detail=decision.reason,
        )  # fmt: skip
        raise Denied(decision)

    def _server_of(self, server: int | str | None, backup_id: int | None) -> int | None:
        """The server a denied request was about, if finding it costs little and cannot fail."""
        try:
            if server is not None:
                return self.resolve_server(server).id
            if backup_id is not None:
                return self.client.find_backup(backup_id).server.id
        except (ServiceError, VpsError):
            pass
        return None

    @contextlib.contextmanager
    def someone_waiting(self) -> Iterator[None]:
        """Around a use-case a person waits for in chat: provider calls end within
        `answer_within` seconds in all (a retry or `Retry-After` past it is said at once), and
        a database that cannot be reached is a `StorageUnavailable` and an audit row that could
        not be written in time an `AuditBusy`, each said plainly."""
        with self.client.budget(self.answer_within):
            try:
                yield
            except _UNREACHABLE as exc:
                log.error("the database did not answer during a command: %s", exc)
                raise StorageUnavailable(type(exc).__name__) from None
            except AuditUnavailable as exc:
                log.error("an audit row was not written in time during a command: %s", exc)
                raise AuditBusy(str(exc)) from None

    def permissions(self, user_id: str) -> tuple[list[str], list[str]]:
        """(roles held, actions allowed) of a person, sorted, for showing them what they may do."""
        roles = self.policy.roles_of(user_id)
        allowed = [action.value for action, role in REQUIRED_ROLE.items() if role in roles]
        return sorted(role.value for role in roles), allowed

    # -- servers ----------------------------------------------------------------------------

    def resolve_server(self, server: int | str) -> ServerRef:
        """A numeric id as given; a name looked up among the servers the provider knows.

        The API has no server listing, so servers are known from their backups. An exact name
        (any case) resolves; anything else is an error naming the near matches, never a guess:
        `create web` must not back up the wrong machine.
        """
        if isinstance(server, int):
            # No lookup: the provider says whether the id exists, and names it in its answer.
            return ServerRef(server, f"server {server}")
        wanted = server.strip().lower()
        for refresh in (False, True):
            servers = self._known_servers(refresh=refresh)
            exact = tuple(s for s in servers if s.name.lower() == wanted)
            if len(exact) == 1:
                return exact[0]
            if len(exact) > 1:
                raise UnknownServer(server, exact, ambiguous=True)
        raise UnknownServer(server, tuple(s for s in servers if wanted in s.name.lower()))

    def _known_servers(self, *, refresh: bool) -> tuple[ServerRef, ...]:
        cache = self._servers
        with cache.lock:
            if not refresh and cache.expires > self._clock():
                return cache.servers
        # Not under the lock: a slow provider must not queue every other command behind it.
        backups = self.client.list_backups().backups  # VpsError: the caller knows what it was for
        found = {b.server.id: b.server for b in backups}
        servers = tuple(sorted(found.values(), key=lambda s: (s.name, s.id)))
        with cache.lock:
            cache.servers = servers
            cache.expires = self._clock() + self._server_cache_seconds
        return servers

    # -- commands answered on the spot ---------------------------------------------------------

    def command_answered(self, actor: Actor, text: str, problem: str | None = None) -> None:
        """Record a command answered without any use-case: help, or text that did not parse."""
        action, outcome = ("command", Outcome.ERROR) if problem else ("help", Outcome.OK)
        self.audit.record(
            actor, action, outcome, parameters={"text": text[:500]}, detail=problem or ""
        )

    # -- list -----------------------------------------------------------------------------

    def list_backups(
        self, actor: Actor, server: int | str | None = None, backup_type: str | None = None
    ) -> Listing:
        parameters = {"server": server, "backup_type": backup_type}
        self.authorize(actor, Action.LIST, **parameters)
        ref: ServerRef | None = None
        try:
            if server is not None:
                ref = self._resolve_audited(actor, Action.LIST, server, parameters)
            answer = self.client.list_backups(
                server_id=ref.id if ref else None, backup_type=backup_type
            )
        except VpsError as exc:
            self._failed(actor, Action.LIST, exc, parameters, server_id=ref.id if ref else None)
            raise ProviderError(exc, Action.LIST, server=ref) from None
        backups = tuple(answer.newest_first())
        if ref is not None and backups:
            ref = backups[0].server
        self.audit.record(
            actor,
            Action.LIST.value,
            Outcome.OK,
            server_id=ref.id if ref else None,
            parameters=parameters,
            detail=f"{len(backups)} backups",
        )
        return Listing(backups, ref, backup_type, answer.unreadable)

    # -- status ---------------------------------------------------------------------------

    def status(self, actor: Actor, server: int | str | None = None) -> StatusReport:
        """Backup health: every server worst first, or one server with its recent timeline."""
        parameters = {"server": server}
        self.authorize(actor, Action.STATUS, **parameters)
        if self.health is None:
            raise HealthUnavailable("backup health is not available in this bot")
        ref: ServerRef | None = None
        try:
            if server is not None:
                ref = self._resolve_audited(actor, Action.STATUS, server, parameters)
            report = self.health.status(ref)
        except VpsError as exc:
            self._failed(actor, Action.STATUS, exc, parameters, server_id=ref.id if ref else None)
            raise ProviderError(exc, Action.STATUS, server=ref) from None
        self.audit.record(
            actor,
            Action.STATUS.value,
            Outcome.OK,
            server_id=ref.id if ref else None,
            parameters=parameters,
            detail=f"{count_words(len(report.servers), 'server')}, {report.unhealthy} unhealthy",
        )
        return report

    # -- create ---------------------------------------------------------------------------

    def create_backup(
        self, actor: Actor, server: int | str, description: str | None = None
    ) -> CreateResult:
        """Start a backup, record it for the watcher, and announce it where the actor is.

        The watch job is written before the announcement, so a crash in between still gets a
        reply; once the provider has started the backup nothing here raises: the person must
        hear that it started whatever fails after.
        """
        parameters = {"server": server, "description": description}
        self.authorize(actor, Action.CREATE, **parameters)
        ref = self._resolve_audited(actor, Action.CREATE, server, parameters)
        self.audit.reachable()  # else StorageUnavailable, before the provider is asked
        try:
            backup = self.client.create_backup(ref.id, description)
        except VpsError as exc:
            self._failed(actor, Action.CREATE, exc, parameters, server_id=ref.id)
            raise ProviderError(exc, Action.CREATE, server=ref) from None
        try:
            self.audit.record(
                actor,
                Action.CREATE.value,
                Outcome.OK,
                server_id=backup.server.id,
                backup_id=backup.id,
                parameters=parameters,
                detail=f"backup {backup.id} started ({backup.status})",
            )
        except Exception:
            log.exception("could not record that backup %s started", backup.id)
        job_id = self._watch(actor, backup)
        announcement = self._announce(actor, backup)
        if job_id is not None and self.watcher is not None:
            try:
                self.watcher.attach_thread(job_id, announcement.channel_id, announcement.ts)
            except Exception:
                # The job exists: after a grace period its reply goes to the channel, unthreaded.
                log.exception("could not attach the thread of backup %s", backup.id)
        return CreateResult(backup, announcement, tracked=job_id is not None)

    def _watch(self, actor: Actor, backup: Backup) -> int | None:
        if self.watcher is None:
            return None
        try:
            return self.watcher.watch(backup, actor)
        except Exception:
            log.exception("could not write the watch job of backup %s", backup.id)
            self._noted(actor, "create.untracked", backup, "the watch job could not be written")
            return None

    def _announce(self, actor: Actor, backup: Backup) -> Announcement:
        if self.announcer is None:
            return Announcement(None, None, "no chat to announce in")
        try:
            announcement = self.announcer.announce(backup, actor)
        except Exception as exc:
            log.exception("announcing backup %s failed", backup.id)
            announcement = Announcement(None, None, type(exc).__name__)
        if not announcement.in_channel:
            where = "the requester's DM" if announcement.ts else "nowhere"
            self._noted(
                actor,
                "create.notice",
                backup,
                f"started message not in channel: {announcement.problem}; sent to {where}",
            )
        return announcement

    def _noted(self, actor: Actor, action: str, backup: Backup, detail: str) -> None:
        self.audit.record(
            actor,
            action,
            Outcome.ERROR,
            server_id=backup.server.id,
            backup_id=backup.id,
            detail=detail,
        )

    # -- delete ---------------------------------------------------------------------------

    def offer_delete(self, actor: Actor, backup_id: int) -> Backup:
        """The backup a delete would remove, for the person to confirm (nothing is deleted)."""
        self.authorize(actor, Action.DELETE, backup_id=backup_id)
        try:
            backup = self.client.find_backup(backup_id)
        except NotFound:
            self.audit.record(
                actor, "delete.request", Outcome.ERROR, backup_id=backup_id, detail="no such backup"
            )
            raise NoSuchBackup(backup_id) from None
        except VpsError as exc:
            self._failed(actor, Action.DELETE, exc, {}, backup_id=backup_id)
            raise ProviderError(exc, Action.DELETE, backup_id=backup_id) from None
        if backup.phase is Phase.RUNNING:
            self.audit.record(
                actor,
                "delete.request",
                Outcome.ERROR,
                server_id=backup.server.id,
                backup_id=backup_id,
                detail=f"still {backup.status}",
            )
            raise BackupNotFinished(backup)
        self.audit.record(
            actor,
            "delete.request",
            Outcome.OK,
            server_id=backup.server.id,
            backup_id=backup_id,
            detail="confirmation card shown",
        )
        return backup

    def delete_backup(
        self, actor: Actor, backup_id: int, server_id: int | None = None
    ) -> DeleteResult:
        """`server_id`, when the caller knows it (the card did), goes into the audit rows."""
        self.authorize(actor, Action.DELETE, backup_id=backup_id, server_id=server_id)
        if self.deletes_need_approval:
            self.audit.record(
                actor, Action.DELETE.value, Outcome.ERROR, server_id=server_id,
                backup_id=backup_id, detail="not deleted: deletes need an approval",
            )  # fmt: skip
            raise ApprovalRequired(backup_id)
        self.audit.reachable()  # else StorageUnavailable, before the provider is asked
        try:
            outcome: DeleteOutcome | None = self.client.delete_backup(backup_id)
            status, detail = 204, outcome.value  # type: ignore[union-attr]
        except NotFound as exc:
            outcome, status, detail = None, exc.status_code, "already gone"
        except VpsError as exc:
            self._failed(actor, Action.DELETE, exc, {}, server_id=server_id, backup_id=backup_id)
            raise ProviderError(exc, Action.DELETE, backup_id=backup_id) from None
        try:
            self.audit.record(
                actor,
                Action.DELETE.value,
                Outcome.OK,
                server_id=server_id,
                backup_id=backup_id,
                provider_status=status,
                detail=detail,
            )
        except Exception:  # it is deleted: the person hears so whatever the record did
            log.exception("could not record that backup %s was deleted", backup_id)
        return DeleteResult(backup_id, outcome)

    def cancel_delete(self, actor: Actor, backup_id: int | None, server_id: int | None) -> None:
        """The person kept the backup: nothing to do but to say so on the record."""
        self.audit.record(
            actor, "delete.cancel", Outcome.OK, server_id=server_id, backup_id=backup_id
        )

    # -- audit review ---------------------------------------------------------------------

    def audit_trail(self, actor: Actor, query: AuditQuery, limit: int = 20) -> AuditPage:
        """A page of the newest audit rows matching the filters, for auditors. Audited too."""
        query, filters, parameters = self._audit_filters(actor, query, Action.AUDIT)
        rows = self.audit.recent(
            limit + 1, before_id=query.before_id, after_id=query.after_id, **filters
        )
        more = len(rows) > limit
        if query.after_id is not None:  # paging towards the newest: the extra row is newest
            rows, older, newer = rows[-limit:], True, more
        else:
            rows, older, newer = rows[:limit], more, query.before_id is not None
        approvers, threads = self._traces(rows)
        self.audit.record(
            actor,
            Action.AUDIT.value,
            Outcome.OK,
            server_id=filters["server_id"],
            parameters=parameters,
            detail=f"{count_words(len(rows), 'row')} shown",
        )
        return AuditPage(rows, query, older, newer, approvers, threads)

    def _traces(
        self, rows: list[AuditEntry]
    ) -> tuple[dict[int, tuple[str, ...]], dict[str, tuple[str, str]]]:
        """Who approved the approvals on a page, and the threads its rows' stories live in."""
        approval_ids = {row.approval_id for row in rows if row.approval_id is not None}
        traces = self.traces_of(approval_ids) if approval_ids else {}
        threads = {f"approval:{i}": t.thread for i, t in traces.items() if t.thread}
        backup_ids = {row.backup_id for row in rows if row.backup_id is not None}
        if backup_ids and self.watcher is not None:
            watched = self.watcher.threads_of(backup_ids)
            threads.update({f"backup:{i}": thread for i, thread in watched.items()})
        return {i: t.approvers for i, t in traces.items()}, threads

    def audit_overview(self, actor: Actor) -> tuple[AuditPage, Checkpoint | None]:
        """For an auditor's App Home: the newest rows and the newest checkpoint (or anchor)."""
        page = self.audit_trail(actor, AuditQuery())
        stored = self.audit.checkpoints()
        return page, stored[-1] if stored else None

    def export_audit(
        self, actor: Actor, query: AuditQuery, fmt: str, delivery: FileDelivery
    ) -> AuditExport:
        """Every row matching the filters, as a CSV or JSON Lines file sent to the person."""
        query, filters, parameters = self._audit_filters(actor, query, Action.AUDIT)
        filename = f"backupbot-audit-{datetime.now(UTC):%Y%m%d-%H%M%S}.{fmt}"
        with tempfile.TemporaryDirectory(prefix="backupbot-export-") as directory:
            path = Path(directory) / filename
            with path.open("w", encoding="utf-8", newline="") as out:
                rows = self.audit.export(out, fmt, **filters)
            try:
                delivery.send_file(actor, path, filename, f"Audit log export ({rows} rows)")
            except FileNotDelivered as exc:
                self.audit.record(
                    actor, "audit.export", Outcome.ERROR, server_id=filters["server_id"],
                    parameters={**parameters, "format": fmt}, detail=str(exc),
                )  # fmt: skip
                raise
        self.audit.record(
            actor,
            "audit.export",
            Outcome.OK,
            server_id=filters["server_id"],
            parameters={**parameters, "format": fmt},
            detail=f"{count_words(rows, 'row')} sent as {filename}",
        )
        return AuditExport(rows, filename)

    def _audit_filters(
        self, actor: Actor, query: AuditQuery, action: Action
    ) -> tuple[AuditQuery, dict[str, Any], dict[str, Any]]:
        """Authorize, resolve the server; (query with the server's id, filters, parameters)."""
        parameters = {
            "user": query.user_id,
            "server": query.server,
            "action_filter": query.action,
            "since_seconds": query.since.total_seconds() if query.since else None,
            "approval": query.approval_id,
            "outcome_filter": query.outcome,
        }
        self.authorize(actor, action, **parameters)
        server_id = None
        if query.server is not None:
            server_id = self._resolve_audited(actor, action, query.server, parameters).id
        filters = {
            "user_id": query.user_id,
            "server_id": server_id,
            "action": query.action,
            "since": datetime.now(UTC) - query.since if query.since else None,
            "approval_id": query.approval_id,
            "outcome": query.outcome,
        }
        return dataclasses.replace(query, server=server_id), filters, parameters

    # -- helpers ----------------------------------------------------------------------------

    def _resolve_audited(
        self, actor: Actor, action: Action, server: int | str, parameters: Mapping[str, Any]
    ) -> ServerRef:
        try:
            return self.resolve_server(server)
        except VpsError as exc:
            self._failed(actor, action, exc, parameters)
            raise ProviderError(exc, action, server_name=str(server)) from None
        except ServiceError as exc:
            self.audit.record(
                actor, action.value, Outcome.ERROR, parameters=parameters, detail=str(exc)
            )
            raise

    def _failed(
        self,
        actor: Actor,
        action: Action,
        exc: VpsError,
        parameters: Mapping[str, Any],
        *,
        server_id: int | None = None,
        backup_id: int | None = None,
    ) -> None:
        self.audit.record(
            actor,
            action.value,
            Outcome.ERROR,
            server_id=server_id,
            backup_id=backup_id,
            parameters=parameters,
            provider_status=exc.status_code,
            detail=f"{type(exc).__name__}: {exc.message}",
        )
