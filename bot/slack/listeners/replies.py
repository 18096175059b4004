"""The slow half of a command or a click: one use-case, then its answer rendered and sent."""

from __future__ import annotations

import logging

from bot.ages import format_age
from bot.audit import Actor
from bot.service import AuditQuery
from bot.slack import approval_blocks, blocks
from bot.slack.edge import Responder, SlackEdge
from bot.slack.parser import AuditCommand

log = logging.getLogger(__name__)


def show_list(
    edge: SlackEdge,
    actor: Actor,
    respond: Responder,
    server: int | str | None,
    backup_type: str | None,
    *,
    page: int = 0,
    public: bool = False,
    replace_original: bool = False,
) -> None:
    listing = edge.service.list_backups(actor, server, backup_type)
    message = blocks.backup_list(listing, page=page, public=public)
    if public:
        try:
            response = respond(
                response_type="in_channel", replace_original=replace_original, **message
            )
            if response.status_code == 200:
                return
        except Exception as exc:  # no response_url (a modal's button), or it failed
            log.warning("public list not posted (%s); answering privately", type(exc).__name__)
    edge.reply_private(respond, actor, message, replace_original=replace_original)


def create(
    edge: SlackEdge, actor: Actor, respond: Responder, server: int | str, description: str | None
) -> None:
    result = edge.service.create_backup(actor, server, description)
    notes = blocks.create_notes(result)
    if notes is not None:
        edge.reply_private(respond, actor, notes)


def offer_delete(edge: SlackEdge, actor: Actor, respond: Responder, backup_id: int) -> None:
    backup = edge.service.offer_delete(actor, backup_id)
    edge.reply_private(respond, actor, blocks.delete_card(backup))


def show_audit(edge: SlackEdge, actor: Actor, respond: Responder, parsed: AuditCommand) -> None:
    server = parsed.server.argument if parsed.server else None
    query = AuditQuery(parsed.user_id, server, parsed.action, parsed.since, parsed.approval_id)
    rows = edge.service.audit_trail(actor, query)
    filters = " · ".join(
        part
        for part in (
            f"by <@{parsed.user_id}>" if parsed.user_id else "",
            f"server {parsed.server}" if parsed.server else "",
            f"action {parsed.action}" if parsed.action else "",
            f"approval #{parsed.approval_id}" if parsed.approval_id else "",
            f"since {format_age(parsed.since)} ago" if parsed.since else "",
        )
        if part
    )
    edge.reply_private(respond, actor, blocks.audit_trail(rows, filters))


def request_restore(
    edge: SlackEdge, actor: Actor, respond: Responder, backup_id: int, reason: str = ""
) -> None:
    approval = edge.approvals.request(actor, backup_id, reason)
    edge.reply_private(respond, actor, approval_blocks.request_posted(approval))
