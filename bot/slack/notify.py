"""The bot's own voice in Slack: "backup N started" (whose ts is the thread), and the thread reply
when it finishes, with the parent's update. Each falls back to the requester's DM when the channel
cannot take it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.audit import Actor
from bot.service import Announcement, FileNotDelivered
from bot.slack import blocks
from bot.vps.models import Backup
from bot.watch import Delivery, DeliveryFailed, FinishedBackup

log = logging.getLogger(__name__)

# Errors after which posting in that channel will not work however often we try: DM instead.
_UNPOSTABLE = frozenset(
    {
        "not_in_channel",
        "channel_not_found",
        "is_archived",
        "restricted_action",
        "thread_not_found",
        "cannot_reply_to_message",
    }
)
UNREACHABLE = "unreachable"  # Announcement.problem when Slack did not answer at all
NO_CHANNEL = "no_channel"  # … when the request came from no channel


def slack_error(exc: Exception) -> str:
    """Slack's error code for an API error, else the exception's type (never its text)."""
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error", "error"))
    return type(exc).__name__


def post_to_dm(client: WebClient, user_id: str, message: dict[str, Any]) -> tuple[str, str]:
    """Post in the person's DM with the bot; (channel, ts). Raises what slack_sdk raises."""
    channel = client.conversations_open(users=user_id)["channel"]["id"]
    response = client.chat_postMessage(channel=channel, **message)
    return str(channel), str(response["ts"])


class SlackAnnouncer:
    """Implements `bot.service.StartAnnouncer`: in the requester's channel, else their DM."""

    def __init__(self, client: WebClient) -> None:
        self._client = client

    def announce(self, backup: Backup, actor: Actor) -> Announcement:
        message = blocks.backup_started(backup, actor.user_id)
        problem = NO_CHANNEL
        if actor.channel_id:
            try:
                response = self._client.chat_postMessage(channel=actor.channel_id, **message)
                return Announcement(actor.channel_id, str(response["ts"]))
            except SlackApiError as exc:
                problem = slack_error(exc)
            except (SlackClientError, OSError) as exc:
                problem = UNREACHABLE
                log.warning("cannot post backup %s in %s: %r", backup.id, actor.channel_id, exc)
            log.info("cannot post backup %s in %s: %s", backup.id, actor.channel_id, problem)
        try:
            channel, ts = post_to_dm(self._client, actor.user_id, message)
        except (SlackClientError, OSError) as exc:
            log.error("could not reach %s at all (DM failed: %s)", actor.user_id, slack_error(exc))
            return Announcement(None, None, problem)
        return Announcement(channel, ts, problem)


class SlackNotifier:
    """Implements `bot.watch.Notifier` with slack_sdk (whose retry handlers absorb rate limits)."""

    def __init__(self, client: WebClient) -> None:
        self._client = client

    def notify(self, finished: FinishedBackup, *, direct: bool = False) -> Delivery:
        note = "last try, by DM" if direct else ""
        if finished.channel_id and not direct:
            try:
                response = self._client.chat_postMessage(
                    channel=finished.channel_id,
                    thread_ts=finished.thread_ts,
                    **blocks.backup_finished(finished),
                )
                self._update_parent(finished)
                return Delivery(finished.channel_id, str(response["ts"]))
            except SlackApiError as exc:
                error = slack_error(exc)
                if error not in _UNPOSTABLE:
                    raise DeliveryFailed(error or "Slack error") from None
                note = f"sent by DM: {error} in {finished.channel_id}"
                log.info(
                    "backup %s: cannot reply in %s (%s)",
                    finished.backup_id,
                    finished.channel_id,
                    error,
                )
            except (SlackClientError, OSError) as exc:
                raise DeliveryFailed(type(exc).__name__) from None
        message = blocks.backup_finished(finished, via_dm=bool(finished.channel_id))
        try:
            channel, ts = post_to_dm(self._client, finished.requester_id, message)
        except (SlackClientError, OSError) as exc:
            raise DeliveryFailed(slack_error(exc)) from None
        return Delivery(channel, ts, note or "sent by DM")

    def _update_parent(self, finished: FinishedBackup) -> None:
        if not (finished.channel_id and finished.thread_ts and finished.update_parent):
            return
        try:
            self._client.chat_update(
                channel=finished.channel_id,
                ts=finished.thread_ts,
                **blocks.backup_started_final(finished),
            )
        except (SlackClientError, OSError) as exc:
            # The reply went out; a stale status line on the parent is not worth a retry loop.
            log.warning("could not update the parent of backup %s: %s", finished.backup_id, exc)


class SlackFiles:
    """Implements `bot.service.FileDelivery`: a file into the person's DM (files upload v2)."""

    def __init__(self, client: WebClient) -> None:
        self._client = client

    def send_file(self, actor: Actor, path: Path, filename: str, title: str) -> None:
        try:
            channel = self._client.conversations_open(users=actor.user_id)["channel"]["id"]
            self._client.files_upload_v2(
                channel=channel, file=str(path), filename=filename, title=title
            )
        except (SlackClientError, OSError) as exc:
            raise FileNotDelivered(slack_error(exc)) from None
