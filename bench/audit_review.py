"""Audit review at scale: `/backup audit` pages, `audit verify` and `audit export` on a big table.

For SQLite and PostgreSQL in turn (nothing shared but the row generator), a table of N hash-chained
audit rows is generated in bulk, then, side by side:

- filtered pages, `AuditLog.recent(20, ...)`, against the floor: the same rows fetched by raw SQL
  (`SELECT * FROM audit_events WHERE ... ORDER BY id DESC LIMIT 20`) on the same engine. Goal:
  within 2x of the floor or 5 ms of it, whichever is larger, and under 100 ms;
- `AuditLog.verify()` rows/s against building the same canonical JSON and hashing it with
  hashlib alone, no database (`row_digest` on rows in memory). Goal: within 3x;
- the peak RSS of `AuditLog.export` (JSON Lines to /dev/null, in a fresh subprocess) at 1,000
  rows and at N rows. Goal: within 20%.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, create_engine, insert, text
from sqlalchemy.engine import make_url

from bot.audit import (
    GENESIS,
    HASHED_FIELDS,
    OPTIONAL_HASHED_FIELDS,
    AuditLog,
    canonical_bytes,
    row_digest,
)
from bot.db import AuditEvent, UTCDateTime, make_engine, make_session_factory, upgrade

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:55432/postgres"
PEOPLE = 50
SERVERS = 200
FIRST_SERVER = 70000
# Someone who left and a server retired: their rows are all old (an index must find them, a
# backward scan of the newest rows would not).
LEAVER = 99
RETIRED_SERVER = 69999
DAYS = 90
BATCH = 10_000
SMALL_EXPORT = 1_000
# The app's actions (sub-actions are steps of one: `restore` matches `restore.request`), weighted.
ACTIONS = {
    "list": 30,
    "create": 20,
    "status": 10,
    "watch": 5,
    "delete.request": 5,
    "delete": 4,
    "delete.cancel": 1,
    "restore.request": 2,
    "approve": 2,
    "reject": 0.5,
    "restore.safety_backup": 1,
    "restore": 1,
    "audit": 1,
    "audit.export": 0.5,
}
APPROVAL_ACTIONS = {"restore.request", "approve", "reject", "restore.safety_backup", "restore"}
OUTCOMES = {"ok": 94, "denied": 4, "error": 2}
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # the newest row; pages "since" are from here


def generate(rows: int, seed: int = 7) -> Iterator[list[dict[str, Any]]]:
    """Batches of audit rows 1..`rows`, hash-chained as `AuditLog.record` would (deterministic)."""
    rng = random.Random(seed)
    actions, weights = list(ACTIONS), list(ACTIONS.values())
    outcomes, outcome_weights = list(OUTCOMES), list(OUTCOMES.values())
    start = NOW - timedelta(days=DAYS)
    step = timedelta(days=DAYS) / max(rows, 1)
    previous = GENESIS
    approval = 0
    batch: list[dict[str, Any]] = []
    for row_id in range(1, rows + 1):
        person = rng.randrange(PEOPLE)
        server = FIRST_SERVER + rng.randrange(SERVERS)
        if row_id <= rows // 10 and rng.random() < 0.02:
            person, server = LEAVER, RETIRED_SERVER  # only in the oldest tenth
        action = rng.choices(actions, weights)[0]
        approval_id = None
        if action in APPROVAL_ACTIONS:
            if action == "restore.request" or approval == 0:
                approval += 1
            approval_id = approval
        status = rng.choice((200, 201, 202)) if action in ("create", "delete", "restore") else None
        row: dict[str, Any] = {
            "id": row_id,
            "occurred_at": start + step * row_id,
            "actor_user_id": f"U{person:04d}",
            "actor_name": f"person{person}",
            "actor_team_id": "T0001",
            "actor_enterprise_id": None,
            "channel_id": f"C{person % 10:04d}",
            "action": action,
            "server_id": None if action.startswith("audit") else server,
            "backup_id": rng.randrange(1, 10**7) if action != "list" else None,
            "parameters": {"description": f"nightly {row_id % 97}"} if action == "create" else {},
            "outcome": rng.choices(outcomes, outcome_weights)[0],
            "provider_status": status,
            "detail": "" if rng.random() < 0.9 else "provider said 503, retried",
            "approval_id": approval_id,
        }
        row["prev_hash"] = previous
        previous = row["row_hash"] = row_digest(previous, row)
        batch.append(row)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def load(url: str, rows: int) -> None:
    """Migrate `url` and fill `audit_events` with `rows` generated rows (bulk, chain intact)."""
    upgrade(url)
    engine = make_engine(url)
    try:
        table = AuditEvent.__table__
        for batch in generate(rows):
            with engine.begin() as conn:
                conn.execute(insert(table), batch)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if engine.dialect.name == "postgresql":
                sequence = "SELECT setval(pg_get_serial_sequence('audit_events', 'id'), :n)"
                conn.execute(text(sequence), {"n": max(rows, 1)})
                conn.execute(text("VACUUM ANALYZE audit_events"))  # what autovacuum does
    finally:
        engine.dispose()


# name, filters of `AuditLog.recent`
def cases(rows: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("by person", {"user_id": "U0007"}),
        ("by server", {"server_id": FIRST_SERVER + 42}),
        ("by action (restore.*)", {"action": "restore"}),
        ("by action (audit.export)", {"action": "audit.export"}),
        ("by person (left)", {"user_id": f"U{LEAVER:04d}"}),
        ("by server (retired)", {"server_id": RETIRED_SERVER}),
        ("by approval", {"approval_id": max(1, rows // 200)}),
        ("by outcome (error)", {"outcome": "error"}),
        ("since 7 days", {"since": NOW - timedelta(days=7)}),
        ("person+server", {"user_id": "U0007", "server_id": FIRST_SERVER + 42}),
        ("person+action+outcome", {"user_id": "U0007", "action": "restore", "outcome": "error"}),
        (
            "server+denied+7 days",
            {"server_id": FIRST_SERVER + 42, "outcome": "denied", "since": NOW - timedelta(7)},
        ),
        ("no match (person+appr.)", {"user_id": "U0007", "approval_id": 10**9}),
    ]


def floor_query(filters: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The same rows by plain SQL: the WHERE `recent` builds, written by hand."""
    where, params = [], {}
    columns = {
        "user_id": "actor_user_id",
        "server_id": "server_id",
        "approval_id": "approval_id",
        "outcome": "outcome",
    }
    for name, column in columns.items():
        if filters.get(name) is not None:
            where.append(f"{column} = :{name}")
            params[name] = filters[name]
    if filters.get("action") is not None:
        where.append("(action = :action OR action LIKE :action_prefix)")
        params["action"] = filters["action"]
        params["action_prefix"] = f"{filters['action']}.%"
    if filters.get("since") is not None:
        where.append("occurred_at >= :since")
        params["since"] = filters["since"]
    sql = "SELECT * FROM audit_events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    query = text(sql + " ORDER BY id DESC LIMIT 20")
    if "since" in params:
        query = query.bindparams(bindparam("since", type_=UTCDateTime()))
    return query, params


def seconds(run: Callable[[], object]) -> float:
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


@dataclass
class PageResult:
    name: str
    rows: int
    recent: float
    floor: float

    @property
    def ratio(self) -> float:
        return self.recent / self.floor if self.floor else float("inf")

    @property
    def ok(self) -> bool:
        return self.recent <= max(2 * self.floor, self.floor + 0.005) and self.recent < 0.1


def pages(engine: Engine, rows: int, repeat: int) -> list[PageResult]:
    log = AuditLog(make_session_factory(engine))
    results = []
    for name, filters in cases(rows):
        query, params = floor_query(filters)

        def floor(query: Any = query, params: dict[str, Any] = params) -> list[Any]:
            with engine.connect() as conn:
                return conn.execute(query, params).all()

        def ours(filters: dict[str, Any] = filters) -> list[Any]:
            return log.recent(20, **filters)

        got, expected = ours(), floor()
        if [entry.id for entry in got] != [row.id for row in expected]:
            raise RuntimeError(f"{name}: recent() and the floor disagree")
        # Alternate, so both see the same noise (each was warmed by the check above).
        recent_times, floor_times = [], []
        for _ in range(repeat):
            recent_times.append(seconds(ours))
            floor_times.append(seconds(floor))
        recent_time, floor_time = statistics.median(recent_times), statistics.median(floor_times)
        results.append(PageResult(name, len(got), recent_time, floor_time))
    return results


@dataclass
class VerifyResult:
    rows: int
    verify_rate: float
    hashlib_rate: float
    sha256_only_rate: float


def verify_throughput(engine: Engine, rows: int) -> VerifyResult:
    log = AuditLog(make_session_factory(engine))
    began = time.perf_counter()
    result = log.verify()
    elapsed = time.perf_counter() - began
    if not result.ok or result.rows != rows:
        raise RuntimeError(f"the generated chain does not verify: {result}")
    # The floor: the same canonical JSON bytes, hashed, for rows already in memory.
    sample = min(rows, 200_000)
    in_memory = [row for batch in generate(sample) for row in batch]
    began = time.perf_counter()
    previous = GENESIS
    for row in in_memory:
        previous = row_digest(previous, row)
    floor = time.perf_counter() - began
    # For the record: sha256 of the canonical bytes alone, built beforehand (building them is
    # most of the floor above, and no reader of the rows can skip it).
    previous, prebuilt = GENESIS, []
    for row in in_memory:
        values = ([row[n] for n in HASHED_FIELDS], [row.get(n) for n in OPTIONAL_HASHED_FIELDS])
        prebuilt.append(canonical_bytes(previous, *values))
        previous = row["row_hash"]
    began = time.perf_counter()
    for data in prebuilt:
        hashlib.sha256(data).hexdigest()
    sha_only = time.perf_counter() - began
    return VerifyResult(rows, rows / elapsed, sample / floor, sample / sha_only)


EXPORT_SCRIPT = """
import os, resource, sys
from bot.audit import AuditLog
from bot.db import make_engine, make_session_factory
engine = make_engine(sys.argv[1])
with open(os.devnull, "w") as out:
    count = AuditLog(make_session_factory(engine)).export(out, "jsonl")
# VmHWM: this image's own peak (ru_maxrss keeps the forking parent's peak across exec).
try:
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(count, peak)
"""


def export_rss(url: str) -> tuple[int, int]:
    """(rows exported, peak RSS in KiB) of `AuditLog.export` in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", EXPORT_SCRIPT, url],
        check=True,
        capture_output=True,
        text=True,
    )
    count, rss = done.stdout.split()
    return int(count), int(rss)


@dataclass
class DatabaseResult:
    dialect: str
    rows: int
    load_seconds: float
    pages: list[PageResult]
    verify: VerifyResult
    small_rss: int
    big_rss: int


def run(url: str, small_url: str, rows: int, repeat: int) -> DatabaseResult:
    began = time.perf_counter()
    load(url, rows)
    load_seconds = time.perf_counter() - began
    load(small_url, SMALL_EXPORT)
    engine = make_engine(url)
    try:
        page_results = pages(engine, rows, repeat)
        verify = verify_throughput(engine, rows)
    finally:
        engine.dispose()
    small_count, small_rss = export_rss(small_url)
    big_count, big_rss = export_rss(url)
    if (small_count, big_count) != (SMALL_EXPORT, rows):
        raise RuntimeError(f"export wrote {small_count} and {big_count} rows")
    dialect = make_url(url).get_backend_name()
    return DatabaseResult(dialect, rows, load_seconds, page_results, verify, small_rss, big_rss)


def run_sqlite(rows: int, repeat: int) -> DatabaseResult:
    with tempfile.TemporaryDirectory() as tmp:
        url, small = (f"sqlite:///{Path(tmp) / name}" for name in ("big.db", "small.db"))
        return run(url, small, rows, repeat)


def run_postgres(admin_url: str, rows: int, repeat: int) -> DatabaseResult:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    names = [f"bench_audit_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    base = make_url(admin_url)
    try:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        url, small = (base.set(database=name).render_as_string(False) for name in names)
        return run(url, small, rows, repeat)
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def report(result: DatabaseResult) -> None:
    print(
        f"\naudit review on {result.dialect}, {result.rows:,} rows "
        f"(generated in {result.load_seconds:.0f} s)"
    )
    print(
        f"{'page: recent(20, ...)':>26} {'rows':>5} {'recent':>9} {'floor':>9} {'ratio':>6}  goal"
    )
    for page in result.pages:
        print(
            f"{page.name:>26} {page.rows:>5} {page.recent * 1000:>7.2f}ms "
            f"{page.floor * 1000:>7.2f}ms {page.ratio:>5.1f}x  {'met' if page.ok else 'MISSED'}"
        )
    print("   (goal: within max(2x, +5 ms) of the floor and under 100 ms)")
    verify = result.verify
    ratio = verify.hashlib_rate / verify.verify_rate
    print(
        f"{'audit verify':>26} {verify.verify_rate:>10,.0f} rows/s   hashlib alone "
        f"{verify.hashlib_rate:>9,.0f} rows/s   {ratio:.1f}x  "
        f"{'met' if ratio <= 3 else 'MISSED'} (goal: within 3x)"
    )
    print(
        f"{'':>26} (sha256 of prebuilt bytes alone: {verify.sha256_only_rate:,.0f} rows/s, "
        f"{verify.sha256_only_rate / verify.verify_rate:.0f}x; the floor above builds the "
        "canonical JSON as every reader must)"
    )
    growth = result.big_rss / result.small_rss
    print(
        f"{'export peak RSS':>26} {SMALL_EXPORT:,} rows {result.small_rss / 1024:.0f} MB   "
        f"{result.rows:,} rows {result.big_rss / 1024:.0f} MB   {growth:.2f}x  "
        f"{'met' if growth <= 1.2 else 'MISSED'} (goal: within 1.2x)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--audit-rows", type=int, default=1_000_000, help="default: %(default)s")
    parser.add_argument("--audit-repeat", type=int, default=7, help="runs per page query")
    parser.add_argument(
        "--audit-postgres",
        default=os.environ.get("BACKUPBOT_BENCH_POSTGRES_URL", PG_URL),
        help="an admin URL (a throw-away database is made there); '' to skip PostgreSQL",
    )
    args, _ = parser.parse_known_args(argv)
    report(run_sqlite(args.audit_rows, args.audit_repeat))
    if args.audit_postgres:
        report(run_postgres(args.audit_postgres, args.audit_rows, args.audit_repeat))
