"""Observability end to end: `/metrics` (commands and actions by outcome, ack latency, jobs and
approvals by state, the token, METRICS_PORT), JSON logs, and one request id from the request's
arrival through the listener and work pools, the provider calls, the error reference a person sees
and the audit rows (the request_id column, its place in the hash chain, migration 0008)."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from bot import cli
from bot.audit import GENESIS, Actor, AuditLog, row_digest
from bot.config import ConfigError, load_settings
from bot.db import AuditEvent, Outcome, alembic_config, make_engine, make_session_factory, upgrade
from bot.logs import JsonFormatter, request_scope
from bot.metrics import JobStates
from bot.sandbox.slack import RecordedResponse, SlackDouble, SlackSender
from bot.sandbox.vps import Simulator
from bot.slack import blocks
from bot.slack.serving import metrics_app
from bot.wsgi_server import WsgiServer
from tests.conftest import SIM_TOKEN
from tests.socket_double import SocketModeDouble
from tests.test_audit import drop_triggers
from tests.test_cli import _start_run
from tests.test_slack_app import AppRig, rigs_of, text_of
from tests.test_socket_mode import SocketRig

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
REQUEST_ID = re.compile(r"^[0-9a-f]{8}$")
METRICS_TOKEN = "metrics-t0ken-for-the-tests"


@pytest.fixture
def make_rig(
    slack: SlackDouble, simulator: Simulator, database_url: str
) -> Iterator[Callable[..., AppRig]]:
    yield from rigs_of(AppRig, slack, simulator, database_url)


@pytest.fixture
def rig(make_rig: Callable[..., AppRig]) -> AppRig:
    return make_rig(BACKUP_AUDITORS="U_BOB", BACKUP_APPROVERS="U_BOB")


def scrape(url: str, token: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = httpx.get(url, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(answer.text)


def parse(exposition: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- /metrics -------------------------------------------------------------------------------------


def test_commands_and_actions_are_counted_by_name_and_outcome_with_their_ack_times(
    rig: AppRig,
) -> None:
    url = f"{rig.server.url}/metrics"
    before = scrape(url)
    listing = rig.run("list")
    rig.run("create db-server-01", user_id="U_CAROL")  # not an operator
    rig.run("delete 987654")  # no such backup
    refused = rig.command("frobnicate")  # answered in the ack itself: the usage
    assert "/backup list" in refused.text, refused.text
    rig.click(listing, f"{blocks.LIST_PAGE}_next")
    rig.simulator.inject(method="GET", path="/backups/", status=500, count=20)
    assert "Could not list" in text_of(rig.run("list web-server-01"))

    expected = {
        ("backupbot_commands_total", "list", "ok"): 1,
        ("backupbot_commands_total", "create", "denied"): 1,
        ("backupbot_commands_total", "delete", "invalid"): 1,
        ("backupbot_commands_total", "unknown", "invalid"): 1,
        ("backupbot_commands_total", "list", "error"): 1,
        ("backupbot_actions_total", "list_page", "ok"): 1,
    }

    def delta(name: str, first: str, outcome: str, samples: Samples) -> float:
        key = "command" if name == "backupbot_commands_total" else "action"
        labels = {key: first, "outcome": outcome}
        return value(samples, name, **labels) - value(before, name, **labels)

    def counted() -> bool:
        now = scrape(url)
        return all(delta(*key, now) == n for key, n in expected.items())

    assert wait_until(counted), {key: delta(*key, scrape(url)) for key in expected}
    after = scrape(url)
    acks = "backupbot_ack_seconds_count"
    assert value(after, acks, kind="command") - value(before, acks, kind="command") == 5
    assert value(after, acks, kind="action") - value(before, acks, kind="action") == 1
    # Every ack was inside Slack's 3 s.
    in_time = value(after, "backupbot_ack_seconds_bucket", kind="command", le="3.0")
    all_acks = value(after, "backupbot_ack_seconds_bucket", kind="command", le="+Inf")
    assert in_time == all_acks


def test_watch_jobs_and_approvals_are_gauged_by_state(rig: AppRig) -> None:
    rig.command("create web-server-01 nightly")  # answered in the channel
    assert rig.audit("create", "ok")
    backup = rig.simulator.add_backup(12346, size_mb=2048, description="old one")
    rig.command(f"restore {backup['id']} a bad deploy")
    assert rig.audit("restore.request", "ok")
    assert wait_until(lambda: bool(rig.slack.calls_to("chat.postMessage")[1:]))
    samples = scrape(f"{rig.server.url}/metrics")
    assert value(samples, "backupbot_job_states_readable") == 1
    assert value(samples, "backupbot_watch_jobs", state="watching") == 1
    assert value(samples, "backupbot_watch_jobs", state="completed") == 0
    assert value(samples, "backupbot_approvals", state="pending") == 1
    assert value(samples, "backupbot_approvals", state="done") == 0


def test_a_scrape_answers_when_the_database_is_down_or_hangs(tmp_path: Path) -> None:
    down = make_session_factory(make_engine(f"sqlite:///{tmp_path}/no/such/dir/x.db"))
    # A "database" that accepts the connection and never says a word.
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    accepting = threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True)
    accepting.start()
    port = listener.getsockname()[1]
    hung_engine = make_engine(f"postgresql+psycopg://u@127.0.0.1:{port}/x")
    hung = make_session_factory(hung_engine)
    states = [JobStates(down, timeout=0.5), JobStates(hung, timeout=0.5)]
    try:
        for job_states, waits in zip(states, (False, True), strict=True):
            with WsgiServer(metrics_app(job_states.refresh)) as server:
                start = time.monotonic()
                samples = scrape(f"{server.url}/metrics")
                elapsed = time.monotonic() - start
                assert elapsed < 3.0
                assert (elapsed >= 0.45) is waits, elapsed  # the hung one: its 0.5 s, no more
                assert value(samples, "backupbot_job_states_readable") == 0
                assert not [
                    k for k in samples if k[0] in ("backupbot_watch_jobs", "backupbot_approvals")
                ]
    finally:
        listener.close()
        accepting.join(2)
        for connection in held:
            connection.close()  # the hung connect fails now, and its thread ends
        hung_engine.dispose()


def test_metrics_need_no_slack_signature_and_honour_metrics_token(
    make_rig: Callable[..., AppRig],
) -> None:
    open_rig = make_rig()
    assert "backupbot_commands" in httpx.get(f"{open_rig.server.url}/metrics").text
    guarded = make_rig(METRICS_TOKEN=METRICS_TOKEN)
    url = f"{guarded.server.url}/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.post(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 405
    assert value(scrape(url, METRICS_TOKEN), "backupbot_job_states_readable") == 1


def test_metrics_port_moves_metrics_off_the_slack_port(make_rig: Callable[..., AppRig]) -> None:
    rig = make_rig(METRICS_PORT="9")  # the port itself is chosen below (0: a free one)
    assert httpx.get(f"{rig.server.url}/metrics").status_code == 404
    with rig.bot.metrics_server(host="127.0.0.1", port=0) as server:
        assert value(scrape(f"{server.url}/metrics"), "backupbot_job_states_readable") == 1
        assert httpx.get(f"{server.url}/healthz").json() == {"ok": True}
        assert httpx.get(f"{server.url}/slack/events").status_code == 404


# -- request ids and JSON logs -----------------------------------------------------------------


@pytest.fixture
def json_lines() -> Iterator[list[dict[str, Any]]]:
    """Every log record (DEBUG and up) as the JSON line LOG_FORMAT=json writes, parsed; the
    handler is added after the app started, as a library or an operator might."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    lines: list[dict[str, Any]] = []

    class Lines(list):  # type: ignore[type-arg]
        def __iter__(self) -> Iterator[dict[str, Any]]:
            lines[:] = [json.loads(line) for line in stream.getvalue().splitlines()]
            return iter(lines)

    try:
        yield Lines()
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _of(lines: Any, request_id: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["request_id"] == request_id]


def test_one_request_id_on_every_line_and_audit_row_of_a_request(
    rig: AppRig, json_lines: Any
) -> None:
    rig.run("list web-server-01")
    [row] = rig.audit("list", "ok")
    assert row.request_id and REQUEST_ID.match(row.request_id)
    lines = _of(json_lines, row.request_id)
    loggers = {line["logger"] for line in lines}
    # Arrival (the WSGI gate), the work pool (the audit row), the provider call.
    assert {"bot.slack.serving", "bot.audit", "bot.vps.client"} <= loggers, loggers
    for line in json_lines:
        assert set(line) >= {"time", "level", "logger", "message", "request_id"}
    # Nothing logged during the request carries another request's id.
    ids = {line["request_id"] for line in json_lines if line["request_id"]}
    assert ids == {row.request_id}


def test_a_backups_reply_carries_the_request_id_of_its_create(rig: AppRig, json_lines: Any) -> None:
    rig.bot.start_workers()
    assert rig.command("create web-server-01 before deploy").text == ""
    [create] = rig.audit("create", "ok")
    assert create.backup_id is not None and create.request_id
    rig.simulator.finish(create.backup_id)
    [completed] = rig.audit("backup.completed", timeout=10)
    assert completed.backup_id == create.backup_id
    assert completed.request_id == create.request_id  # one id from the command to its outcome
    lines = _of(json_lines, create.request_id)
    assert any("backup.completed" in line["message"] for line in lines), lines


def test_the_reference_a_person_sees_is_the_request_id(
    rig: AppRig, json_lines: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug while drawing the list")

    monkeypatch.setattr(blocks, "backup_list", broken)
    answer = text_of(rig.run("list"))
    reference = re.search(r"Reference for the bot's operators: `([0-9a-f]+)`", answer)
    assert reference, answer
    request_id = reference.group(1)
    [row] = rig.audit("list", "ok")  # the listing was audited before the drawing failed
    assert row.request_id == request_id
    [failure] = [line for line in _of(json_lines, request_id) if line["level"] == "ERROR"]
    assert f"reference {request_id}" in failure["message"]
    assert "RuntimeError: a bug while drawing the list" in failure["exception"]


def test_a_listener_failing_on_bolts_thread_logs_its_request_id(
    rig: AppRig, json_lines: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    listing = rig.run("list")
    action = SlackSender.action_for(listing["blocks"], f"{blocks.LIST_PAGE}_next")

    def broken(cls: type, value: str) -> Any:
        raise RuntimeError("a bug in the listener")

    monkeypatch.setattr(blocks.PageState, "decode", classmethod(broken))
    assert rig.sender.block_actions(action, user_id="U_ALICE", channel_id="C_OPS").status == 200

    def failed() -> list[dict[str, Any]]:
        return [line for line in json_lines if "listener" in line["message"]]

    assert wait_until(lambda: bool(failed()))
    [line] = failed()
    assert line["request_id"] and f"reference {line['request_id']}" in line["message"]
    arrival = [x for x in _of(json_lines, line["request_id"]) if x["logger"] == "bot.slack.serving"]
    assert arrival, "the listener's id is not the one given where the request arrived"


def test_socket_mode_requests_get_ids_and_ack_times_and_metrics_have_their_port(
    slack: SlackDouble, simulator: Simulator, database_url: str, json_lines: Any
) -> None:
    rig = SocketRig(slack, simulator, database_url)  # type: ignore[arg-type]
    try:
        with rig.bot.metrics_server(host="127.0.0.1", port=0) as server:
            url = f"{server.url}/metrics"
            before = value(scrape(url), "backupbot_ack_seconds_count", kind="command")
            envelope, _, elapsed = rig.command("list web-server-01")
            assert elapsed < 3.0
            assert "web-server-01" in text_of(rig.answer(envelope))
            assert wait_until(
                lambda: (
                    value(scrape(url), "backupbot_ack_seconds_count", kind="command") == before + 1
                )
            )
        with rig.bot.sessions() as session:
            [row] = session.scalars(select(AuditEvent).where(AuditEvent.action == "list"))
        assert row.request_id and REQUEST_ID.match(row.request_id)
        loggers = {line["logger"] for line in _of(json_lines, row.request_id)}
        assert {"bot.slack.serving", "bot.audit", "bot.vps.client"} <= loggers, loggers
    finally:
        rig.close()


def test_log_format_json_from_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="LOG_FORMAT must be text or json"):
        load_settings({"LOG_FORMAT": "yaml"}, env_file=None)
    env = {"PATH": "/usr/bin:/bin", "LOG_FORMAT": "json", "DATABASE_URL": "sqlite:///bot.db"}
    result = subprocess.run(
        [sys.executable, "-m", "bot", "db", "upgrade"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines and all(line["logger"].startswith("alembic") for line in lines)
    assert any("0008_audit_request_id" in line["message"] for line in lines)


# -- the request_id column -----------------------------------------------------------------------


def _refused(sessions: sessionmaker[Session], sql: str) -> bool:
    try:
        with sessions.begin() as session:
            session.execute(text(sql))
    except DBAPIError as exc:
        return "append-only" in str(exc)
    return False


def test_0008_keeps_old_rows_verifying_the_triggers_refusing_and_hashes_request_ids(
    database_url: str,
) -> None:
    upgrade(database_url, "0007_audit_review_indexes")
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    try:
        _old_rows_0007(sessions)
        upgrade(database_url)
        log = AuditLog(sessions)
        assert log.verify().ok
        assert _refused(sessions, "UPDATE audit_events SET request_id = 'x' WHERE id = 1")
        assert _refused(sessions, "DELETE FROM audit_events WHERE id = 1")
        with request_scope("feedc0de"):
            new = log.record(Actor("U_ALICE", "alice"), "list", Outcome.OK)
        outside = log.record(Actor("U_ALICE", "alice"), "list", Outcome.OK)
        assert (new.request_id, outside.request_id) == ("feedc0de", None)
        buffer = io.StringIO()
        log.export(buffer, "csv", request_id="feedc0de")
        [exported] = list(csv.DictReader(io.StringIO(buffer.getvalue())))
        assert exported["request_id"] == "feedc0de" and exported["id"] == str(new.id)
        assert log.verify().ok

        drop_triggers(sessions)  # what someone with the database would do first
        tamper = "UPDATE audit_events SET request_id = :value WHERE id = :id"
        for changed, broken in (
            ({"value": "cafe0000", "id": new.id}, new.id),  # changed
            ({"value": None, "id": new.id}, new.id),  # cleared
            ({"value": "cafe0000", "id": outside.id}, outside.id),  # set on a row without one
            ({"value": "cafe0000", "id": 2}, 2),  # set on a row from before 0008
        ):
            with sessions.begin() as session:
                session.execute(text(tamper), changed)
            result = log.verify()
            assert not result.ok and result.broken_at == broken, (changed, result)
            with sessions.begin() as session:  # put it back
                restore = "UPDATE audit_events SET request_id = CASE WHEN id = :i THEN :r END"
                session.execute(text(restore), {"i": new.id, "r": "feedc0de"})
            assert log.verify().ok
    finally:
        engine.dispose()


def _old_rows_0007(sessions: sessionmaker[Session]) -> None:
    """Three rows as the 0007 code wrote them, inserted without the request_id column."""
    previous = GENESIS
    from datetime import UTC, datetime

    when = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    with sessions.begin() as session:
        for number in (1, 2, 3):
            row: dict[str, Any] = {
                "id": number,
                "occurred_at": when,
                "actor_user_id": "U_OLD",
                "actor_name": "old",
                "actor_team_id": "T111",
                "channel_id": "C_OPS",
                "action": "list",
                "server_id": 12345,
                "backup_id": None,
                "parameters": {},
                "outcome": "ok",
                "provider_status": None,
                "detail": "",
            }
            digest = row_digest(previous, row)
            table = AuditEvent.__table__
            statement = insert(table).values(**row, prev_hash=previous, row_hash=digest)
            session.execute(statement)
            previous = digest
        if session.get_bind().dialect.name == "postgresql":  # ids given: move the sequence on
            session.execute(text("SELECT setval(pg_get_serial_sequence('audit_events', 'id'), 3)"))


def test_0008_downgrades_and_the_triggers_still_refuse(database_url: str) -> None:
    upgrade(database_url)
    command.downgrade(alembic_config(database_url), "0007_audit_review_indexes")
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    try:
        with sessions.begin() as session:
            session.execute(
                text(
                    "INSERT INTO audit_events (id, occurred_at, actor_user_id, actor_name, "
                    "action, parameters, outcome, detail) VALUES (1, '2026-12-01 00:00:00', "
                    "'U_A', 'a', 'list', '{}', 'ok', '')"
                )
            )
        assert _refused(sessions, "UPDATE audit_events SET detail = 'x' WHERE id = 1")
    finally:
        engine.dispose()
    upgrade(database_url)  # and up again


def test_the_command_line_exports_one_requests_rows(
    rig: AppRig,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    rig.run("list web-server-01")
    [row] = rig.audit("list", "ok")
    rig.run("list db-server-01")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.setenv("DATABASE_URL", rig.settings.database_url)
    assert cli.main(["audit", "export", "--format", "jsonl", "--request", str(row.request_id)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows] == [row.id]
    assert rows[0]["request_id"] == row.request_id


def test_run_in_socket_mode_serves_metrics_on_metrics_port_with_json_logs(
    tmp_path: Path, slack: SocketModeDouble, simulator: Simulator
) -> None:
    with socket.socket() as probe:  # a free port for METRICS_PORT (which must name one)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = _start_run(
        tmp_path,
        slack,
        simulator,
        "--host",
        "127.0.0.1",
        SLACK_APP_TOKEN=slack.app_token,
        METRICS_PORT=str(port),
        METRICS_TOKEN=METRICS_TOKEN,
        LOG_FORMAT="json",
        LOG_LEVEL="DEBUG",
    )
    lines: list[str] = []
    assert process.stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(process.stderr or ()), daemon=True)
    reader.start()
    try:
        assert slack.socket_connected(timeout=20)
        assert wait_until(lambda: any("GET /metrics and /healthz on" in x for x in lines), 20)
        url = f"http://127.0.0.1:{port}/metrics"
        assert httpx.get(url, timeout=5).status_code == 401
        before = value(scrape(url, METRICS_TOKEN), "backupbot_ack_seconds_count", kind="command")
        envelope = slack.socket_slash_command("list web-server-01", "U_ALICE", "C_OPS")
        slack.socket_ack(envelope.envelope_id, timeout=3)
        slack.wait_for(lambda e: isinstance(e, RecordedResponse), timeout=10)
        after = value(scrape(url, METRICS_TOKEN), "backupbot_ack_seconds_count", kind="command")
        assert after == before + 1
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json() == {"ok": True}
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        reader.join(5)
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    audit = [r for r in records if r["logger"] == "bot.audit" and "list" in r["message"]]
    assert audit and audit[0]["request_id"], records[-5:]
    same = {r["logger"] for r in records if r["request_id"] == audit[0]["request_id"]}
    assert {"bot.slack.serving", "bot.audit", "bot.vps.client"} <= same
    for secret in (SIM_TOKEN, METRICS_TOKEN, slack.bot_token, slack.app_token):
        assert secret not in "".join(lines)
