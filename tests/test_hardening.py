"""The hardening issue, end to end: signed requests over real HTTP to the app (waitress + Bolt), the
Slack double recording what the person sees, the simulator as the provider counting its calls, and
the audit table. Each test names the behaviour it holds the app to."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import unicodedata
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from sqlalchemy import func, select

from bot.db import AuditEvent, SeenRequest, WatchJob
from bot.sandbox.slack import RecordedCall, RecordedResponse, Response, SlackDouble, SlackSender
from bot.sandbox.vps import FAILED_BACKUP_ERROR, Simulator
from bot.slack import blocks
from bot.watch import WatchSettings
from tests.test_slack_app import AppRig, rigs_of, text_of

WAITING_NOTICE = "⏳ Waiting for the provider to answer…"
ACK_LIMIT = 3.0  # Slack's: an ack later than this is an error shown to the person
# Every message body the app posted during this module's tests (the wording checks at the end).
POSTED: list[dict[str, Any]] = []


# -- the rig --------------------------------------------------------------------------------------


class Rig(AppRig):
    """`AppRig` with short budgets, timed acks, and the ack bodies kept for the wording checks."""

    def __init__(
        self, slack: SlackDouble, simulator: Simulator, database_url: str, **env: str
    ) -> None:
        super().__init__(slack, simulator, database_url, **env)
        self.bot.vps.reconcile_delay = 0.05
        self.acks: list[dict[str, Any]] = []

    def send(
        self, text: str, user_id: str = "U_ALICE", channel_id: str = "C_OPS"
    ) -> tuple[Response, float, str]:
        """A slash command: (the ack, how long it took, the id of its response_url)."""
        start = time.monotonic()
        ack = self.sender.slash_command(text, user_id=user_id, channel_id=channel_id)
        elapsed = time.monotonic() - start
        self._keep(ack)
        assert self.sender.last_response_url is not None
        return ack, elapsed, url_id(self.sender.last_response_url)

    def command(self, text: str, user_id: str = "U_ALICE", channel_id: str = "C_OPS") -> Any:
        ack, elapsed, _ = self.send(text, user_id, channel_id)
        assert ack.status == 200, ack.text
        assert elapsed < ACK_LIMIT, f"ack of {text!r} took {elapsed:.2f} s"
        return ack

    def run(self, text: str, user_id: str = "U_ALICE", channel_id: str = "C_OPS") -> Any:
        """A command answered through its response_url: that answer's body."""
        ack, elapsed, response_url = self.send(text, user_id, channel_id)
        assert ack.status == 200 and ack.text == "", (ack.status, ack.text)
        assert elapsed < ACK_LIMIT, f"ack of {text!r} took {elapsed:.2f} s"
        return self.answer(response_url).body

    def click(
        self,
        message_body: dict[str, Any],
        action_id: str,
        value: str | None = None,
        user_id: str = "U_ALICE",
    ) -> Any:
        """Use a control of a message; the answer posted to the click's response_url."""
        action = SlackSender.action_for(message_body["blocks"], action_id, value)
        response, elapsed, response_url = self.click_action(action, user_id)
        assert response.status == 200 and elapsed < ACK_LIMIT, (response.status, elapsed)
        return self.answer(response_url).body

    def answer(self, response_url_id: str, timeout: float = 10.0) -> RecordedResponse:
        """The first post to that response_url that is not the "waiting" notice."""

        def wanted(event: Any) -> bool:
            return (
                isinstance(event, RecordedResponse)
                and event.url_id == response_url_id
                and WAITING_NOTICE not in event.body.get("text", "")
            )

        return self.slack.wait_for(wanted, timeout=timeout)  # type: ignore[return-value]

    def click_action(
        self, action: dict[str, Any], user_id: str = "U_ALICE"
    ) -> tuple[Response, float, str]:
        start = time.monotonic()
        response = self.sender.block_actions(action, user_id=user_id, channel_id="C_OPS")
        elapsed = time.monotonic() - start
        assert self.sender.last_response_url is not None
        return response, elapsed, url_id(self.sender.last_response_url)

    def started(self, description: str, timeout: float = 10.0) -> RecordedCall:
        """The "backup N … started by" message of the backup with this description."""

        def wanted(event: Any) -> bool:
            return (
                isinstance(event, RecordedCall)
                and event.method == "chat.postMessage"
                and event.ok
                and "started by" in event.args.get("text", "")
                and "thread_ts" not in event.args
                and _described(event.args, description)
            )

        return self.slack.wait_for(wanted, timeout=timeout)  # type: ignore[return-value]

    def thread_reply(self, ts: str, timeout: float = 10.0) -> RecordedCall:
        def wanted(event: Any) -> bool:
            return (
                isinstance(event, RecordedCall)
                and event.method == "chat.postMessage"
                and event.args.get("thread_ts") == ts
            )

        return self.slack.wait_for(wanted, timeout=timeout)  # type: ignore[return-value]

    def backups_described(self, description: str) -> list[Any]:
        return [
            b
            for b in self.simulator._backups.values()  # type: ignore[attr-defined]
            if b.description == description
        ]

    def rows(self, action: str) -> list[AuditEvent]:
        with self.bot.sessions() as session:
            query = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            return list(session.scalars(query))

    def _keep(self, ack: Response) -> None:
        if ack.text.strip():
            try:
                body = ack.json()
            except ValueError:
                return
            if isinstance(body, dict):
                self.acks.append(body)


def url_id(url: str) -> str:
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


def _described(args: dict[str, Any], description: str) -> bool:
    return any(
        element.get("type") == "plain_text" and element.get("text") == description
        for block in args.get("blocks") or []
        if block.get("type") == "context"
        for element in block.get("elements") or []
    )


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def posted_by_the_app(slack: SlackDouble) -> list[dict[str, Any]]:
    """Every message the app posted: response_url bodies and Web API messages and views."""
    bodies = [dict(r.body) for r in slack.responses]
    for call in slack.calls:
        if call.method in ("chat.postMessage", "chat.postEphemeral", "chat.update"):
            bodies.append(dict(call.args))
        elif call.method == "views.publish" and isinstance(call.args.get("view"), dict):
            bodies.append(dict(call.args["view"]))
    return bodies


@pytest.fixture
def make_rig(
    slack: SlackDouble, simulator: Simulator, database_url: str
) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []
    factory = rigs_of(Rig, slack, simulator, database_url)
    make = next(factory)

    def tracked(**env: str) -> Rig:
        rig = make(**env)
        rigs.append(rig)
        return rig

    try:
        yield tracked
    finally:
        next(factory, None)  # closes every rig
        POSTED.extend(posted_by_the_app(slack))
        for rig in rigs:
            POSTED.extend(rig.acks)


@pytest.fixture
def rig(make_rig: Callable[..., Rig]) -> Rig:
    return make_rig()


def _completed_backup(rig: Rig, server_id: int = 12346, description: str = "old one") -> int:
    return int(rig.simulator.add_backup(server_id, size_mb=2048, description=description)["id"])


def _no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert "Traceback" not in caplog.text
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


# -- 1. a create is never sent twice --------------------------------------------------------------

AMBIGUOUS_CREATE: dict[str, dict[str, Any]] = {
    "500": {"status": 500},
    "502": {"status": 502},
    "503": {"status": 503},
    "504": {"status": 504},
    "read-timeout": {"hang": 3.0, "status": 504},  # the client gives up after 1 s
    "2xx-not-a-backup": {"status": 201, "body": {"detail": "queued"}},
    "2xx-not-json": {"status": 200, "body": "<html>OK</html>"},
}


@pytest.mark.parametrize("case", list(AMBIGUOUS_CREATE))
def test_an_unclear_create_is_posted_once_then_looked_for_and_reported_unconfirmed(
    make_rig: Callable[..., Rig], case: str
) -> None:
    rig = make_rig(VPS_TIMEOUT_SECONDS="1")
    sim = rig.simulator
    fault = AMBIGUOUS_CREATE[case]
    sim.inject(method="POST", path="/backups/", **fault)
    ack, elapsed, response_url = rig.send('create web-server-01 "nightly"')
    assert ack.status == 200 and ack.text == "" and elapsed < ACK_LIMIT

    answer = text_of(rig.answer(response_url, timeout=15).body)
    assert "did not confirm" in answer
    assert "before trying again" in answer
    assert "`/backup list 12345`" in answer

    [post] = sim.api_calls("POST", "/backups/")  # exactly one POST reached the provider
    looked = [
        c
        for c in sim.api_calls("GET", "/backups/")
        if c.at > post.at and c.query.get("server_id") == "12345"
    ]
    assert looked, "the client did not list the server's backups after the unclear POST"
    assert rig.backups_described("nightly") == []
    assert rig.slack.calls_to("chat.postMessage") == []  # no "started" message for a guess

    [row] = rig.audit("create", "error")
    assert row.server_id == 12345 and row.actor_user_id == "U_ALICE"
    assert [r.id for r in rig.rows("create")] == [row.id]
    status = fault["status"]
    if status >= 500 and "hang" not in fault:  # the provider answered 5xx: the row says so
        assert str(status) in row.detail
        assert row.provider_status == status, "the audit row lost the provider's answer"


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"status": 502, "after_processing": True}, id="502-after-creating"),
        pytest.param({"hang": 2.5, "after_processing": True}, id="timeout-after-creating"),
    ],
)
def test_a_create_the_provider_carried_out_despite_an_error_is_found_not_repeated(
    make_rig: Callable[..., Rig], fault: dict[str, Any]
) -> None:
    rig = make_rig(VPS_TIMEOUT_SECONDS="1")
    rig.simulator.inject(method="POST", path="/backups/", **fault)
    rig.command('create web-server-01 "landed anyway"')
    started = rig.started("landed anyway", timeout=15)
    [created] = rig.backups_described("landed anyway")
    assert f"*{created.id}*" in text_of(started.args)
    assert len(rig.simulator.api_calls("POST", "/backups/")) == 1
    [row] = rig.audit("create", "ok")
    assert row.backup_id == created.id and row.server_id == 12345
    assert [r.id for r in rig.rows("create")] == [row.id]
    time.sleep(0.2)
    assert not any("did not confirm" in text_of(r.body) for r in rig.slack.responses)


def test_a_rate_limited_create_may_be_sent_again_and_makes_one_backup(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.simulator.inject(method="POST", path="/backups/", status=429, headers={"Retry-After": "1"})
    rig.command('create web-server-01 "after a 429"')
    rig.started("after a 429", timeout=15)
    assert len(rig.simulator.api_calls("POST", "/backups/")) == 2
    assert len(rig.backups_described("after a 429")) == 1
    assert len(rig.audit("create", "ok")) == 1


# -- 2. the time budget ---------------------------------------------------------------------------


def test_a_hanging_provider_gets_a_waiting_notice_then_an_answer_within_the_budget(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(VPS_TIMEOUT_SECONDS="30")
    budget = 4.5
    rig.bot.service.answer_within = budget
    rig.simulator.inject(method="GET", path="/backups/", hang=30, count=20)
    sent = time.time()
    ack, elapsed, response_url = rig.send("list web-server-01")
    assert ack.status == 200 and elapsed < ACK_LIMIT

    def to_this_url(event: Any) -> bool:
        return isinstance(event, RecordedResponse) and event.url_id == response_url

    notice = rig.slack.wait_for(to_this_url, timeout=budget + 2)
    assert isinstance(notice, RecordedResponse)
    assert WAITING_NOTICE in notice.body["text"]
    assert 2.5 <= notice.at - sent <= 4.0, notice.at - sent

    answer = rig.answer(response_url, timeout=budget + 3)
    assert answer.at - sent <= budget + 1.5, f"answered after {answer.at - sent:.1f} s"
    assert answer.body.get("replace_original") is True  # the notice is replaced
    assert "Could not list the backups" in text_of(answer.body)  # the name: the test below
    assert rig.audit("list", "error")


@pytest.mark.parametrize(
    ("command", "asked"),
    [
        ("list web-server-01", "Could not list the backups of web-server-01"),
        ("create web-server-01", "Could not create a backup of web-server-01"),
    ],
    ids=["list", "create"],
)
def test_a_failure_while_looking_up_the_name_still_names_what_was_asked(
    rig: Rig, command: str, asked: str
) -> None:
    rig.simulator.inject(
        method="GET", path="/backups/", status=503, headers={"Retry-After": "20"}, count=10
    )
    facts = text_of(rig.run(command))
    assert "wait 20 s" in facts
    assert asked in facts, facts
    assert rig.simulator.api_calls("POST") == []


def test_a_create_is_not_sent_with_too_little_of_the_budget_left(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.bot.service.answer_within = 6.0
    rig.simulator.inject(method="GET", path="/backups/", hang=5)  # the look before the POST
    body = rig.run("create 12345 late")
    assert "nothing was sent" in text_of(body)
    time.sleep(0.5)
    assert rig.simulator.api_calls("POST") == []  # never a POST that could only end unclear


def test_a_create_with_the_provider_hanging_is_answered_within_the_budget(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(VPS_TIMEOUT_SECONDS="6")
    budget = 4.0
    rig.bot.service.answer_within = budget
    sim = rig.simulator
    sim.inject(method="POST", path="/backups/", hang=60, status=504)
    try:
        sent = time.time()
        ack, elapsed, response_url = rig.send("create 12345")
        assert ack.status == 200 and elapsed < ACK_LIMIT
        assert wait_until(lambda: bool(sim.api_calls("POST", "/backups/")), timeout=5)
        sim.inject(method="GET", path="/backups/", hang=60, count=50)  # it hangs from now on
        try:
            answer = rig.answer(response_url, timeout=budget + 2)
        except TimeoutError:
            pytest.fail(f"no answer within {budget + 2} s of a {budget} s budget")
        assert answer.at - sent <= budget + 1.5
        assert "did not confirm" in text_of(answer.body)
        assert len(sim.api_calls("POST", "/backups/")) == 1
    finally:
        sim.stop()  # ends the hanging requests, so the app can close


def test_a_429_asking_for_20_s_is_answered_at_once_naming_what_was_asked(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.simulator.inject(method="POST", path="/backups/", status=429, headers={"Retry-After": "20"})
    sent = time.time()
    ack, elapsed, response_url = rig.send("create web-server-01")
    assert ack.status == 200 and elapsed < ACK_LIMIT
    answer = rig.answer(response_url, timeout=5)
    assert answer.at - sent < 3.0, "waited for the Retry-After instead of saying it"
    facts = text_of(answer.body)
    assert "Could not create a backup of web-server-01" in facts
    assert "wait 20 s" in facts
    assert not any(
        WAITING_NOTICE in r.body.get("text", "")
        for r in rig.slack.responses
        if r.url_id == response_url
    )
    assert len(rig.simulator.api_calls("POST", "/backups/")) == 1
    [row] = rig.audit("create", "error")
    assert row.provider_status == 429 and row.server_id == 12345


# -- 3. acks are not lost -------------------------------------------------------------------------


def _home_event(event_id: str, user_id: str) -> dict[str, Any]:
    return {
        "token": "verification_token",
        "team_id": "T111",
        "api_app_id": "A111",
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "event": {"type": "app_home_opened", "user": user_id, "channel": "D1", "tab": "home"},
    }


def test_rate_limited_home_tabs_do_not_delay_command_or_click_acks(rig: Rig) -> None:
    rig.slack.rate_limit("views.publish", count=10, retry_after=3)  # each first try: 429
    for index in range(10):
        start = time.monotonic()
        event = _home_event(f"EvHome{index}", "U_ALICE")
        answer = rig.sender.post(json.dumps(event), "application/json")
        assert answer.status == 200 and time.monotonic() - start < ACK_LIMIT
    assert wait_until(lambda: len(rig.slack.calls_to("views.publish")) >= 10, timeout=5)

    ack, elapsed, response_url = rig.send("list web-server-01")
    assert ack.status == 200 and elapsed < ACK_LIMIT, elapsed
    assert "Backups of web-server-01" in text_of(rig.answer(response_url, timeout=5).body)

    help_body = rig.command("help").json()
    action = SlackSender.action_for(help_body["blocks"], f"{blocks.HELP_LIST}_all")
    click, elapsed, response_url = rig.click_action(action)
    assert click.status == 200 and elapsed < ACK_LIMIT, elapsed
    assert "Backups" in text_of(rig.answer(response_url, timeout=5).body)
    published = lambda: [c for c in rig.slack.calls_to("views.publish") if c.ok]  # noqa: E731
    assert wait_until(lambda: len(published()) == 10, timeout=10)  # each home, once, in the end


def test_a_listener_failing_after_its_ack_still_answers_200_and_logs_a_reference(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    listing = rig.run("list")
    action = SlackSender.action_for(listing["blocks"], f"{blocks.LIST_PAGE}_next")

    def broken(cls: type, value: str) -> Any:
        raise RuntimeError("a bug in the listener")

    monkeypatch.setattr(blocks.PageState, "decode", classmethod(broken))
    click, elapsed, _ = rig.click_action(action)
    assert click.status == 200 and elapsed < ACK_LIMIT

    def referenced() -> bool:
        return any(
            r.levelno >= logging.ERROR and re.search(r"reference [0-9a-f]{6,}", r.getMessage())
            for r in caplog.records
        )

    assert wait_until(referenced, timeout=3), caplog.text


# -- 4. oversized bodies --------------------------------------------------------------------------


def test_a_300_mb_body_is_refused_with_413_before_it_is_read(rig: Rig) -> None:
    parts = urlsplit(rig.server.url)
    assert parts.hostname and parts.port
    head = (
        "POST /slack/events HTTP/1.1\r\n"
        f"Host: {parts.hostname}:{parts.port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {300 * 1024 * 1024}\r\n"
        f"X-Slack-Request-Timestamp: {int(time.time())}\r\n"
        "X-Slack-Signature: v0=" + "0" * 64 + "\r\n\r\n"
    )
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as connection:
        start = time.monotonic()
        connection.sendall(head.encode() + b"command=%2Fbackup&text=list")
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = connection.recv(4096)
            if not chunk:
                break
            received += chunk
        elapsed = time.monotonic() - start
    assert received.startswith(b"HTTP/1.1 413"), received[:200]
    assert elapsed < 1.0
    assert rig.simulator.api_calls() == []


# -- 5. replays and retries -----------------------------------------------------------------------


def test_a_replayed_create_acts_once_across_two_instances(make_rig: Callable[..., Rig]) -> None:
    first, second = make_rig(), make_rig()
    fields = {
        "token": "verification_token",
        "team_id": "T111",
        "team_domain": "test-domain",
        "channel_id": "C_OPS",
        "channel_name": "ops",
        "user_id": "U_ALICE",
        "user_name": "alice",
        "command": "/backup",
        "text": 'create web-server-01 "replayed"',
        "api_app_id": "A111",
        "is_enterprise_install": "false",
        "response_url": first.slack.response_url(channel_id="C_OPS", user_id="U_ALICE"),
        "trigger_id": first.slack.new_trigger_id("U_ALICE"),
    }
    body = urlencode(fields)
    stamp = int(time.time())
    original = first.sender.post(body, timestamp=stamp)
    assert original.status == 200
    first.started("replayed")
    retry = {"X-Slack-Retry-Num": "1"}  # not signed: it must not open a way around the check
    repeats = [
        second.sender.post(body, timestamp=stamp),
        first.sender.post(body, timestamp=stamp),
        first.sender.post(body, timestamp=stamp, headers=retry),
    ]
    assert [r.status for r in repeats] == [200, 200, 200]
    assert [r.text for r in repeats] == ["", "", ""]
    time.sleep(0.5)
    assert len(first.simulator.api_calls("POST", "/backups/")) == 1
    assert len(first.backups_described("replayed")) == 1
    started = [
        c for c in first.slack.calls_to("chat.postMessage") if "started by" in c.args["text"]
    ]
    assert len(started) == 1
    assert len(first.rows("create")) == 1


def test_a_replayed_list_is_answered_again_without_a_ledger_write(rig: Rig) -> None:
    """Read-only work changes nothing, so a replay of it is answered like the original; only
    work that may change something is checked against the ledger (one database write)."""
    fields = {
        "token": "verification_token",
        "team_id": "T111",
        "channel_id": "C_OPS",
        "user_id": "U_ALICE",
        "user_name": "alice",
        "command": "/backup",
        "text": "list 12345",
        "api_app_id": "A111",
        "response_url": rig.slack.response_url(channel_id="C_OPS", user_id="U_ALICE"),
    }
    body, stamp = urlencode(fields), int(time.time())
    assert [rig.sender.post(body, timestamp=stamp).status for _ in range(2)] == [200, 200]
    answers = lambda: [r for r in rig.slack.responses if "Backups of" in text_of(r.body)]  # noqa: E731
    assert wait_until(lambda: len(answers()) == 2), answers()
    assert len(rig.rows("list")) == 2
    with rig.bot.sessions() as session:
        assert session.scalar(select(func.count()).select_from(SeenRequest)) == 0


def test_an_event_retried_by_slack_is_not_acted_on_twice(make_rig: Callable[..., Rig]) -> None:
    first, second = make_rig(), make_rig()
    event = json.dumps(_home_event("EvRetried1", "U_ALICE"))
    assert first.sender.post(event, "application/json").status == 200
    first.slack.wait_for(lambda e: isinstance(e, RecordedCall) and e.method == "views.publish")
    for number, instance in ((1, second), (2, first)):
        retry = instance.sender.post(
            event,
            "application/json",
            headers={"X-Slack-Retry-Num": str(number), "X-Slack-Retry-Reason": "http_timeout"},
        )
        assert retry.status == 200
    time.sleep(0.5)
    assert len(first.slack.calls_to("views.publish")) == 1


# -- 6. malformed signed payloads -----------------------------------------------------------------

_COMMAND = {
    "token": "verification_token",
    "team_id": "T111",
    "channel_id": "C_OPS",
    "command": "/backup",
    "text": "list",
    "api_app_id": "A111",
    "response_url": "http://127.0.0.1:9/response/x",
}
MALFORMED: dict[str, dict[str, str]] = {
    "payload-not-json": {"payload": "{not json"},
    "payload-array": {"payload": "[1,2]"},
    "payload-string": {"payload": '"hi"'},
    "command-without-user": _COMMAND,
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_signed_payload_is_400_without_a_traceback(
    rig: Rig, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    caplog.set_level(logging.INFO)
    answer = rig.sender.post(urlencode(MALFORMED[case]))
    assert answer.status == 400, (answer.status, answer.text)
    time.sleep(0.2)
    _no_errors_logged(caplog)
    assert rig.simulator.api_calls() == []


ODD_VALUES = ["²", "0:0", "[1]", "1" * 23, ""]


def _odd_actions(control: str, backup_id: int) -> list[dict[str, Any]]:
    if control == blocks.DELETE_CONFIRM:
        return [
            {
                "action_id": control,
                "block_id": f"delete_{backup_id}",
                "type": "button",
                "value": value,
                "action_ts": "1.2",
            }
            for value in ODD_VALUES
        ]
    if control == blocks.BACKUP_MENU:
        values = [f"delete:{v}" for v in ODD_VALUES] + [f"restore:{v}" for v in ODD_VALUES]
        return [
            {
                "action_id": control,
                "block_id": f"backup_{backup_id}",
                "type": "overflow",
                "selected_option": {
                    "text": {"type": "plain_text", "text": "Delete…"},
                    "value": value,
                },
                "action_ts": "1.2",
            }
            for value in [*values, *ODD_VALUES]
        ]
    return [
        {
            "action_id": control,
            "block_id": "list_pager",
            "type": "button",
            "value": value,
            "action_ts": "1.2",
        }
        for value in ODD_VALUES
    ]


@pytest.mark.parametrize(
    "control", [blocks.DELETE_CONFIRM, blocks.BACKUP_MENU, f"{blocks.LIST_PAGE}_next"]
)
def test_values_the_app_never_emits_are_logged_and_ignored(
    rig: Rig, caplog: pytest.LogCaptureFixture, control: str
) -> None:
    caplog.set_level(logging.INFO)
    backup_id = _completed_backup(rig)
    actions = _odd_actions(control, backup_id)
    for action in actions:
        response, elapsed, _ = rig.click_action(action)
        assert response.status == 200, (action, response.status)
        assert elapsed < ACK_LIMIT
    time.sleep(0.5)
    assert rig.simulator.api_calls("DELETE") == []
    assert rig.simulator.api_calls() == []  # no provider call at all
    assert rig.simulator.backup(backup_id) is not None
    ignored = [
        r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("bot.slack")
    ]
    assert len(ignored) >= len(actions), [r.getMessage() for r in ignored]
    _no_errors_logged(caplog)


# -- 7. one odd row -------------------------------------------------------------------------------


def _odd_rows(sim: Simulator, template: dict[str, Any]) -> list[dict[str, Any]]:
    odd_size = {**sim.add_backup(12346, size_mb=10, description="odd size"), "size_mb": "4 GB"}
    no_id = {**template, "id": None, "description": "no id"}
    return [odd_size, no_id]


def test_one_odd_row_leaves_list_and_delete_of_the_others_working(rig: Rig) -> None:
    sim = rig.simulator
    keep = sim.add_backup(12346, size_mb=1024, description="good one")
    target = sim.add_backup(12346, size_mb=2048, description="to delete")
    odd_size, no_id = _odd_rows(sim, keep)
    body = {"count": 4, "results": [keep, odd_size, target, no_id]}
    sim.inject(method="GET", path="/backups/", status=200, body=body, count=50)

    listing = rig.run("list db-server-01")
    rows = {
        b["block_id"]: b for b in listing["blocks"] if b.get("block_id", "").startswith("backup_")
    }
    assert set(rows) == {
        f"backup_{keep['id']}",
        f"backup_{target['id']}",
        f"backup_{odd_size['id']}",
    }
    odd_text = rows[f"backup_{odd_size['id']}"]["text"]["text"]
    assert "—" in odd_text and "4 GB" not in odd_text  # its size is shown as unknown
    assert re.search(r"\b1 row\b[^\"]*could not (be )?read", text_of(listing)), text_of(listing)

    card = rig.run(f"delete {target['id']}")
    assert f"Delete backup {target['id']}?" in text_of(card)
    done = rig.click(card, blocks.DELETE_CONFIRM)
    assert "deleted" in text_of(done)
    assert len(sim.api_calls("DELETE")) == 1
    assert sim.backup(int(target["id"])) is None
    assert rig.audit("delete", "ok")[0].backup_id == target["id"]


def test_one_odd_row_does_not_stop_the_watcher_replying_for_a_good_backup(rig: Rig) -> None:
    sim = rig.simulator
    rig.command('create 12346 "watched"')
    started = rig.started("watched")
    [created] = rig.backups_described("watched")
    assert wait_until(lambda: _job(rig) is not None and _job(rig).thread_ts is not None)
    done = {**sim.backup(created.id), "status": "completed", "size_mb": 512}  # type: ignore[dict-item]
    body = {"count": 3, "results": [*_odd_rows(sim, done), done]}
    sim.inject(method="GET", path="/backups/", status=200, body=body, count=200)
    rig.bot.start_workers()
    reply = rig.thread_reply(started.response["ts"])
    assert "completed" in reply.args["text"] and f"*{created.id}*" in text_of(reply.args)


def _job(rig: Rig, backup_id: int | None = None) -> WatchJob | None:
    with rig.bot.sessions() as session:
        query = select(WatchJob)
        if backup_id is not None:
            query = query.where(WatchJob.backup_id == backup_id)
        return session.scalars(query).first()


def _in_its_thread(rig: Rig, backup_id: int) -> bool:
    """The watch job knows its thread: the "started" message was recorded by the double a
    moment before the app wrote its ts, and a reply before that would go top-level."""
    return wait_until(
        lambda: (job := _job(rig, backup_id)) is not None and job.thread_ts is not None
    )


# -- 8. audit -------------------------------------------------------------------------------------


def test_denied_requests_are_audited_with_their_server(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(BACKUP_AUDITORS="U_CAROL")
    backup = rig.simulator.backup(101)
    assert backup is not None and backup["server"]["id"] == 12345
    assert "operator" in text_of(rig.run("create 12345", user_id="U_BOB"))
    assert "operator" in text_of(rig.run("delete 101", user_id="U_BOB"))
    [create] = rig.audit("create", "denied")
    assert create.server_id == 12345
    [delete] = rig.audit("delete", "denied")
    assert delete.server_id == 12345 and delete.backup_id == 101
    trail = rig.run("audit server:12345", user_id="U_CAROL")
    sections = [b["text"]["text"] for b in trail["blocks"] if b["type"] == "section"]
    assert any("*create*" in s and "<@U_BOB>" in s and "denied" in s for s in sections)
    assert any("*delete*" in s and "<@U_BOB>" in s and "denied" in s for s in sections)
    assert rig.simulator.api_calls("POST") == [] and rig.simulator.api_calls("DELETE") == []


def test_an_org_wide_install_is_audited_under_the_workspace_of_the_click(rig: Rig) -> None:
    fields = {
        "token": "verification_token",
        "team_id": "T111",
        "team_domain": "test-domain",
        "enterprise_id": "E111",
        "enterprise_name": "Org",
        "channel_id": "C_OPS",
        "channel_name": "ops",
        "user_id": "U_ALICE",
        "user_name": "alice",
        "command": "/backup",
        "text": "list 12345",
        "api_app_id": "A111",
        "is_enterprise_install": "true",
        "response_url": rig.slack.response_url(channel_id="C_OPS", user_id="U_ALICE"),
        "trigger_id": rig.slack.new_trigger_id("U_ALICE"),
    }
    assert rig.sender.post(urlencode(fields)).status == 200
    [by_command] = rig.audit("list", "ok")
    help_body = rig.command("help").json()
    payload = {
        "type": "block_actions",
        "user": {"id": "U_ALICE", "username": "alice", "name": "alice", "team_id": "E111"},
        "api_app_id": "A111",
        "token": "verification_token",
        "container": {
            "type": "message",
            "message_ts": "111.222",
            "channel_id": "C_OPS",
            "is_ephemeral": True,
        },
        "trigger_id": rig.slack.new_trigger_id("U_ALICE"),
        "team": {"id": "T111", "domain": "test-domain", "enterprise_id": "E111"},
        "enterprise": {"id": "E111", "name": "Org"},
        "is_enterprise_install": True,
        "channel": {"id": "C_OPS", "name": "ops"},
        "response_url": rig.slack.response_url(channel_id="C_OPS", user_id="U_ALICE"),
        "actions": [SlackSender.action_for(help_body["blocks"], f"{blocks.HELP_LIST}_all")],
    }
    assert rig.sender.deliver("interactive", payload).status == 200
    assert wait_until(lambda: len(rig.rows("list")) == 2)
    by_click = rig.rows("list")[-1]
    assert by_click.actor_team_id == "T111" == by_command.actor_team_id
    assert by_click.actor_enterprise_id == "E111"
    assert by_command.actor_enterprise_id == "E111"


FORMULA_NAMES = ['=HYPERLINK("x")', "+1 caller", "-minus", "@at", "\ttab", "\rcr"]


def test_audit_export_neutralises_cells_a_spreadsheet_would_run(
    rig: Rig, database_url: str, tmp_path: Path
) -> None:
    for index, name in enumerate(FORMULA_NAMES):
        rig.slack.add_user(f"U_CSV{index}", name)
        rig.run("list 12345", user_id=f"U_CSV{index}")
    assert wait_until(lambda: len(rig.rows("list")) == len(FORMULA_NAMES))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VPS_", "SLACK_", "BACKUP_"))}
    env["DATABASE_URL"] = database_url
    result = subprocess.run(
        [sys.executable, "-m", "bot", "audit", "export", "-o", str(tmp_path / "out.csv")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as handle:
        exported = {row["actor_user_id"]: row["actor_name"] for row in csv.DictReader(handle)}
    for index, name in enumerate(FORMULA_NAMES):
        assert exported[f"U_CSV{index}"] == "'" + name


# -- 9. a list without a response_url -------------------------------------------------------------


@pytest.mark.parametrize(
    ("action_id", "state"),
    [
        (f"{blocks.HELP_LIST}_all", blocks.PageState(None, None, 0)),
        (f"{blocks.LIST_PAGE}_next", blocks.PageState(None, None, 1, public=True)),
    ],
)
def test_a_list_asked_for_without_a_response_url_comes_privately(
    rig: Rig, caplog: pytest.LogCaptureFixture, action_id: str, state: blocks.PageState
) -> None:
    caplog.set_level(logging.INFO)
    payload = {
        "type": "block_actions",
        "user": {"id": "U_ALICE", "username": "alice", "name": "alice", "team_id": "T111"},
        "api_app_id": "A111",
        "token": "verification_token",
        "container": {"type": "view", "view_id": "V123"},
        "trigger_id": rig.slack.new_trigger_id("U_ALICE"),
        "team": {"id": "T111", "domain": "test-domain"},
        "channel": {"id": "C_OPS", "name": "ops"},
        "actions": [
            {
                "action_id": action_id,
                "block_id": "b",
                "type": "button",
                "value": state.encode(),
                "action_ts": "1.2",
            }
        ],
    }
    start = time.monotonic()
    answer = rig.sender.deliver("interactive", payload)
    assert answer.status == 200 and time.monotonic() - start < ACK_LIMIT
    call = rig.slack.wait_for(
        lambda e: isinstance(e, RecordedCall) and e.method == "chat.postEphemeral"
    )
    assert isinstance(call, RecordedCall)
    assert call.args["user"] == "U_ALICE" and call.args["channel"] == "C_OPS"
    assert "Backups" in text_of(call.args)
    time.sleep(0.2)
    assert rig.slack.calls_to("chat.postMessage") == []  # not in channel: privately
    _no_errors_logged(caplog)


# -- 11. how long a backup took -------------------------------------------------------------------


def test_a_backup_seen_running_then_done_says_between_which_durations(rig: Rig) -> None:
    # Seen running at the first look (~0.05 s), done at the next (~1.5 s later): the two bounds
    # are over a second apart, so they differ however the seconds round.
    rig.bot.watcher.settings = WatchSettings(
        first_poll=0.05, max_poll=1.5, backoff=100, tick=0.02, thread_grace=timedelta(0)
    )
    rig.bot.start_workers()
    rig.command('create web-server-01 "timed"')
    started = rig.started("timed")
    [created] = rig.backups_described("timed")
    assert wait_until(lambda: _job(rig) is not None and _job(rig).seen_running_at is not None)
    assert _in_its_thread(rig, created.id)
    rig.simulator.finish(created.id)
    text = rig.thread_reply(started.response["ts"]).args["text"]
    assert re.search(r"completed in between \d[^:]* and \d[^:]*:", text), text
    assert "in about" not in text


def test_a_backup_never_seen_running_says_within_how_long(rig: Rig) -> None:
    rig.bot.watcher.settings = WatchSettings(
        first_poll=0.8, max_poll=0.8, tick=0.02, thread_grace=timedelta(0)
    )
    rig.bot.start_workers()
    rig.command('create web-server-01 "quick"')
    started = rig.started("quick")
    [created] = rig.backups_described("quick")
    assert _in_its_thread(rig, created.id)
    rig.simulator.finish(created.id)  # before the watcher's first look
    text = rig.thread_reply(started.response["ts"]).args["text"]
    assert re.search(r"completed within \d+ s:", text), text
    assert "in about" not in text


# -- 12. server names -----------------------------------------------------------------------------


def test_server_names_with_spaces_or_in_cyrillic_work_end_to_end(rig: Rig) -> None:
    sim = rig.simulator
    sim.add_server(22222, "Web Server 01")
    sim.add_backup(22222)
    sim.add_server(22223, "веб-сервер")
    sim.add_backup(22223)
    rig.command('create "Web Server 01" "spaced"')
    assert "Web Server 01" in text_of(rig.started("spaced").args)
    rig.command('create веб-сервер "cyrillic"')
    assert "веб-сервер" in text_of(rig.started("cyrillic").args)
    posted = sorted(c.body["server_id"] for c in sim.api_calls("POST", "/backups/"))
    assert posted == [22222, 22223]
    listing = rig.run("list веб-сервер")
    assert "Backups of веб-сервер" in text_of(listing)
    rows = [b for b in listing["blocks"] if b.get("block_id", "").startswith("backup_")]
    assert len(rows) == 2
    assert "Backups of Web Server 01" in text_of(rig.run('list "Web Server 01"'))


# -- 13. wording ----------------------------------------------------------------------------------


def test_a_backup_already_completed_on_create_is_not_promised_a_thread_reply(rig: Rig) -> None:
    now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    body = {
        "id": 7777,
        "server": {"id": 12345, "name": "web-server-01"},
        "backup_type": "manual",
        "status": "completed",
        "size_mb": 300,
        "created_at": now,
        "expires_at": None,
        "description": "instant",
        "message": "Backup completed.",
    }
    rig.simulator.inject(method="POST", path="/backups/", status=201, body=body)
    rig.command('create web-server-01 "instant"')
    started = text_of(rig.started("instant").args)
    assert "completed" in started
    assert "reply in this thread" not in started


def test_a_failed_backup_says_failed_once(rig: Rig) -> None:
    rig.bot.start_workers()
    rig.command('create web-server-01 "doomed"')
    started = rig.started("doomed")
    [created] = rig.backups_described("doomed")
    assert _in_its_thread(rig, created.id)
    rig.simulator.finish(created.id, "failed")
    reply = rig.thread_reply(started.response["ts"])
    update = rig.slack.wait_for(lambda e: isinstance(e, RecordedCall) and e.method == "chat.update")
    for said in (reply.args["text"], *_texts(reply.args["blocks"])):
        assert "failed (failed)" not in said and "provider status" not in said
        assert said.replace(FAILED_BACKUP_ERROR, "").count("failed") <= 1, said
    assert reply.args["text"].replace(FAILED_BACKUP_ERROR, "").count("failed") == 1
    assert isinstance(update, RecordedCall)
    for said in _texts(update.args["blocks"]):
        assert "failed (failed)" not in said and "provider status" not in said


def test_one_audit_row_is_one_newest_row(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(BACKUP_AUDITORS="U_CAROL")
    rig.run("list 12345", user_id="U_BOB")
    assert rig.audit("list", "ok")
    facts = text_of(rig.run("audit <@U_BOB|bob>", user_id="U_CAROL"))
    assert re.search(r"\b1 newest row\b", facts), facts
    assert "1 newest rows" not in facts


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(None, id="default-body"),
        pytest.param("<html>401</html>", id="html-body"),
        pytest.param({"detail": "HTTP 401 Unauthorized"}, id="status-line-as-detail"),
    ],
)
def test_a_401_does_not_say_unauthorized_twice(rig: Rig, body: Any) -> None:
    rig.simulator.inject(method="GET", path="/backups/", status=401, body=body)
    answer = rig.run("list 12345")
    assert "VPS_API_TOKEN" in text_of(answer)
    for said in (answer["text"], *_texts(answer["blocks"])):
        assert said.count("HTTP 401 Unauthorized") <= 1, said
        assert said.count("Unauthorized") <= 1, said


def test_a_description_with_markup_is_shown_as_typed(rig: Rig) -> None:
    description = "*bold* and ```code```"
    rig.command(f"create web-server-01 {description}")
    started = rig.started(description)  # a plain_text context element holds it as typed
    assert started.args["blocks"]
    listing = rig.run("list web-server-01 manual")
    assert _described(listing, description)


def test_backups_all_in_progress_are_listed_without_sizes_or_delete(rig: Rig) -> None:
    sim = rig.simulator
    sim.add_server(22224, "fresh-01")
    running = [int(sim.add_backup(22224, status="in_progress")["id"]) for _ in range(2)]
    listing = rig.run("list 22224")
    facts = text_of(listing)
    assert "0 MB in all" not in facts
    assert "in progress" in facts
    for block in listing["blocks"]:
        if block.get("block_id", "").startswith("backup_"):
            options = (block.get("accessory") or {}).get("options") or []
            verbs = {o["value"].partition(":")[0] for o in options}
            assert not verbs & {"delete", "restore"}, block
    refused = text_of(rig.run(f"delete {running[0]}"))
    assert "still in progress" in refused, refused
    assert "Delete backup" not in refused
    assert sim.api_calls("DELETE") == []
    assert rig.audit("delete.request", "error")


def _texts(value: Any) -> list[str]:
    """Every string under a "text" key (message text, section and context text, button labels)."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "text" and isinstance(item, str):
                found.append(item)
            else:
                found.extend(_texts(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(_texts(item))
    return found


def _starts_well(text: str) -> bool:
    stripped = text.lstrip("*_~`> \n")
    if not stripped:
        return False
    first = stripped[0]
    return first.isupper() or unicodedata.category(first) == "So"


def test_every_message_the_app_posted_reads_well(make_rig: Callable[..., Rig]) -> None:
    """No double spaces anywhere; every notice starts with an emoji or a capital letter. Checks
    what this test makes the app say, and everything it posted in this module's tests before."""
    rig = make_rig(BACKUP_AUDITORS="U_CAROL", VPS_TIMEOUT_SECONDS="1")
    rig.bot.start_workers()
    for text, user in (
        ("help", "U_ALICE"),
        ("lst", "U_ALICE"),
        ("delete abc", "U_ALICE"),
        ("list", "U_ALICE"),
        ("list db-server-01 public", "U_ALICE"),
        ("list nosuch", "U_ALICE"),
        ("create web-server-01", "U_BOB"),
        ("delete 999999", "U_ALICE"),
        ("restore 101", "U_ALICE"),
        ("audit", "U_ALICE"),
        ("audit export", "U_CAROL"),
        ("audit since:1h", "U_CAROL"),
    ):
        ack, _, response_url = rig.send(text, user_id=user)
        assert ack.status == 200
        if not ack.text:
            rig.answer(response_url)
    card = rig.run(f"delete {_completed_backup(rig)}")
    rig.click(card, blocks.DELETE_CANCEL)
    rig.click(card, blocks.DELETE_CONFIRM)
    rig.simulator.inject(method="POST", path="/backups/", status=502)
    rig.run('create web-server-01 "unconfirmed"')
    rig.command('create cache-01 "fine"', channel_id="C_RANDOM")
    started = rig.started("fine")
    [created] = rig.backups_described("fine")
    assert _in_its_thread(rig, created.id)
    rig.simulator.finish(created.id)
    rig.thread_reply(started.response["ts"])
    time.sleep(0.3)

    bodies = [*POSTED, *posted_by_the_app(rig.slack), *rig.acks]
    doubled = sorted(
        {
            t[max(0, t.index("  ") - 25) : t.index("  ") + 12]
            for b in bodies
            for t in _texts(b)
            if "  " in t
        }
    )
    badly_started = sorted(
        {
            body["text"]
            for body in bodies
            if isinstance(body.get("text"), str) and not _starts_well(body["text"])
        }
    )
    problems = {"double spaces": doubled, "not an emoji or a capital first": badly_started}
    assert problems == {"double spaces": [], "not an emoji or a capital first": []}
