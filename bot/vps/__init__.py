"""The provider's Backups API: client, typed models and the errors it raises."""

from bot.vps.client import BackupsClient
from bot.vps.errors import (
    AuthenticationFailed,
    NotFound,
    OutcomeUnknown,
    ProviderUnavailable,
    Rejected,
    ServerBusy,
    UnexpectedResponse,
    VpsError,
)
from bot.vps.models import (
    Backup,
    BackupList,
    DeleteOutcome,
    Phase,
    RestoreAccepted,
    ServerRef,
)

__all__ = [
    "AuthenticationFailed",
    "Backup",
    "BackupList",
    "BackupsClient",
    "DeleteOutcome",
    "NotFound",
    "OutcomeUnknown",
    "Phase",
    "ProviderUnavailable",
    "Rejected",
    "RestoreAccepted",
    "ServerBusy",
    "ServerRef",
    "UnexpectedResponse",
    "VpsError",
]
