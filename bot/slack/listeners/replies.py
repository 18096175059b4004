"""The slow half of a command or a click: one use-case, then its answer rendered and sent."""

from __future__ import annotations

import logging

from bot.audit import Actor
from bot.service import AuditQuery
from bot.slack import approval_blocks, blocks, health_blocks
from bot.slack.edge import Responder, SlackEdge
from bot.slack.notify import SlackFiles
from bot.slack.parser import AuditCommand, AuditExportCommand

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
    """The confirm card; with DELETE_REQUIRES_APPROVAL, an approval card instead."""
    if edge.approvals.deletes_need_approval:
        request_delete(edge, actor, respond, backup_id)
        return
    backup = edge.service.offer_delete(actor, backup_id)
    edge.reply_private(respond, actor, blocks.delete_card(backup))


def confirm_delete(
    edge: SlackEdge, actor: Actor, respond: Responder, backup_id: int, server_id: int | None
) -> None:
    """The confirm card's Delete: deleted now; with DELETE_REQUIRES_APPROVAL (turned on since
    the card was shown), asked for on an approval card instead."""
    if edge.approvals.deletes_need_approval:
        request_delete(edge, actor, respond, backup_id, replace_original=True)
        return
    result = edge.service.delete_backup(actor, backup_id, server_id)
    edge.reply_private(respond, actor, blocks.deleted(result, actor.user_id), replace_original=True)


def request_delete(
    edge: SlackEdge,
    actor: Actor,
    respond: Responder,
    backup_id: int,
    *,
    replace_original: bool = False,
) -> None:
    approval = edge.approvals.request_delete(actor, backup_id)
    message = approval_blocks.request_posted(approval)
    edge.reply_private(respond, actor, message, replace_original=replace_original)


def audit_query(parsed: AuditCommand) -> AuditQuery:
    server = parsed.server.argument if parsed.server else None
    return AuditQuery(
        parsed.user_id, server, parsed.action, parsed.since, parsed.approval_id, parsed.outcome
    )


def show_audit(
    edge: SlackEdge,
    actor: Actor,
    respond: Responder,
    query: AuditQuery,
    *,
    replace_original: bool = False,
) -> None:
    page = edge.service.audit_trail(actor, query)
    message = blocks.audit_trail(page, edge.workspace_url())
    edge.reply_private(respond, actor, message, replace_original=replace_original)


def export_audit(
    edge: SlackEdge, actor: Actor, respond: Responder, parsed: AuditExportCommand
) -> None:
    delivery = SlackFiles(edge.client)
    export = edge.service.export_audit(actor, audit_query(parsed.filters), parsed.format, delivery)
    edge.reply_private(respond, actor, blocks.audit_exported(export))


def request_restore(
    edge: SlackEdge, actor: Actor, respond: Responder, backup_id: int, reason: str = ""
) -> None:
    approval = edge.approvals.request(actor, backup_id, reason)
    edge.reply_private(respond, actor, approval_blocks.request_posted(approval))


def show_status(
    edge: SlackEdge,
    actor: Actor,
    respond: Responder,
    server: int | str | None,
    *,
    page: int = 0,
    replace_original: bool = False,
) -> None:
    report = edge.service.status(actor, server)
    message = health_blocks.status_message(report, page=page)
    edge.reply_private(respond, actor, message, replace_original=replace_original)
