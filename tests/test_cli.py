"""The `backupbot` command line, run as a user runs it: a real process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.sandbox.slack import RecordedResponse, SlackSender
from bot.sandbox.vps import Simulator
from tests.conftest import SIM_TOKEN
from tests.socket_double import SocketModeDouble as SlackDouble

ROOT = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    """This environment without the bot's settings (a developer's own would leak in), plus
    `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VPS_", "SLACK_", "BACKUP_"))}
    for name in ("DATABASE_URL", "PORT", "LOG_LEVEL", "WATCH_DEADLINE_HOURS"):
        env.pop(name, None)
    env.update(extra)
    return env


def _run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = _run("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("run", "console", "demo", "simulator", "audit", "db"):
        assert re.search(rf"^\s+{command}\b", result.stdout, re.MULTILINE), result.stdout


def test_simulator_without_a_token_is_one_clear_line(tmp_path: Path) -> None:
    result = _run("simulator", "--port", "0", cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "VPS_API_TOKEN" in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_database_url_is_one_clear_line(tmp_path: Path) -> None:
    result = _run("db", "upgrade", cwd=tmp_path, DATABASE_URL="not a url")
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "DATABASE_URL" in result.stderr


def test_unreachable_database_names_the_problem_without_the_password(tmp_path: Path) -> None:
    url = "postgresql+psycopg://bob:hunter2secret@127.0.0.1:1/nothing"
    result = _run("db", "upgrade", cwd=tmp_path, DATABASE_URL=url)
    assert result.returncode != 0
    assert "cannot upgrade the database" in result.stderr
    assert "hunter2secret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_db_upgrade_creates_a_sqlite_database(tmp_path: Path) -> None:
    result = _run("db", "upgrade", cwd=tmp_path, DATABASE_URL="sqlite:///bot.db")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "bot.db").stat().st_size > 0


@pytest.fixture
def simulator_url(tmp_path: Path) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "simulator", "--port", "0", "--complete-after", "1"],
        cwd=tmp_path,
        env=_env(VPS_API_TOKEN="t0k"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+\S*?)[ ,]", line)
        assert match, f"no URL in {line!r}"
        yield match.group(1).rstrip("/")
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_simulator_command_serves_the_contract(simulator_url: str) -> None:
    auth = {"Authorization": "Bearer t0k"}
    with httpx.Client(base_url=simulator_url, timeout=10) as http:
        assert http.get("/backups/", params={"server_id": 12345}).status_code == 401
        listing = http.get("/backups/", params={"server_id": 12345}, headers=auth)
        assert listing.status_code == 200
        seeded = listing.json()["results"]
        assert seeded and all(b["server"]["id"] == 12345 for b in seeded)

        created = http.post("/backups/", json={"server_id": 12345}, headers=auth)
        assert created.status_code == 201
        backup = created.json()
        assert backup["status"] == "in_progress" and backup["size_mb"] is None

        deadline = time.monotonic() + 10
        while True:
            results = http.get("/backups/", params={"server_id": 12345}, headers=auth).json()
            current = next(b for b in results["results"] if b["id"] == backup["id"])
            if current["status"] == "completed" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert current["status"] == "completed" and current["size_mb"] > 0

        assert http.delete(f"/backups/{backup['id']}/", headers=auth).status_code == 204
        assert http.delete(f"/backups/{backup['id']}/", headers=auth).status_code == 404


def _start_run(
    tmp_path: Path, slack: SlackDouble, simulator: Simulator, *args: str, **env: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "run", *args],
        cwd=tmp_path,
        env=_env(
            SLACK_BOT_TOKEN=slack.bot_token,
            SLACK_API_URL=slack.api_url,
            VPS_API_URL=simulator.base_url,
            VPS_API_TOKEN=SIM_TOKEN,
            DATABASE_URL=f"sqlite:///{tmp_path / 'bot.db'}",
            **env,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "Backup Bot stopped" in err  # the finally ran: leases released, pools drained
    return err


def test_run_in_http_mode_serves_slack_and_stops_on_sigterm(
    tmp_path: Path, slack: SlackDouble, simulator: Simulator
) -> None:
    process = _start_run(
        tmp_path,
        slack,
        simulator,
        "--http",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        SLACK_SIGNING_SECRET="process-secret",
    )
    try:
        assert process.stderr is not None
        port = None
        deadline = time.monotonic() + 20
        while port is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            match = re.search(r"/healthz on 127\.0\.0\.1:(\d+)", line)
            port = int(match.group(1)) if match else None
        assert port, "the server did not say where it listens"
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz", timeout=5).json()["ok"] is True
        sender = SlackSender(f"{base}/slack/events", "process-secret", slack)
        assert sender.slash_command("list web-server-01").status == 200
        slack.wait_for(lambda e: isinstance(e, RecordedResponse), timeout=10)
        assert (
            SlackSender(f"{base}/slack/events", "wrong", slack).slash_command("list").status == 401
        )
    finally:
        if process.poll() is None:
            _stop(process)


def test_run_in_socket_mode_connects_and_stops_on_sigterm(
    tmp_path: Path, slack: SlackDouble, simulator: Simulator
) -> None:
    process = _start_run(tmp_path, slack, simulator, SLACK_APP_TOKEN=slack.app_token)
    try:
        assert slack.socket_connected(timeout=20)
        envelope = slack.socket_slash_command("list web-server-01", "U_ALICE", "C_OPS")
        slack.socket_ack(envelope.envelope_id, timeout=3)
        slack.wait_for(lambda e: isinstance(e, RecordedResponse), timeout=10)
    finally:
        if process.poll() is None:
            _stop(process)


def test_audit_verify_and_export(tmp_path: Path) -> None:
    from sqlalchemy import update

    from bot.audit import Actor, AuditLog
    from bot.db import AuditEvent, Outcome, make_engine, make_session_factory

    url = f"sqlite:///{tmp_path / 'bot.db'}"
    assert _run("db", "upgrade", cwd=tmp_path, DATABASE_URL=url).returncode == 0
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    log = AuditLog(sessions)
    for backup_id in (1000, 1001, 1002):
        log.record(Actor("U_ALICE", "alice"), "delete", Outcome.OK, backup_id=backup_id)

    verified = _run("audit", "verify", cwd=tmp_path, DATABASE_URL=url)
    assert verified.returncode == 0, verified.stderr
    assert "intact: 3 rows" in verified.stdout

    exported = _run(
        "audit", "export", "--since", "1d", "-o", "out.csv", cwd=tmp_path, DATABASE_URL=url
    )
    assert exported.returncode == 0, exported.stderr
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert len(lines) == 4 and "1001" in lines[2]

    from tests.test_audit import drop_triggers

    drop_triggers(sessions)
    with sessions.begin() as session:
        session.execute(update(AuditEvent).where(AuditEvent.backup_id == 1001).values(detail="x"))
    engine.dispose()
    broken = _run("audit", "verify", cwd=tmp_path, DATABASE_URL=url)
    assert broken.returncode == 1
    assert "BROKEN at row 2" in broken.stderr
    bad_age = _run("audit", "export", "--since", "soon", cwd=tmp_path, DATABASE_URL=url)
    assert bad_age.returncode == 2 and "7d" in bad_age.stderr


AUDIT_KEY = "cli-audit-signing-key-0123456789"


def test_audit_checkpoint_verify_and_prune(tmp_path: Path) -> None:
    """Checkpoints as JSON lines, verify against them (stored or given), prune; the key is never
    in the output, the logs or the database."""
    import json

    from sqlalchemy import text

    from bot.audit import Actor, AuditLog
    from bot.db import Outcome, make_engine, make_session_factory
    from tests.test_audit import drop_triggers

    url = f"sqlite:///{tmp_path / 'bot.db'}"
    keyed = {"DATABASE_URL": url, "AUDIT_SIGNING_KEY": AUDIT_KEY}
    outputs: list[str] = []

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        result = _run(*args, cwd=tmp_path, **env)
        outputs.append(result.stdout + result.stderr)
        assert "Traceback" not in result.stderr
        return result

    assert run("db", "upgrade", DATABASE_URL=url).returncode == 0
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    log = AuditLog(sessions)
    for backup_id in range(1000, 1005):
        log.record(Actor("U_ALICE", "alice"), "delete", Outcome.OK, backup_id=backup_id)

    unkeyed = run("audit", "checkpoint", DATABASE_URL=url)
    assert unkeyed.returncode == 2 and len(unkeyed.stderr.splitlines()) == 1
    assert "AUDIT_SIGNING_KEY is not set" in unkeyed.stderr

    made = run("audit", "checkpoint", **keyed)
    assert made.returncode == 0, made.stderr
    line = made.stdout.strip()
    assert len(line.splitlines()) == 1
    checkpoint = json.loads(line)
    assert checkpoint["rows"] == 5 and checkpoint["last_id"] == 5 and checkpoint["id"] == 1
    (tmp_path / "cp.json").write_text(line + "\n")

    chain_only = run("audit", "verify", DATABASE_URL=url)
    assert chain_only.returncode == 0 and "chain only" in chain_only.stdout
    full = run("audit", "verify", **keyed)
    assert full.returncode == 0 and "matches checkpoint #1" in full.stdout, full.stdout

    drop_triggers(sessions)
    with sessions.begin() as session:
        session.execute(text("DELETE FROM audit_events WHERE id >= 4"))
        session.execute(text("DELETE FROM audit_checkpoints"))  # the stored one goes too
    stored = run("audit", "verify", **keyed)
    assert stored.returncode == 0 and "no signed checkpoint yet" in stored.stdout
    given = run("audit", "verify", "--checkpoint", "cp.json", **keyed)
    assert given.returncode == 1 and len(given.stderr.splitlines()) == 1
    assert "BROKEN at row 5" in given.stderr and "newest rows were removed" in given.stderr
    forged = dict(checkpoint, rows=3, last_id=3)
    faked = run("audit", "verify", "--checkpoint", json.dumps(forged), **keyed)
    assert faked.returncode == 1 and "forged" in faked.stderr
    garbage = run("audit", "verify", "--checkpoint", "{nope", **keyed)
    assert garbage.returncode == 2 and len(garbage.stderr.splitlines()) == 1

    no_retention = run("audit", "prune", **keyed)
    assert no_retention.returncode == 2 and "AUDIT_RETENTION_DAYS" in no_retention.stderr
    with sessions.begin() as session:
        session.execute(text("UPDATE audit_events SET detail = 'edited' WHERE id = 2"))
    refused = run("audit", "prune", **keyed, AUDIT_RETENTION_DAYS="1")
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1
    assert "nothing was pruned" in refused.stderr

    fresh_url = f"sqlite:///{tmp_path / 'fresh.db'}"
    fresh = dict(keyed, DATABASE_URL=fresh_url, AUDIT_RETENTION_DAYS="30")
    assert run("db", "upgrade", DATABASE_URL=fresh_url).returncode == 0
    fresh_engine = make_engine(fresh_url)
    AuditLog(make_session_factory(fresh_engine)).record(Actor("U_BOB"), "list", Outcome.OK)
    pruned = run("audit", "prune", **fresh)
    assert pruned.returncode == 0, pruned.stderr
    assert "nothing to prune" in pruned.stdout and json.loads(pruned.stdout.splitlines()[0])
    assert run("audit", "verify", **fresh).returncode == 0
    engine.dispose()
    fresh_engine.dispose()

    for database in ("bot.db", "fresh.db"):
        for path in tmp_path.glob(f"{database}*"):
            assert AUDIT_KEY.encode() not in path.read_bytes()
    assert not any(AUDIT_KEY in output for output in outputs)


def test_audit_export_as_json_lines_with_filters(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    from bot.audit import Actor, AuditLog
    from bot.db import Outcome, make_engine, make_session_factory, upgrade

    upgrade(url)
    engine = make_engine(url)
    log = AuditLog(make_session_factory(engine))
    log.record(Actor("U_ALICE"), "create", Outcome.OK, server_id=12345)
    log.record(Actor("U_CAROL"), "create", Outcome.DENIED, server_id=12345)
    log.record(Actor("U_CAROL"), "list", Outcome.OK)
    engine.dispose()
    result = _run(
        "audit", "export", "--format", "jsonl", "--user", "U_CAROL", "--outcome", "denied",
        cwd=tmp_path, DATABASE_URL=url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["actor_user_id"], r["action"], r["outcome"]) for r in rows] == [
        ("U_CAROL", "create", "denied")
    ]
    bad = _run("audit", "export", "--approval", "x", cwd=tmp_path, DATABASE_URL=url)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--approval" in bad.stderr
