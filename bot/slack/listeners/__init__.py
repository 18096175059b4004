"""The routing table: every Slack input Backup Bot answers, wired in one place."""

from __future__ import annotations

from slack_bolt import App

from bot.slack.edge import SlackEdge
from bot.slack.listeners import actions, approvals, commands, events, health
from bot.slack.listeners.observe import carry_context_to_listeners


def register_listeners(app: App, edge: SlackEdge) -> None:
    carry_context_to_listeners(app)  # the request id follows each request onto Bolt's threads
    commands.register(app, edge)
    actions.register(app, edge)
    approvals.register(app, edge)
    events.register(app, edge)
    health.register(app, edge)
