"""The Slack app in Socket Mode end to end: slack_sdk's own WebSocket client (through Bolt's
`SocketModeHandler`, as production runs it) against the Slack double's Socket Mode endpoint
(tests/socket_double.py), the simulator as the provider. No signing secret: Socket Mode needs
none."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.app import BackupBot, build_app
from bot.config import load_settings
from bot.db import upgrade
from bot.sandbox.slack import RecordedCall, RecordedResponse, SlackSender
from bot.sandbox.vps import Simulator
from bot.slack import blocks
from bot.slack.serving import SocketModeRunner
from bot.watch import WatchSettings
from tests.conftest import SIM_TOKEN
from tests.socket_double import SocketEnvelope, SocketModeDouble

FAST_WATCH = WatchSettings(first_poll=0.05, max_poll=0.2, tick=0.02, thread_grace=timedelta(0))
ACK_BUDGET = 3.0  # Slack's deadline for an ack
# Threads that outlive the runner by design: the bot's own pools (Bolt's listener executor, the
# work pool) and the servers' per-request threads (the provider client keeps connections alive).
NOT_THE_RUNNERS = ("bolt", "backupbot-work")


class SocketRig:
    def __init__(self, slack: SocketModeDouble, simulator: Simulator, database_url: str) -> None:
        self.slack, self.simulator = slack, simulator
        environ = {
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_APP_TOKEN": slack.app_token,
            "SLACK_API_URL": slack.api_url,
            "VPS_API_URL": simulator.base_url,
            "VPS_API_TOKEN": SIM_TOKEN,
            "VPS_TIMEOUT_SECONDS": "10",
            "DATABASE_URL": database_url,
            "BACKUP_OPERATORS": "U_ALICE",
        }
        self.settings = load_settings(environ=environ, env_file=None)
        assert self.settings.socket_mode and self.settings.slack_signing_secret is None
        if database_url.startswith("postgresql"):
            upgrade(database_url)  # the release step; the app only auto-upgrades SQLite
        self.bot: BackupBot = build_app(self.settings, socket_mode=True, watch_settings=FAST_WATCH)
        self.threads_before = set(threading.enumerate())
        assert self.settings.slack_app_token is not None
        self.runner = SocketModeRunner(self.bot.slack.app, self.settings.slack_app_token.reveal())
        self.runner.connect()
        self.runner_closed = False

    def close_runner(self) -> float:
        start = time.monotonic()
        if not self.runner_closed:
            self.runner_closed = True
            self.runner.close()
        return time.monotonic() - start

    def close(self) -> None:
        self.close_runner()
        self.bot.close()

    def command(
        self, text: str, user_id: str = "U_ALICE", channel_id: str = "C_OPS"
    ) -> tuple[SocketEnvelope, dict[str, Any], float]:
        """Send a slash command envelope; return it, the app's ack payload and the ack time."""
        start = time.monotonic()
        envelope = self.slack.socket_slash_command(text, user_id=user_id, channel_id=channel_id)
        ack = self.slack.socket_ack(envelope.envelope_id, timeout=ACK_BUDGET)
        return envelope, ack, time.monotonic() - start

    def answer(self, envelope: SocketEnvelope, timeout: float = 10.0) -> dict[str, Any]:
        """The body the app posted to the envelope's response_url."""
        url_id = envelope.response_url_id
        assert url_id is not None
        event = self.slack.wait_for(
            lambda e: isinstance(e, RecordedResponse) and e.url_id == url_id, timeout=timeout
        )
        assert isinstance(event, RecordedResponse) and event.ok, event
        return event.body

    def leftover_threads(self, timeout: float = 3.0) -> list[threading.Thread]:
        """Threads started since the runner was built that are still alive and not the bot's."""
        deadline = time.monotonic() + timeout
        while True:
            left = [
                t
                for t in threading.enumerate()
                if t not in self.threads_before
                and t.is_alive()
                and not t.name.startswith(NOT_THE_RUNNERS)
                and "process_request_thread" not in t.name
            ]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.02)


@pytest.fixture
def rig(slack: SocketModeDouble, simulator: Simulator, database_url: str) -> Iterator[SocketRig]:
    rig = SocketRig(slack, simulator, database_url)
    try:
        yield rig
    finally:
        rig.close()


def text_of(body: Any) -> str:
    return json.dumps(body, ensure_ascii=False)


def test_connects_with_the_app_token_then_acks_a_list_and_answers_it(rig: SocketRig) -> None:
    assert rig.slack.socket_connected(timeout=5)
    [call] = rig.slack.calls_to("apps.connections.open")
    assert call.ok and call.response["url"].startswith("ws://127.0.0.1:")
    # The double takes only its app-level token there, so the app sent SLACK_APP_TOKEN…
    with pytest.raises(SlackApiError) as refused:
        WebClient(base_url=rig.slack.api_url).apps_connections_open(app_token=rig.slack.bot_token)
    assert refused.value.response["error"] == "not_allowed_token_type"
    # …and no bot-token call was refused on the way (auth.test at start-up included).
    assert [c for c in rig.slack.calls if not c.ok and c.method != "apps.connections.open"] == []

    envelope, ack, elapsed = rig.command("list web-server-01")
    assert envelope.type == "slash_commands" and envelope.accepts_response_payload is True
    assert ack == {}, "expected a bare ack: the listing goes to the response_url"
    assert elapsed < ACK_BUDGET / 2, f"ack took {elapsed:.2f}s"
    body = rig.answer(envelope)
    assert body["response_type"] == "ephemeral"
    rows = [b["block_id"] for b in body["blocks"] if b.get("block_id", "").startswith("backup_")]
    expected = sorted(
        (b for b in rig.simulator._backups.values() if b.server_id == 12345),  # type: ignore[attr-defined]
        key=lambda b: b.created_at,
        reverse=True,
    )
    assert rows == [f"backup_{b.id}" for b in expected][: blocks.PAGE_SIZE]
    [shown] = [m for m in rig.slack.messages_in("C_OPS") if m.ephemeral]
    assert shown.visible_to == "U_ALICE" and shown.via == "response_url"


def test_acks_stay_fast_while_the_provider_is_slow(rig: SocketRig) -> None:
    rig.simulator.faults.latency = 1.0
    acks: list[float] = []

    def send() -> None:
        acks.append(rig.command("list web-server-01")[2])

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(acks) == 8 and max(acks) < 1.0, sorted(acks)  # none waited for the provider
    deadline = time.monotonic() + 10
    while len(rig.slack.responses) < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(rig.slack.responses) == 8 and all(r.ok for r in rig.slack.responses)


def test_create_posts_the_started_message_in_the_channel(rig: SocketRig) -> None:
    _, ack, elapsed = rig.command('create web-server-01 "before deploy"')
    assert ack == {} and elapsed < ACK_BUDGET / 2
    call = rig.slack.wait_for(
        lambda e: isinstance(e, RecordedCall) and e.method == "chat.postMessage", timeout=10
    )
    assert isinstance(call, RecordedCall) and call.ok
    assert call.args["channel"] == "C_OPS" and "started by <@U_ALICE>" in call.args["text"]
    created = [b for b in rig.simulator._backups.values() if b.description == "before deploy"]  # type: ignore[attr-defined]
    assert len(created) == 1


def test_next_button_pages_a_listing(rig: SocketRig) -> None:
    envelope, _, _ = rig.command("list")
    first = rig.answer(envelope)
    assert "page 1 of" in text_of(first)
    action = SlackSender.action_for(first["blocks"], f"{blocks.LIST_PAGE}_next")
    click = rig.slack.socket_block_actions(action, user_id="U_ALICE", channel_id="C_OPS")
    assert click.type == "interactive" and click.payload["type"] == "block_actions"
    assert click.accepts_response_payload is False
    start = time.monotonic()
    assert rig.slack.socket_ack(click.envelope_id, timeout=ACK_BUDGET) == {}
    assert time.monotonic() - start < ACK_BUDGET / 2
    second = rig.answer(click)
    assert second["replace_original"] is True and "page 2 of" in text_of(second)
    [listing] = [m for m in rig.slack.messages_in("C_OPS") if m.ephemeral]
    assert listing.updated == 1 and "page 2 of" in text_of(listing.blocks)


def test_reconnects_when_slack_asks_and_close_leaves_no_thread(rig: SocketRig) -> None:
    assert rig.slack.socket_connected(timeout=5)
    assert rig.slack.socket_disconnect("refresh_requested") == 1
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (
        rig.slack.socket_opened == 2 and rig.slack.socket_connections == 1
    ):
        time.sleep(0.02)
    assert len(rig.slack.calls_to("apps.connections.open")) == 2 and rig.slack.socket_opened == 2
    assert rig.slack.socket_connections == 1  # the app closed the old connection itself
    envelope, ack, _ = rig.command("list web-server-01")
    assert ack == {} and rig.answer(envelope)["response_type"] == "ephemeral"

    assert rig.leftover_threads(timeout=0), "the runner should have started threads"
    took = rig.close_runner()
    assert took < 5, f"runner.close() took {took:.2f}s"
    assert rig.slack.socket_disconnected(timeout=5)
    assert rig.leftover_threads() == []
    with pytest.raises(RuntimeError, match="no app is connected"):
        rig.slack.socket_send("events_api", {"type": "event_callback"})
