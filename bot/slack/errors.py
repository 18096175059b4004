"""The domain's typed errors in words: what a person sees when something could not be done."""

from __future__ import annotations

from typing import Any

from bot.approvals import (
    BackupNotRestorable,
    CardNotPosted,
    DecisionDenied,
    NoSuchApproval,
    NotDecidable,
    WrongConfirmation,
)
from bot.policy import Action, Decision
from bot.service import (
    ApprovalRequired,
    AuditBusy,
    BackupNotFinished,
    Denied,
    FileNotDelivered,
    NoSuchBackup,
    ProviderError,
    ServiceError,
    StorageUnavailable,
    UnknownServer,
)
from bot.slack.approval_blocks import noun, state_words
from bot.slack.blocks import NOT_POSTABLE, escape, notice
from bot.slack.parser import COMMAND_NAME
from bot.vps.errors import OutcomeUnknown


def denial(decision: Decision, doing: str | None = None) -> str:
    if decision.channel_closed:
        return (
            f"`{COMMAND_NAME}` is not enabled in this channel; ask an admin to add it to "
            "BACKUP_CHANNELS, or use one of the backup channels."
        )
    return (
        f"{doing or _DOING[decision.action]} needs the *{decision.required_role}* role, which "
        "you do not have. Ask an admin to add you (or one of your user groups) to "
        f"`{decision.role_variable}`."
    )


_DOING = {
    Action.LIST: "Listing backups",
    Action.CREATE: "Creating a backup",
    Action.DELETE: "Deleting a backup",
    Action.RESTORE: "Asking for a restore",
    Action.APPROVE: "Approving a restore",
    Action.REJECT: "Rejecting a restore",
    Action.AUDIT: "Reading the audit log",
    Action.STATUS: "Seeing backup health",
}


def _unknown_server(error: UnknownServer) -> str:
    name = escape(error.name)
    if error.ambiguous:
        listed = ", ".join(f"`{s.id}`" for s in error.candidates)
        return f"Several servers are named `{name}` ({listed}); use the numeric id."
    if error.candidates:
        listed = ", ".join(f"`{escape(s.name)}` (`{s.id}`)" for s in error.candidates[:10])
        return f"No server is named `{name}`. Did you mean {listed}?"
    return (
        f"No server named `{name}` has any backups. Use the server's numeric id "
        "(servers are found through their backups)."
    )


def error_notice(error: ServiceError) -> dict[str, Any]:
    """What a person sees when a use-case could not be done."""
    if isinstance(error, DecisionDenied) and error.approval.is_delete:
        deciding = "Approving" if error.decision.action is Action.APPROVE else "Rejecting"
        return notice(f"⛔ {denial(error.decision, f'{deciding} a delete')}")
    if isinstance(error, Denied):
        return notice(f"⛔ {denial(error.decision)}")
    if isinstance(error, NotDecidable):
        return notice(f"⛔ {_not_decidable(error)}")
    if isinstance(error, UnknownServer):
        text = _unknown_server(error)
    elif isinstance(error, NoSuchBackup):
        text = (
            f"There is no backup `{error.backup_id}` (it may have been deleted or have expired). "
            f"`{COMMAND_NAME} list` shows what exists."
        )
    elif isinstance(error, BackupNotFinished):
        backup = error.backup
        text = (
            f"Backup {backup.id} of {escape(backup.server.name)} is still "
            f"{escape(backup.status.replace('_', ' '))}: it can be deleted once it has finished."
        )
    elif isinstance(error, ProviderError):
        text = _provider_error(error)
    elif isinstance(error, NoSuchApproval):
        text = f"There is no approval #{error.approval_id}."
    elif isinstance(error, BackupNotRestorable):
        backup = error.backup
        text = (
            f"Backup {backup.id} of {escape(backup.server.name)} is {escape(backup.status)}: "
            "only a completed backup can be restored."
        )
    elif isinstance(error, CardNotPosted):
        reason = NOT_POSTABLE.get(error.problem, f"Slack refused it ({error.problem})")
        text = (
            f"I could not post the approval card ({reason}), so nothing was requested. "
            "Invite me to the channel (`/invite @Backup Bot`) and try again."
        )
    elif isinstance(error, FileNotDelivered):
        text = (
            f"I could not send you the file (Slack said `{escape(error.problem)}`; the app "
            "needs the `files:write` scope)."
        )
    elif isinstance(error, StorageUnavailable):
        text = (
            "I cannot reach my database right now, so I did not do that (nothing was changed "
            "at the provider). Try again in a minute; if it goes on, tell the bot's operators."
        )
    elif isinstance(error, AuditBusy):
        text = (
            "My audit log is busy right now: I could not record this request in time, so I "
            "stopped there. Try again in a moment."
        )
    elif isinstance(error, ApprovalRequired):
        text = (
            f"Backup {error.backup_id} was not deleted: deletes need an approval here. "
            f"`{COMMAND_NAME} delete {error.backup_id}` asks for one."
        )
    elif isinstance(error, WrongConfirmation):
        text = "That is not the server's name: nothing was approved."
    else:
        text = escape(str(error))
    return notice(f"⚠️ {text}")


def _provider_error(error: ProviderError) -> str:
    """What the person asked for, then why the provider did not do it."""
    reason = escape(error.error.message)
    server, name = error.server, escape(error.server_name or "")
    if isinstance(error.error, OutcomeUnknown):
        if error.action is Action.DELETE and error.backup_id is not None:
            return f"Could not confirm the delete of backup {error.backup_id}. {reason}"
        if server is None:
            return reason
        return f"{reason} `{COMMAND_NAME} list {server.id}` shows them."
    if error.action is Action.CREATE and name:
        asked = f"Could not create a backup of {name}"
    elif error.action is Action.DELETE and error.backup_id is not None:
        asked = f"Could not delete backup {error.backup_id}"
    elif error.action is Action.LIST and name:
        asked = f"Could not list the backups of {name}"
    else:
        asked = f"Could not {_ASKED.get(error.action, 'do that')}"
    return f"{asked}. {reason}"


_ASKED = {
    Action.LIST: "list the backups",
    Action.CREATE: "create the backup",
    Action.DELETE: "delete the backup",
    Action.RESTORE: "restore the server",
    Action.AUDIT: "look up that server for the audit log",
    Action.STATUS: "check the backups' health",
}


def unexpected_failure(what: str, reference: str) -> dict[str, Any]:
    return notice(
        f"⚠️ Something went wrong on our side while trying to {what}; it may not have "
        "finished. Check the result before trying again. Reference for the bot's operators: "
        f"`{reference}`."
    )


def _not_decidable(error: NotDecidable) -> str:
    approval = error.approval
    what = noun(approval)
    if error.why == NotDecidable.REQUESTER:
        return (
            f"You asked for this {what}, so you cannot decide on it: another approver must "
            "(four eyes)."
        )
    if error.why == NotDecidable.NOT_REQUESTER:
        return f"Only <@{approval.requester_id}>, who asked for this {what}, can cancel it."
    if error.why == NotDecidable.ALREADY_APPROVED:
        return f"You have approved this {what} already; it needs another approver."
    if error.why == NotDecidable.EXPIRED:
        return f"This approval has expired; ask for the {what} again."
    return f"This approval is no longer open: {state_words(approval)}."
