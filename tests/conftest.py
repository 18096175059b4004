"""Shared fixtures: a fresh database on SQLite and, when .ci/run provides one, PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from bot.sandbox.vps import Simulator
from tests.socket_double import SocketModeDouble as SlackDouble

SIM_TOKEN = "sim-token-s3cr3t"

PG_URL = os.environ.get("BACKUPBOT_TEST_POSTGRES_URL")
REQUIRE_PG = os.environ.get("BACKUPBOT_REQUIRE_POSTGRES") == "1"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    if not PG_URL:
        if REQUIRE_PG:
            pytest.fail("BACKUPBOT_REQUIRE_POSTGRES=1 but BACKUPBOT_TEST_POSTGRES_URL is unset")
        pytest.skip("no PostgreSQL (set BACKUPBOT_TEST_POSTGRES_URL, as .ci/run does)")
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"bb_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base, _, _ = PG_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    """A session factory on a migrated, empty database (SQLite and PostgreSQL)."""
    from bot.db import make_engine, make_session_factory, upgrade

    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


@pytest.fixture
def make_simulator() -> Iterator[Callable[..., Simulator]]:
    """Start simulators on loopback (token SIM_TOKEN unless given); all stop at teardown."""
    started: list[Simulator] = []

    def make(token: str = SIM_TOKEN, **kwargs: Any) -> Simulator:
        kwargs.setdefault("complete_after", 3600)  # backups complete only when a test says so
        sim = Simulator(token, **kwargs)
        sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def simulator(make_simulator: Callable[..., Simulator]) -> Simulator:
    """The provider simulator on loopback; backups complete only when a test says so."""
    return make_simulator()


@pytest.fixture
def slack() -> Iterator[SlackDouble]:
    double = SlackDouble()
    double.start()
    try:
        yield double
    finally:
        double.stop()


@pytest.fixture
def world(
    tmp_path: Any, slack: SlackDouble, simulator: Simulator, database_url: str
) -> Iterator[Callable[..., Any]]:
    """Starts `backupbot run --http` processes (`tests.fault_rig.BotProcess`) on one database,
    migrated first as the release step does (PostgreSQL is not upgraded by `run`); stops them."""
    from bot.db import upgrade
    from tests.fault_rig import PROCESS_SECRET, BotProcess  # it imports this module

    upgrade(database_url)
    started: list[BotProcess] = []

    def start(**env: str) -> BotProcess:
        bot = BotProcess(tmp_path, slack, simulator, database_url, PROCESS_SECRET, **env)
        started.append(bot)
        return bot

    yield start
    for bot in started:
        bot.stop()
