"""The Slack app end to end: signed requests to the real HTTP server (waitress + Bolt), the Slack
double recording every Web API call and response_url post, the simulator as the provider."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import select

from bot.app import BackupBot, build_app
from bot.config import load_settings
from bot.db import AuditEvent, WatchJob, upgrade
from bot.sandbox.slack import RecordedCall, RecordedResponse, SlackDouble, SlackSender
from bot.sandbox.vps import Simulator
from bot.slack import blocks
from bot.watch import WatchSettings
from tests.conftest import SIM_TOKEN

SECRET = "signing-s3cret-for-tests"
RigT = TypeVar("RigT")
WAITING = "Waiting for the provider"
FAST_WATCH = WatchSettings(first_poll=0.05, max_poll=0.2, tick=0.02, thread_grace=timedelta(0))


class AppRig:
    def __init__(
        self,
        slack: SlackDouble,
        simulator: Simulator,
        database_url: str,
        approval_tuning: dict[str, Any] | None = None,
        **env: str,
    ) -> None:
        self.slack, self.simulator = slack, simulator
        environ = {
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": slack.api_url,
            "VPS_API_URL": simulator.base_url,
            "VPS_API_TOKEN": SIM_TOKEN,
            "VPS_TIMEOUT_SECONDS": "10",
            "DATABASE_URL": database_url,
            "BACKUP_OPERATORS": "U_ALICE,S_OPS",
            **env,
        }
        self.settings = load_settings(environ=environ, env_file=None)
        if database_url.startswith("postgresql"):
            upgrade(database_url)  # the release step; the app only auto-upgrades SQLite
        self.bot: BackupBot = build_app(
            self.settings, watch_settings=FAST_WATCH, approval_tuning=approval_tuning
        )
        self.server = self.bot.http_server(host="127.0.0.1", port=0).start()
        self.sender = SlackSender(f"{self.server.url}/slack/events", SECRET, slack)

    def close(self) -> None:
        self.server.stop()
        self.bot.close()

    def command(self, text: str, user_id: str = "U_ALICE", channel_id: str = "C_OPS") -> Any:
        response = self.sender.slash_command(text, user_id=user_id, channel_id=channel_id)
        assert response.status == 200, response.text
        return response

    def next_response(self, after: int | None = None, timeout: float = 10.0) -> RecordedResponse:
        """The first response_url post after `after` posts had been made that is an answer
        (not the "waiting for the provider" notice a slow answer is preceded by)."""
        start = len(self.slack.responses) if after is None else after

        def wanted(event: Any) -> bool:
            if isinstance(event, RecordedResponse) and WAITING not in event.body.get("text", ""):
                return len(self.slack.responses) > start and event in self.slack.responses[start:]
            return False

        return self.slack.wait_for(wanted, timeout=timeout)  # type: ignore[return-value]

    def run(self, text: str, user_id: str = "U_ALICE", channel_id: str = "C_OPS") -> dict[str, Any]:
        """Send a command that answers through response_url; return that answer's body."""
        before = len(self.slack.responses)
        ack = self.command(text, user_id, channel_id)
        assert ack.text == "", f"expected an empty ack, got {ack.text!r}"
        return self.next_response(before).body

    def click(
        self,
        message_body: dict[str, Any],
        action_id: str,
        value: str | None = None,
        user_id: str = "U_ALICE",
    ) -> dict[str, Any]:
        action = SlackSender.action_for(message_body["blocks"], action_id, value)
        before = len(self.slack.responses)
        response = self.sender.block_actions(action, user_id=user_id, channel_id="C_OPS")
        assert response.status == 200, response.text
        return self.next_response(before).body

    def home_of(self, user_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The App Home view the bot publishes when `user_id` opens the tab."""
        before = len(self.slack.calls_to("views.publish"))
        event = {
            "type": "event_callback",
            "team_id": "T111",
            "api_app_id": "A111",
            "event_id": f"Ev{user_id}{time.monotonic_ns()}",
            "event_time": int(time.time()),
            "event": {"type": "app_home_opened", "user": user_id, "tab": "home"},
        }
        assert self.sender.post(json.dumps(event), "application/json").status == 200
        deadline = time.monotonic() + timeout
        while len(self.slack.calls_to("views.publish")) == before:
            assert time.monotonic() < deadline, "no App Home was published"
            time.sleep(0.02)
        view = self.slack.calls_to("views.publish")[-1].args["view"]
        return view if isinstance(view, dict) else json.loads(view)

    def audit(
        self, action: str, outcome: str | None = None, timeout: float = 5.0
    ) -> list[AuditEvent]:
        deadline = time.monotonic() + timeout
        while True:
            with self.bot.sessions() as session:
                query = select(AuditEvent).where(AuditEvent.action == action)
                if outcome:
                    query = query.where(AuditEvent.outcome == outcome)
                rows = list(session.scalars(query))
            if rows or time.monotonic() > deadline:
                return rows
            time.sleep(0.02)


def text_of(body: dict[str, Any]) -> str:
    """Every piece of text in a message body (blocks included), for fact checks."""
    return json.dumps(body, ensure_ascii=False)


def rigs_of(
    kind: Callable[..., RigT], slack: SlackDouble, simulator: Simulator, database_url: str
) -> Iterator[Callable[..., RigT]]:
    """A fixture's body: `make(**env)` starts a rig of `kind`; every one is closed after."""
    made: list[RigT] = []

    def make(**env: str) -> RigT:
        rig = kind(slack, simulator, database_url, **env)
        made.append(rig)
        return rig

    try:
        yield make
    finally:
        for rig in made:
            rig.close()  # type: ignore[attr-defined]


@pytest.fixture
def make_rig(
    slack: SlackDouble, simulator: Simulator, database_url: str
) -> Iterator[Callable[..., AppRig]]:
    yield from rigs_of(AppRig, slack, simulator, database_url)


@pytest.fixture
def rig(make_rig: Callable[..., AppRig]) -> AppRig:
    return make_rig()


# -- signatures and health ---------------------------------------------------------------------


def test_forged_and_stale_signatures_are_refused(rig: AppRig) -> None:
    body = "command=%2Fbackup&text=list&user_id=U_ALICE&channel_id=C_OPS&team_id=T111"
    forged = rig.sender.post(body, signature="v0=" + "0" * 64)
    assert forged.status == 401
    stale = rig.sender.post(body, timestamp=int(time.time()) - 10 * 60)
    assert stale.status == 401
    odd = httpx.post(  # a signature that is not even ASCII
        rig.sender.app_url,
        content=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": str(int(time.time())),
            "X-Slack-Signature": ("v0=\u00e9" + "0" * 63).encode("latin-1"),
        },
    )
    assert odd.status_code == 401
    other = SlackSender(rig.sender.app_url, "not-the-secret", rig.slack)
    assert other.slash_command("list").status == 401
    assert rig.slack.calls_to("chat.postMessage") == []
    assert rig.simulator.api_calls("GET", "/backups/") == []


def test_healthz(rig: AppRig) -> None:
    with urllib.request.urlopen(f"{rig.server.url}/healthz", timeout=5) as answer:  # noqa: S310
        assert answer.status == 200
        assert json.loads(answer.read()) == {"ok": True, "database": "ok"}


# -- help and the parser -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "help", "  HELP  "])
def test_help_answers_in_the_ack_with_buttons(rig: AppRig, text: str) -> None:
    ack = rig.command(text)
    body = ack.json()
    assert "/backup create SERVER" in text_of(body)
    buttons = [
        e["action_id"] for b in body["blocks"] if b["type"] == "actions" for e in b["elements"]
    ]
    assert buttons and all(b.startswith(blocks.HELP_LIST) for b in buttons)
    assert rig.audit("help", "ok")


def test_help_button_lists_backups(rig: AppRig) -> None:
    body = rig.command("help").json()
    listing = rig.click(body, f"{blocks.HELP_LIST}_manual")
    assert "Manual backups" in text_of(listing)
    assert "automatic ·" not in text_of(listing)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lst", "Did you mean"),
        ("create", "server"),
        ("delete abc", "abc"),
        ("list web-server-01 weekly", "weekly"),
        ("delete 1 2", "Too many arguments"),
    ],
)
def test_parse_errors_answer_at_once_and_are_audited(rig: AppRig, text: str, expected: str) -> None:
    ack = rig.command(text)
    assert expected in ack.json()["text"]
    assert "Traceback" not in ack.text
    rows = rig.audit("command", "error")
    assert rows and rows[0].parameters["text"] == text


# -- list --------------------------------------------------------------------------------------


def test_list_is_newest_first_private_with_a_summary(rig: AppRig) -> None:
    body = rig.run("list web-server-01")
    assert body["response_type"] == "ephemeral"
    expected = sorted(
        (b for b in rig.simulator._backups.values() if b.server_id == 12345),  # type: ignore[attr-defined]
        key=lambda b: b.created_at,
        reverse=True,
    )
    rows = [b["block_id"] for b in body["blocks"] if b.get("block_id", "").startswith("backup_")]
    assert rows == [f"backup_{b.id}" for b in expected][: blocks.PAGE_SIZE]
    summary = text_of(body)
    assert f"{len(expected)} backups" in summary
    assert "<!date^" in summary  # Slack date formatting for each reader's time zone
    [event] = rig.audit("list", "ok")
    assert event.actor_name == "alice" and event.server_id == 12345


def test_public_list_goes_in_channel(rig: AppRig) -> None:
    body = rig.run("list db-server-01 public")
    assert body["response_type"] == "in_channel"


def test_list_pages_with_next_and_previous(rig: AppRig) -> None:
    first = rig.run("list")
    total = len(rig.simulator._backups)  # type: ignore[attr-defined]
    assert total > blocks.PAGE_SIZE
    assert "page 1 of" in text_of(first)
    assert len(first["blocks"]) <= 50
    second = rig.click(first, f"{blocks.LIST_PAGE}_next")
    assert second["replace_original"] is True
    assert "page 2 of" in text_of(second)
    first_ids = {
        b["block_id"] for b in first["blocks"] if b.get("block_id", "").startswith("backup_")
    }
    second_ids = {
        b["block_id"] for b in second["blocks"] if b.get("block_id", "").startswith("backup_")
    }
    assert first_ids and second_ids and not first_ids & second_ids
    back = rig.click(second, f"{blocks.LIST_PAGE}_prev")
    assert "page 1 of" in text_of(back)


def test_list_of_an_unknown_or_ambiguous_name_says_which(rig: AppRig) -> None:
    body = rig.run("list nosuchserver")
    assert "No server named `nosuchserver`" in text_of(body)
    rig.simulator.add_server(22222, "web-server-02")
    rig.simulator.add_backup(22222)
    body = rig.run("list web")
    assert "web-server-01" in text_of(body) and "web-server-02" in text_of(body)
    assert "Did you mean" in text_of(body)
    assert rig.audit("list", "error")


def test_provider_errors_reach_the_person_without_internals(rig: AppRig) -> None:
    rig.simulator.inject(method="GET", path="/backups/", status=401, count=5)
    body = rig.run("list")
    assert "token" in text_of(body).lower()
    assert SIM_TOKEN not in text_of(body) and "Traceback" not in text_of(body)
    [row] = rig.audit("list", "error")
    assert row.provider_status == 401


# -- create ------------------------------------------------------------------------------------


def test_create_posts_in_channel_and_replies_in_the_thread_when_done(rig: AppRig) -> None:
    rig.bot.start_workers()
    ack = rig.command('create web-server-01 "before deploy"')
    assert ack.text == ""
    call = rig.slack.wait_for(
        lambda e: isinstance(e, RecordedCall) and e.method == "chat.postMessage"
    )
    assert isinstance(call, RecordedCall) and call.args["channel"] == "C_OPS"
    assert "started by <@U_ALICE>" in call.args["text"]
    ts = call.response["ts"]
    [created] = [b for b in rig.simulator._backups.values() if b.description == "before deploy"]  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while True:
        with rig.bot.sessions() as session:
            job = session.scalars(select(WatchJob)).first()
        if (job and job.thread_ts) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert job is not None and job.backup_id == created.id and job.thread_ts == ts
    rig.simulator.finish(created.id)
    reply = rig.slack.wait_for(
        lambda e: (
            isinstance(e, RecordedCall)
            and e.method == "chat.postMessage"
            and e.args.get("thread_ts") == ts
        )
    )
    assert isinstance(reply, RecordedCall) and "completed" in reply.args["text"]
    [row] = rig.audit("create", "ok")
    assert row.backup_id == created.id and row.parameters["description"] == "before deploy"


def test_create_is_denied_without_the_operator_role(rig: AppRig) -> None:
    body = rig.run("create web-server-01", user_id="U_BOB")
    assert "operator" in text_of(body) and "BACKUP_OPERATORS" in text_of(body)
    assert rig.simulator.api_calls("POST", "/backups/") == []
    [row] = rig.audit("create", "denied")
    assert row.actor_user_id == "U_BOB"


def test_roles_come_from_user_groups_too(rig: AppRig) -> None:
    rig.slack.add_usergroup("S_OPS", ["U_CAROL"])
    rig.command("create db-server-01", user_id="U_CAROL")
    call = rig.slack.wait_for(
        lambda e: isinstance(e, RecordedCall) and e.method == "chat.postMessage"
    )
    assert "<@U_CAROL>" in call.args["text"]  # type: ignore[union-attr]
    assert rig.audit("create", "ok")[0].actor_user_id == "U_CAROL"


def test_create_where_the_bot_is_not_a_member_falls_back_to_dm(rig: AppRig) -> None:
    body = rig.run("create cache-01", channel_id="C_RANDOM")
    assert "not a member" in text_of(body) and "DM" in text_of(body)
    dm = rig.slack.messages_in(rig.slack.dm_channel_id("U_ALICE"))
    assert dm and "started by <@U_ALICE>" in dm[0].text


def test_channel_allow_list(make_rig: Callable[..., AppRig]) -> None:
    rig = make_rig(BACKUP_CHANNELS="C_OPS")
    body = rig.run("list", channel_id="C_RANDOM")
    assert "not enabled in this channel" in text_of(body)
    assert rig.audit("list", "denied")


# -- delete ------------------------------------------------------------------------------------


def _completed_backup(rig: AppRig) -> int:
    data = rig.simulator.add_backup(12346, size_mb=2048, description="old one")
    return int(data["id"])


def test_delete_shows_a_card_then_deletes_once(rig: AppRig) -> None:
    backup_id = _completed_backup(rig)
    card = rig.run(f"delete {backup_id}")
    facts = text_of(card)
    assert "db-server-01" in facts and "2.0 GB" in facts and "manual" in facts
    [button] = [
        e
        for b in card["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if e["action_id"] == blocks.DELETE_CONFIRM
    ]
    assert button["confirm"]["confirm"]["text"] == "Delete"
    done = rig.click(card, blocks.DELETE_CONFIRM)
    assert "deleted" in text_of(done) and done["replace_original"] is True
    assert rig.simulator.backup(backup_id) is None
    again = rig.click(card, blocks.DELETE_CONFIRM)
    assert "no longer exists" in text_of(again)
    assert len(rig.simulator.api_calls("DELETE")) == 2
    assert len(rig.audit("delete", "ok")) == 2
    assert rig.audit("delete.request", "ok")[0].server_id == 12346


def test_delete_cancel_keeps_the_backup(rig: AppRig) -> None:
    backup_id = _completed_backup(rig)
    card = rig.run(f"delete {backup_id}")
    kept = rig.click(card, blocks.DELETE_CANCEL)
    assert "nothing was deleted" in text_of(kept)
    assert rig.simulator.backup(backup_id) is not None
    assert rig.simulator.api_calls("DELETE") == []


def test_delete_of_a_missing_backup_and_by_a_viewer(rig: AppRig) -> None:
    assert "There is no backup `999999`" in text_of(rig.run("delete 999999"))
    backup_id = _completed_backup(rig)
    assert "operator" in text_of(rig.run(f"delete {backup_id}", user_id="U_BOB"))
    assert rig.simulator.backup(backup_id) is not None


def test_overflow_menu_offers_delete_and_restore(rig: AppRig) -> None:
    _completed_backup(rig)
    backup_id = _completed_backup(rig)
    rig.simulator.add_backup(12346, size_mb=10, description="newest")
    listing = rig.run("list db-server-01 manual")
    rows = [b["block_id"] for b in listing["blocks"] if b.get("block_id", "").startswith("backup_")]
    assert rows.index(f"backup_{backup_id}") > 0  # not the first row's menu
    card = rig.click(listing, blocks.BACKUP_MENU, value=f"delete:{backup_id}")
    assert f"Delete backup {backup_id}?" in text_of(card)
    restore = rig.click(listing, blocks.BACKUP_MENU, value=f"restore:{backup_id}")
    assert "Asked for approval" in text_of(restore)  # a card, and nothing restored yet
    assert rig.simulator.restores == []


# -- the 3-second ack --------------------------------------------------------------------------


def test_acks_stay_fast_while_the_provider_is_slow(rig: AppRig) -> None:
    rig.simulator.faults.latency = 2.0
    elapsed: list[float] = []
    statuses: list[int] = []
    before = len(rig.slack.responses)

    def send(index: int) -> None:
        start = time.monotonic()
        response = rig.sender.slash_command("list web-server-01", user_id="U_ALICE")
        elapsed.append(time.monotonic() - start)
        statuses.append(response.status)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert statuses == [200] * 20
    assert max(elapsed) < 3.0, sorted(elapsed)

    def answered() -> set[str]:  # commands with their answer (not just "waiting for…")
        return {
            r.url_id for r in rig.slack.responses[before:] if "Waiting for" not in r.body["text"]
        }

    deadline = time.monotonic() + 30
    while len(answered()) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(answered()) == 20  # every command still got its answer


# -- App Home and secrets ----------------------------------------------------------------------


def test_app_home_shows_the_persons_roles(rig: AppRig) -> None:
    assert "operator" in text_of(rig.home_of("U_ALICE"))


def test_no_secret_reaches_logs_messages_or_the_audit_table(
    rig: AppRig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rig.bot.start_workers()
    rig.simulator.inject(method="POST", path="/backups/", status=500)
    failed = rig.run("create web-server-01")  # one POST (500), then listing to look for it
    assert "did not confirm" in text_of(failed)
    rig.run("list")
    rig.run("list", user_id="U_NOBODY")  # users.info fails: user_not_found
    rig.command("create db-server-01")  # this one works; the watcher replies when it is done
    call = rig.slack.wait_for(
        lambda e: isinstance(e, RecordedCall) and e.method == "chat.postMessage"
    )
    [created] = [
        b
        for b in rig.simulator._backups.values()
        if b.server_id == 12346 and b.status == "in_progress"
    ]  # type: ignore[attr-defined]
    rig.simulator.finish(created.id)
    rig.slack.wait_for(
        lambda e: (
            isinstance(e, RecordedCall)
            and e.method == "chat.postMessage"
            and e.args.get("thread_ts") == call.response["ts"]
        )  # type: ignore[union-attr]
    )
    assert rig.audit("backup.completed")
    secrets = [SIM_TOKEN, rig.slack.bot_token, SECRET]
    everything = caplog.text + json.dumps([r.body for r in rig.slack.responses])
    with rig.bot.sessions() as session:
        everything += json.dumps(
            [(e.detail, e.parameters) for e in session.scalars(select(AuditEvent))]
        )
    for secret in secrets:
        assert secret not in everything
    assert repr(rig.settings).count("xoxb") == 0


def test_a_delete_click_is_authorized_for_the_clicker(rig: AppRig) -> None:
    backup_id = _completed_backup(rig)
    card = rig.run(f"delete {backup_id}")  # Alice, an operator, got the card
    refused = rig.click(card, blocks.DELETE_CONFIRM, user_id="U_BOB")
    assert "operator" in text_of(refused)
    assert rig.simulator.backup(backup_id) is not None
    [row] = rig.audit("delete", "denied")
    assert row.actor_user_id == "U_BOB" and row.backup_id == backup_id


def test_a_restore_request_posts_a_card_and_restores_nothing(rig: AppRig) -> None:
    body = rig.run("restore 101 disk corrupted")
    assert "Asked for approval" in text_of(body)
    assert rig.simulator.restores == []
    assert rig.simulator.api_calls("POST") == []
    [row] = rig.audit("restore.request", "ok")
    assert row.approval_id is not None and "disk corrupted" in row.detail


def test_forged_button_clicks_are_refused(rig: AppRig) -> None:
    backup_id = _completed_backup(rig)
    action = {
        "action_id": blocks.DELETE_CONFIRM,
        "block_id": f"delete_{backup_id}",
        "type": "button",
        "value": f"{backup_id}:12346",
        "action_ts": "1.2",
    }
    forger = SlackSender(rig.sender.app_url, "guessed-secret", rig.slack)
    assert forger.block_actions(action, user_id="U_ALICE", channel_id="C_OPS").status == 401
    time.sleep(0.3)
    assert rig.simulator.backup(backup_id) is not None
    assert rig.simulator.api_calls("DELETE") == []


def test_audit_log_is_for_auditors_and_filters(make_rig: Callable[..., AppRig]) -> None:
    rig = make_rig(BACKUP_AUDITORS="U_BOB")
    assert "auditor" in text_of(rig.run("audit"))  # Alice is an operator, not an auditor
    rig.run("list web-server-01")
    rig.run("list db-server-01", user_id="U_CAROL")
    body = rig.run("audit <@U_ALICE|alice> action:list", user_id="U_BOB")
    rows = [b for b in body["blocks"] if b["type"] == "section"]
    assert rows and all("<@U_ALICE>" in r["text"]["text"] for r in rows)
    assert all("*list*" in r["text"]["text"] for r in rows)
    assert "U_CAROL" not in text_of(body)
    by_server = rig.run("audit server:db-server-01 since:1h", user_id="U_BOB")
    assert "<@U_CAROL>" in text_of(by_server) and "server `12345`" not in text_of(by_server)
    [denied] = rig.audit("audit", "denied")
    assert denied.actor_user_id == "U_ALICE"
    assert len(rig.audit("audit", "ok")) == 2  # reading the log is itself on the record
