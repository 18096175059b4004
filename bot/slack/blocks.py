"""How every Backup Bot message looks: Block Kit built with `slack_sdk.models.blocks`.

Times are aware UTC inside the bot and become Slack's `<!date^…>` tokens only here, so each reader
sees their own local time. Builders return plain dicts ready for `chat.postMessage` / `respond`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
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

from bot.ages import format_age
from bot.audit import AuditEntry, Checkpoint
from bot.service import (
    AuditExport,
    AuditPage,
    AuditQuery,
    CreateResult,
    DeleteResult,
    Listing,
    count_words,
)
from bot.slack.parser import COMMAND_NAME, positive_id
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
AUDIT_PAGE = "audit_page"

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


def escape(text: str) -> str:
    """Slack's three control characters, so names and descriptions show as typed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def as_message(text: str, blocks: Sequence[Block]) -> dict[str, Any]:
    return {"text": text, "blocks": [block.to_dict() for block in blocks]}


def notice(text: str) -> dict[str, Any]:
    """A one-section message (errors, confirmations)."""
    return as_message(_plain_fallback(text), [SectionBlock(text=MarkdownTextObject(text=text))])


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
    summary = count_words(len(backups), "backup")
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
        rows = count_words(listing.unreadable, "row")
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
    return as_message(f"{escape(title)}: {summary}", blocks)


def _backup_row(backup: Backup) -> list[Block]:
    icon = _STATUS_ICON[backup.phase]
    expires = slack_date(backup.expires_at, "{date_short_pretty}") if backup.expires_at else "never"
    lines = [
        f"{icon} *Backup {backup.id}* · {escape(backup.server.name)} (`{backup.server.id}`) · "
        f"{escape(backup.backup_type)} · {escape(backup.status)}",
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
    return [ContextBlock(elements=[PlainTextObject(text=clip(description, limit), emoji=False)])]


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- create ----------------------------------------------------------------------------------


def backup_started(backup: Backup, requester_id: str) -> dict[str, Any]:
    """The in-channel "started" message; its ts becomes the thread of the outcome reply."""
    status = escape(backup.status)
    if backup.phase is Phase.RUNNING:
        status += " · I'll reply in this thread when it finishes."
    return _started_message(
        backup.id,
        backup.server,
        requester_id,
        backup.description,
        icon=_STATUS_ICON[backup.phase],
        status=status,
        fallback=f"Backup {backup.id} of {escape(backup.server.name)} started by <@{requester_id}>",
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
        f"{icon} Backup *{backup_id}* of *{escape(server.name)}* (`{server.id}`) "
        f"started by <@{requester_id}>"
    )
    return as_message(
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
        f"Server: *{escape(backup.server.name)}* (`{backup.server.id}`)\n"
        f"Type: {escape(backup.backup_type)} · Status: {escape(backup.status)}\n"
        f"Created: {slack_date(backup.created_at)} · Expires: {expires}\n"
        f"Size: {human_size(backup.size_mb)}"
    )
    confirm = ConfirmObject(
        title="Delete this backup?",
        text=f"Backup {backup.id} of {escape(backup.server.name[:80])} will be gone for good.",
        confirm="Delete",
        deny="Keep it",
        style="danger",
    )
    return as_message(
        f"Delete backup {backup.id} of {escape(backup.server.name)}?",
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
    return as_message(
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
                        text="List, create and delete your VPS backups, and ask for restores "
                        "that someone else approves, from any channel with "
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
    server = f"*{escape(job.server_name)}* (`{job.server_id}`)"
    icon = _OUTCOME_ICON.get(job.state, "•")
    if job.state == "completed":
        took = _took(job)
        expires = slack_date(job.expires_at, "{date_short_pretty}") if job.expires_at else "never"
        return (
            f"{icon} Backup *{job.backup_id}* of {server} completed{took}: "
            f"*{human_size(job.size_mb)}*. Expires: {expires}."
        )
    if job.state == "failed":
        reason = f": {escape(job.last_error[:1500])}" if job.last_error else ""
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
    reason = f" Last thing heard: {escape(job.last_error[:1500])}." if job.last_error else ""
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
    return "" if job.status.lower() == word else f" (provider status `{escape(job.status)}`)"


def backup_finished(job: FinishedBackup, *, via_dm: bool = False) -> dict[str, Any]:
    text = _outcome_text(job)
    if via_dm and job.channel_id:
        text += f"\n_(I could not post in <#{job.channel_id}>, so this comes to you directly.)_"
    return as_message(_plain_fallback(text), [SectionBlock(text=MarkdownTextObject(text=text))])


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
        fallback=f"Backup {job.backup_id} of {escape(job.server_name)}: {status}",
    )


# -- audit -----------------------------------------------------------------------------------

_AUDIT_ICON = {"ok": "✅", "denied": "⛔", "error": "⚠️"}


def audit_on_home(page: AuditPage, checkpoint: Checkpoint | None) -> list[dict[str, Any]]:
    """An auditor's App Home: the newest rows, and how far the log is covered by a checkpoint."""
    if checkpoint is None:
        covered = (
            "No signed checkpoint yet: set AUDIT_SIGNING_KEY, then `backupbot audit checkpoint`."
        )
    else:
        covered = f"🔏 Newest {escape(checkpoint.describe())}."
    shown: list[Block] = [
        HeaderBlock(text=PlainTextObject(text="Audit log")),
        ContextBlock(elements=[MarkdownTextObject(text=covered)]),
        *(SectionBlock(text=MarkdownTextObject(text=_audit_line(row, page))) for row in page.rows),
    ]
    return [block.to_dict() for block in shown]


def checkpoint(checkpoint: Checkpoint) -> dict[str, Any]:
    """A signed audit checkpoint, as posted in AUDIT_CHANNEL: keep it; `audit verify` uses it."""
    return as_message(
        f"Audit checkpoint: {checkpoint.describe()}",
        [
            SectionBlock(
                text=MarkdownTextObject(
                    text=f"🔏 *Audit checkpoint*: {escape(checkpoint.describe())}, head "
                    f"`{checkpoint.head[:16]}…`. Keep this line: `backupbot audit verify "
                    "--checkpoint` proves the log was not cut or rewritten since."
                )
            ),
            SectionBlock(text=MarkdownTextObject(text=f"```{checkpoint.to_json()}```")),
        ],
    )


def audit_exported(export: AuditExport) -> dict[str, Any]:
    return notice(
        f"📄 {count_words(export.rows, 'audit row')} sent to our DM as `{export.filename}`."
    )


def encode_audit_query(query: AuditQuery) -> str:
    """What an audit pager button carries: the filters (server as its id) and where to go."""
    since = int(query.since.total_seconds()) if query.since else None
    fields = (query.user_id, query.server, query.action, since, query.approval_id, query.outcome)
    return json.dumps([*fields, query.before_id, query.after_id], separators=(",", ":"))


def decode_audit_query(value: str) -> AuditQuery:
    """Raises ValueError for anything `encode_audit_query` would not have written."""
    data = json.loads(value)
    if not isinstance(data, list) or len(data) != 8:
        raise ValueError("not an audit page")
    user, server, action, since, approval, outcome, before, after = data
    numbers = (server, since, approval, before, after)
    if any(n is not None and positive_id(str(n)) != n for n in numbers):
        raise ValueError("bad number")
    texts = (user, action, outcome)
    if any(t is not None and (not isinstance(t, str) or len(t) > 64) for t in texts):
        raise ValueError("bad text")
    return AuditQuery(
        user, server, action, timedelta(seconds=since) if since else None, approval, outcome,
        before, after,
    )  # fmt: skip


def audit_trail(page: AuditPage, workspace_url: str | None = None) -> dict[str, Any]:
    """A page of audit rows, one line each, with Previous/Next to newer and older rows."""
    rows, query = page.rows, page.query
    first = query.before_id is None and query.after_id is None  # not paged yet
    filters = " · ".join(
        part
        for part in (
            f"by <@{query.user_id}>" if query.user_id else "",
            f"server {query.server}" if query.server is not None else "",
            f"action {escape(query.action)}" if query.action else "",
            f"outcome {query.outcome}" if query.outcome else "",
            f"approval #{query.approval_id}" if query.approval_id else "",
            f"since {format_age(query.since)} ago" if query.since else "",
        )
        if part
    )
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text="Audit log")),
        ContextBlock(
            elements=[
                MarkdownTextObject(
                    text=" · ".join(
                        [
                            count_words(len(rows), "newest row" if first else "row"),
                            *([filters] if filters else []),
                            f"`{COMMAND_NAME} audit export` sends them all as a file",
                        ]
                    )
                )
            ]
        ),
        DividerBlock(),
    ]
    if not rows:
        blocks.append(SectionBlock(text=MarkdownTextObject(text="No rows match.")))
    for row in rows:
        line = _audit_line(row, page, workspace_url)
        blocks.append(SectionBlock(text=MarkdownTextObject(text=line)))
    pager = []
    if rows and page.newer:
        newer = dataclasses.replace(page.query, before_id=None, after_id=rows[0].id)
        pager.append(("prev", "◀ Newer", newer))
    if rows and page.older:
        older = dataclasses.replace(page.query, before_id=rows[-1].id, after_id=None)
        pager.append(("next", "Older ▶", older))
    if pager:
        buttons = [
            ButtonElement(text=label, action_id=f"{AUDIT_PAGE}_{name}", value=encode_audit_query(q))
            for name, label, q in pager
        ]
        blocks.append(ActionsBlock(block_id="audit_pager", elements=buttons))
    return as_message(f"Audit log: {count_words(len(rows), 'row')}", blocks)


def _audit_line(row: AuditEntry, page: AuditPage, workspace_url: str | None = None) -> str:
    """Who did what, on what, when (in the reader's time), how it came out: one line."""
    what = [
        _AUDIT_ICON.get(row.outcome, "•"),
        slack_date(row.occurred_at),
        f"<@{row.actor_user_id}>",
        f"*{escape(row.action)}*",
    ]
    if row.server_id is not None:
        what.append(f"server `{row.server_id}`")
    if row.backup_id is not None:
        what.append(f"backup `{row.backup_id}`")
    if row.approval_id is not None:
        approvers = page.approvers.get(row.approval_id, ())
        by = f" (approved by {', '.join(f'<@{a}>' for a in approvers)})" if approvers else ""
        what.append(f"approval #{row.approval_id}{by}")
    if row.channel_id:
        what.append(f"in <#{row.channel_id}>")
    outcome = row.outcome + (f" {row.provider_status}" if row.provider_status else "")
    detail = f" — {escape(clip(row.detail, 200))}" if row.detail else ""
    thread = page.threads.get(f"approval:{row.approval_id}") or page.threads.get(
        f"backup:{row.backup_id}"
    )
    link = f" · <{message_link(workspace_url, *thread)}|thread>" if thread and workspace_url else ""
    return f"{' '.join(what)} · {outcome}{detail}{link}"


def message_link(workspace_url: str, channel_id: str, ts: str) -> str:
    """A link to a message, as Slack's permalinks are made (without a call per message)."""
    return f"{workspace_url.rstrip('/')}/archives/{channel_id}/p{ts.replace('.', '')}"


# -- notes -----------------------------------------------------------------------------------

# Why the bot could not post in a channel, in words for the person who asked.
NOT_POSTABLE = {
    "not_in_channel": "I'm not a member of this channel",
    "channel_not_found": "I can't see this channel (private, or a DM I'm not part of)",
    "is_archived": "this channel is archived",
    "restricted_action": "posting in this channel is restricted",
    "unreachable": "Slack could not be reached",
    "no_channel": "I could not post in this channel",
}


def create_notes(result: CreateResult) -> dict[str, Any] | None:
    """A private word to the requester when the "started" message or tracking went astray."""
    backup, announcement = result.backup, result.announcement
    notes = []
    if not announcement.in_channel:
        problem = announcement.problem or "no_channel"
        reason = NOT_POSTABLE.get(problem, f"Slack refused the message ({problem})")
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
        f"✅ Backup *{backup.id}* of *{escape(backup.server.name)}* started. " + " ".join(notes)
    )
