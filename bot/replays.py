"""Requests already acted on: a signed request replayed within its signature's lifetime, or an event
Slack retries, is answered without acting twice — across every instance sharing the database."""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from bot.db import SeenRequest

log = logging.getLogger(__name__)

# Slack's signatures are accepted for 5 minutes; a little more covers clocks that differ.
SIGNATURE_LIFETIME = timedelta(minutes=6)
_PRUNE_EVERY = 200


def fingerprint(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


class RequestLedger:
    """`first_time(fingerprint)` is True once per fingerprint within `lifetime`. Thread-safe."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        lifetime: timedelta = SIGNATURE_LIFETIME,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessions = sessions
        self._lifetime = lifetime
        self._clock = clock
        self._calls = itertools.count(1)

    def first_time(self, key: str) -> bool:
        """Record `key`; False if it was recorded before and has not expired.

        If the database cannot be reached the request is let through (and logged): the
        use-case it leads to needs the database too, and fails there with a clear message.
        """
        now = self._clock()
        try:
            if next(self._calls) % _PRUNE_EVERY == 0:
                self._prune(now)
            for _ in range(2):
                try:
                    with self._sessions.begin() as session:
                        session.add(SeenRequest(fingerprint=key, expires_at=now + self._lifetime))
                    return True
                except IntegrityError:
                    # Seen before; if only an expired record stood in the way, drop it and retry.
                    if not self._prune(now, key):
                        return False
            return False
        except SQLAlchemyError as exc:
            log.warning("replay check skipped: database unavailable (%s)", type(exc).__name__)
            return True

    def _prune(self, now: datetime, key: str | None = None) -> int:
        query = delete(SeenRequest).where(SeenRequest.expires_at < now)
        if key is not None:
            query = query.where(SeenRequest.fingerprint == key)
        with self._sessions.begin() as session:
            return int(session.execute(query).rowcount)  # type: ignore[attr-defined]
