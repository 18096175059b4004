"""Requests already acted on: a signed request replayed within its signature's lifetime, or an event
Slack retries, is answered without acting twice — across every instance sharing the database.

The check is made where work is about to act, not before the ack: the HTTP entry point names the
request (`checked_once`), and the work it leads to asks `acted_on_before()` before doing anything
(`SlackEdge.later`, the App Home). Work that only reads (a list, a page, help, an audit review)
changes nothing and is not checked: a replay of it is answered again, like the original, with its
own audit row. A request whose work would act (a create, a click, an approval, a Home publish)
does nothing the second time. So no ack waits for a database write: in a burst the ledger's insert
cost each ack about a third of its CPU, and on SQLite it queued behind the answers' audit rows
for the one write lock (a worst ack of 1.1-1.6 s against 0.13 s for a bare Bolt app).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, insert
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from bot.db import SeenRequest

log = logging.getLogger(__name__)

# Slack's signatures are accepted for 5 minutes; a little more covers clocks that differ.
SIGNATURE_LIFETIME = timedelta(minutes=6)
_PRUNE_EVERY = 200


def fingerprint(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


class RequestLedger:
    """`first_time(fingerprint)` is True once per fingerprint within `lifetime`. Thread-safe.

    It runs once per request that may change something, before its work acts, so it writes
    with one Core statement on `engine` (a pool of its own): no ORM unit of work, about a third of
    the CPU of a session's flush.
    """

    _record = insert(SeenRequest)

    def __init__(
        self,
        engine: Engine,
        *,
        lifetime: timedelta = SIGNATURE_LIFETIME,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
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
                    with self._engine.begin() as connection:
                        expires_at = now + self._lifetime
                        connection.execute(
                            self._record, {"fingerprint": key, "expires_at": expires_at}
                        )
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
        with self._engine.begin() as connection:
            return int(connection.execute(query).rowcount)


class _Request:
    """One request's key, checked against the ledger once, however many jobs ask."""

    def __init__(self, key: str, first_time: Callable[[str], bool]) -> None:
        self._key = key
        self._first_time = first_time
        self._lock = threading.Lock()
        self._verdict: bool | None = None

    def first_time(self) -> bool:
        with self._lock:
            if self._verdict is None:
                self._verdict = self._first_time(self._key)
            return self._verdict


_CURRENT: contextvars.ContextVar[_Request | None] = contextvars.ContextVar(
    "backupbot_request_key", default=None
)


@contextlib.contextmanager
def checked_once(key: str | None, first_time: Callable[[str], bool] | None) -> Iterator[None]:
    """Around one request at the entry point: the work it leads to (which runs in a copy of this
    context) checks `key` with `first_time` before acting. No key or no ledger: nothing to check."""
    request = _Request(key, first_time) if key is not None and first_time is not None else None
    token = _CURRENT.set(request)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def acted_on_before() -> bool:
    """True when the current request was acted on before (a replay, a retried event): the work
    must then do nothing. The first job of a request to ask records it."""
    request = _CURRENT.get()
    return request is not None and not request.first_time()
