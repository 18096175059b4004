"""The audit table's hash chain, on SQLite and PostgreSQL: intact, edited, removed, concurrent."""

from __future__ import annotations

import csv
import importlib.util
import io
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from bot.audit import GENESIS, Actor, AuditLog
from bot.db import AuditEvent, Outcome, make_engine, make_session_factory

ALICE = Actor("U_ALICE", "alice", "T111", "C_OPS")
_MIGRATION = Path(__file__).resolve().parent.parent / "migrations/versions/0006_audit_trust.py"


def drop_triggers(sessions: sessionmaker[Session]) -> None:
    """What an attacker with the database does first: the append-only triggers go."""
    spec = importlib.util.spec_from_file_location("audit_trust_migration", _MIGRATION)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    with sessions.begin() as session:
        postgres = session.get_bind().dialect.name == "postgresql"
        for statement in migration.POSTGRES_DROP if postgres else migration.SQLITE_DROP:
            session.execute(text(statement))


def _fill(log: AuditLog, count: int) -> list[AuditEvent]:
    return [
        log.record(
            ALICE,
            "create",
            Outcome.OK,
            server_id=12345,
            backup_id=1000 + i,
            parameters={"description": f"before deploy {i}", "size_mb": 12.5},
            provider_status=201,
            detail=f"backup {1000 + i} started",
        )
        for i in range(count)
    ]


def test_an_untouched_log_verifies_and_reports_its_head(sessions: sessionmaker[Session]) -> None:
    log = AuditLog(sessions)
    assert log.verify().ok and log.verify().head == GENESIS
    rows = _fill(log, 5)
    result = log.verify()
    assert result.ok and result.rows == 5 and result.head == rows[-1].row_hash
    assert rows[0].prev_hash == GENESIS
    assert [r.prev_hash for r in rows[1:]] == [r.row_hash for r in rows[:-1]]


def test_an_edited_row_is_found(sessions: sessionmaker[Session]) -> None:
    log = AuditLog(sessions)
    rows = _fill(log, 5)
    drop_triggers(sessions)
    with sessions.begin() as session:
        session.execute(
            update(AuditEvent).where(AuditEvent.id == rows[2].id).values(outcome="denied")
        )
    result = log.verify()
    assert not result.ok and result.broken_at == rows[2].id
    assert "changed" in result.reason


def test_a_removed_row_is_found(sessions: sessionmaker[Session]) -> None:
    log = AuditLog(sessions)
    rows = _fill(log, 5)
    drop_triggers(sessions)
    with sessions.begin() as session:
        session.execute(delete(AuditEvent).where(AuditEvent.id == rows[1].id))
    result = log.verify()
    assert not result.ok and result.broken_at == rows[2].id
    assert "removed" in result.reason


def test_verify_reads_in_batches_and_finds_a_removal_across_their_edges(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.audit._VERIFY_BATCH", 3)  # 10 rows: batches of 3, 3, 3, 1
    log = AuditLog(sessions)
    rows = _fill(log, 10)
    result = log.verify()
    assert result.ok and result.rows == 10 and result.head == rows[-1].row_hash
    drop_triggers(sessions)
    with sessions.begin() as session:
        session.execute(delete(AuditEvent).where(AuditEvent.id == rows[6].id))  # 2nd batch's end
    result = log.verify()
    assert not result.ok and result.broken_at == rows[7].id and "removed" in result.reason


def test_a_rechained_forgery_still_breaks_at_the_edit(sessions: sessionmaker[Session]) -> None:
    """Editing a row and fixing its own hash is not enough: the next row points at the old one."""
    from bot.audit import _row, row_digest

    log = AuditLog(sessions)
    rows = _fill(log, 4)
    drop_triggers(sessions)
    with sessions.begin() as session:
        event = session.get(AuditEvent, rows[1].id)
        assert event is not None
        event.actor_user_id = "U_MALLORY"
        event.row_hash = row_digest(event.prev_hash or GENESIS, _row(event))
    result = log.verify()
    assert result.broken_at == rows[2].id


def test_concurrent_writers_keep_one_chain(
    sessions: sessionmaker[Session], database_url: str
) -> None:
    """Four writers with their own engines, as four instances would have."""
    errors: list[BaseException] = []

    def write() -> None:
        engine = make_engine(database_url)
        try:
            _fill(AuditLog(make_session_factory(engine)), 15)
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    result = AuditLog(sessions).verify()
    assert result.ok and result.rows == 60
    with sessions() as session:
        hashes = list(session.scalars(select(AuditEvent.prev_hash)))
    assert len(set(hashes)) == 60  # no two rows claim the same predecessor: no fork


def test_export_writes_every_row_as_csv(sessions: sessionmaker[Session]) -> None:
    log = AuditLog(sessions)
    rows = _fill(log, 3)
    out = io.StringIO()
    assert log.export_csv(out) == 3
    table = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [int(r["backup_id"]) for r in table] == [r.backup_id for r in rows]
    assert table[0]["actor_name"] == "alice" and '"size_mb": 12.5' in table[0]["parameters"]
    assert table[-1]["row_hash"] == rows[-1].row_hash
    later = io.StringIO()
    assert log.export_csv(later, since=rows[-1].occurred_at + timedelta(seconds=1)) == 0
