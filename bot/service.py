"""The use-cases (list, create, delete backups) for an `Actor`: authorization, provider, audit.

Nothing here knows Slack. Every use-case checks the policy first, calls the provider, and writes
one audit row whatever happens (allowed, denied, failed). Errors reach the caller as
`ServiceError`s whose `str()` is fit to show the person who asked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.audit import Actor, AuditLog
from bot.db import AuditEvent, Outcome
from bot.policy import Action, Decision, Policy
from bot.vps.client import BackupsClient
from bot.vps.errors import NotFound, VpsError
from bot.vps.models import Backup, DeleteOutcome, ServerRef

log = logging.getLogger(__name__)

BACKUP_TYPES = ("manual", "automatic")


class ServiceError(Exception):
    """A use-case could not be done; `str()` says why, in words fit for the person who asked."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class Denied(ServiceError):
    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


class UnknownServer(ServiceError):
    """No server of that name, or several: `candidates` lists the near matches."""

    def __init__(self, message: str, candidates: tuple[ServerRef, ...] = ()) -> None:
        super().__init__(message)
        self.candidates = candidates


class ProviderError(ServiceError):
    """The provider refused or failed; wraps the client's typed error."""

    def __init__(self, error: VpsError) -> None:
        super().__init__(error.message, status_code=error.status_code)
        self.error = error


@dataclass(frozen=True)
class Listing:
    """Backups newest first, with what was asked for (to show in the summary and the pager)."""

    backups: tuple[Backup, ...]
    server: ServerRef | None = None
    backup_type: str | None = None

    @property
    def total_size_mb(self) -> float:
        return sum(b.size_mb or 0 for b in self.backups)


@dataclass(frozen=True)
class DeleteResult:
    backup_id: int
    outcome: DeleteOutcome | None  # None: it was already gone before we asked
    backup: Backup | None = None


@dataclass
class _ServerCache:
    expires: float = 0.0
    servers: tuple[ServerRef, ...] = ()
    lock: threading.Lock = field(default_factory=threading.Lock)


class BackupService:
    """List, create and delete backups on behalf of a person. Thread-safe."""

    def __init__(
        self,
        client: BackupsClient,
        audit: AuditLog,
        policy: Policy,
        *,
        server_cache_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.audit = audit
        self.policy = policy
        self._server_cache_seconds = server_cache_seconds
        self._clock = clock
        self._servers = _ServerCache()

    # -- authorization ----------------------------------------------------------------------

    def authorize(self, actor: Actor, action: Action, **context: Any) -> None:
        """Raise `Denied` (and audit the denial) unless the actor may do this here."""
        decision = self.policy.check(actor.user_id, action, actor.channel_id)
        if not decision.allowed:
            self.audit.record(
                actor,
                action.value,
                Outcome.DENIED,
                server_id=context.pop("server_id", None),
                backup_id=context.pop("backup_id", None),
                parameters=context,
                detail=decision.reason,
            )
            raise Denied(decision)

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
                listed = ", ".join(f"`{s.id}`" for s in exact)
                raise UnknownServer(
                    f"Several servers are named `{server}` ({listed}); use the numeric id.",
                    exact,
                )
        near = tuple(s for s in servers if wanted in s.name.lower())
        if near:
            listed = ", ".join(f"`{s.name}` (`{s.id}`)" for s in near[:10])
            raise UnknownServer(f"No server is named `{server}`. Did you mean {listed}?", near)
        raise UnknownServer(
            f"No server named `{server}` has any backups. Use the server's numeric id "
            "(servers are found through their backups)."
        )

    def _known_servers(self, *, refresh: bool) -> tuple[ServerRef, ...]:
        cache = self._servers
        with cache.lock:
            if not refresh and cache.expires > self._clock():
                return cache.servers
        # Not under the lock: a slow provider must not queue every other command behind it.
        try:
            backups = self.client.list_backups().backups
        except VpsError as exc:
            raise ProviderError(exc) from None
        found = {b.server.id: b.server for b in backups}
        servers = tuple(sorted(found.values(), key=lambda s: (s.name, s.id)))
        with cache.lock:
            cache.servers = servers
            cache.expires = self._clock() + self._server_cache_seconds
        return servers

    # -- use-cases --------------------------------------------------------------------------

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
            raise ProviderError(exc) from None
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
        return Listing(backups, ref, backup_type)

    def create_backup(
        self, actor: Actor, server: int | str, description: str | None = None
    ) -> Backup:
        parameters = {"server": server, "description": description}
        self.authorize(actor, Action.CREATE, **parameters)
        ref = self._resolve_audited(actor, Action.CREATE, server, parameters)
        try:
            backup = self.client.create_backup(ref.id, description)
        except VpsError as exc:
            self._failed(actor, Action.CREATE, exc, parameters, server_id=ref.id)
            raise ProviderError(exc) from None
        self.audit.record(
            actor,
            Action.CREATE.value,
            Outcome.OK,
            server_id=backup.server.id,
            backup_id=backup.id,
            parameters=parameters,
            detail=f"backup {backup.id} started ({backup.status})",
        )
        return backup

    def backup_for_deletion(self, actor: Actor, backup_id: int) -> Backup:
        """The backup a delete would remove, for the person to confirm (read-only)."""
        self.authorize(actor, Action.DELETE, backup_id=backup_id)
        try:
            backup = self.client.find_backup(backup_id)
        except NotFound:
            self.audit.record(
                actor,
                "delete.request",
                Outcome.ERROR,
                backup_id=backup_id,
                detail="no such backup",
            )
            raise ServiceError(
                f"There is no backup `{backup_id}` (it may have been deleted or have expired). "
                "`/backup list` shows what exists."
            ) from None
        except VpsError as exc:
            self._failed(actor, Action.DELETE, exc, {}, backup_id=backup_id)
            raise ProviderError(exc) from None
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
        try:
            outcome = self.client.delete_backup(backup_id)
        except NotFound as exc:
            self.audit.record(
                actor,
                Action.DELETE.value,
                Outcome.OK,
                server_id=server_id,
                backup_id=backup_id,
                provider_status=exc.status_code,
                detail="already gone",
            )
            return DeleteResult(backup_id, None)
        except VpsError as exc:
            self._failed(actor, Action.DELETE, exc, {}, server_id=server_id, backup_id=backup_id)
            raise ProviderError(exc) from None
        self.audit.record(
            actor,
            Action.DELETE.value,
            Outcome.OK,
            server_id=server_id,
            backup_id=backup_id,
            provider_status=204,
            detail=outcome.value,
        )
        return DeleteResult(backup_id, outcome)

    def audit_trail(
        self,
        actor: Actor,
        *,
        user_id: str | None = None,
        server: int | str | None = None,
        action: str | None = None,
        since: timedelta | None = None,
        limit: int = 20,
    ) -> list[AuditEvent]:
        """The newest audit rows matching the filters, for auditors. Reading is audited too."""
        parameters = {
            "user": user_id,
            "server": server,
            "action_filter": action,
            "since_seconds": since.total_seconds() if since else None,
        }
        self.authorize(actor, Action.AUDIT, **parameters)
        server_id = None
        if server is not None:
            server_id = self._resolve_audited(actor, Action.AUDIT, server, parameters).id
        rows = self.audit.recent(
            limit,
            user_id=user_id,
            server_id=server_id,
            action=action,
            since=datetime.now(UTC) - since if since else None,
        )
        self.audit.record(
            actor,
            Action.AUDIT.value,
            Outcome.OK,
            server_id=server_id,
            parameters=parameters,
            detail=f"{len(rows)} rows shown",
        )
        return rows

    # -- helpers ----------------------------------------------------------------------------

    def _resolve_audited(
        self, actor: Actor, action: Action, server: int | str, parameters: Mapping[str, Any]
    ) -> ServerRef:
        try:
            return self.resolve_server(server)
        except ServiceError as exc:
            self.audit.record(
                actor,
                action.value,
                Outcome.ERROR,
                parameters=parameters,
                provider_status=exc.status_code,
                detail=exc.message,
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
