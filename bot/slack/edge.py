"""What every listener shares: the use-cases, the people directory, the Web API client, a work pool.

Hazard this answers: Bolt runs listeners on a small thread pool and only sends the HTTP answer (the
ack) once a listener calls `ack()`. If listeners made provider calls on that pool, five slow calls
would hold every later ack past Slack's 3 s. So listeners ack first and hand anything slow to
`SlackEdge.later`, a separate pool; Bolt's threads are free again within milliseconds.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from slack_bolt import Respond
from slack_sdk import WebClient

from bot.audit import Actor
from bot.service import BackupService, ServiceError
from bot.slack import blocks
from bot.slack.directory import SlackDirectory
from bot.slack.notify import post_to_dm, slack_error

log = logging.getLogger(__name__)


@dataclass
class SlackEdge:
    service: BackupService
    directory: SlackDirectory
    client: WebClient
    pool: ThreadPoolExecutor

    def actor(self, user_id: str, name: str, team_id: str | None, channel_id: str | None) -> Actor:
        # Slack's DM channel ids start with D: there the person talks to the bot alone.
        direct = bool(channel_id and channel_id.startswith("D"))
        return Actor(
            user_id, self.directory.display_name(user_id, name), team_id, channel_id, direct
        )

    def actor_of(self, body: dict[str, Any]) -> Actor:
        """The person behind an interaction payload (a click, a menu choice)."""
        user = body.get("user") or {}
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
            "channel_id"
        )
        team = user.get("team_id") or (body.get("team") or {}).get("id")
        return self.actor(user["id"], user.get("name") or user.get("username") or "", team, channel)

    def later(
        self,
        job: Callable[[Actor], None],
        *,
        respond: Respond,
        who: Callable[[], Actor],
        what: str,
    ) -> Future[None]:
        """Run `job(who())` off Bolt's pool; any failure becomes a message to the person."""

        def run() -> None:
            actor: Actor | None = None
            try:
                actor = who()
                job(actor)
            except ServiceError as exc:
                assert actor is not None  # who() raises no ServiceError
                self.reply_private(respond, actor, blocks.error_notice(exc))
            except Exception:
                reference = secrets.token_hex(4)
                log.exception("%s failed (reference %s)", what, reference)
                if actor is not None:
                    self.reply_private(respond, actor, blocks.unexpected_failure(what, reference))

        future = self.pool.submit(run)
        future.add_done_callback(_log_escaped)
        return future

    def reply_private(
        self,
        respond: Respond,
        actor: Actor,
        message: dict[str, Any],
        *,
        replace_original: bool = False,
    ) -> None:
        """An ephemeral answer through `response_url`; if that fails, `chat.postEphemeral`, then DM.

        `response_url` takes 5 posts within 30 minutes: a person paging a long list can use it up.
        """
        try:
            response = respond(
                response_type="ephemeral", replace_original=replace_original, **message
            )
            if response.status_code == 200:
                return
            log.warning("response_url answered %s; trying chat.postEphemeral", response.status_code)
        except Exception as exc:  # the webhook client raises plain OSErrors
            log.warning("response_url failed (%s); trying chat.postEphemeral", type(exc).__name__)
        if actor.channel_id:
            try:
                self.client.chat_postEphemeral(
                    channel=actor.channel_id, user=actor.user_id, **message
                )
                return
            except Exception as exc:
                log.warning("chat.postEphemeral failed: %s; sending a DM", slack_error(exc))
        try:
            post_to_dm(self.client, actor.user_id, message)
        except Exception as exc:
            log.error("could not reach %s at all (DM failed: %s)", actor.user_id, slack_error(exc))


def _log_escaped(future: Future[None]) -> None:
    """A failure that escaped even the handlers above (they should not let one out): say so."""
    exc = future.exception()
    if exc is not None:
        log.error("background work failed and nobody was told: %r", exc)
