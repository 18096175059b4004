"""The few errors the Backups API client raises, each with a message fit to show a person.

Callers catch the level they care about: `VpsError` for "anything went wrong with the provider",
or one of its subclasses to react to a particular case. `str(error)` is the person's message;
`status_code` is the provider's HTTP status when there was one (for the audit table).
"""

from __future__ import annotations


class VpsError(Exception):
    """Base of every error the Backups API client raises."""

    def __init__(
        self, message: str, *, status_code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after  # seconds the provider asked us to wait, if it did

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status_code={self.status_code})"


class AuthenticationFailed(VpsError):
    """401: the provider rejected the API token (missing, invalid or revoked)."""


class NotFound(VpsError):
    """404: no such server or no such backup; `kind` says which was asked for."""

    def __init__(self, message: str, *, kind: str, status_code: int | None = 404) -> None:
        super().__init__(message, status_code=status_code)
        self.kind = kind


class Rejected(VpsError):
    """400 (or another 4xx): the provider refused the request; the message carries its reason."""


class ServerBusy(Rejected):
    """The server already has a backup or restore running (409/423, or a 400 saying so)."""


class ProviderUnavailable(VpsError):
    """The provider could not be reached or answered 5xx/429 after the retries we allow."""


class OutcomeUnknown(ProviderUnavailable):
    """A state-changing request may or may not have been carried out (timeout after sending).

    Never retried blindly: a person must check before trying again.
    """


class UnexpectedResponse(VpsError):
    """The provider answered something that is not the documented shape (not JSON, wrong fields)."""
