"""Logging: text or JSON lines, one request id on every line of a Slack request, and every
configured secret masked in every record, whichever logger made it and whichever handler writes it.

Masking happens where records are made (`logging.setLogRecordFactory`), not in a filter: a filter on
the root logger's handlers misses loggers that do not propagate and handlers added later (by a
library, by pytest), while every record of every logger is made by the factory. Each record's
message is formatted once there, secrets replaced, and its traceback (`exc_text`) and stack
rendered and masked too; the stdlib `Formatter` (and ours) then print those. Our formatters mask
the finished line again, for records made without the factory (`logging.makeLogRecord`).

Secrets of `MIN_MASKED_ANYWHERE` characters or more are masked wherever they appear. A shorter
one ("t0k") is masked only where it stands alone, not inside a longer word or number: masking it
inside other text would garble the log, and a one-letter secret would blank every such letter. A
short secret is weak anyway; start-up warns about it (by its variable's name).

The request id lives in a `ContextVar`: set where a Slack request arrives (the WSGI gate, the
Socket Mode handler), carried into the listener pool and the work pool by `copy_context()`, read by
the record factory (`record.request_id`) and by the audit log (each row stores it).
"""

from __future__ import annotations

import json
import logging
import re
import secrets as _random
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

MASK = "**********"
MIN_MASKED_ANYWHERE = 8
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
LOG_FORMATS = ("text", "json")

# -- the request id ------------------------------------------------------------------------------

_REQUEST_ID: ContextVar[str | None] = ContextVar("backupbot_request_id", default=None)


def new_request_id() -> str:
    """A short random id (8 hex digits): what people see as an error's reference."""
    return _random.token_hex(4)


def current_request_id() -> str | None:
    """The id of the Slack request this code runs for (None outside one: a watcher round)."""
    return _REQUEST_ID.get()


@contextmanager
def request_scope(request_id: str | None = None) -> Iterator[str]:
    """Run the block as one request: its log lines and audit rows carry `request_id` (a new one
    unless given)."""
    rid = request_id or new_request_id()
    token = _REQUEST_ID.set(rid)
    try:
        yield rid
    finally:
        _REQUEST_ID.reset(token)


# -- masking --------------------------------------------------------------------------------------


class Redactor:
    """Replaces secrets in text with `MASK`: long ones anywhere, short ones where they stand alone.
    Secrets can be added (never removed) while other threads use it."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        with self._lock:
            known = self._secrets | {s for s in secrets if s}
            if known == self._secrets:
                return
            # Longest first, so a secret containing another is masked whole.
            ordered = sorted(known, key=len, reverse=True)
            parts = [
                re.escape(s)
                if len(s) >= MIN_MASKED_ANYWHERE
                else rf"(?<![A-Za-z0-9]){re.escape(s)}(?![A-Za-z0-9])"
                for s in ordered
            ]
            self._secrets, self._pattern = known, re.compile("|".join(parts))

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __call__(self, text: str) -> str:
        pattern = self._pattern
        return text if pattern is None else pattern.sub(MASK, text)

    def scrub(self, record: logging.LogRecord) -> None:
        """Mask the record in place: its message (formatted now), traceback and stack."""
        if self._pattern is None:
            return
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it at emit
            message = None
        if message is not None:
            clean = self(message)
            if clean != message:
                record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            record.exc_text = _PLAIN.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self(record.exc_text)
        if record.stack_info:
            record.stack_info = self(record.stack_info)


_PLAIN = logging.Formatter()
_REDACTOR = Redactor()  # the process's: secrets only ever join it


def redact(text: str) -> str:
    """`text` with every secret given to `protect` masked (for output that is not a log record:
    an error printed by the CLI)."""
    return _REDACTOR(text)


def protect(secrets: Iterable[str]) -> None:
    """From now on mask these secrets in every log record (any logger, any handler) and tag each
    record with the current request id. Safe to call again (secrets add up)."""
    _REDACTOR.add(secrets)
    _install_record_factory()


_factory_lock = threading.Lock()
_installed: Callable[..., logging.LogRecord] | None = None


def _install_record_factory() -> None:
    global _installed
    with _factory_lock:
        if _installed is not None and logging.getLogRecordFactory() is _installed:
            return
        make = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make(*args, **kwargs)
            request_id = _REQUEST_ID.get()
            if request_id is not None:
                record.request_id = request_id
            _REDACTOR.scrub(record)
            return record

        logging.setLogRecordFactory(factory)
        _installed = factory


class RedactSecrets(logging.Filter):
    """A filter masking `secrets` in the records it sees (for a handler of one's own; `protect`
    covers every handler)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._redactor = Redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        self._redactor.scrub(record)
        return True


# -- formats --------------------------------------------------------------------------------------


class TextFormatter(logging.Formatter):
    """`time LEVEL logger [request id]: message` ("-" outside a request), secrets masked."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT, defaults={"request_id": "-"})

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, request_id (null
    outside a request) and, when there is one, the exception's traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "request_id": getattr(record, "request_id", None),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def formatter(log_format: str = "text") -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure(level: str, secrets: Iterable[str] = (), log_format: str = "text") -> None:
    """Root logging for the CLI: one handler on stderr in `log_format` (text or json), `secrets`
    masked everywhere, and uncaught exceptions (any thread) logged rather than printed raw."""
    protect(secrets)
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(
    kind: type[BaseException], value: BaseException, traceback: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)
        return
    logging.getLogger("backupbot").critical("uncaught exception", exc_info=(kind, value, traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("backupbot").error(
        "uncaught exception in thread %s",
        name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
