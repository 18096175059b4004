import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from bot import db
from bot.db import WatchJob
from bot.leases import Leases


def test_migrations_match_models_and_round_trip(database_url: str) -> None:
    engine = db.make_engine(database_url)
    try:
        db.upgrade(database_url)
        assert db.current_revision(engine) == db.head_revision()
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), db.Base.metadata) == []
        when = datetime(2025, 1, 16, 5, 0, tzinfo=timezone(timedelta(hours=2)))
        with db.make_session_factory(engine)() as session:
            session.add(
                db.AuditEvent(
                    occurred_at=when,
                    actor_user_id="U123",
                    action="backup.create",
                    server_id=12345,
                    parameters={"description": "pre-deploy"},
                    outcome=db.Outcome.OK,
                    provider_status=201,
                )
            )
            session.commit()
        with db.make_session_factory(engine)() as session:
            row = session.scalars(select(db.AuditEvent)).one()
        assert row.occurred_at == datetime(2025, 1, 16, 3, 0, tzinfo=UTC)
        assert row.occurred_at.tzinfo is not None
        assert row.parameters == {"description": "pre-deploy"}
        assert row.provider_status == 201
    finally:
        engine.dispose()


def test_naive_datetimes_are_refused(database_url: str) -> None:
    db.upgrade(database_url)
    engine = db.make_engine(database_url)
    try:
        with db.make_session_factory(engine)() as session:
            session.add(
                db.AuditEvent(
                    occurred_at=datetime(2025, 1, 1),
                    actor_user_id="U1",
                    action="x",
                    outcome="ok",
                )
            )
            with pytest.raises(Exception, match="naive datetime"):
                session.commit()
    finally:
        engine.dispose()


def test_empty_sqlite_is_upgraded_on_start(tmp_path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    assert db.current_revision(engine) is None
    db.ensure_schema(engine)
    assert db.current_revision(engine) == db.head_revision()
    engine.dispose()


def _job(sessions: sessionmaker[Session], now: datetime) -> None:
    with sessions.begin() as session:
        session.add(
            WatchJob(
                backup_id=1, server_id=1, requester_id="U1", backup_created_at=now,
                next_poll_at=now, registered_at=now,
            )
        )  # fmt: skip


def _claim(leases: Leases, seconds: float = 60) -> list[WatchJob]:
    return leases.claim(
        WatchJob.notified_at.is_(None),
        lease=timedelta(seconds=seconds),
        order_by=WatchJob.id,
        limit=10,
    )


def test_a_lease_that_ran_out_is_lost_even_if_nobody_took_it(
    sessions: sessionmaker[Session],
) -> None:
    _job(sessions, datetime(2026, 12, 1, 12, tzinfo=UTC))
    leases = Leases(sessions, WatchJob, "worker-1")
    [job] = _claim(leases, seconds=0.3)
    assert leases.save(job, attempts=1)
    assert _claim(Leases(sessions, WatchJob, "worker-2")) == []  # held
    time.sleep(0.4)  # by the database's clock
    assert not leases.save(job, attempts=2)  # its writes fail once the lease ran out
    assert not leases.renew([job], timedelta(seconds=60))  # and it cannot be revived
    [taken] = _claim(Leases(sessions, WatchJob, "worker-2"))
    assert taken.lease_token != job.lease_token and taken.attempts == 1


def test_a_claim_is_its_token_not_its_owner_or_time(sessions: sessionmaker[Session]) -> None:
    """The same worker name claiming again (a restarted process reusing a name, two rounds of
    one worker) does not inherit the older claim: only the token's holder writes."""
    _job(sessions, datetime(2026, 12, 1, 12, tzinfo=UTC))
    first = Leases(sessions, WatchJob, "worker-1")
    [old] = _claim(first, seconds=0.2)
    time.sleep(0.3)
    [new] = _claim(Leases(sessions, WatchJob, "worker-1"))  # same name, a new claim
    assert not first.save(old, attempts=5)
    first.release([old])  # a late release of the old claim leaves the new one alone
    with sessions() as session:
        row = session.scalars(select(WatchJob)).one()
        assert (row.lease_token, row.attempts) == (new.lease_token, 0)
        assert row.lease_expires_at is not None


def test_a_renewed_lease_is_measured_on_the_database_clock(
    sessions: sessionmaker[Session],
) -> None:
    _job(sessions, datetime(2026, 12, 1, 12, tzinfo=UTC))
    leases = Leases(sessions, WatchJob, "worker-1")
    [job] = _claim(leases, seconds=0.3)
    before = leases.now()
    [held] = leases.renew([job], timedelta(minutes=10))
    assert timedelta(minutes=9) < held.lease_expires_at - before < timedelta(minutes=11)
    time.sleep(0.4)  # past the first lease, well within the renewed one
    assert leases.save(job, attempts=3)
    assert _claim(Leases(sessions, WatchJob, "worker-2")) == []


def test_sessions_are_read_committed_with_bounded_lock_waits(database_url: str) -> None:
    """Pinned, not inherited: a database whose default is REPEATABLE READ (under which the
    compare-and-sets and the audit chain could fork) still gets READ COMMITTED, and a lock held
    elsewhere makes a write fail after LOCK_WAIT_MS instead of hanging."""
    if database_url.startswith("postgresql"):
        name = database_url.rpartition("/")[2]
        admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(
                text(
                    f'ALTER DATABASE "{name}" SET default_transaction_isolation = '
                    "'repeatable read'"
                )
            )
        admin.dispose()
    engine = db.make_engine(database_url)
    db.upgrade(database_url)
    try:
        sessions = db.make_session_factory(engine)
        _job(sessions, datetime(2026, 12, 1, 12, tzinfo=UTC))
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                assert conn.scalar(text("SHOW transaction_isolation")) == "read committed"
                assert conn.scalar(text("SHOW lock_timeout")) == f"{db.LOCK_WAIT_MS // 1000}s"
            else:
                assert conn.scalar(text("PRAGMA busy_timeout")) == db.LOCK_WAIT_MS
        holder = engine.connect()
        try:
            holder.begin()
            holder.execute(update(WatchJob).values(attempts=1))  # holds the row (SQLite: the db)
            began = time.monotonic()
            with pytest.raises(OperationalError), sessions.begin() as session:
                session.execute(update(WatchJob).values(attempts=2))
            waited = time.monotonic() - began
            assert db.LOCK_WAIT_MS / 1000 - 0.5 < waited < db.LOCK_WAIT_MS / 1000 + 5
        finally:
            holder.rollback()
            holder.close()
    finally:
        engine.dispose()


def test_leases_work_without_returning(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An SQLite older than 3.35 has no UPDATE … RETURNING: the token tells the claimed rows."""
    _job(sessions, datetime(2026, 12, 1, 12, tzinfo=UTC))
    with sessions() as session:
        dialect = session.get_bind().dialect
    monkeypatch.setattr(dialect, "update_returning", False)
    leases = Leases(sessions, WatchJob, "worker-1")
    [job] = _claim(leases, seconds=0.3)
    assert _claim(Leases(sessions, WatchJob, "worker-2")) == []
    assert leases.renew([job], timedelta(seconds=60)) == [job]
    time.sleep(0.4)  # past the first lease, within the renewed one
    assert leases.save(job, attempts=1)
