from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select
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


def test_a_lease_that_ran_out_is_lost_even_if_nobody_took_it(
    sessions: sessionmaker[Session],
) -> None:
    now = [datetime(2026, 12, 1, 12, tzinfo=UTC)]
    leases = Leases(sessions, WatchJob, "worker-1", clock=lambda: now[0])
    with sessions.begin() as session:
        session.add(
            WatchJob(
                backup_id=1, server_id=1, requester_id="U1", backup_created_at=now[0],
                next_poll_at=now[0], registered_at=now[0],
            )
        )  # fmt: skip
    [job] = leases.claim(
        WatchJob.notified_at.is_(None),
        now=now[0],
        lease=timedelta(seconds=60),
        order_by=WatchJob.id,
        limit=10,
    )
    assert leases.save(job, attempts=1)
    now[0] += timedelta(seconds=61)
    assert not leases.save(job, attempts=2)  # its writes fail once the lease ran out
    other = Leases(sessions, WatchJob, "worker-2", clock=lambda: now[0])
    assert other.claim(
        WatchJob.notified_at.is_(None), now=now[0], lease=timedelta(60), order_by=WatchJob.id,
        limit=10,
    )  # fmt: skip
