"""Issue 13's fault matrix, process half: `backupbot run` as deployed (this checkout, a real
process), through what processes go through — the database going away under it, SIGKILL with
work in flight, SIGTERM. Slack and the provider are the doubles; the audit table is read from the
database. (The index of the whole matrix is at the top of tests/test_faults.py.)"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select

from bot.db import Approval, AuditEvent, WatchJob, make_engine, make_session_factory, upgrade
from bot.sandbox.slack import Message, RecordedCall, RecordedResponse, SlackDouble
from bot.sandbox.vps import Simulator
from bot.slack import approval_blocks
from tests.fault_rig import HAS_POSTGRES, BotProcess, OwnPostgres, wait_until
from tests.fault_rig import PROCESS_SECRET as SECRET
from tests.test_approvals_processes import _open_form

WAITING = "Waiting for the provider"
CONFIRM = {approval_blocks.CONFIRM_BLOCK: {approval_blocks.CONFIRM_INPUT: "web-server-01"}}


def _url_id(url: str | None) -> str:
    assert url is not None
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


def answer_to(bot: BotProcess, slack: SlackDouble, text: str, timeout: float = 15) -> str:
    """`/backup text` from alice: the answer posted to its response_url (not "waiting…")."""
    ack = bot.sender.slash_command(text)
    assert ack.status == 200 and ack.text == "", (ack.status, ack.text)
    url_id = _url_id(bot.sender.last_response_url)
    answer = slack.wait_for(
        lambda e: (
            isinstance(e, RecordedResponse)
            and e.url_id == url_id
            and WAITING not in e.body.get("text", "")
        ),
        timeout=timeout,
    )
    assert isinstance(answer, RecordedResponse)
    return json.dumps(answer.body, ensure_ascii=False)


def rows(url: str, action: str | None = None) -> list[AuditEvent]:
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            query = select(AuditEvent).order_by(AuditEvent.id)
            if action is not None:
                query = query.where(AuditEvent.action == action)
            return list(session.scalars(query))
    finally:
        engine.dispose()


def started_messages(slack: SlackDouble) -> list[RecordedCall]:
    return [
        c
        for c in slack.calls_to("chat.postMessage")
        if c.ok and "started by" in c.args.get("text", "") and not c.args.get("thread_ts")
    ]


def replies_in(slack: SlackDouble, ts: str) -> list[Message]:
    return [m for m in slack.messages_in("C_OPS", thread_ts=ts) if m.ts != ts]


# -- the database goes away ---------------------------------------------------------------------


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    if not HAS_POSTGRES:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) on this machine")
    cluster = OwnPostgres()
    try:
        upgrade(cluster.url)
        yield cluster
    finally:
        cluster.destroy()


def test_the_database_going_away_is_said_plainly_and_work_resumes_when_it_is_back(
    tmp_path: Path, slack: SlackDouble, simulator: Simulator, own_postgres: OwnPostgres
) -> None:
    bot = BotProcess(tmp_path, slack, simulator, own_postgres.url, SECRET)
    try:
        assert "Backups of web-server-01" in answer_to(bot, slack, "list 12345")
        own_postgres.stop()

        for command in ("list 12345", 'create web-server-01 "while the database is down"'):
            said = answer_to(bot, slack, command)
            assert "cannot reach my database" in said and "nothing was changed" in said, said
            assert "Traceback" not in said
        assert simulator.api_calls("POST") == [], "a backup nobody could follow was started"
        health = httpx.get(f"{bot.url}/healthz", timeout=5)
        assert health.status_code == 503 and health.json()["database"] == "unreachable"
        assert bot.alive()

        own_postgres.start()
        assert "Backups of web-server-01" in answer_to(bot, slack, "list 12345")
        assert bot.sender.slash_command('create web-server-01 "after the outage"').status == 200
        assert wait_until(lambda: started_messages(slack), 15)
        [started] = started_messages(slack)
        [backup] = [b for b in simulator._backups.values() if b.description == "after the outage"]  # type: ignore[attr-defined]
        simulator.finish(backup.id)
        assert wait_until(lambda: replies_in(slack, started.response["ts"]), 15)
        time.sleep(0.5)
        assert len(replies_in(slack, started.response["ts"])) == 1
        assert httpx.get(f"{bot.url}/healthz", timeout=5).status_code == 200
        assert bot.alive()
    finally:
        bot.stop()
    actions = [(r.action, r.outcome) for r in rows(own_postgres.url)]
    # What was done is on the record; what was refused while it was down could not be.
    assert actions == [
        ("list", "ok"),
        ("list", "ok"),
        ("create", "ok"),
        ("backup.completed", "ok"),
    ], actions


# -- SIGKILL and SIGTERM --------------------------------------------------------------------------


def _approvals(url: str) -> dict[int, Approval]:
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            return {a.backup_id: a for a in session.scalars(select(Approval))}
    finally:
        engine.dispose()


def _jobs(url: str) -> list[WatchJob]:
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            return list(session.scalars(select(WatchJob)))
    finally:
        engine.dispose()


def _card(slack: SlackDouble, server: str) -> Message:
    assert wait_until(
        lambda: [m for m in slack.messages_in("C_OPS") if m.text.startswith(f"Restore {server}")]
    ), f"no approval card for {server}"
    return [m for m in slack.messages_in("C_OPS") if m.text.startswith(f"Restore {server}")][-1]


def _approve(bot: BotProcess, slack: SlackDouble, card: Message, server: str) -> None:
    view = _open_form(bot, slack, card)  # type: ignore[arg-type]
    values = {approval_blocks.CONFIRM_BLOCK: {approval_blocks.CONFIRM_INPUT: server}}
    assert bot.sender.view_submission(view, user_id="U_BOB", values=values).status == 200


def _finish_when_running(simulator: Simulator, backup_id: int | None) -> None:
    assert backup_id is not None
    assert wait_until(lambda: simulator.backup(backup_id) is not None, 10)
    simulator.finish(backup_id)


def test_a_sigkill_with_backups_in_flight_and_approvals_open_loses_nothing_and_repeats_nothing(
    world: Callable[..., BotProcess],
    slack: SlackDouble,
    simulator: Simulator,
    database_url: str,
) -> None:
    simulator.add_server(22001, "app-01")
    simulator.add_server(22002, "app-02")
    approved = int(simulator.add_backup(22001, description="known good")["id"])
    pending = int(simulator.add_backup(22002, description="known good")["id"])
    first = world()
    for server in ("web-server-01", "db-server-01", "cache-01"):
        assert first.sender.slash_command(f'create {server} "in flight"').status == 200
    assert wait_until(lambda: len(started_messages(slack)) == 3, 15)
    assert wait_until(lambda: all(j.thread_ts for j in _jobs(database_url)), 10)
    for backup_id in (approved, pending):
        assert first.sender.slash_command(f"restore {backup_id}").status == 200
    _approve(first, slack, _card(slack, "app-01"), "app-01")
    # Approved and waiting for its safety backup (which completes only when the test says).
    assert wait_until(lambda: _approvals(database_url)[approved].safety_backup_id, 15)
    first.kill()  # three backups in flight, one restore approved, one waiting for approval

    in_flight = [b for b in simulator._backups.values() if b.description == "in flight"]  # type: ignore[attr-defined]
    for backup in in_flight:
        simulator.finish(backup.id)
    second = world()
    _finish_when_running(simulator, _approvals(database_url)[approved].safety_backup_id)
    _approve(second, slack, _card(slack, "app-02"), "app-02")  # the old card's buttons work
    assert wait_until(lambda: _approvals(database_url)[pending].safety_backup_id, 15)
    _finish_when_running(simulator, _approvals(database_url)[pending].safety_backup_id)
    assert wait_until(
        lambda: all(a.state == "done" for a in _approvals(database_url).values()), 30
    ), {a.backup_id: (a.state, a.detail) for a in _approvals(database_url).values()}
    time.sleep(1.5)  # long enough for a second reply or restore, if one were coming

    for started in started_messages(slack):
        replies = replies_in(slack, started.response["ts"])
        assert len(replies) == 1 and "completed" in replies[0].text, [r.text for r in replies]
    assert sorted(r["backup_id"] for r in simulator.restores) == sorted([approved, pending])
    assert len(simulator.api_calls("POST", "/servers/")) == 2
    # Three backups and two safety backups: each reply once (a safety backup's goes to its card).
    assert wait_until(lambda: len(rows(database_url, "backup.completed")) >= 5, 10)
    completed = [r.backup_id for r in rows(database_url, "backup.completed")]
    assert len(completed) == len(set(completed)) == 5, completed
    restored = [(r.backup_id, r.outcome) for r in rows(database_url, "restore")]
    assert sorted(restored) == sorted([(approved, "ok"), (pending, "ok")])


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return False
    except OSError:
        return True


def test_sigterm_stops_taking_work_finishes_what_is_in_flight_and_exits_within_10_s(
    world: Callable[..., BotProcess], slack: SlackDouble, simulator: Simulator, database_url: str
) -> None:
    bot = world()
    simulator.inject(method="GET", path="/backups/", hang=2.0)  # the answer in flight: 2 s
    assert bot.sender.slash_command("list 12345").status == 200
    url_id = _url_id(bot.sender.last_response_url)
    assert wait_until(lambda: simulator.api_calls("GET", "/backups/"), 5)
    signalled = time.monotonic()
    bot.process.send_signal(signal.SIGTERM)

    assert wait_until(lambda: _refused(bot.port), 3), "still taking requests after SIGTERM"
    with pytest.raises(httpx.ConnectError):
        bot.sender.slash_command("list 12346")
    answer = slack.wait_for(
        lambda e: isinstance(e, RecordedResponse) and e.url_id == url_id, timeout=10
    )
    assert "Backups of web-server-01" in json.dumps(answer.body, ensure_ascii=False)  # type: ignore[union-attr]
    try:
        code = bot.process.wait(timeout=max(0.1, 10 - (time.monotonic() - signalled)))
    except subprocess.TimeoutExpired:
        pytest.fail("still running 10 s after SIGTERM")
    assert code == 0, bot.log_text[-2000:]
    assert "Traceback" not in bot.log_text
    assert [(r.action, r.server_id) for r in rows(database_url)] == [("list", 12345)]
    assert [c.query.get("server_id") for c in simulator.api_calls("GET")] == ["12345"]
