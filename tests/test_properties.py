"""Property-based tests (hypothesis): the `/backup` parser, and every payload handler of the real
app reached through signed HTTP requests, over arbitrary Unicode, long input and Slack's escapes.
Never an exception, never a 5xx, never a traceback in chat: always a command, a command's result
or a specific error.

Examples are few (a `settings` profile, `HYPOTHESIS_PROFILE=thorough` for more): each handler
example is a real request through waitress and Bolt, and the whole file stays well under a minute.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.sandbox.slack import RecordedCall, RecordedResponse, SlackDouble
from bot.sandbox.vps import Simulator
from bot.slack import approval_blocks, blocks
from bot.slack.parser import (
    AuditCommand,
    AuditExportCommand,
    CreateCommand,
    DeleteCommand,
    HelpCommand,
    ListCommand,
    ParseError,
    RestoreCommand,
    parse,
)
from tests.test_approvals import ApprovalRig
from tests.test_slack_app import SECRET, rigs_of

settings.register_profile(
    "fast",
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples every run: CI is not where a new one should turn up
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "fast")

COMMANDS = (
    HelpCommand,
    ListCommand,
    CreateCommand,
    DeleteCommand,
    RestoreCommand,
    AuditCommand,
    AuditExportCommand,
)
UNEXPECTED = "Something went wrong on our side"

# -- what people type, and what Slack does to it -------------------------------------------------

SLACK_ESCAPES = st.sampled_from(
    [
        "&amp;", "&lt;", "&gt;", "&amp;lt;", "&", "<", ">", "<@U123|name>", "<@U123>", "<@W9>",
        "<#C123>", "<#C123|ops>", "<!here>", "<!subteam^S1|@ops>", "<http://web-01|web-01>",
        "<mailto:a@b.c|a@b.c>", "<>", "<@>", "<<@U1>>", "\u201cq\u201d", "\u2018q\u2019",
        '"', "'", "`", "*bold*", ":emoji:", "\u200b", "\ufeff", "\x00", "\r\n", "\t",
    ]
)  # fmt: skip
WORDS = st.sampled_from(
    [
        "list", "create", "delete", "restore", "audit", "export", "help", "public", "manual",
        "automatic", "web-server-01", "12345", "0", "-1", "99999999999999999999999", "1e3",
        "server:", "action:", "outcome:", "approval:", "since:", "format:", "7d", "jsonl",
        "server:web-server-01", "since:99999999999d", "approval:#1",
    ]
)  # fmt: skip
PIECES = st.one_of(WORDS, SLACK_ESCAPES, st.text(max_size=12), st.just(" "))
COMMAND_TEXT = st.one_of(
    st.lists(PIECES, max_size=12).map(" ".join),
    st.lists(PIECES, max_size=12).map("".join),
    st.text(max_size=200),  # any Unicode at all
    st.text(min_size=2000, max_size=6000, alphabet=st.characters(codec="utf-8")),  # long
    st.tuples(WORDS, st.text(min_size=500, max_size=4000)).map(" ".join),
)


# -- the parser -----------------------------------------------------------------------------------


@settings(settings.get_profile(PROFILE), max_examples=400 if PROFILE == "fast" else 5000)
@given(text=COMMAND_TEXT)
def test_the_parser_gives_a_command_or_a_specific_error_for_any_text(text: str) -> None:
    try:
        command = parse(text)
    except ParseError as error:
        assert error.message.strip() and error.usage.startswith("/backup ")
        assert "<" not in error.message, error.message  # no Slack markup echoed as markup
        assert "Traceback" not in error.message and "\n" not in error.message.strip()
        assert len(error.message) < 600, len(error.message)  # what was typed is shortened
    else:
        assert isinstance(command, COMMANDS)


# -- the handlers, through the real app ------------------------------------------------------------


class HandlerRig(ApprovalRig):
    """The app with approvals, a seeded provider and an auditor, for arbitrary requests."""

    def __init__(self, slack: SlackDouble, simulator: Simulator, database_url: str, **env: str):
        super().__init__(slack, simulator, database_url, BACKUP_AUDITORS="U_ALICE", **env)
        self.bot.service.answer_within = 3.0
        self.bot.vps.reconcile_delay = 0.05

    def answered(self, url_id: str, since: int, timeout: float = 6.0) -> list[str]:
        """Wait until the request whose response_url is `url_id` has had its say (a post to
        that URL, or a message of the bot's); every text the bot said since event `since`."""

        def theirs(event: Any) -> bool:
            if isinstance(event, RecordedResponse):
                return event.url_id == url_id and "Waiting for the provider" not in str(event.body)
            return isinstance(event, RecordedCall) and event.method in (
                "chat.postMessage",
                "chat.postEphemeral",
                "files.completeUploadExternal",
            )

        self.slack.wait_for(lambda e: theirs(e) and self.slack.events.index(e) >= since, timeout)
        time.sleep(0.05)  # what the same job says next (a card, then its note)
        return said_since(self.slack, since)


def said_since(slack: SlackDouble, since: int) -> list[str]:
    texts = []
    for event in slack.events[since:]:
        if isinstance(event, RecordedResponse):
            texts.append(json.dumps(event.body, ensure_ascii=False))
        elif isinstance(event, RecordedCall) and event.method.startswith(("chat.", "views.")):
            texts.append(json.dumps(event.args, ensure_ascii=False))
    return texts


def no_failure_in(texts: list[str]) -> None:
    for text in texts:
        assert "Traceback" not in text and UNEXPECTED not in text, text


@pytest.fixture
def handler_rig(
    slack: SlackDouble, simulator: Simulator, database_url: str, caplog: pytest.LogCaptureFixture
) -> Iterator[HandlerRig]:
    slack.add_user("U_DAVE", "dave", real_name="Dave Diaz")
    caplog.set_level(logging.WARNING)
    factory = rigs_of(HandlerRig, slack, simulator, database_url)
    rig = next(factory)(RESTORE_SAFETY_BACKUP="false")
    try:
        yield rig
    finally:
        next(factory, None)
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith("bot")
    ]
    assert errors == [], errors  # nothing failed unexpectedly, even where the person is told


USERS = st.sampled_from(["U_ALICE", "U_BOB", "U_CAROL", "U_NOBODY"])


@settings(settings.get_profile(PROFILE))
@given(text=COMMAND_TEXT, user=USERS)
def test_any_slash_command_is_answered_with_a_result_or_a_specific_error(
    handler_rig: HandlerRig, text: str, user: str
) -> None:
    rig = handler_rig
    since = len(rig.slack.events)
    ack = rig.sender.slash_command(text, user_id=user)
    assert ack.status == 200, (ack.status, ack.text)
    if ack.text.strip():  # answered in the ack: help, or what is wrong with the text
        body = ack.json()
        assert body.get("blocks") and "Traceback" not in ack.text
        assert ("⚠️" in body["text"]) == (not isinstance(_parsed(text), COMMANDS)), body["text"]
    else:
        assert rig.sender.last_response_url is not None
        url_id = rig.sender.last_response_url.rsplit("/", 1)[-1]
        no_failure_in(rig.answered(url_id, since))


def _parsed(text: str) -> object:
    try:
        return parse(text)
    except ParseError as error:
        return error


ACTION_IDS = st.sampled_from(
    [
        f"{blocks.LIST_PAGE}_next", f"{blocks.LIST_PAGE}_prev", f"{blocks.HELP_LIST}_all",
        blocks.BACKUP_MENU, blocks.DELETE_CONFIRM, blocks.DELETE_CANCEL,
        f"{blocks.AUDIT_PAGE}_older", approval_blocks.APPROVE, approval_blocks.REJECT,
        approval_blocks.CANCEL, "no_such_action",
    ]
)  # fmt: skip
VALUES = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["1", "1000", "101:12345", "delete:101", "restore:101", "0", "-5", "1" * 40]),
    st.builds(lambda *p: ":".join(p), st.text(max_size=8), st.text(max_size=8)),
    st.text(min_size=2000, max_size=3000),
)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(settings.get_profile(PROFILE))
@given(
    action_id=ACTION_IDS,
    value=VALUES,
    block_id=st.text(max_size=40),
    user=USERS,
    selected=st.booleans(),
    extra=JSONISH,
)
def test_any_button_or_menu_click_is_acked_and_never_fails(
    handler_rig: HandlerRig,
    action_id: str,
    value: str,
    block_id: str,
    user: str,
    selected: bool,
    extra: Any,
) -> None:
    rig = handler_rig
    since = len(rig.slack.events)
    action: dict[str, Any] = {
        "action_id": action_id,
        "block_id": block_id,
        "type": "overflow" if selected else "button",
        "action_ts": f"{time.time():.6f}",
        "extra": extra,
    }
    if selected:
        action["selected_option"] = {"text": {"type": "plain_text", "text": "x"}, "value": value}
    else:
        action["value"] = value
    answer = rig.sender.block_actions(action, user_id=user, channel_id="C_OPS")
    assert answer.status == 200, (answer.status, answer.text)
    time.sleep(0.15)  # the work it started, if any, has its say
    no_failure_in(said_since(rig.slack, since))


@settings(settings.get_profile(PROFILE))
@given(metadata=st.one_of(st.text(max_size=30), st.integers().map(str)), typed=st.text(max_size=80))
def test_any_approval_form_submission_is_answered_within_the_protocol(
    handler_rig: HandlerRig, metadata: str, typed: str
) -> None:
    rig = handler_rig
    view = {
        "type": "modal",
        "callback_id": approval_blocks.CONFIRM_MODAL,
        "private_metadata": metadata,
        "blocks": [],
    }
    values = {approval_blocks.CONFIRM_BLOCK: {approval_blocks.CONFIRM_INPUT: typed}}
    answer = rig.sender.view_submission(view, user_id="U_BOB", values=values)
    assert answer.status == 200, (answer.status, answer.text)
    if answer.text.strip():
        body = answer.json()
        assert body.get("response_action") == "errors" and body.get("errors"), body
    assert rig.simulator.restores == []  # no approval exists: nothing can be restored


EVENT_TYPES = st.sampled_from(["app_home_opened", "message", "app_mention", "", "x" * 300])


@settings(settings.get_profile(PROFILE))
@given(
    kind=EVENT_TYPES,
    user=st.one_of(USERS, st.text(max_size=20), st.none()),
    tab=st.one_of(st.sampled_from(["home", "messages"]), st.text(max_size=10), st.none()),
    event_id=st.text(min_size=1, max_size=20),
)
def test_any_event_is_acked_and_never_fails(
    handler_rig: HandlerRig, kind: str, user: str | None, tab: str | None, event_id: str
) -> None:
    rig = handler_rig
    since = len(rig.slack.events)
    envelope = {
        "type": "event_callback",
        "team_id": "T111",
        "api_app_id": "A111",
        "event_id": f"Ev{event_id}{time.monotonic_ns()}",
        "event_time": int(time.time()),
        "event": {"type": kind, "user": user, "tab": tab},
    }
    answer = rig.sender.post(json.dumps(envelope), "application/json")
    # The manifest subscribes to app_home_opened alone; Bolt answers 404 to any other (Slack
    # never sends one). Never a 5xx.
    wanted = 200 if kind == "app_home_opened" else 404
    assert answer.status == wanted, (answer.status, answer.text)
    time.sleep(0.1)
    no_failure_in(said_since(rig.slack, since))


@settings(settings.get_profile(PROFILE))
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(str.encode),
        JSONISH.map(lambda v: urlencode({"payload": json.dumps(v)}).encode()),
        JSONISH.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=6).map(
            lambda d: urlencode(d).encode()
        ),
    ),
    json_type=st.booleans(),
)
def test_any_signed_body_is_refused_or_handled_never_a_5xx(
    handler_rig: HandlerRig, body: bytes, json_type: bool
) -> None:
    rig = handler_rig
    before = len(rig.simulator.api_calls("POST")) + len(rig.simulator.api_calls("DELETE"))
    content_type = "application/json" if json_type else "application/x-www-form-urlencoded"
    try:
        answer = rig.sender.post(body, content_type)
    except UnicodeDecodeError:  # slack_sdk signs text: a body that is not UTF-8, signed by hand
        answer = _post_signed_bytes(rig, body, content_type)
    assert answer.status in (200, 400, 401, 404), (answer.status, answer.text)
    after = len(rig.simulator.api_calls("POST")) + len(rig.simulator.api_calls("DELETE"))
    assert after == before  # nothing that changes anything came from noise


def _post_signed_bytes(rig: HandlerRig, body: bytes, content_type: str) -> Any:
    stamp = str(int(time.time()))
    mac = hmac.new(SECRET.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    return rig.sender.post(body, content_type, stamp, f"v0={mac}")
