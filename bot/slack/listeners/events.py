"""Events: the App Home tab, which tells each person what they may do."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App
from slack_sdk.errors import SlackApiError

from bot.slack import blocks
from bot.slack.edge import SlackEdge
from bot.slack.parser import USAGE

log = logging.getLogger(__name__)


def register(app: App, edge: SlackEdge) -> None:
    app.event("app_home_opened")(_home(edge))


def _home(edge: SlackEdge) -> Any:
    def handle_home(event: dict[str, Any]) -> None:
        if event.get("tab") not in (None, "home"):
            return
        user_id = event["user"]
        roles, allowed = edge.service.permissions(user_id)
        view = {"type": "home", **blocks.home_view(USAGE, roles, allowed)}
        try:
            edge.client.views_publish(user_id=user_id, view=view)
        except SlackApiError as exc:
            log.warning("views.publish failed: %s", exc.response.get("error"))

    return handle_home
