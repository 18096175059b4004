"""Events: the App Home tab, which tells each person what they may do."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App
from slack_sdk.errors import SlackApiError

from bot.policy import Action
from bot.replays import acted_on_before
from bot.service import ServiceError
from bot.slack import approval_blocks, blocks, health_blocks
from bot.slack.edge import SlackEdge, WorkQueueFull, guarded
from bot.slack.parser import USAGE

log = logging.getLogger(__name__)


def register(app: App, edge: SlackEdge) -> None:
    app.event("app_home_opened")(guarded(_home(edge)))


def _home(edge: SlackEdge) -> Any:
    def handle_home(event: dict[str, Any]) -> None:
        if event.get("tab") not in (None, "home"):
            return
        user_id = event.get("user")
        if isinstance(user_id, str):
            # Group lookups and views.publish (rate-limited: it sleeps) stay off Bolt's threads.
            try:
                edge.pool.submit(guarded(publish_home), edge=edge, user_id=user_id)
            except WorkQueueFull:
                log.warning("busy: the App Home of %s was not published", user_id)

    return handle_home


def publish_home(edge: SlackEdge, user_id: str) -> None:
    if acted_on_before():  # an event Slack retried: published once already
        log.warning("an App Home event already acted on came again: not publishing")
        return
    roles, allowed = edge.service.permissions(user_id)
    view = {"type": "home", **blocks.home_view(USAGE, roles, allowed)}
    view["blocks"] += approval_blocks.pending_on_home(edge.approvals.pending_for(user_id))
    if Action.LIST.value in allowed and edge.service.health is not None:
        view["blocks"] += _health_on_home(edge, user_id)
    if Action.AUDIT.value in allowed:
        page, checkpoint = edge.service.audit_overview(edge.actor(user_id, "", None, None))
        view["blocks"] += blocks.audit_on_home(page, checkpoint)
    try:
        edge.client.views_publish(user_id=user_id, view=view)
    except SlackApiError as exc:
        log.warning("views.publish failed: %s", exc.response.get("error"))


def _health_on_home(edge: SlackEdge, user_id: str) -> list[dict[str, Any]]:
    """The status table, worst first, for everyone who may list backups."""
    try:
        with edge.service.someone_waiting():
            report = edge.service.status(edge.actor(user_id, "", None, None))
    except ServiceError as exc:
        return health_blocks.status_unavailable_on_home(str(exc))
    return health_blocks.status_on_home(report)
