"""The routing table: every Slack input Backup Bot answers, wired in one place."""

from __future__ import annotations

from slack_bolt import App

from bot.slack.listeners import actions, commands, events
from bot.slack.runtime import Runtime


def register_listeners(app: App, runtime: Runtime) -> None:
    commands.register(app, runtime)
    actions.register(app, runtime)
    events.register(app, runtime)
