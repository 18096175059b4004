"""Buttons and menus: list paging, the help buttons, a backup's ⋯ menu, delete confirm/cancel."""

from __future__ import annotations

import logging
import re
from typing import Any

from slack_bolt import Ack, App, Respond

from bot.audit import Actor
from bot.db import Outcome
from bot.slack import blocks
from bot.slack.listeners.commands import offer_delete, restore_unavailable, show_list
from bot.slack.runtime import Runtime

log = logging.getLogger(__name__)


def register(app: App, runtime: Runtime) -> None:
    app.action(re.compile(rf"^({blocks.LIST_PAGE}|{blocks.HELP_LIST})_"))(_list_page(runtime))
    app.action(blocks.BACKUP_MENU)(_backup_menu(runtime))
    app.action(blocks.DELETE_CONFIRM)(_delete_confirm(runtime))
    app.action(blocks.DELETE_CANCEL)(_delete_cancel(runtime))


def _where(body: dict[str, Any]) -> tuple[str, str, str | None, str | None]:
    user = body.get("user") or {}
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
        "channel_id"
    )
    team = user.get("team_id") or (body.get("team") or {}).get("id")
    return user["id"], user.get("name") or user.get("username") or "", team, channel


def _later(runtime: Runtime, body: dict[str, Any], respond: Respond, what: str, job: Any) -> None:
    user_id, name, team_id, channel_id = _where(body)

    def run() -> None:
        job(runtime.actor(user_id, name, team_id, channel_id))

    runtime.later(run, respond=respond, user_id=user_id, channel_id=channel_id, what=what)


def _list_page(runtime: Runtime) -> Any:
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
                runtime,
                actor,
                respond,
                server=state.server_id,
                backup_type=state.backup_type,
                page=state.page,
                public=state.public,
                replace_original=paging,
            )

        _later(runtime, body, respond, "list backups", job)

    return handle_list_page


def _backup_menu(runtime: Runtime) -> Any:
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
                offer_delete(runtime, actor, respond, backup_id)
            else:
                restore_unavailable(runtime, actor, respond, backup_id)

        _later(runtime, body, respond, f"{verb} backup {backup_id}", job)

    return handle_backup_menu


def _delete_confirm(runtime: Runtime) -> Any:
    def handle_delete_confirm(
        ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond
    ) -> None:
        ack()
        ids = _ids(action.get("value"))
        if ids is None:
            log.warning("ignoring a delete button with a malformed value")
            return
        backup_id, server_id = ids

        def job(actor: Actor) -> None:
            result = runtime.service.delete_backup(actor, backup_id, server_id)
            if result.outcome is None:
                text = f"Backup {backup_id} no longer exists: it was already deleted or expired."
            else:
                text = f"🗑️ Backup {backup_id} deleted by <@{actor.user_id}>."
            runtime.reply_private(
                respond, actor.user_id, actor.channel_id, blocks.notice(text), replace_original=True
            )

        _later(runtime, body, respond, f"delete backup {backup_id}", job)

    return handle_delete_confirm


def _delete_cancel(runtime: Runtime) -> Any:
    def handle_delete_cancel(
        ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond
    ) -> None:
        ack()
        backup_id, server_id = _ids(action.get("value")) or (None, None)

        def job(actor: Actor) -> None:
            runtime.service.audit.record(
                actor, "delete.cancel", Outcome.OK, server_id=server_id, backup_id=backup_id
            )
            runtime.reply_private(
                respond,
                actor.user_id,
                actor.channel_id,
                blocks.notice(f"Kept backup {backup_id or ''}: nothing was deleted."),
                replace_original=True,
            )

        _later(runtime, body, respond, "cancel a delete", job)

    return handle_delete_cancel


def _ids(value: str | None) -> tuple[int, int | None] | None:
    """A delete button's value: "BACKUP_ID:SERVER_ID" (or a bare backup id)."""
    backup, _, server = (value or "").partition(":")
    if not backup.isdigit() or (server and not server.isdigit()):
        return None
    return int(backup), int(server) if server else None
