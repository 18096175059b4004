"""Logging set-up with a last line of defence: configured secrets are masked in every record.

Our own code never logs a token, and slack_sdk/httpx mask the Authorization header; this filter
catches what a library might still print (an error quoting a URL or a request body).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

MASK = "**********"


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first, so a secret containing another is masked whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        text = message
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        for secret in self._secrets:
            text = text.replace(secret, MASK)
            if record.exc_text:
                record.exc_text = record.exc_text.replace(secret, MASK)
        if text != message:
            record.msg, record.args = text, None
        return True


def configure(level: str, secrets: Iterable[str] = ()) -> None:
    """Root logging for the CLI: one format, and `secrets` masked on every handler."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    redact = RedactSecrets(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact)
