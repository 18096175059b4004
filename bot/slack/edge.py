"""What every listener shares: the use-cases, the people directory, the Web API client, a work pool.

Hazard this answers: Bolt runs listeners on a small thread pool and only sends the HTTP answer (the
ack) once a listener calls `ack()`. If listeners made provider calls on that pool, five slow calls
would hold every later ack past Slack's 3 s. So listeners ack first and hand anything slow to
`SlackEdge.later`, a separate pool; Bolt's threads are free again within milliseconds.
"""

from __future__ import annotations

import enum
import functools
import logging
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from slack_bolt import Respond
from slack_sdk import WebClient

from bot.approvals import RestoreApprovals
from bot.audit import Actor
from bot.service import BackupService, ServiceError
from bot.slack import blocks
from bot.slack.directory import SlackDirectory
from bot.slack.errors import error_notice, unexpected_failure
from bot.slack.notify import post_to_dm, slack_error

log = logging.getLogger(__name__)


# Bolt's `respond`, or `PatientRespond` wrapping it: called with a message's fields.
Responder = Callable[..., Any]

# After this long without an answer from the provider, the person is told we are waiting.
WAITING_NOTICE_AFTER = 3.0


class Waiting(enum.Enum):
    """How a slow answer is announced: not at all, as a new private message that the answer
    replaces (a slash command), or in place of the message clicked (a page, a delete card)."""

    NONE = "none"
    NEW_MESSAGE = "new"
    IN_PLACE = "in place"


class PatientRespond:
    """Bolt's `respond`, which first says "waiting for the provider…" when the answer is slow,
    and then has the answer replace that notice."""

    def __init__(self, respond: Respond, waiting: Waiting, after: float) -> None:
        self._respond = respond
        self._lock = threading.Lock()
        self._answered = False
        self._notice_shown = False
        self._timer: threading.Timer | None = None
        if waiting is not Waiting.NONE and respond.response_url:
            self._timer = threading.Timer(after, self._notice, args=(waiting,))
            self._timer.daemon = True
            self._timer.start()

    @property
    def response_url(self) -> str | None:
        return self._respond.response_url

    def __call__(self, **message: Any) -> Any:
        with self._lock:  # a notice being posted goes out first, then is replaced
            self._answered = True
            if self._timer is not None:
                self._timer.cancel()
            replace = self._notice_shown
        if replace and message.get("response_type") != "in_channel":
            message["replace_original"] = True
        return self._respond(**message)

    def done(self) -> None:
        with self._lock:
            self._answered = True
            if self._timer is not None:
                self._timer.cancel()

    def _notice(self, waiting: Waiting) -> None:
        with self._lock:
            if self._answered:
                return
            try:
                self._respond(
                    response_type="ephemeral",
                    replace_original=waiting is Waiting.IN_PLACE,
                    **blocks.notice("⏳ Waiting for the provider to answer…"),
                )
                self._notice_shown = True
            except Exception as exc:
                log.warning("could not show the waiting notice (%s)", type(exc).__name__)


@dataclass
class SlackEdge:
    service: BackupService
    approvals: RestoreApprovals
    directory: SlackDirectory
    client: WebClient
    pool: ThreadPoolExecutor
    # Work that races a clock (a trigger_id lives 3 s): never queued behind slow provider calls.
    urgent: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(4, thread_name_prefix="backupbot-urgent")
    )
    _workspace_url: str | None = None

    def workspace_url(self) -> str | None:
        """`https://team.slack.com/`, from auth.test once; None if Slack would not say."""
        if self._workspace_url is None:
            try:
                self._workspace_url = str(self.client.auth_test()["url"])
            except Exception as exc:
                log.warning("auth.test failed: %s", slack_error(exc))
                return None
        return self._workspace_url

    def actor(
        self,
        user_id: str,
        name: str,
        team_id: str | None,
        channel_id: str | None,
        enterprise_id: str | None = None,
    ) -> Actor:
        # Slack's DM channel ids start with D: there the person talks to the bot alone.
        direct = bool(channel_id and channel_id.startswith("D"))
        display = self.directory.display_name(user_id, name)
        return Actor(user_id, display, team_id, channel_id, direct, enterprise_id)

    def actor_of_command(self, command: dict[str, Any]) -> Actor:
        """The person behind a slash command."""
        return self.actor(
            command["user_id"],
            command.get("user_name", ""),
            command.get("team_id"),
            command.get("channel_id"),
            command.get("enterprise_id") or None,
        )

    def actor_of(self, body: dict[str, Any]) -> Actor:
        """The person behind an interaction payload (a click, a menu choice, a form).

        The team is the workspace the action happened in, as a slash command names it: in an
        org-wide install `user.team_id` may be the org (E…), so it comes last.
        """
        user = body.get("user") or {}
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
            "channel_id"
        )
        team = (body.get("team") or {}).get("id") or body.get("team_id") or user.get("team_id")
        enterprise = (body.get("enterprise") or {}).get("id") or body.get("enterprise_id")
        name = user.get("name") or user.get("username") or ""
        return self.actor(user["id"], name, team, channel, enterprise)

    def later(
        self,
        job: Callable[[Actor, Respond], None],
        *,
        respond: Respond,
        who: Callable[[], Actor],
        what: str,
        waiting: Waiting = Waiting.NONE,
        urgent: bool = False,
    ) -> Future[None]:
        """Run `job(who(), respond)` off Bolt's pool, within the provider time budget; any failure
        becomes a message to the person. `waiting`: how to say "waiting for the provider…" if the
        answer takes a while (the answer then replaces that notice)."""

        def run() -> None:
            actor: Actor | None = None
            patient = PatientRespond(respond, waiting, WAITING_NOTICE_AFTER)
            try:
                actor = who()
                with self.service.someone_waiting():
                    job(actor, patient)
            except ServiceError as exc:
                assert actor is not None  # who() raises no ServiceError
                self.reply_private(patient, actor, error_notice(exc))
            except Exception:
                reference = _reference()
                log.exception("%s failed (reference %s)", what, reference)
                if actor is not None:
                    self.reply_private(patient, actor, unexpected_failure(what, reference))
            finally:
                patient.done()

        future = (self.urgent if urgent else self.pool).submit(run)
        future.add_done_callback(_log_escaped)
        return future

    def reply_private(
        self,
        respond: Responder,
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


def guarded(listener: Callable[..., None]) -> Callable[..., None]:
    """A listener from which no exception escapes.

    Bolt throws the ack away when a listener raises after `ack()` (Slack then shows the person an
    error after 3 s, and they retry: for create, a second backup). So a failure is logged with a
    reference, and a listener that had not acked yet acks with an empty 200.
    """

    @functools.wraps(listener)
    def run(**kwargs: Any) -> None:
        try:
            listener(**kwargs)
        except Exception:
            log.exception("listener %s failed (reference %s)", listener.__name__, _reference())
            ack = kwargs.get("ack")
            if ack is not None and getattr(ack, "response", True) is None:
                ack()

    return run


def _reference() -> str:
    return secrets.token_hex(4)


def _log_escaped(future: Future[None]) -> None:
    """A failure that escaped even the handlers above (they should not let one out): say so."""
    exc = future.exception()
    if exc is not None:
        log.error("background work failed and nobody was told: %r", exc)
