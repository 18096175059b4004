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

from bot.db import AuditEvent, WatchJob
from bot.vps.models import Backup, Phase

PAGE_SIZE = 10

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
        data = json.loads(value)
        server_id = data.get("s")
        backup_type = data.get("t")
        page = data.get("p")
        if server_id is not None and not isinstance(server_id, int):
            raise ValueError("bad server id")
        if backup_type not in (None, "manual", "automatic"):
            raise ValueError("bad backup type")
        if not isinstance(page, int) or page < 0:
            raise ValueError("bad page")
        return cls(server_id, backup_type, page, bool(data.get("pub", False)))


def backup_list(
    backups: Sequence[Backup],
    *,
    state: PageState,
    title: str,
    total_size_mb: float,
) -> dict[str, Any]:
    pages = max(1, math.ceil(len(backups) / PAGE_SIZE))
    page = min(state.page, pages - 1)
    shown = backups[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
    summary = (
        f"{len(backups)} backup{'s' if len(backups) != 1 else ''}, "
        f"{human_size(total_size_mb)} in all"
    )
    if pages > 1:
        summary += f" · page {page + 1} of {pages}"
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=title[:150])),
        ContextBlock(elements=[MarkdownTextObject(text=summary)]),
        DividerBlock(),
    ]
    if not backups:
        blocks.append(SectionBlock(text=MarkdownTextObject(text="No backups match.")))
    for backup in shown:
        blocks.append(_backup_row(backup))
    if pages > 1:
        buttons = []
        if page > 0:
            buttons.append(
                ButtonElement(
                    text="◀ Previous",
                    action_id=f"{LIST_PAGE}_prev",
                    value=PageState(
                        state.server_id, state.backup_type, page - 1, state.public
                    ).encode(),
                )
            )
        if page < pages - 1:
            buttons.append(
                ButtonElement(
                    text="Next ▶",
                    action_id=f"{LIST_PAGE}_next",
                    value=PageState(
                        state.server_id, state.backup_type, page + 1, state.public
                    ).encode(),
                )
            )
        blocks.append(ActionsBlock(block_id="list_pager", elements=buttons))
    return _message(f"{title}: {summary}", blocks)


def _backup_row(backup: Backup) -> SectionBlock:
    icon = _STATUS_ICON[backup.phase]
    expires = slack_date(backup.expires_at, "{date_short_pretty}") if backup.expires_at else "never"
    lines = [
        f"{icon} *Backup {backup.id}* · {_escape(backup.server.name)} (`{backup.server.id}`) · "
        f"{backup.backup_type} · {_escape(backup.status)}",
        f"{human_size(backup.size_mb)} · created {slack_date(backup.created_at)} · "
        f"expires {expires}",
    ]
    if backup.description:
        lines.append(f"_{_escape(backup.description[:200])}_")
    options = [
        Option(text="Restore…", value=f"restore:{backup.id}"),
        Option(text="Delete…", value=f"delete:{backup.id}"),
    ]
    return SectionBlock(
        block_id=f"backup_{backup.id}",
        text=MarkdownTextObject(text="\n".join(lines)),
        accessory=OverflowMenuElement(action_id=BACKUP_MENU, options=options),
    )


# -- create ----------------------------------------------------------------------------------


def backup_started(backup: Backup, requester_id: str) -> dict[str, Any]:
    description = f" — _{_escape(backup.description[:500])}_" if backup.description else ""
    text = (
        f"⏳ Backup *{backup.id}* of *{_escape(backup.server.name)}* (`{backup.server.id}`) "
        f"started by <@{requester_id}>{description}"
    )
    return _message(
        f"Backup {backup.id} of {backup.server.name} started by <@{requester_id}>",
        [
            SectionBlock(text=MarkdownTextObject(text=text)),
            ContextBlock(
                elements=[
                    MarkdownTextObject(
                        text=f"Status: {_escape(backup.status)} · I'll reply in this thread "
                        "when it finishes."
                    )
                ]
            ),
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
    if backup.description:
        text += f"\nDescription: _{_escape(backup.description[:200])}_"
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
                        text="Use a backup's ⋯ menu in `/backup list` to delete or restore it."
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
                        "`/backup`. Every action is recorded in the audit log."
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


def _outcome_text(job: WatchJob) -> str:
    server = f"*{_escape(job.server_name)}* (`{job.server_id}`)"
    icon = _OUTCOME_ICON.get(job.state, "•")
    if job.state == "completed":
        took = ""
        if job.finished_at is not None:
            seconds = (job.finished_at - job.backup_created_at).total_seconds()
            took = f" in about {human_duration(seconds)}"
        expires = slack_date(job.expires_at, "{date_short_pretty}") if job.expires_at else "never"
        return (
            f"{icon} Backup *{job.backup_id}* of {server} completed{took}: "
            f"*{human_size(job.size_mb)}*. Expires: {expires}."
        )
    if job.state == "failed":
        reason = f": {_escape(job.last_error[:1500])}" if job.last_error else ""
        return (
            f"{icon} Backup *{job.backup_id}* of {server} *failed* (provider status "
            f"`{_escape(job.status)}`){reason}. <@{job.requester_id}>, the server has no new "
            "backup; try again or check with the provider."
        )
    if job.state == "vanished":
        return (
            f"{icon} Backup *{job.backup_id}* of {server} disappeared from the provider's list "
            f"before it finished, so there is no such backup now. <@{job.requester_id}>, check "
            f"`/backup list {job.server_id}`."
        )
    reason = f" Last thing heard: {_escape(job.last_error[:1500])}." if job.last_error else ""
    return (
        f"{icon} I stopped tracking backup *{job.backup_id}* of {server}: no final answer from "
        f"the provider in time.{reason} <@{job.requester_id}>, check it with "
        f"`/backup list {job.server_id}`."
    )


def backup_finished(job: WatchJob, *, via_dm: bool = False) -> dict[str, Any]:
    text = _outcome_text(job)
    if via_dm and job.channel_id:
        text += f"\n_(I could not post in <#{job.channel_id}>, so this comes to you directly.)_"
    return _message(_plain_fallback(text), [SectionBlock(text=MarkdownTextObject(text=text))])


def backup_started_final(job: WatchJob) -> dict[str, Any]:
    """The parent "started" message, rewritten with its final status line."""
    description = f" — _{_escape(job.description[:500])}_" if job.description else ""
    icon = _OUTCOME_ICON.get(job.state, "•")
    status = {
        "completed": f"completed · {human_size(job.size_mb)}",
        "failed": f"failed ({_escape(job.status)})",
        "vanished": "disappeared before finishing",
        "gave_up": "unknown (tracking gave up)",
    }.get(job.state, job.state)
    text = (
        f"{icon} Backup *{job.backup_id}* of *{_escape(job.server_name)}* (`{job.server_id}`) "
        f"started by <@{job.requester_id}>{description}"
    )
    return _message(
        f"Backup {job.backup_id} of {job.server_name}: {status}",
        [
            SectionBlock(text=MarkdownTextObject(text=text)),
            ContextBlock(elements=[MarkdownTextObject(text=f"Status: {status}")]),
        ],
    )


# -- audit -----------------------------------------------------------------------------------

_AUDIT_ICON = {"ok": "✅", "denied": "⛔", "error": "⚠️"}


def audit_trail(rows: Sequence[AuditEvent], filters: str) -> dict[str, Any]:
    """The newest audit rows, one section each (at most 20, well inside 50 blocks)."""
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text="Audit log")),
        ContextBlock(
            elements=[
                MarkdownTextObject(
                    text=f"{len(rows)} newest rows{' · ' + filters if filters else ''} · "
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
