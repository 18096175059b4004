"""Health alerts, their recovery replies and the daily digest, posted in Slack (implements
`bot.health.HealthPoster`).

Each is posted at most once (see `bot.health`), so this client never sends a message twice by
itself: unlike the bot's shared client it does not retry after a connection error (the request
may have reached Slack), only after a 429 (which Slack did not act on). What it raises tells the
caller whether Slack certainly refused (`NotPosted`, may be tried again; `final` when trying again
cannot help) or may have taken it (`unclear`: never sent again).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.error import URLError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bot.health import Alert, Digest, NotPosted, Posted
from bot.slack import health_blocks
from bot.slack.notify import slack_error

log = logging.getLogger(__name__)

# Refusals that trying again will not change: the channel is not postable for us.
FINAL_ERRORS = frozenset(
    {
        "not_in_channel",
        "channel_not_found",
        "is_archived",
        "restricted_action",
        "thread_not_found",
        "cannot_reply_to_message",
        "invalid_auth",
        "account_inactive",
        "missing_scope",
    }
)


class SlackHealthPoster:
    def __init__(self, client: WebClient) -> None:
        # Same token and Slack, without the shared client's retries after connection errors.
        self._client = WebClient(
            token=client.token,
            base_url=client.base_url,
            timeout=client.timeout,
            retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=3)],
        )

    def post_alert(self, channel_id: str, alert: Alert) -> Posted:
        return self._post(channel_id, health_blocks.alert_message(alert))

    def post_recovery(self, alert: Alert) -> Posted:
        incident = alert.incident
        if not (incident.alert_channel_id and incident.alert_ts):
            raise NotPosted("no alert thread", final=True)
        return self._post(
            incident.alert_channel_id,
            health_blocks.recovery_message(alert),
            thread_ts=incident.alert_ts,
        )

    def post_digest(self, channel_id: str, digest: Digest) -> Posted:
        return self._post(channel_id, health_blocks.digest_message(digest))

    def _post(self, channel_id: str, message: dict[str, Any], **extra: Any) -> Posted:
        try:
            response = self._client.chat_postMessage(channel=channel_id, **message, **extra)
        except SlackApiError as exc:
            error = slack_error(exc)
            # Slack answered: it refused. A 5xx may come from a proxy that passed it on.
            if exc.response.status_code >= 500:
                raise NotPosted(
                    f"Slack answered {exc.response.status_code}", unclear=True
                ) from None
            raise NotPosted(error, final=error in FINAL_ERRORS) from None
        except URLError as exc:
            if isinstance(exc.reason, ConnectionRefusedError):
                raise NotPosted("Slack could not be reached") from None
            raise NotPosted(
                f"no answer from Slack ({type(exc.reason).__name__})", unclear=True
            ) from None
        except (SlackClientError, OSError) as exc:
            if isinstance(exc, ConnectionRefusedError):
                raise NotPosted("Slack could not be reached") from None
            raise NotPosted(f"no answer from Slack ({type(exc).__name__})", unclear=True) from None
        return Posted(str(response.get("channel") or channel_id), str(response["ts"]))
