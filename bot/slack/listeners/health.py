"""Backup health's buttons and form: the status pager, a server's ⋯ menu (List, Create backup…)
and the "Create backup" form it opens."""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk.errors import SlackApiError

from bot.audit import Actor
from bot.policy import Action
from bot.slack import health_blocks
from bot.slack.blocks import notice
from bot.slack.edge import Responder, SlackEdge, Waiting, guarded
from bot.slack.listeners.replies import create, show_list, show_status
from bot.slack.parser import positive_id

log = logging.getLogger(__name__)


def register(app: App, edge: SlackEdge) -> None:
    app.action(re.compile(rf"^{health_blocks.STATUS_PAGE}_"))(guarded(_status_page(edge)))
    app.action(health_blocks.SERVER_MENU)(guarded(_server_menu(edge)))
    app.view(health_blocks.CREATE_FORM)(guarded(_create_submitted(edge)))


def _status_page(edge: SlackEdge) -> Any:
    def handle_status_page(
        ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond
    ) -> None:
        ack()
        try:
            page = health_blocks.decode_page(str(action.get("value") or ""))
        except (ValueError, TypeError):
            log.warning("ignoring a status page button with a malformed value")
            return

        def job(actor: Actor, reply: Responder) -> None:
            show_status(edge, actor, reply, None, page=page, replace_original=True)

        edge.later(
            job,
            respond=respond,
            who=lambda: edge.actor_of(body),
            what="page the backup health",
            waiting=Waiting.IN_PLACE,
            read_only=True,
        )

    return handle_status_page


def _server_menu(edge: SlackEdge) -> Any:
    def handle_server_menu(
        ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond
    ) -> None:
        ack()
        value = str((action.get("selected_option") or {}).get("value", ""))
        verb, _, rest = value.partition(":")
        raw_id, _, name = rest.partition(":")
        server_id = positive_id(raw_id)
        if verb not in ("list", "create") or server_id is None:
            log.warning("ignoring an unknown server menu choice")
            return
        who = lambda: edge.actor_of(body)  # noqa: E731
        if verb == "list":
            job = lambda actor, reply: show_list(edge, actor, reply, server_id, None)  # noqa: E731
            what = f"list the backups of {server_id}"
            edge.later(job, respond=respond, who=who, what=what, read_only=True)
            return
        form = functools.partial(_open_create_form, edge, str(body.get("trigger_id", "")))
        job = lambda actor, reply: form(actor, reply, server_id, name)  # noqa: E731
        edge.later(job, respond=respond, who=who, what="open the backup form", urgent=True)

    return handle_server_menu


def _open_create_form(
    edge: SlackEdge, trigger_id: str, actor: Actor, reply: Responder, server_id: int, name: str
) -> None:
    # Refused before the form opens (and audited), like any create by a non-operator.
    edge.service.authorize(actor, Action.CREATE, server_id=server_id, server=server_id)
    form = health_blocks.create_form(server_id, name or f"server {server_id}", actor.channel_id)
    try:
        edge.client.views_open(trigger_id=trigger_id, view=form)
    except SlackApiError as exc:
        log.warning("create form not opened: %s", exc.response.get("error"))
        message = "⚠️ The form could not be opened in time: choose Create backup… again."
        edge.reply_private(reply, actor, notice(message))


def _create_submitted(edge: SlackEdge) -> Any:
    def handle_create(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        try:
            server_id, channel_id = health_blocks.decode_form(str(view.get("private_metadata", "")))
        except (ValueError, TypeError):
            log.warning("ignoring a backup form with malformed metadata")
            ack()
            return
        ack()
        values = ((view.get("state") or {}).get("values") or {}).get(health_blocks.CREATE_BLOCK)
        typed = ((values or {}).get(health_blocks.CREATE_INPUT) or {}).get("value")
        description = " ".join(typed.split()) if isinstance(typed, str) else ""
        who = lambda: dataclasses.replace(edge.actor_of(body), channel_id=channel_id)  # noqa: E731

        def job(actor: Actor, reply: Responder) -> None:
            create(edge, actor, reply, server_id, description or None)

        edge.later(job, respond=_NO_RESPONSE_URL, who=who, what=f"create a backup of {server_id}")

    return handle_create


# A form's submission comes with no response_url: answers go by chat.postEphemeral, else DM.
_NO_RESPONSE_URL = Respond(response_url=None)
