"""Signed checkpoints, append-only triggers, prune and the chain's lock, on SQLite and PostgreSQL.

Tampering is done as an attacker with the database would: triggers dropped, then raw SQL.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from bot.audit import (
    _ADVISORY_LOCK,
    AuditLog,
    AuditUnavailable,
    Checkpoint,
    _row,
    row_digest,
    sign_checkpoint,
)
from bot.db import AuditEvent, utcnow
from tests.conftest import PG_URL
from tests.test_audit import _fill, drop_triggers

KEY = "k3y-0f-the-aud1t-l0g-f0r-tests"
ROOT = Path(__file__).resolve().parent.parent


def _raw(sessions: sessionmaker[Session], sql: str, **params: object) -> None:
    with sessions.begin() as session:
        session.execute(text(sql), params)


def test_checkpoint_is_signed_stored_and_verified(sessions: sessionmaker[Session]) -> None:
    log = AuditLog(sessions)
    rows = _fill(log, 3)
    checkpoint = log.checkpoint(KEY)
    assert (checkpoint.rows, checkpoint.last_id, checkpoint.head) == (
        3,
        rows[-1].id,
        rows[-1].row_hash,
    )
    assert checkpoint.signed_by(KEY) and not checkpoint.signed_by("another-key-entirely")
    assert Checkpoint.from_json(checkpoint.to_json()) == checkpoint
    _fill(log, 2)
    result = log.verify(KEY)
    assert result.ok and result.keyed and result.checkpoint == checkpoint
    assert log.checkpoints() == [checkpoint]
    chain_only = log.verify()
    assert chain_only.ok and not chain_only.keyed and chain_only.checkpoint is None


def test_removing_the_newest_rows_is_caught_by_the_checkpoint(
    sessions: sessionmaker[Session],
) -> None:
    log = AuditLog(sessions)
    rows = _fill(log, 6)
    checkpoint = log.checkpoint(KEY)
    drop_triggers(sessions)
    _raw(sessions, "DELETE FROM audit_events WHERE id >= :id", id=rows[4].id)
    assert log.verify().ok  # the chain alone cannot see it
    result = log.verify(KEY)
    assert not result.ok and result.checkpoint == checkpoint
    assert "newest rows were removed" in result.checkpoint_failed
    assert f"checkpoint #{checkpoint.id}" in result.checkpoint_failed
    assert result.broken_at == rows[-1].id


def test_an_edited_row_is_named(sessions: sessionmaker[Session]) -> None:
    log = AuditLog(sessions)
    rows = _fill(log, 5)
    log.checkpoint(KEY)
    drop_triggers(sessions)
    _raw(sessions, "UPDATE audit_events SET detail = 'nothing' WHERE id = :id", id=rows[2].id)
    result = log.verify(KEY)
    assert not result.ok and result.broken_at == rows[2].id and "changed" in result.reason


def test_a_consistently_rewritten_chain_is_caught_by_the_checkpoint_head(
    sessions: sessionmaker[Session],
) -> None:
    log = AuditLog(sessions)
    rows = _fill(log, 3)
    early = log.checkpoint(KEY)
    rows += _fill(log, 4)
    late = log.checkpoint(KEY)
    drop_triggers(sessions)
    # Rewrite from row 5 on, recomputing every hash after it: the chain itself is flawless.
    with sessions.begin() as session:
        session.execute(
            text("UPDATE audit_events SET actor_user_id = 'U_MALLORY' WHERE id = :id"),
            {"id": rows[4].id},
        )
        previous = rows[3].row_hash
        for event in session.scalars(
            select(AuditEvent).where(AuditEvent.id >= rows[4].id).order_by(AuditEvent.id)
        ):
            digest = row_digest(previous, _row(event))
            session.execute(
                text("UPDATE audit_events SET prev_hash = :p, row_hash = :h WHERE id = :id"),
                {"p": previous, "h": digest, "id": event.id},
            )
            previous = digest
    assert log.verify().ok
    result = log.verify(KEY)
    assert not result.ok and result.checkpoint == late and result.broken_at == rows[-1].id
    assert "rewritten" in result.checkpoint_failed
    assert early.describe() in result.checkpoint_failed  # the rewrite is after its row
    assert f"rows after {rows[2].id}" in result.checkpoint_failed


def test_a_forged_checkpoint_is_reported_and_not_trusted(
    sessions: sessionmaker[Session],
) -> None:
    log = AuditLog(sessions)
    rows = _fill(log, 4)
    log.checkpoint(KEY)
    drop_triggers(sessions)
    _raw(sessions, "DELETE FROM audit_events WHERE id = :id", id=rows[-1].id)
    # The attacker signs a checkpoint of the shortened log with a key of their own.
    forged = sign_checkpoint("not-the-real-key-at-all", "checkpoint", 3, rows[2].id, "x", utcnow())
    result = log.verify(KEY, forged)
    assert not result.ok and "forged" in result.checkpoint_failed and result.checkpoint is None
    with sessions.begin() as session:
        AuditLog._store(session, forged)
    stored = log.verify(KEY)
    assert not stored.ok and "forged" in stored.checkpoint_failed
    assert "newest rows were removed" in stored.checkpoint_failed  # the real one still speaks
    assert stored.checkpoint is not None and stored.checkpoint.signature != forged.signature


def test_update_and_delete_are_refused_by_the_database(sessions: sessionmaker[Session]) -> None:
    log = AuditLog(sessions)
    rows = _fill(log, 2)
    log.checkpoint(KEY)
    for sql in (
        "UPDATE audit_events SET detail = 'x'",
        "DELETE FROM audit_events",
        "UPDATE audit_checkpoints SET row_count = 1",
        "DELETE FROM audit_checkpoints",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            _raw(sessions, sql)
    assert log.verify(KEY).ok and log.verify(KEY).rows == len(rows)


def test_prune_keeps_a_verifiable_chain(sessions: sessionmaker[Session]) -> None:
    log = AuditLog(sessions)
    old = _fill(log, 4)
    later = utcnow() + timedelta(days=10)
    result = log.prune(KEY, timedelta(days=5), now=later)
    assert result.removed == 4 and result.anchor is not None
    assert result.anchor.last_id == old[-1].id and result.checkpoint.rows == 4
    kept = _fill(log, 3)
    assert kept[0].prev_hash == old[-1].row_hash and kept[0].id > old[-1].id
    verified = log.verify(KEY)
    assert verified.ok and verified.rows == 3 and verified.anchor == result.anchor
    assert log.checkpoint(KEY).rows == 7
    again = log.prune(KEY, timedelta(days=5), now=utcnow())
    assert again.removed == 0 and log.verify(KEY).ok
    # Removing kept rows is still refused, and a row removed after it is still found.
    with pytest.raises(DBAPIError, match="append-only"):
        _raw(sessions, "DELETE FROM audit_events WHERE id = :id", id=kept[0].id)
    drop_triggers(sessions)
    _raw(sessions, "DELETE FROM audit_events WHERE id = :id", id=kept[0].id)
    broken = log.verify(KEY)
    assert not broken.ok and broken.broken_at == kept[1].id


def test_a_held_lock_fails_the_write_in_time(
    sessions: sessionmaker[Session], database_url: str
) -> None:
    log = AuditLog(sessions, lock_timeout=0.5)
    if database_url.startswith("postgresql"):
        holder = create_engine(database_url)
        connection = holder.connect()
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _ADVISORY_LOCK})
    else:
        raw = sqlite3.connect(make_url(database_url).database or "")
        raw.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    try:
        with pytest.raises(AuditUnavailable, match="busy"):
            _fill(log, 1)
    finally:
        if database_url.startswith("postgresql"):
            connection.close()
            holder.dispose()
        else:
            raw.rollback()
            raw.close()
    assert time.monotonic() - started < 3
    assert len(_fill(log, 1)) == 1 and log.verify().ok


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="no PostgreSQL (set BACKUPBOT_TEST_POSTGRES_URL)")
def test_four_processes_write_one_chain(sessions: sessionmaker[Session], database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("the multi-process test runs on PostgreSQL")
    env = {**os.environ, "WORKER_DATABASE_URL": database_url, "WORKER_ROWS": "500"}
    workers = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "audit_worker.py")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [worker.communicate(timeout=120) for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * 4, outputs
    result = AuditLog(sessions).verify()
    assert result.ok and result.rows == 2000, result
    with sessions() as session:
        assert session.scalar(select(func.count(func.distinct(AuditEvent.prev_hash)))) == 2000


def test_the_key_is_never_stored(sessions: sessionmaker[Session]) -> None:
    log = AuditLog(sessions)
    _fill(log, 3)
    log.checkpoint(KEY)
    log.prune(KEY, timedelta(days=1), now=utcnow() + timedelta(days=2))
    with sessions() as session:
        for table in ("audit_events", "audit_checkpoints"):
            for row in session.execute(text(f"SELECT * FROM {table}")):  # noqa: S608
                assert KEY not in repr(tuple(row))


def test_the_checkpoint_writer_writes_when_due(sessions: sessionmaker[Session]) -> None:
    from bot.audit import CheckpointWriter

    log = AuditLog(sessions)
    _fill(log, 2)
    posted: list[Checkpoint] = []
    writer = CheckpointWriter(log, KEY, timedelta(hours=24), on_checkpoint=posted.append)
    first = writer.run_once()
    assert first is not None and first.rows == 2 and posted == [first]
    assert writer.run_once() is None  # not due again for a day
    writer.start()
    writer.stop()
    assert log.checkpoints() == [first]
