"""The audit table: who asked for what, where, when, and what came of it. Rows are only added."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.db import AuditEvent, Outcome

log = logging.getLogger(__name__)

_DETAIL_LIMIT = 2000


@dataclass(frozen=True)
class Actor:
    """A person acting through Slack (or the console), as Slack named them at the time."""

    user_id: str
    name: str = ""
    team_id: str | None = None
    channel_id: str | None = None

    @property
    def mention(self) -> str:
        return f"<@{self.user_id}>"


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
    ) -> AuditEvent:
        event = AuditEvent(
            actor_user_id=actor.user_id,
            actor_name=actor.name[:255],
            actor_team_id=actor.team_id,
            channel_id=actor.channel_id,
            action=action,
            server_id=server_id,
            backup_id=backup_id,
            parameters=dict(parameters or {}),
            outcome=outcome.value,
            provider_status=provider_status,
            detail=detail[:_DETAIL_LIMIT],
        )
        with self._sessions.begin() as session:
            session.add(event)
        log.info(
            "audit: %s %s by %s -> %s%s",
            action,
            backup_id if backup_id is not None else server_id or "",
            actor.user_id,
            outcome.value,
            f" ({provider_status})" if provider_status else "",
        )
        return event

    def recent(self, limit: int = 50, **filters: Any) -> list[AuditEvent]:
        query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        for column, value in filters.items():
            query = query.where(getattr(AuditEvent, column) == value)
        with self._sessions() as session:
            return list(session.scalars(query))
