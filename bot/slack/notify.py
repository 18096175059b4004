"""The watcher's voice in Slack: the thread reply when a backup finishes, the parent's update."""

from __future__ import annotations

import logging

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.db import WatchJob
from bot.slack import blocks
from bot.watch import Delivery, DeliveryFailed

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


class SlackNotifier:
    """Implements `bot.watch.Notifier` with slack_sdk (whose retry handlers absorb rate limits)."""

    def __init__(self, client: WebClient) -> None:
        self._client = client

    def notify(self, job: WatchJob, *, direct: bool = False) -> Delivery:
        message = blocks.backup_finished(job)
        note = "last try, by DM" if direct else ""
        if job.channel_id and not direct:
            try:
                response = self._client.chat_postMessage(
                    channel=job.channel_id, thread_ts=job.thread_ts, **message
                )
                self._update_parent(job)
                return Delivery(job.channel_id, str(response["ts"]))
            except SlackApiError as exc:
                error = str(exc.response.get("error", ""))
                if error not in _UNPOSTABLE:
                    raise DeliveryFailed(error or "Slack error") from None
                note = f"sent by DM: {error} in {job.channel_id}"
                log.info("backup %s: cannot reply in %s (%s)", job.backup_id, job.channel_id, error)
            except (SlackClientError, OSError) as exc:
                raise DeliveryFailed(type(exc).__name__) from None
        try:
            dm = self._client.conversations_open(users=job.requester_id)["channel"]["id"]
            response = self._client.chat_postMessage(
                channel=dm, **blocks.backup_finished(job, via_dm=bool(job.channel_id))
            )
        except SlackApiError as exc:
            raise DeliveryFailed(str(exc.response.get("error", "Slack error"))) from None
        except (SlackClientError, OSError) as exc:
            raise DeliveryFailed(type(exc).__name__) from None
        return Delivery(dm, str(response["ts"]), note or "sent by DM")

    def _update_parent(self, job: WatchJob) -> None:
        if not (job.channel_id and job.thread_ts):
            return
        try:
            self._client.chat_update(
                channel=job.channel_id, ts=job.thread_ts, **blocks.backup_started_final(job)
            )
        except (SlackApiError, SlackClientError, OSError) as exc:
            # The reply went out; a stale status line on the parent is not worth a retry loop.
            log.warning("could not update the parent of backup %s: %s", job.backup_id, exc)
