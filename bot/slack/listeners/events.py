"""Events: the App Home tab, which tells each person what they may do."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App
from slack_sdk.errors import SlackApiError

from bot.policy import REQUIRED_ROLE
from bot.slack import blocks
from bot.slack.parser import USAGE
from bot.slack.runtime import Runtime

log = logging.getLogger(__name__)


def register(app: App, runtime: Runtime) -> None:
    app.event("app_home_opened")(_home(runtime))


def _home(runtime: Runtime) -> Any:
    def handle_home(event: dict[str, Any]) -> None:
        if event.get("tab") not in (None, "home"):
            return
        user_id = event["user"]
        roles = runtime.service.policy.roles_of(user_id)
        allowed = [a.value for a, role in REQUIRED_ROLE.items() if role in roles]
        view = {"type": "home", **blocks.home_view(USAGE, sorted(r.value for r in roles), allowed)}
        try:
            runtime.client.views_publish(user_id=user_id, view=view)
        except SlackApiError as exc:
            log.warning("views.publish failed: %s", exc.response.get("error"))

    return handle_home
