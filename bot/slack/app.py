"""The Slack side of the bot, built once: the Web API client, the directory, the bot's voice, and
the Bolt app whose listeners call the use-cases. `bot.app` wires it to the rest."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from slack_bolt import App
from slack_bolt.error import BoltError
from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)

from bot.approvals import RestoreApprovals
from bot.audit import Checkpoint
from bot.config import Settings
from bot.service import BackupService
from bot.slack import blocks
from bot.slack.board import SlackApprovalBoard
from bot.slack.directory import SlackDirectory
from bot.slack.edge import SlackEdge, WorkPool
from bot.slack.listeners import register_listeners
from bot.slack.notify import SlackAnnouncer, SlackNotifier

# Bolt's listener threads only parse and ack; the slow half runs on the work pool, whose size
# and queue are settings (WORK_THREADS, WORK_QUEUE_LIMIT; see bot/slack/edge.py).
LISTENER_THREADS = 8


def web_client(settings: Settings) -> WebClient:
    """slack_sdk's client on SLACK_API_URL, retrying connection errors and rate limits."""
    token = settings.slack_bot_token.reveal() if settings.slack_bot_token else None
    return WebClient(
        token=token,
        base_url=settings.slack_api_url,
        timeout=15,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=2),
            RateLimitErrorRetryHandler(max_retry_count=3),
        ],
    )


class SlackUnavailable(Exception):
    """The app cannot start: Slack refused the bot token or could not be reached."""


class SlackConnection:
    """The Web API client and what speaks through it, before the app exists (the use-cases and
    the watcher need the announcer, the notifier and the directory)."""

    def __init__(self, settings: Settings, client: WebClient | None = None) -> None:
        self.client = client or web_client(settings)
        self.directory = SlackDirectory(self.client)
        self.announcer = SlackAnnouncer(self.client)
        self.notifier = SlackNotifier(self.client)
        self.board = SlackApprovalBoard(self.client)

    def checkpoint_poster(self, channel_id: str) -> Callable[[Checkpoint], None]:
        """Posts each signed audit checkpoint in AUDIT_CHANNEL: a copy kept apart from the rows."""

        def post(checkpoint: Checkpoint) -> None:
            self.client.chat_postMessage(channel=channel_id, **blocks.checkpoint(checkpoint))

        return post


@dataclass
class SlackApp:
    """The Bolt app and the two thread pools it runs on; `close()` drains both."""

    app: App
    edge: SlackEdge
    listener_pool: ThreadPoolExecutor

    def close(self) -> None:
        self.listener_pool.shutdown(wait=True, cancel_futures=False)
        self.edge.urgent.shutdown(wait=True, cancel_futures=False)
        self.edge.pool.shutdown(wait=True, cancel_futures=False)


def build_slack_app(
    settings: Settings,
    slack: SlackConnection,
    service: BackupService,
    approvals: RestoreApprovals,
    *,
    socket_mode: bool,
    verify_token: bool = True,
) -> SlackApp:
    edge = SlackEdge(
        service=service,
        approvals=approvals,
        directory=slack.directory,
        client=slack.client,
        pool=WorkPool(settings.work_threads, settings.work_queue_limit),
    )
    signing_secret = settings.slack_signing_secret.reveal() if settings.slack_signing_secret else ""
    listener_pool = ThreadPoolExecutor(LISTENER_THREADS, thread_name_prefix="bolt")
    try:
        app = App(  # with verify_token, Bolt calls auth.test here
            client=slack.client,
            signing_secret=signing_secret,
            request_verification_enabled=not socket_mode,
            token_verification_enabled=verify_token,
            listener_executor=listener_pool,
        )
    except BoltError:
        raise SlackUnavailable(
            "Slack did not accept SLACK_BOT_TOKEN (auth.test failed): check the bot token "
            "on your Slack app's OAuth & Permissions page"
        ) from None
    except (SlackClientError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise SlackUnavailable(
            f"cannot reach Slack at {settings.slack_api_url}: {reason}"
        ) from None
    register_listeners(app, edge)
    return SlackApp(app, edge, listener_pool)
