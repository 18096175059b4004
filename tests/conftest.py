"""Shared fixtures: a fresh database on SQLite and, when .ci/run provides one, PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

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
