"""Approval cards in Slack: posted where approvers look, rewritten at each step, and their thread
told the story (implements `bot.approvals.ApprovalBoard`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

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
        posted = approval.__class__(**{**approval.__dict__, "card_channel_id": channel})
        try:
            self._client.chat_postMessage(
                channel=approval.channel_id, **approval_blocks.request_note(posted, link)
            )
        except (SlackClientError, OSError) as exc:
            log.info("approval %s: no note in %s (%s)", approval.id, approval.channel_id, exc)

    def update_card(self, approval: ApprovalFacts) -> None:
        if not (approval.card_channel_id and approval.card_ts):
            return
        try:
            self._client.chat_update(
                channel=approval.card_channel_id,
                ts=approval.card_ts,
                **approval_blocks.approval_card(approval, self._clock()),
            )
        except (SlackClientError, OSError) as exc:
            log.warning("approval %s: card not updated (%s)", approval.id, slack_error(exc))

    def tell_thread(self, approval: ApprovalFacts, step: Step) -> None:
        if not (approval.card_channel_id and approval.card_ts):
            return
        try:
            self._client.chat_postMessage(
                channel=approval.card_channel_id,
                thread_ts=approval.card_ts,
                **approval_blocks.step_message(approval, step),
            )
        except (SlackClientError, OSError) as exc:
            log.warning("approval %s: thread not told (%s)", approval.id, slack_error(exc))
