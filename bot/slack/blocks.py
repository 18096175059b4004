"""How every Backup Bot message looks: Block Kit built with `slack_sdk.models.blocks`.

Times are aware UTC inside the bot and become Slack's `<!date^…>` tokens only here, so each reader
sees their own local time. Builders return plain dicts ready for `chat.postMessage` / `respond`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    Option,
    OverflowMenuElement,
    PlainTextObject,
    SectionBlock,
)

from bot.audit import AuditEntry
from bot.policy import Action, Decision
from bot.service import (
    BackupNotFinished,
    CreateResult,
    DeleteResult,
    Denied,
    Listing,
    NoSuchBackup,
    NotAvailable,
    ProviderError,
    ServiceError,
    UnknownServer,
)
from bot.slack.parser import COMMAND_NAME, positive_id
from bot.vps.errors import OutcomeUnknown
from bot.vps.models import BACKUP_TYPES, Backup, Phase, ServerRef
from bot.watch import FinishedBackup

PAGE_SIZE = 10
MAX_PAGE = 10_000

# action_ids: the routing table in bot/slack/listeners matches on these.
LIST_PAGE = "list_page"
BACKUP_MENU = "backup_menu"
DELETE_CONFIRM = "delete_confirm"
DELETE_CANCEL = "delete_cancel"
HELP_LIST = "help_list"

_STATUS_ICON = {Phase.COMPLETED: "✅", Phase.RUNNING: "⏳", Phase.FAILED: "❌"}


def human_size(size_mb: float | None) -> str:
    """Provider sizes are MB (MiB in practice); show them in the unit a person reads quickest."""
    if size_mb is None:
        return "—"
    value = float(size_mb)
    for unit in ("MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            break
        value /= 1024
    if unit == "MB":
        return f"{value:.0f} MB"
    return f"{value:.1f} {unit}"


def slack_date(when: datetime, style: str = "{date_short_pretty} {time}") -> str:
    """A `<!date^…>` token: rendered in the reader's own time zone, with a UTC fallback."""
    fallback = when.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{math.floor(when.timestamp())}^{style}|{fallback}>"


def human_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _escape(text: str) -> str:
    """Slack's three control characters, so names and descriptions show as typed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _message(text: str, blocks: Sequence[Block]) -> dict[str, Any]:
    return {"text": text, "blocks": [block.to_dict() for block in blocks]}


def notice(text: str) -> dict[str, Any]:
    """A one-section message (errors, confirmations)."""
    return _message(_plain_fallback(text), [SectionBlock(text=MarkdownTextObject(text=text))])


def _plain_fallback(text: str) -> str:
    return text.replace("*", "").replace("`", "")


# -- list ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageState:
    """What a Previous/Next button carries, so a page can be rebuilt from a click alone."""

    server_id: int | None
    backup_type: str | None
    page: int
    public: bool = False

    def encode(self) -> str:
        return json.dumps(
            {"s": self.server_id, "t": self.backup_type, "p": self.page, "pub": self.public},
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, value: str) -> PageState:
        """Raises ValueError for anything `encode` would not have written."""
        data = json.loads(value)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        server_id, backup_type, page = data.get("s"), data.get("t"), data.get("p")
        if server_id is not None and positive_id(str(server_id)) != server_id:
            raise ValueError("bad server id")
        if backup_type is not None and backup_type not in BACKUP_TYPES:
            raise ValueError("bad backup type")
        if type(page) is not int or not 0 <= page <= MAX_PAGE:
            raise ValueError("bad page")
        return cls(server_id, backup_type, page, data.get("pub") is True)


def backup_list(listing: Listing, *, page: int = 0, public: bool = False) -> dict[str, Any]:
    """One page of a listing, titled by what was asked, with Previous/Next that rebuild it."""
    backups = listing.backups
    title = "Backups"
    if listing.server is not None:
        title += f" of {listing.server.name}"
    if listing.backup_type:
        title = f"{listing.backup_type.capitalize()} b{title[1:]}"
    server_id = listing.server.id if listing.server else None
    pages = max(1, math.ceil(len(backups) / PAGE_SIZE))
    page = min(page, pages - 1)
    shown = backups[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
    running = sum(1 for b in backups if b.phase is Phase.RUNNING)
    summary = _count(len(backups), "backup")
    if len(backups) > running:
        summary += f", {human_size(listing.total_size_mb)} in all"
    if running:
        summary += f" ({running} in progress, size not known yet)"
    if pages > 1:
        summary += f" · page {page + 1} of {pages}"
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=title[:150])),
        ContextBlock(elements=[MarkdownTextObject(text=summary)]),
        DividerBlock(),
    ]
    if listing.unreadable:
        rows = _count(listing.unreadable, "row")
        blocks.append(
            ContextBlock(
                elements=[
                    MarkdownTextObject(
                        text=f"⚠️ The provider sent {rows} I could not read; not shown here."
                    )
                ]
            )
        )
    if not backups:
        blocks.append(SectionBlock(text=MarkdownTextObject(text="No backups match.")))
    for backup in shown:
        blocks.extend(_backup_row(backup))
    pager = [
        ButtonElement(
            text=label,
            action_id=f"{LIST_PAGE}_{name}",
            value=PageState(server_id, listing.backup_type, target, public).encode(),
        )
        for name, label, target in (("prev", "◀ Previous", page - 1), ("next", "Next ▶", page + 1))
        if 0 <= target < pages
    ]
    if pager:
        blocks.append(ActionsBlock(block_id="list_pager", elements=pager))
    return _message(f"{title}: {summary}", blocks)


def _backup_row(backup: Backup) -> list[Block]:
    icon = _STATUS_ICON[backup.phase]
    expires = slack_date(backup.expires_at, "{date_short_pretty}") if backup.expires_at else "never"
    lines = [
        f"{icon} *Backup {backup.id}* · {_escape(backup.server.name)} (`{backup.server.id}`) · "
        f"{backup.backup_type} · {_escape(backup.status)}",
        f"{human_size(backup.size_mb)} · created {slack_date(backup.created_at)} · "
        f"expires {expires}",
    ]
    # Only what can be done now: a backup still being made can be neither restored nor deleted.
    options = [
        Option(text=label, value=f"{verb}:{backup.id}")
        for verb, label, phases in (
            ("restore", "Restore…", (Phase.COMPLETED,)),
            ("delete", "Delete…", (Phase.COMPLETED, Phase.FAILED)),
        )
        if backup.phase in phases
    ]
    row = SectionBlock(
        block_id=f"backup_{backup.id}",
        text=MarkdownTextObject(text="\n".join(lines)),
        accessory=OverflowMenuElement(action_id=BACKUP_MENU, options=options) if options else None,
    )
    return [row, *_description(backup.description, 200)]


def _description(description: str, limit: int) -> list[Block]:
    """A description as the person typed it: plain text, so `*` or backticks in it stay as
    typed and cannot break the message around it."""
    if not description.strip():
        return []
    return [ContextBlock(elements=[PlainTextObject(text=_clip(description, limit), emoji=False)])]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


# -- create ----------------------------------------------------------------------------------


def backup_started(backup: Backup, requester_id: str) -> dict[str, Any]:
    """The in-channel "started" message; its ts becomes the thread of the outcome reply."""
    status = _escape(backup.status)
    if backup.phase is Phase.RUNNING:
        status += " · I'll reply in this thread when it finishes."
    return _started_message(
        backup.id,
        backup.server,
        requester_id,
        backup.description,
        icon=_STATUS_ICON[backup.phase],
        status=status,
        fallback=f"Backup {backup.id} of {backup.server.name} started by <@{requester_id}>",
    )


def _started_message(
    backup_id: int,
    server: ServerRef,
    requester_id: str,
    description: str,
    *,
    icon: str,
    status: str,
    fallback: str,
) -> dict[str, Any]:
    text = (
        f"{icon} Backup *{backup_id}* of *{_escape(server.name)}* (`{server.id}`) "
        f"started by <@{requester_id}>"
    )
    return _message(
        fallback,
        [
            SectionBlock(text=MarkdownTextObject(text=text)),
            *_description(description, 500),
            ContextBlock(elements=[MarkdownTextObject(text=f"Status: {status}")]),
        ],
    )


# -- delete ----------------------------------------------------------------------------------


def delete_card(backup: Backup) -> dict[str, Any]:
    expires = slack_date(backup.expires_at, "{date_short_pretty}") if backup.expires_at else "never"
    text = (
        f"*Delete backup {backup.id}?* This cannot be undone.\n"
        f"Server: *{_escape(backup.server.name)}* (`{backup.server.id}`)\n"
        f"Type: {backup.backup_type} · Status: {_escape(backup.status)}\n"
        f"Created: {slack_date(backup.created_at)} · Expires: {expires}\n"
        f"Size: {human_size(backup.size_mb)}"
    )
    confirm = ConfirmObject(
        title="Delete this backup?",
        text=f"Backup {backup.id} of {backup.server.name[:80]} will be gone for good.",
        confirm="Delete",
        deny="Keep it",
        style="danger",
    )
    return _message(
        f"Delete backup {backup.id} of {backup.server.name}?",
        [
            SectionBlock(text=MarkdownTextObject(text=text)),
            *_description(backup.description, 200),
            ActionsBlock(
                block_id=f"delete_{backup.id}",
                elements=[
                    ButtonElement(
                        text="Delete",
                        action_id=DELETE_CONFIRM,
                        value=f"{backup.id}:{backup.server.id}",
                        style="danger",
                        confirm=confirm,
                    ),
                    ButtonElement(
                        text="Cancel",
                        action_id=DELETE_CANCEL,
                        value=f"{backup.id}:{backup.server.id}",
                    ),
                ],
            ),
        ],
    )


def deleted(result: DeleteResult, user_id: str) -> dict[str, Any]:
    if result.outcome is None:
        return notice(
            f"Backup {result.backup_id} no longer exists: it was already deleted or expired."
        )
    return notice(f"🗑️ Backup {result.backup_id} deleted by <@{user_id}>.")


def delete_cancelled(backup_id: int | None) -> dict[str, Any]:
    kept = f"Kept backup {backup_id}" if backup_id is not None else "Kept the backup"
    return notice(f"{kept}: nothing was deleted.")


# -- help ------------------------------------------------------------------------------------


def help_message(usage: str) -> dict[str, Any]:
    return _message(
        "Backup Bot: " + usage.splitlines()[0] if usage else "Backup Bot",
        [
            SectionBlock(
                text=MarkdownTextObject(
                    text="*Backup Bot* manages your VPS backups. Commands:\n```" + usage + "```"
                )
            ),
            ActionsBlock(
                block_id="help_actions",
                elements=[
                    ButtonElement(
                        text="List all backups",
                        action_id=f"{HELP_LIST}_all",
                        value=PageState(None, None, 0).encode(),
                        style="primary",
                    ),
                    ButtonElement(
                        text="Manual backups",
                        action_id=f"{HELP_LIST}_manual",
                        value=PageState(None, "manual", 0).encode(),
                    ),
                ],
            ),
            ContextBlock(
                elements=[
                    MarkdownTextObject(
                        text=f"Use a backup's ⋯ menu in `{COMMAND_NAME} list` to delete or "
                        "restore it."
                    )
                ]
            ),
        ],
    )


# -- App Home --------------------------------------------------------------------------------


def home_view(usage: str, roles: Sequence[str], actions: Sequence[str]) -> dict[str, Any]:
    """The Home tab's blocks: what Backup Bot does and what this person may do with it."""
    may = ", ".join(f"`{a}`" for a in actions) or "nothing yet"
    held = ", ".join(roles) or "none"
    return {
        "blocks": [
            block.to_dict()
            for block in (
                HeaderBlock(text=PlainTextObject(text="Backup Bot")),
                SectionBlock(
                    text=MarkdownTextObject(
                        text="List, create and delete your VPS backups from any channel with "
                        f"`{COMMAND_NAME}`. Every action is recorded in the audit log."
                    )
                ),
                SectionBlock(
                    text=MarkdownTextObject(text=f"*Your roles:* {held}\n*You may:* {may}")
                ),
                DividerBlock(),
                SectionBlock(text=MarkdownTextObject(text="```" + usage + "```")),
            )
        ]
    }


# -- watch outcomes --------------------------------------------------------------------------

_OUTCOME_ICON = {"completed": "✅", "failed": "❌", "vanished": "⚠️", "gave_up": "⚠️"}


def _outcome_text(job: FinishedBackup) -> str:
    server = f"*{_escape(job.server_name)}* (`{job.server_id}`)"
    icon = _OUTCOME_ICON.get(job.state, "•")
    if job.state == "completed":
        took = _took(job)
        expires = slack_date(job.expires_at, "{date_short_pretty}") if job.expires_at else "never"
        return (
            f"{icon} Backup *{job.backup_id}* of {server} completed{took}: "
            f"*{human_size(job.size_mb)}*. Expires: {expires}."
        )
    if job.state == "failed":
        reason = f": {_escape(job.last_error[:1500])}" if job.last_error else ""
        return (
            f"{icon} Backup *{job.backup_id}* of {server} *failed*{_odd_status(job, 'failed')}"
            f"{reason}. <@{job.requester_id}>, the server has no new backup; try again or check "
            "with the provider."
        )
    if job.state == "vanished":
        return (
            f"{icon} Backup *{job.backup_id}* of {server} disappeared from the provider's list "
            f"before it finished, so there is no such backup now. <@{job.requester_id}>, check "
            f"`{COMMAND_NAME} list {job.server_id}`."
        )
    reason = f" Last thing heard: {_escape(job.last_error[:1500])}." if job.last_error else ""
    return (
        f"{icon} I stopped tracking backup *{job.backup_id}* of {server}: no final answer from "
        f"the provider in time.{reason} <@{job.requester_id}>, check it with "
        f"`{COMMAND_NAME} list {job.server_id}`."
    )


def _took(job: FinishedBackup) -> str:
    """How long it took, as far as polling can tell: the provider gives no completion time, so
    it finished after the last poll that saw it running and before the one that saw it done."""
    if job.finished_at is None:
        return ""
    upper = human_duration((job.finished_at - job.created_at).total_seconds())
    if job.seen_running_at is None or job.seen_running_at <= job.created_at:
        return f" within {upper}"
    lower = human_duration((job.seen_running_at - job.created_at).total_seconds())
    return f" in {upper}" if lower == upper else f" in between {lower} and {upper}"


def _odd_status(job: FinishedBackup, word: str) -> str:
    """The provider's own status word, when it says more than ours."""
    return "" if job.status.lower() == word else f" (provider status `{_escape(job.status)}`)"


def backup_finished(job: FinishedBackup, *, via_dm: bool = False) -> dict[str, Any]:
    text = _outcome_text(job)
    if via_dm and job.channel_id:
        text += f"\n_(I could not post in <#{job.channel_id}>, so this comes to you directly.)_"
    return _message(_plain_fallback(text), [SectionBlock(text=MarkdownTextObject(text=text))])


def backup_started_final(job: FinishedBackup) -> dict[str, Any]:
    """The parent "started" message, rewritten with its final status line."""
    status = {
        "completed": f"completed · {human_size(job.size_mb)}",
        "failed": f"failed{_odd_status(job, 'failed')}",
        "vanished": "disappeared before finishing",
        "gave_up": "unknown (tracking gave up)",
    }.get(job.state, job.state)
    return _started_message(
        job.backup_id,
        ServerRef(job.server_id, job.server_name),
        job.requester_id,
        job.description,
        icon=_OUTCOME_ICON.get(job.state, "•"),
        status=status,
        fallback=f"Backup {job.backup_id} of {job.server_name}: {status}",
    )


# -- audit -----------------------------------------------------------------------------------

_AUDIT_ICON = {"ok": "✅", "denied": "⛔", "error": "⚠️"}


def audit_trail(rows: Sequence[AuditEntry], filters: str) -> dict[str, Any]:
    """The newest audit rows, one section each (at most 20, well inside 50 blocks)."""
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text="Audit log")),
        ContextBlock(
            elements=[
                MarkdownTextObject(
                    text=f"{_count(len(rows), 'newest row')}{' · ' + filters if filters else ''} · "
                    "`backupbot audit export` gives them all as CSV"
                )
            ]
        ),
        DividerBlock(),
    ]
    if not rows:
        blocks.append(SectionBlock(text=MarkdownTextObject(text="No rows match.")))
    for row in rows:
        subject = []
        if row.server_id is not None:
            subject.append(f"server `{row.server_id}`")
        if row.backup_id is not None:
            subject.append(f"backup `{row.backup_id}`")
        status = f" · provider {row.provider_status}" if row.provider_status else ""
        detail = f"\n_{_escape(row.detail[:300])}_" if row.detail else ""
        where = f" in <#{row.channel_id}>" if row.channel_id else ""
        blocks.append(
            SectionBlock(
                text=MarkdownTextObject(
                    text=f"{_AUDIT_ICON.get(row.outcome, '•')} *{_escape(row.action)}* "
                    f"{' '.join(subject)} by <@{row.actor_user_id}>{where} · "
                    f"{slack_date(row.occurred_at)} · {row.outcome}{status}{detail}"
                )
            )
        )
    return _message(f"Audit log: {len(rows)} rows", blocks)


# -- errors and notes: the domain's facts in words -------------------------------------------

# Why the bot could not post in a channel, in words for the person who asked.
_NOT_POSTABLE = {
    "not_in_channel": "I'm not a member of this channel",
    "channel_not_found": "I can't see this channel (private, or a DM I'm not part of)",
    "is_archived": "this channel is archived",
    "restricted_action": "posting in this channel is restricted",
    "unreachable": "Slack could not be reached",
    "no_channel": "I could not post in this channel",
}


def denial(decision: Decision) -> str:
    if decision.channel_closed:
        return (
            f"`{COMMAND_NAME}` is not enabled in this channel; ask an admin to add it to "
            "BACKUP_CHANNELS, or use one of the backup channels."
        )
    return (
        f"{_DOING[decision.action]} needs the *{decision.required_role}* role, which you do not "
        "have. Ask an admin to add you (or one of your user groups) to "
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
}


def _unknown_server(error: UnknownServer) -> str:
    name = _escape(error.name)
    if error.ambiguous:
        listed = ", ".join(f"`{s.id}`" for s in error.candidates)
        return f"Several servers are named `{name}` ({listed}); use the numeric id."
    if error.candidates:
        listed = ", ".join(f"`{_escape(s.name)}` (`{s.id}`)" for s in error.candidates[:10])
        return f"No server is named `{name}`. Did you mean {listed}?"
    return (
        f"No server named `{name}` has any backups. Use the server's numeric id "
        "(servers are found through their backups)."
    )


def _not_available(error: NotAvailable) -> str:
    if error.feature == "restore":
        return (
            f"Restoring backup {error.subject} needs an approval flow that this version of "
            "Backup Bot does not have yet, so nothing was restored. Until it does, restore "
            "from the provider's control panel."
        )
    return (
        "Exporting from Slack is not in this version yet (it would need the `files:write` "
        "scope). An operator can run `backupbot audit export --since 7d -o audit.csv`."
    )


def error_notice(error: ServiceError) -> dict[str, Any]:
    """What a person sees when a use-case could not be done."""
    if isinstance(error, Denied):
        return notice(f"⛔ {denial(error.decision)}")
    if isinstance(error, NotAvailable):
        return notice(_not_available(error))
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
            f"Backup {backup.id} of {_escape(backup.server.name)} is still "
            f"{_escape(backup.status)}: it can be deleted once it has finished."
        )
    elif isinstance(error, ProviderError):
        text = _provider_error(error)
    else:
        text = _escape(str(error))
    return notice(f"⚠️ {text}")


def _provider_error(error: ProviderError) -> str:
    """What the person asked for, then why the provider did not do it."""
    reason = _escape(error.error.message)
    server = error.server
    if isinstance(error.error, OutcomeUnknown):
        if server is None:
            return reason
        return f"{reason} `{COMMAND_NAME} list {server.id}` shows them."
    if error.action is Action.CREATE and server is not None:
        asked = f"Could not create a backup of {_escape(server.name)}"
    elif error.action is Action.DELETE and error.backup_id is not None:
        asked = f"Could not delete backup {error.backup_id}"
    elif error.action is Action.LIST and server is not None:
        asked = f"Could not list the backups of {_escape(server.name)}"
    else:
        asked = f"Could not {_ASKED.get(error.action, 'do that')}"
    return f"{asked}. {reason}"


_ASKED = {
    Action.LIST: "list the backups",
    Action.CREATE: "create the backup",
    Action.DELETE: "delete the backup",
    Action.RESTORE: "restore the server",
    Action.AUDIT: "look up that server for the audit log",
}


def unexpected_failure(what: str, reference: str) -> dict[str, Any]:
    return notice(
        f"⚠️ Something went wrong on our side while trying to {what}; it may not have "
        "finished. Check the result before trying again. Reference for the bot's operators: "
        f"`{reference}`."
    )


def create_notes(result: CreateResult) -> dict[str, Any] | None:
    """A private word to the requester when the "started" message or tracking went astray."""
    backup, announcement = result.backup, result.announcement
    notes = []
    if not announcement.in_channel:
        problem = announcement.problem or "no_channel"
        reason = _NOT_POSTABLE.get(problem, f"Slack refused the message ({problem})")
        where = "our DM" if announcement.ts else "nowhere else, so keep this message"
        invite = (
            " Invite me with `/invite @Backup Bot` to get it here next time."
            if problem == "not_in_channel"
            else ""
        )
        notes.append(f"{reason}, so its progress goes to {where}.{invite}")
    if not result.tracked:
        notes.append(
            "I could not record it for tracking, so no reply will come when it finishes: "
            f"check `{COMMAND_NAME} list {backup.server.id}` later."
        )
    if not notes:
        return None
    return notice(
        f"✅ Backup *{backup.id}* of *{_escape(backup.server.name)}* started. " + " ".join(notes)
    )
