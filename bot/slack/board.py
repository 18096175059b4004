"""Approval cards in Slack: posted where approvers look, rewritten at each step, and their thread
told the story (implements `bot.approvals.ApprovalBoard`)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.approvals import ApprovalFacts, CardNotPosted, Step
from bot.slack import approval_blocks
from bot.slack.notify import UNREACHABLE, slack_error

log = logging.getLogger(__name__)


class SlackApprovalBoard:
    def __init__(
        self, client: WebClient, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._client = client
        self._clock = clock

    def post_card(self, approval: ApprovalFacts, channel_id: str) -> tuple[str, str]:
        message = approval_blocks.approval_card(approval, self._clock())
        try:
            response = self._client.chat_postMessage(channel=channel_id, **message)
        except SlackApiError as exc:
            raise CardNotPosted(slack_error(exc)) from None
        except (SlackClientError, OSError):
            raise CardNotPosted(UNREACHABLE) from None
        channel, ts = str(response["channel"]), str(response["ts"])
        if approval.channel_id and approval.channel_id != channel:
            self._leave_note(approval, channel, ts)
        return channel, ts

    def _leave_note(self, approval: ApprovalFacts, channel: str, ts: str) -> None:
        """Where the restore was asked, a word that the card is in the approvals channel."""
        assert approval.channel_id is not None
        try:
            link = self._client.chat_getPermalink(channel=channel, message_ts=ts)["permalink"]
        except (SlackClientError, OSError, KeyError) as exc:
            log.info("no permalink for approval %s: %s", approval.id, slack_error(exc))
            link = None
        posted = dataclasses.replace(approval, card_channel_id=channel)
        try:
            self._client.chat_postMessage(
                channel=approval.channel_id, **approval_blocks.request_note(posted, link)
            )
        except (SlackClientError, OSError) as exc:
            log.info("approval %s: no note in %s (%s)", approval.id, approval.channel_id, exc)

    def update_card(self, approval: ApprovalFacts) -> None:
        card = approval_blocks.approval_card(approval, self._clock())
        self._at_card(approval, "card not updated", self._client.chat_update, ts=True, **card)

    def tell_thread(self, approval: ApprovalFacts, step: Step) -> None:
        reply = approval_blocks.step_message(approval, step)
        self._at_card(approval, "thread not told", self._client.chat_postMessage, **reply)

    def _at_card(
        self,
        approval: ApprovalFacts,
        failure: str,
        method: Callable[..., Any],
        ts: bool = False,
        **message: Any,
    ) -> None:
        """`chat.update` of the card (`ts`), or a `chat.postMessage` in its thread. A card that
        lags behind is logged, not retried: the step itself is recorded already."""
        if not (approval.card_channel_id and approval.card_ts):
            return
        where = {"ts": approval.card_ts} if ts else {"thread_ts": approval.card_ts}
        try:
            method(channel=approval.card_channel_id, **where, **message)
        except (SlackClientError, OSError) as exc:
            log.warning("approval %s: %s (%s)", approval.id, failure, slack_error(exc))
