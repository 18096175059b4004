"""Buttons and menus: list paging, the help buttons, a backup's ⋯ menu, delete confirm/cancel."""

from __future__ import annotations

import logging
import re
from typing import Any

from slack_bolt import Ack, App, Respond

from bot.audit import Actor
from bot.slack import blocks
from bot.slack.edge import SlackEdge
from bot.slack.listeners.replies import offer_delete, show_list

log = logging.getLogger(__name__)


def register(app: App, edge: SlackEdge) -> None:
    app.action(re.compile(rf"^({blocks.LIST_PAGE}|{blocks.HELP_LIST})_"))(_list_page(edge))
    app.action(blocks.BACKUP_MENU)(_backup_menu(edge))
    app.action(blocks.DELETE_CONFIRM)(_delete_confirm(edge))
    app.action(blocks.DELETE_CANCEL)(_delete_cancel(edge))


def _later(edge: SlackEdge, body: dict[str, Any], respond: Respond, what: str, job: Any) -> None:
    edge.later(job, respond=respond, who=lambda: edge.actor_of(body), what=what)


def _list_page(edge: SlackEdge) -> Any:
    def handle_list_page(
        ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond
    ) -> None:
        ack()
        try:
            state = blocks.PageState.decode(action.get("value") or "")
        except (ValueError, TypeError):
            log.warning("ignoring a list button with a malformed value")
            return
        paging = action["action_id"].startswith(blocks.LIST_PAGE)

        def job(actor: Actor) -> None:
            show_list(
                edge,
                actor,
                respond,
                state.server_id,
                state.backup_type,
                page=state.page,
                public=state.public,
                replace_original=paging,
            )

        _later(edge, body, respond, "list backups", job)

    return handle_list_page


def _backup_menu(edge: SlackEdge) -> Any:
    def handle_backup_menu(
        ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond
    ) -> None:
        ack()
        value = (action.get("selected_option") or {}).get("value", "")
        verb, _, raw_id = value.partition(":")
        if verb not in ("delete", "restore") or not raw_id.isdigit():
            log.warning("ignoring an unknown backup menu choice")
            return
        backup_id = int(raw_id)

        def job(actor: Actor) -> None:
            if verb == "delete":
                offer_delete(edge, actor, respond, backup_id)
            else:
                edge.service.request_restore(actor, backup_id)

        _later(edge, body, respond, f"{verb} backup {backup_id}", job)

    return handle_backup_menu


def _delete_confirm(edge: SlackEdge) -> Any:
    def handle_delete_confirm(
        ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond
    ) -> None:
        ack()
        ids = _ids(action.get("value"))
        if ids is None:
            log.warning("ignoring a delete button with a malformed value")
            return

        def job(actor: Actor) -> None:
            result = edge.service.delete_backup(actor, *ids)
            message = blocks.deleted(result, actor.user_id)
            edge.reply_private(respond, actor, message, replace_original=True)

        _later(edge, body, respond, f"delete backup {ids[0]}", job)

    return handle_delete_confirm


def _delete_cancel(edge: SlackEdge) -> Any:
    def handle_delete_cancel(
        ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond
    ) -> None:
        ack()
        backup_id, server_id = _ids(action.get("value")) or (None, None)

        def job(actor: Actor) -> None:
            edge.service.cancel_delete(actor, backup_id, server_id)
            message = blocks.notice(f"Kept backup {backup_id or ''}: nothing was deleted.")
            edge.reply_private(respond, actor, message, replace_original=True)

        _later(edge, body, respond, "cancel a delete", job)

    return handle_delete_cancel


def _ids(value: str | None) -> tuple[int, int | None] | None:
    """A delete button's value: "BACKUP_ID:SERVER_ID" (or a bare backup id)."""
    backup, _, server = (value or "").partition(":")
    if not backup.isdigit() or (server and not server.isdigit()):
        return None
    return int(backup), int(server) if server else None
