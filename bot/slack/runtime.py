"""What the listeners share: the use-cases, the people directory, and a pool for slow work.

Hazard this answers: Bolt runs listeners on a small thread pool and only sends the HTTP answer (the
ack) once a listener calls `ack()`. If listeners made provider calls on that pool, five slow calls
would hold every later ack past Slack's 3 s. So listeners ack first and hand anything slow to
`Runtime.later`, a separate pool; Bolt's threads are free again within milliseconds.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from slack_bolt import Respond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.audit import Actor
from bot.service import BackupService, Denied, ServiceError
from bot.slack import blocks
from bot.slack.directory import SlackDirectory
from bot.vps.models import Backup

log = logging.getLogger(__name__)


class BackupWatch(Protocol):
    """The watcher, as the create flow sees it (`bot.watch.Watcher`)."""

    def watch(self, backup: Backup, actor: Actor) -> int: ...

    def attach_thread(self, job_id: int, channel_id: str | None, thread_ts: str | None) -> None: ...


@dataclass
class Runtime:
    service: BackupService
    directory: SlackDirectory
    client: WebClient
    pool: ThreadPoolExecutor
    watcher: BackupWatch | None = None

    def actor(self, user_id: str, name: str, team_id: str | None, channel_id: str | None) -> Actor:
        return Actor(user_id, self.directory.display_name(user_id, name), team_id, channel_id)

    def later(
        self,
        job: Callable[[], None],
        *,
        respond: Respond,
        user_id: str,
        channel_id: str | None,
        what: str,
    ) -> Future[None]:
        """Run `job` off Bolt's pool; any failure becomes a message to the person, not silence."""

        def run() -> None:
            try:
                job()
            except Denied as exc:
                self.reply_private(respond, user_id, channel_id, blocks.notice(f"⛔ {exc.message}"))
            except ServiceError as exc:
                self.reply_private(respond, user_id, channel_id, blocks.notice(f"⚠️ {exc.message}"))
            except Exception:
                reference = secrets.token_hex(4)
                log.exception("%s failed (reference %s)", what, reference)
                self.reply_private(
                    respond,
                    user_id,
                    channel_id,
                    blocks.notice(
                        f"⚠️ Something went wrong on our side while trying to {what}; it may "
                        "not have finished. Check the result before trying again. Reference "
                        f"for the bot's operators: `{reference}`."
                    ),
                )

        future = self.pool.submit(run)
        future.add_done_callback(_log_escaped)
        return future

    def reply_private(
        self,
        respond: Respond,
        user_id: str,
        channel_id: str | None,
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
        if channel_id:
            try:
                self.client.chat_postEphemeral(channel=channel_id, user=user_id, **message)
                return
            except Exception as exc:
                log.warning("chat.postEphemeral failed: %s; sending a DM", _error(exc))
        self.direct_message(user_id, message)

    def direct_message(self, user_id: str, message: dict[str, Any]) -> tuple[str, str] | None:
        """Post to the person's DM with the bot: (channel, ts), or None if that failed too."""
        try:
            channel = self.client.conversations_open(users=user_id)["channel"]["id"]
            response = self.client.chat_postMessage(channel=channel, **message)
            return channel, str(response["ts"])
        except Exception as exc:
            log.error("could not reach %s at all (DM failed: %s)", user_id, _error(exc))
            return None


def _log_escaped(future: Future[None]) -> None:
    """A failure that escaped even the handlers above (they should not let one out): say so."""
    exc = future.exception()
    if exc is not None:
        log.error("background work failed and nobody was told: %r", exc)


def _error(exc: Exception) -> str:
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error", "error"))
    return type(exc).__name__
