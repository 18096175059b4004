"""Buttons and menus: list paging, the help buttons, a backup's ⋯ menu, delete confirm/cancel."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App, Respond

from bot.audit import Actor
from bot.metrics import ACTIONS
from bot.slack import blocks
from bot.slack.edge import Responder, SlackEdge, Waiting, guarded
from bot.slack.listeners import observe
from bot.slack.listeners.replies import (
    confirm_delete,
    offer_delete,
    request_restore,
    show_audit,
    show_list,
)
from bot.slack.parser import positive_id

log = logging.getLogger(__name__)


def register(app: App, edge: SlackEdge) -> None:
    paging = re.compile(rf"^({blocks.LIST_PAGE}|{blocks.HELP_LIST})_")
    app.action(paging)(guarded(_list_page(edge)))
    app.action(blocks.BACKUP_MENU)(guarded(_backup_menu(edge)))
    app.action(blocks.DELETE_CONFIRM)(guarded(_delete_confirm(edge)))
    app.action(blocks.DELETE_CANCEL)(guarded(_delete_cancel(edge)))
    app.action(re.compile(rf"^{blocks.AUDIT_PAGE}_"))(guarded(_audit_page(edge)))


def _later(
    edge: SlackEdge,
    body: dict[str, Any],
    respond: Respond,
    what: str,
    job: Callable[[Actor, Responder], None],
    waiting: Waiting = Waiting.NONE,
    *,
    name: str,
    read_only: bool = False,
) -> None:
    who = lambda: edge.actor_of(body)  # noqa: E731
    observe.later(
        edge,
        ACTIONS,
        name,
        job,
        respond=respond,
        who=who,
        what=what,
        waiting=waiting,
        read_only=read_only,
    )


def _malformed(name: str, what: str) -> None:
    log.warning("ignoring %s with a malformed value", what)
    observe.count(ACTIONS, name, "invalid")


def _list_page(edge: SlackEdge) -> Any:
    def handle_list_page(
        ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond
    ) -> None:
        ack()
        paging = action["action_id"].startswith(blocks.LIST_PAGE)
        name = "list_page" if paging else "help_list"
        try:
            state = blocks.PageState.decode(action.get("value") or "")
        except (ValueError, TypeError):
            _malformed(name, "a list button")
            return

        def job(actor: Actor, reply: Responder) -> None:
            show_list(
                edge,
                actor,
                reply,
                state.server_id,
                state.backup_type,
                page=state.page,
                public=state.public,
                replace_original=paging,
            )

        waiting = Waiting.IN_PLACE if paging else Waiting.NEW_MESSAGE
        _later(edge, body, respond, "list backups", job, waiting, name=name, read_only=True)

    return handle_list_page


def _audit_page(edge: SlackEdge) -> Any:
    def handle_audit_page(
        ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond
    ) -> None:
        ack()
        try:
            query = blocks.decode_audit_query(str(action.get("value") or ""))
        except (ValueError, TypeError):
            _malformed("audit_page", "an audit page button")
            return

        def job(actor: Actor, reply: Responder) -> None:
            show_audit(edge, actor, reply, query, replace_original=True)

        what, waiting = "page the audit log", Waiting.IN_PLACE
        _later(edge, body, respond, what, job, waiting, name="audit_page", read_only=True)

    return handle_audit_page


def _backup_menu(edge: SlackEdge) -> Any:
    def handle_backup_menu(
        ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond
    ) -> None:
        ack()
        value = str((action.get("selected_option") or {}).get("value", ""))
        verb, _, raw_id = value.partition(":")
        backup_id = positive_id(raw_id)
        if verb not in ("delete", "restore") or backup_id is None:
            log.warning("ignoring an unknown backup menu choice")
            observe.count(ACTIONS, "backup_menu", "invalid")
            return

        def job(actor: Actor, reply: Responder) -> None:
            if verb == "delete":
                offer_delete(edge, actor, reply, backup_id)
            else:
                request_restore(edge, actor, reply, backup_id)

        _later(edge, body, respond, f"{verb} backup {backup_id}", job, name=f"backup_menu_{verb}")

    return handle_backup_menu


def _delete_confirm(edge: SlackEdge) -> Any:
    def handle_delete_confirm(
        ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond
    ) -> None:
        ack()
        ids = _ids(action.get("value"))
        if ids is None:
            _malformed("delete_confirm", "a delete button")
            return

        def job(actor: Actor, reply: Responder) -> None:
            confirm_delete(edge, actor, reply, *ids)

        what = f"delete backup {ids[0]}"
        _later(edge, body, respond, what, job, Waiting.IN_PLACE, name="delete_confirm")

    return handle_delete_confirm


def _delete_cancel(edge: SlackEdge) -> Any:
    def handle_delete_cancel(
        ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond
    ) -> None:
        ack()
        backup_id, server_id = _ids(action.get("value")) or (None, None)

        def job(actor: Actor, reply: Responder) -> None:
            edge.service.cancel_delete(actor, backup_id, server_id)
            message = blocks.delete_cancelled(backup_id)
            edge.reply_private(reply, actor, message, replace_original=True)

        _later(edge, body, respond, "cancel a delete", job, name="delete_cancel")

    return handle_delete_cancel


def _ids(value: object) -> tuple[int, int | None] | None:
    """A delete button's value: "BACKUP_ID:SERVER_ID" (or a bare backup id); None if it is
    anything the bot never writes there."""
    backup, colon, server = str(value or "").partition(":")
    backup_id, server_id = positive_id(backup), positive_id(server)
    if backup_id is None or (colon and server_id is None):
        return None
    return backup_id, server_id
