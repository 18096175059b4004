"""How backup health looks in Slack: `/backup status`, a server's timeline, alerts, their recovery
replies, the daily digest, and the status on App Home. Block Kit via `slack_sdk.models.blocks`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    Option,
    OverflowMenuElement,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from bot.db import IncidentKind
from bot.health import (
    Activity,
    Alert,
    DayOfBackups,
    Digest,
    ServerHealth,
    StatusReport,
    people,
)
from bot.service import count_words
from bot.slack.approval_blocks import long_duration
from bot.slack.blocks import as_message, clip, escape, human_size, slack_date
from bot.slack.parser import COMMAND_NAME, positive_id
from bot.vps.models import Backup, Phase

# action_ids and the form's callback_id: the routing table in bot/slack/listeners matches on them.
SERVER_MENU = "server_menu"
STATUS_PAGE = "status_page"
CREATE_FORM = "status_create"
CREATE_BLOCK = "create_description"
CREATE_INPUT = "description"

STATUS_PAGE_SIZE = 15  # servers per message: each is a section with its ⋯ menu (50 blocks)
HOME_LIMIT = 20  # servers on App Home, worst first
DIGEST_LIMIT = 25  # servers needing attention listed in a digest
ACTIVITY_LIMIT = 30  # activity lines per kind in a digest
_SECTION_LIMIT = 2900  # characters of one section (Slack: 3000)

_PROBLEM_WORDS = {
    IncidentKind.STALE: "stale",
    IncidentKind.FAILED: "failed since the last good backup",
    IncidentKind.VANISHED: "a backup vanished while in progress",
}
_PHASE_ICON = {Phase.COMPLETED: "✅", Phase.FAILED: "❌", Phase.RUNNING: "⏳"}
_NO_BACKUP = "▫️"


def hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:g} h"


def _age(now: datetime, when: datetime) -> str:
    return long_duration((now - when).total_seconds())


# -- status -------------------------------------------------------------------------------------


def _server_lines(health: ServerHealth, now: datetime) -> list[str]:
    icon = "✅" if health.healthy else "⚠️"
    server = f"*{escape(health.server.name)}* (`{health.server.id}`)"
    problems = ", ".join(_PROBLEM_WORDS[p] for p in health.problems)
    first = f"{icon} {server}" + (f" · {problems}" if problems else "")
    good = health.newest_completed
    if good is not None:
        newest = (
            f"newest completed: *{good.id}*, {_age(now, good.created_at)} old "
            f"({slack_date(good.created_at)})"
        )
    else:
        newest = "*no completed backup*"
    automatic = health.newest_automatic
    if automatic is not None:
        newest += (
            f" · newest automatic: {_PHASE_ICON[automatic.phase]} {automatic.id} "
            f"{escape(automatic.status)} ({slack_date(automatic.created_at)})"
        )
    else:
        newest += " · no automatic backup"
    running = ", ".join(str(b.id) for b in health.in_progress) or "none"
    failures = len(health.recent_failures)
    third = (
        f"in progress: {running} · failures in 7 days: {failures} · "
        f"{human_size(health.total_size_mb)} in {count_words(health.backups, 'backup')}"
    )
    lines = [first, newest, third]
    if health.failed_since_good:
        failed = health.failed_since_good[0]
        reason = f": {escape(clip(failed.message, 200))}" if failed.message else ""
        lines.append(f"❌ backup {failed.id} failed ({slack_date(failed.created_at)}){reason}")
    for incident in health.vanished:
        lines.append(
            f"⚠️ backup {incident.backup_id} vanished while in progress "
            f"(noticed {slack_date(incident.opened_at)})"
        )
    if not health.listed:
        lines.append("The provider lists no backup of it now.")
    return lines


def _server_menu(health: ServerHealth) -> OverflowMenuElement:
    server_id = health.server.id
    return OverflowMenuElement(
        action_id=SERVER_MENU,
        options=[
            Option(text="List", value=f"list:{server_id}"),
            # The name rides along (clipped: an option's value holds 150 characters) for the form.
            Option(text="Create backup…", value=f"create:{server_id}:{health.server.name[:80]}"),
        ],
    )


def server_section(health: ServerHealth, now: datetime, *, menu: bool = True) -> SectionBlock:
    return SectionBlock(
        block_id=f"health_{health.server.id}",
        text=MarkdownTextObject(text=clip("\n".join(_server_lines(health, now)), _SECTION_LIMIT)),
        accessory=_server_menu(health) if menu else None,
    )


def _summary(report: StatusReport) -> str:
    total = len(report.servers)
    bad = report.unhealthy
    parts = [count_words(total, "server")]
    if bad:
        parts.append(f"⚠️ {bad} need{'s' if bad == 1 else ''} attention")
    parts.append(f"✅ {total - bad} healthy")
    parts.append(f"stale after {hours(report.stale_after)} without a completed backup")
    parts.append(f"as of {slack_date(report.now)}")
    return " · ".join(parts)


def status_message(report: StatusReport, *, page: int = 0) -> dict[str, Any]:
    """`/backup status`: a line per server, worst first, each with its ⋯ menu; paged."""
    if report.server is not None:
        return server_status(report)
    servers = report.servers
    pages = max(1, -(-len(servers) // STATUS_PAGE_SIZE))
    page = max(0, min(page, pages - 1))
    summary = _summary(report) + (f" · page {page + 1} of {pages}" if pages > 1 else "")
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text="Backup health")),
        ContextBlock(elements=[MarkdownTextObject(text=summary)]),
        DividerBlock(),
    ]
    blocks += _unreadable(report)
    if not servers:
        blocks.append(
            SectionBlock(text=MarkdownTextObject(text="The provider lists no backups at all."))
        )
    shown = servers[page * STATUS_PAGE_SIZE : (page + 1) * STATUS_PAGE_SIZE]
    blocks += [server_section(health, report.now) for health in shown]
    pager = [
        ButtonElement(text=label, action_id=f"{STATUS_PAGE}_{name}", value=json.dumps(target))
        for name, label, target in (("prev", "◀ Previous", page - 1), ("next", "Next ▶", page + 1))
        if 0 <= target < pages
    ]
    if pager:
        blocks.append(ActionsBlock(block_id="status_pager", elements=pager))
    fallback = f"Backup health: {count_words(len(servers), 'server')}, {report.unhealthy} unhealthy"
    return as_message(fallback, blocks)


def decode_page(value: str) -> int:
    """A status pager button's value; ValueError for anything the bot never writes there."""
    page = json.loads(value)
    if type(page) is not int or not 0 <= page <= 10_000:
        raise ValueError("bad page")
    return page


def _unreadable(report: StatusReport) -> list[Block]:
    if not report.unreadable:
        return []
    rows = count_words(report.unreadable, "row")
    text = f"⚠️ The provider sent {rows} I could not read; they are not counted here."
    return [ContextBlock(elements=[MarkdownTextObject(text=text)])]


def _day_cell(day: DayOfBackups) -> str:
    phase = day.phase
    return _PHASE_ICON[phase] if phase is not None else _NO_BACKUP


def _timeline_lines(days: Sequence[DayOfBackups]) -> list[str]:
    oldest_first = list(reversed(days))
    cells = "".join(_day_cell(day) for day in oldest_first)
    lines = [f"{cells}  (oldest → today, UTC days; {_NO_BACKUP} no backup)"]
    for day in days:
        if not day.backups:
            continue
        items = " · ".join(_timeline_item(b) for b in day.backups)
        lines.append(f"*{day.day:%b %d}* {items}")
    return lines


def _timeline_item(backup: Backup) -> str:
    size = f" {human_size(backup.size_mb)}" if backup.size_mb is not None else ""
    return f"{_PHASE_ICON[backup.phase]} {backup.id} {escape(backup.backup_type)}{size}"


def server_status(report: StatusReport) -> dict[str, Any]:
    """`/backup status SERVER`: its line (with the ⋯ menu) and its last days as a timeline."""
    assert report.server is not None
    server = report.server
    title = f"Backup health of {server.name}"
    blocks: list[Block] = [HeaderBlock(text=PlainTextObject(text=clip(title, 150)))]
    blocks += _unreadable(report)
    if report.servers:
        blocks.append(server_section(report.servers[0], report.now))
    else:
        text = (
            f"The provider lists no backups of server `{server.id}`. "
            f"`{COMMAND_NAME} create {server.id}` makes one."
        )
        blocks.append(SectionBlock(text=MarkdownTextObject(text=text)))
    if report.timeline:
        days = len(report.timeline)
        blocks.append(DividerBlock())
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=f"*The last {days} days*")]))
        for chunk in _chunks(_timeline_lines(report.timeline)):
            blocks.append(SectionBlock(text=MarkdownTextObject(text=chunk)))
    healthy = report.servers[0].healthy if report.servers else False
    fallback = f"{escape(title)}: {'healthy' if healthy else 'needs attention'}"
    return as_message(fallback, blocks)


def _chunks(lines: Iterable[str], limit: int = _SECTION_LIMIT) -> list[str]:
    """Lines joined into texts that each fit one section."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        line = clip(line, limit)
        if current and size + len(line) + 1 > limit:
            chunks.append("\n".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        chunks.append("\n".join(current))
    return chunks


def status_on_home(report: StatusReport) -> list[dict[str, Any]]:
    """App Home: the worst servers first, each with its ⋯ menu, and how many more there are."""
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text="Backup health")),
        ContextBlock(elements=[MarkdownTextObject(text=_summary(report))]),
    ]
    blocks += [server_section(h, report.now) for h in report.servers[:HOME_LIMIT]]
    hidden = len(report.servers) - HOME_LIMIT
    if hidden > 0:
        text = f"…and {count_words(hidden, 'more server')}: `{COMMAND_NAME} status` lists them all."
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=text)]))
    return [block.to_dict() for block in blocks]


def status_unavailable_on_home(problem: str) -> list[dict[str, Any]]:
    text = f"⚠️ Backup health could not be read just now: {escape(clip(problem, 300))}"
    return [
        HeaderBlock(text=PlainTextObject(text="Backup health")).to_dict(),
        SectionBlock(text=MarkdownTextObject(text=text)).to_dict(),
    ]


# -- the ⋯ menu's "Create backup…" form ---------------------------------------------------------


def create_form(server_id: int, server_name: str, channel_id: str | None) -> dict[str, Any]:
    """A form for a backup of one server, with an optional description; the server and where
    the "started" message goes ride along in `private_metadata`."""
    text = (
        f"Start a manual backup of *{escape(server_name)}* (`{server_id}`) now. The "
        '"started" message goes to the channel you are in; its thread tells when it finishes.'
    )
    view = View(
        type="modal",
        callback_id=CREATE_FORM,
        private_metadata=json.dumps({"s": server_id, "c": channel_id}, separators=(",", ":")),
        title=PlainTextObject(text="Create backup"),
        submit=PlainTextObject(text="Create backup"),
        close=PlainTextObject(text="Cancel"),
        blocks=[
            SectionBlock(text=MarkdownTextObject(text=text)),
            InputBlock(
                block_id=CREATE_BLOCK,
                label=PlainTextObject(text="Description (optional)"),
                element=PlainTextInputElement(action_id=CREATE_INPUT, max_length=255),
                optional=True,
            ),
        ],
    )
    return view.to_dict()


def decode_form(metadata: str) -> tuple[int, str | None]:
    """(server id, channel id) from the form's `private_metadata`; ValueError otherwise."""
    data = json.loads(metadata)
    if not isinstance(data, dict):
        raise ValueError("not an object")
    server_id, channel = data.get("s"), data.get("c")
    if type(server_id) is not int or positive_id(str(server_id)) != server_id:
        raise ValueError("bad server id")
    if channel is not None and (not isinstance(channel, str) or len(channel) > 32):
        raise ValueError("bad channel")
    return server_id, channel


# -- alerts ---------------------------------------------------------------------------------------


def _server(alert: Alert) -> str:
    server = alert.incident.server
    return f"*{escape(server.name)}* (`{server.id}`)"


def alert_text(alert: Alert) -> str:
    incident, server = alert.incident, _server(alert)
    if incident.kind is IncidentKind.STALE:
        if incident.backup_id is None or incident.backup_created_at is None:
            what = f"⚠️ {server} has *no completed backup* at the provider"
        else:
            age = _age(alert.now, incident.backup_created_at)
            what = (
                f"⚠️ Backups of {server} are *stale*: the newest completed one is backup "
                f"*{incident.backup_id}* of {slack_date(incident.backup_created_at)}, {age} old "
                f"(more than {hours(alert.stale_after)})"
            )
        return what + ". Automatic backups may have stopped."
    if incident.kind is IncidentKind.FAILED:
        when = f" ({slack_date(incident.backup_created_at)})" if incident.backup_created_at else ""
        reason = f": {escape(clip(incident.detail, 500))}" if incident.detail else ""
        return (
            f"❌ Backup *{incident.backup_id}* of {server} *failed*{when}{reason}. No backup of "
            "it has completed since."
        )
    started = (
        f", started {slack_date(incident.backup_created_at)}" if incident.backup_created_at else ""
    )
    return (
        f"⚠️ Backup *{incident.backup_id}* of {server} *vanished* from the provider's list while "
        f"it was in progress{started}. The server has no new backup from it."
    )


def alert_message(alert: Alert) -> dict[str, Any]:
    text = alert_text(alert)
    server = alert.incident.server
    hint = (
        f"`{COMMAND_NAME} status {server.id}` shows its last 14 days · I'll reply in this "
        "thread when it recovers."
    )
    return as_message(
        _fallback(text),
        [
            SectionBlock(text=MarkdownTextObject(text=text)),
            ContextBlock(elements=[MarkdownTextObject(text=hint)]),
        ],
    )


def recovery_message(alert: Alert) -> dict[str, Any]:
    incident, server = alert.incident, _server(alert)
    good = alert.recovered_by
    what = {
        IncidentKind.STALE: "has a recent completed backup again",
        IncidentKind.FAILED: "has a completed backup again since the failure",
        IncidentKind.VANISHED: "has a completed backup again since the one that vanished",
    }[incident.kind]
    if good is not None:
        by = (
            f": backup *{good.id}* ({escape(good.backup_type)}, "
            f"{slack_date(good.created_at)}, {human_size(good.size_mb)})"
        )
    else:
        by = ""
    took = long_duration((alert.now - incident.opened_at).total_seconds())
    text = f"✅ Recovered: {server} {what}{by}. The incident lasted {took}."
    return as_message(_fallback(text), [SectionBlock(text=MarkdownTextObject(text=text))])


def _fallback(text: str) -> str:
    return text.replace("*", "").replace("`", "")


# -- the digest -----------------------------------------------------------------------------------


def _activity_line(activity: Activity, verb: str, names: dict[int, str]) -> str:
    entry = activity.entry
    server = ""
    if entry.server_id is not None:
        name = names.get(entry.server_id)
        server = f" of {escape(name)}" if name else f" of server `{entry.server_id}`"
    backup = f" backup *{entry.backup_id}*" if entry.backup_id is not None else ""
    if verb == "restored":
        line = f"<@{entry.actor_user_id}> restored{server.replace(' of', '', 1)} from{backup}"
        if activity.approvers:
            line += f", approved by {', '.join(f'<@{a}>' for a in activity.approvers)}"
    else:
        line = f"<@{entry.actor_user_id}> {verb}{backup}{server}"
    return f"• {slack_date(entry.occurred_at, '{date_short} {time}')} {line}"


def _activity(
    title: str, verb: str, activities: Sequence[Activity], names: dict[int, str]
) -> list[str]:
    if not activities:
        return [f"*{title}:* none"]
    who = ", ".join(
        f"<@{user}>" + (f" ({count})" if count > 1 else "") for user, count in people(activities)
    )
    lines = [f"*{title}:* {len(activities)} (by {who})"]
    lines += [_activity_line(a, verb, names) for a in activities[-ACTIVITY_LIMIT:]]
    if len(activities) > ACTIVITY_LIMIT:
        lines.append(f"…and {len(activities) - ACTIVITY_LIMIT} earlier")
    return lines


def digest_message(digest: Digest) -> dict[str, Any]:
    """The daily digest: who needs attention, how many are healthy, and who did what."""
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=f"Backup digest · {digest.day:%a %b %d}"))
    ]
    status = digest.status
    names: dict[int, str] = {}
    if status is None:
        problem = escape(clip(digest.status_problem or "no answer", 300))
        blocks.append(
            SectionBlock(text=MarkdownTextObject(text=f"⚠️ Backup health unavailable: {problem}"))
        )
    else:
        names = {h.server.id: h.server.name for h in status.servers}
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=_summary(status))]))
        bad = [h for h in status.servers if not h.healthy]
        for health in bad[:DIGEST_LIMIT]:
            blocks.append(server_section(health, status.now, menu=False))
        if len(bad) > DIGEST_LIMIT:
            more = f"…and {len(bad) - DIGEST_LIMIT} more: `{COMMAND_NAME} status`"
            blocks.append(ContextBlock(elements=[MarkdownTextObject(text=more)]))
        if not bad and status.servers:
            every = f"✅ Every server is healthy ({count_words(len(status.servers), 'server')})."
            blocks.append(SectionBlock(text=MarkdownTextObject(text=every)))
    blocks.append(DividerBlock())
    lines = [f"*Through Backup Bot since {slack_date(digest.since)}*"]
    lines += _activity("Created", "created", digest.created, names)
    lines += _activity("Deleted", "deleted", digest.deleted, names)
    lines += _activity("Restored", "restored", digest.restored, names)
    if digest.more:
        lines.append(f"…and {digest.more} more rows: `{COMMAND_NAME} audit since:1d`")
    blocks += [SectionBlock(text=MarkdownTextObject(text=c)) for c in _chunks(lines)]
    counts = (len(digest.created), len(digest.deleted), len(digest.restored))
    bad_count = status.unhealthy if status else "?"
    fallback = (
        f"Backup digest: {bad_count} servers need attention; {counts[0]} created, "
        f"{counts[1]} deleted, {counts[2]} restored"
    )
    return as_message(fallback, blocks[:50])
