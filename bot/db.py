"""SQLAlchemy 2 engine, sessions, typed models and the Alembic upgrade (SQLite, PostgreSQL)."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Engine,
    Float,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    event,
    true,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, whatever the database keeps (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where an aware UTC one is required")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Outcome(enum.StrEnum):
    OK = "ok"
    DENIED = "denied"
    ERROR = "error"


class AuditEvent(Base):
    """One row per request, decision, provider call and outcome. Rows are only ever added."""

    __tablename__ = "audit_events"
    __table_args__ = (
        CheckConstraint("outcome IN ('ok', 'denied', 'error')", name="ck_audit_events_outcome"),
        # A `/backup audit` page per filter, newest first, read in order from the index (0007).
        Index("ix_audit_events_actor_user_id_id", "actor_user_id", "id"),
        Index("ix_audit_events_server_id_id", "server_id", "id"),
        Index("ix_audit_events_action_id", "action", "id"),
        Index("ix_audit_events_approval_id_id", "approval_id", "id"),
        Index("ix_audit_events_outcome_id", "outcome", "id"),
        Index("ix_audit_events_request_id", "request_id"),  # 0008
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_user_id: Mapped[str] = mapped_column(String(32))
    actor_name: Mapped[str] = mapped_column(String(255), default="")
    actor_team_id: Mapped[str | None] = mapped_column(String(32))
    # Org-wide installs: the Enterprise Grid org, apart from the workspace (hashed when set).
    actor_enterprise_id: Mapped[str | None] = mapped_column(String(32))
    # The approval this row is part of: the whole story of one restore (hashed when set).
    approval_id: Mapped[int | None] = mapped_column(BigInteger)
    channel_id: Mapped[str | None] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    server_id: Mapped[int | None] = mapped_column(BigInteger)
    backup_id: Mapped[int | None] = mapped_column(BigInteger)
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    outcome: Mapped[str] = mapped_column(String(16))
    provider_status: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text, default="")
    # The Slack request the row was written for (its log lines carry the same id; hashed when set).
    request_id: Mapped[str | None] = mapped_column(String(32))
    # Hash chain (bot/audit.py): each row's hash covers its content and the previous row's hash.
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    row_hash: Mapped[str | None] = mapped_column(String(64))

    def __repr__(self) -> str:
        return (
            f"AuditEvent(id={self.id}, action={self.action!r}, actor={self.actor_user_id!r}, "
            f"outcome={self.outcome!r})"
        )


class AuditCheckpoint(Base):
    """A signed statement of the audit chain's state: how many rows, the newest row and its hash.

    `kind` "checkpoint": taken by `backupbot audit checkpoint` (or a worker); "anchor": written by
    a prune, naming the last removed row, where `verify` starts the chain. The HMAC-SHA256
    `signature` is kept; the key (AUDIT_SIGNING_KEY) never is. Rows are only added (triggers).
    """

    __tablename__ = "audit_checkpoints"
    __table_args__ = (
        CheckConstraint("kind IN ('checkpoint', 'anchor')", name="ck_audit_checkpoints_kind"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime]
    row_count: Mapped[int] = mapped_column(BigInteger)  # rows in the chain up to last_row_id
    last_row_id: Mapped[int | None] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(64))

    def __repr__(self) -> str:
        return f"AuditCheckpoint(id={self.id}, kind={self.kind!r}, rows={self.row_count})"


class WatchState(enum.StrEnum):
    WATCHING = "watching"
    COMPLETED = "completed"
    FAILED = "failed"
    VANISHED = "vanished"
    GAVE_UP = "gave_up"


class WatchJob(Base):
    """A durable "tell the channel when backup N finishes", claimed by one watcher at a time.

    `notified_at` is set once the thread reply went out: a job is pending until then, even after
    its state is final, so a crash between learning the outcome and posting it loses nothing.
    """

    __tablename__ = "watch_jobs"
    __table_args__ = (
        CheckConstraint(
            "state IN ('watching', 'completed', 'failed', 'vanished', 'gave_up')",
            name="ck_watch_jobs_state",
        ),
        Index("ix_watch_jobs_due", "notified_at", "next_poll_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    backup_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    server_id: Mapped[int] = mapped_column(BigInteger, index=True)
    server_name: Mapped[str] = mapped_column(String(255), default="")
    channel_id: Mapped[str | None] = mapped_column(String(32))
    thread_ts: Mapped[str | None] = mapped_column(String(32))
    requester_id: Mapped[str] = mapped_column(String(32))
    requester_name: Mapped[str] = mapped_column(String(255), default="")
    team_id: Mapped[str | None] = mapped_column(String(32))
    backup_created_at: Mapped[datetime]
    registered_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]  # when the watcher learnt the outcome
    seen_running_at: Mapped[datetime | None]  # the last poll that still saw it running
    state: Mapped[str] = mapped_column(String(16), default=WatchState.WATCHING.value)
    status: Mapped[str] = mapped_column(String(64), default="")
    size_mb: Mapped[float | None] = mapped_column(Float)
    expires_at: Mapped[datetime | None]
    description: Mapped[str] = mapped_column(Text, default="")
    next_poll_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    misses: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_token: Mapped[str | None] = mapped_column(String(32))  # whose claim: see bot/leases.py
    lease_expires_at: Mapped[datetime | None]  # by the database's clock
    notified_at: Mapped[datetime | None]
    notify_attempts: Mapped[int] = mapped_column(Integer, default=0)
    # False when the thread's parent is not our "started" message (an approval card).
    update_parent: Mapped[bool] = mapped_column(default=True, server_default=true())
    reply_channel_id: Mapped[str | None] = mapped_column(String(32))
    reply_ts: Mapped[str | None] = mapped_column(String(32))
    # The Slack request that started the backup (0011): the reply's log lines and audit row
    # carry it too, so one id follows a create to its outcome.
    request_id: Mapped[str | None] = mapped_column(String(32))

    def __repr__(self) -> str:
        return f"WatchJob(backup_id={self.backup_id}, state={self.state!r})"


class SeenRequest(Base):
    """A signed request already acted on, remembered for as long as its signature is valid."""

    __tablename__ = "seen_requests"

    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class ApprovalKind(enum.StrEnum):
    """What an approval is for."""

    RESTORE = "restore"  # restore a server from a backup
    DELETE = "delete"  # delete a backup (with DELETE_REQUIRES_APPROVAL)


class ApprovalState(enum.StrEnum):
    PENDING = "pending"  # waiting for approvers
    APPROVED = "approved"  # enough approvers; execution is due
    SAFETY_BACKUP = "safety_backup"  # taking (or waiting for) the safety backup
    READY = "ready"  # safety backup done (or not wanted): the restore (or delete) is next
    RESTORING = "restoring"  # the restore request is being sent: never sent again
    DELETING = "deleting"  # the delete request is being sent: never sent again
    DONE = "done"  # the provider accepted the restore (or deleted the backup)
    FAILED = "failed"  # stopped on the way; `detail` says where and why
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


OPEN_APPROVAL_STATES = (
    ApprovalState.APPROVED,
    ApprovalState.SAFETY_BACKUP,
    ApprovalState.READY,
    ApprovalState.RESTORING,
    ApprovalState.DELETING,
)


class Approval(Base):
    """A request to restore a server from a backup (or, `kind` "delete", to delete a backup), its
    decisions, and its execution as a job.

    Every change of `state` is a compare-and-set on (`state`, `version`): however many clicks,
    submissions or instances race, each transition happens once. Execution steps are claimed
    under a lease like watch jobs.
    """

    __tablename__ = "approvals"
    __table_args__ = (
        CheckConstraint(
            "state IN ('pending', 'approved', 'safety_backup', 'ready', 'restoring', 'deleting', "
            "'done', 'failed', 'rejected', 'cancelled', 'expired')",
            name="ck_approvals_state",
        ),
        CheckConstraint("kind IN ('restore', 'delete')", name="ck_approvals_kind"),
        Index("ix_approvals_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default=ApprovalKind.RESTORE.value)
    state: Mapped[str] = mapped_column(String(16), default=ApprovalState.PENDING.value)
    version: Mapped[int] = mapped_column(Integer, default=0)
    server_id: Mapped[int] = mapped_column(BigInteger)
    server_name: Mapped[str] = mapped_column(String(255), default="")
    backup_id: Mapped[int] = mapped_column(BigInteger)
    backup_type: Mapped[str] = mapped_column(String(32), default="")
    backup_created_at: Mapped[datetime]
    backup_size_mb: Mapped[float | None] = mapped_column(Float)
    backup_description: Mapped[str] = mapped_column(Text, default="")
    # As it was when asked (a restore's is "completed"; a delete's may be "failed").
    backup_status: Mapped[str] = mapped_column(String(32), default="completed")
    requester_id: Mapped[str] = mapped_column(String(32))
    requester_name: Mapped[str] = mapped_column(String(255), default="")
    team_id: Mapped[str | None] = mapped_column(String(32))
    channel_id: Mapped[str | None] = mapped_column(String(32))  # where it was asked
    reason: Mapped[str] = mapped_column(Text, default="")
    card_channel_id: Mapped[str | None] = mapped_column(String(32))
    card_ts: Mapped[str | None] = mapped_column(String(32))
    required_approvals: Mapped[int] = mapped_column(Integer, default=1)
    approvers: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    decided_by: Mapped[str | None] = mapped_column(String(32))  # who rejected or cancelled
    decided_at: Mapped[datetime | None]
    safety_backup: Mapped[bool] = mapped_column(default=True)
    safety_backup_id: Mapped[int | None] = mapped_column(BigInteger)
    safety_started_at: Mapped[datetime | None]
    safety_requested_at: Mapped[datetime | None]  # its create was (perhaps) sent: never again
    # The restore (or delete) request was (perhaps) sent: never again.
    restore_requested_at: Mapped[datetime | None]
    provider_status: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text, default="")
    finished_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_token: Mapped[str | None] = mapped_column(String(32))  # whose claim: see bot/leases.py
    lease_expires_at: Mapped[datetime | None]  # by the database's clock

    def __repr__(self) -> str:
        return f"Approval(id={self.id}, backup_id={self.backup_id}, state={self.state!r})"


class IncidentKind(enum.StrEnum):
    STALE = "stale"  # the newest completed backup is older than BACKUP_STALE_HOURS (or none)
    FAILED = "failed"  # a backup failed since the server's last good one
    VANISHED = "vanished"  # a backup disappeared from the provider's list while in progress


class PostState(enum.StrEnum):
    """Where a health message (an alert, its recovery reply, a digest) is in being posted.

    `posting` is written before the message is sent: a row found there whose lease ran out was
    being posted when its worker died, and is never posted again (`unknown`), so a retry cannot
    post twice. Only a post Slack certainly refused goes back to `due`.
    """

    DUE = "due"
    POSTING = "posting"
    POSTED = "posted"
    FAILED = "failed"  # refused for good (or for too long); the audit row says why
    UNKNOWN = "unknown"  # may or may not have been posted: never sent again
    SKIPPED = "skipped"  # nowhere to post (no channel), or no longer worth posting


class HealthIncident(Base):
    """One incident of one server (stale, failed, vanished): opened by a sweep, alerted once,
    resolved by a later good backup, which is replied in the alert's thread.

    `open_key` ("SERVER:KIND") is set while the incident is open and unique, so however many
    sweeps or instances see the same problem, one incident (and one alert) exists for it.
    """

    __tablename__ = "health_incidents"
    __table_args__ = (
        CheckConstraint("kind IN ('stale', 'failed', 'vanished')", name="ck_health_incidents_kind"),
        Index("ix_health_incidents_due", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    server_id: Mapped[int] = mapped_column(BigInteger, index=True)
    server_name: Mapped[str] = mapped_column(String(255), default="")
    kind: Mapped[str] = mapped_column(String(16))
    open_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    opened_at: Mapped[datetime]
    # The backup the incident is about: the failed or vanished one, or the newest good one
    # when the server went stale (None: it never had one).
    backup_id: Mapped[int | None] = mapped_column(BigInteger)
    backup_created_at: Mapped[datetime | None]
    detail: Mapped[str] = mapped_column(Text, default="")
    resolved_at: Mapped[datetime | None]
    resolved_by_backup_id: Mapped[int | None] = mapped_column(BigInteger)
    alert_state: Mapped[str] = mapped_column(String(16), default=PostState.DUE.value)
    alert_channel_id: Mapped[str | None] = mapped_column(String(32))
    alert_ts: Mapped[str | None] = mapped_column(String(32))
    reply_state: Mapped[str | None] = mapped_column(String(16))  # None until resolved
    reply_ts: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]  # None: nothing to post
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_token: Mapped[str | None] = mapped_column(String(32))  # whose claim: see bot/leases.py
    lease_expires_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"HealthIncident(id={self.id}, server_id={self.server_id}, kind={self.kind!r})"


class HealthDigest(Base):
    """The daily digest of one day (`day`, UTC, unique): at most one row, hence one post, a day."""

    __tablename__ = "health_digests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    day: Mapped[str] = mapped_column(String(10), unique=True)  # 2026-12-01
    due_at: Mapped[datetime]
    since: Mapped[datetime]  # the activity it tells starts here (the previous digest's time)
    state: Mapped[str] = mapped_column(String(16), default=PostState.DUE.value)
    channel_id: Mapped[str | None] = mapped_column(String(32))
    ts: Mapped[str | None] = mapped_column(String(32))
    posted_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    detail: Mapped[str] = mapped_column(Text, default="")
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_token: Mapped[str | None] = mapped_column(String(32))  # whose claim: see bot/leases.py
    lease_expires_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"HealthDigest(day={self.day!r}, state={self.state!r})"


class HealthSweep(Base):
    """The health sweep's one row (id 1): when it last ran, and the backups it saw in progress
    then (`running`: backup id → server id, name, created_at), to tell one that vanished."""

    __tablename__ = "health_sweeps"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    last_sweep_at: Mapped[datetime | None]
    running: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_error: Mapped[str] = mapped_column(Text, default="")
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_token: Mapped[str | None] = mapped_column(String(32))  # whose claim: see bot/leases.py
    lease_expires_at: Mapped[datetime | None]


class SchemaOutOfDate(Exception):
    """The database is behind the code's migrations and may not be upgraded automatically."""


# How long any statement of ours waits for a lock before failing (PostgreSQL's lock_timeout,
# SQLite's busy_timeout): a stalled lock holder makes one command fail, never every one hang.
LOCK_WAIT_MS = 5000


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for DATABASE_URL with what every compare-and-set here assumes pinned, not
    inherited from the server's defaults: READ COMMITTED and bounded lock waits. SQLite also
    gets WAL (the watcher thread reads while the app writes)."""
    if make_url(url).get_backend_name() == "postgresql":
        kwargs.setdefault("isolation_level", "READ COMMITTED")
    engine = create_engine(url, pool_pre_ping=True, **kwargs)
    if engine.dialect.name == "postgresql":

        @event.listens_for(engine, "connect")
        def _postgresql_settings(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"SET lock_timeout = {LOCK_WAIT_MS}")
            cursor.close()
            dbapi_connection.commit()

    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={LOCK_WAIT_MS}")
            if make_url(url).database not in (None, "", ":memory:"):
                cursor.execute("PRAGMA journal_mode=WAL")
                # In WAL mode NORMAL never corrupts the database and loses no commit when the
                # process dies; only an OS crash or power cut can undo the last commits. It
                # takes a commit from about 2.4 ms to 0.04 ms here, and every ack commits one
                # (the replay ledger). Deployments that need more run on PostgreSQL.
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    return engine


def make_session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise SchemaOutOfDate(
            f"migrations not found at {MIGRATIONS_DIR}; install Backup Bot from a checkout "
            "(pip install -e .)"
        )
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would read a %-escaped password as a reference.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Run the migrations up to `revision` (what `backupbot db upgrade` does)."""
    command.upgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def ensure_schema(engine: Engine) -> None:
    """Bring SQLite up to date on start; refuse to start on an outdated PostgreSQL.

    SQLite serves one instance, so upgrading it in place is safe. With PostgreSQL several
    instances may start at once: migrations run once, in the release step (`backupbot db upgrade`).
    """
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    if engine.dialect.name == "sqlite":
        upgrade(engine.url.render_as_string(hide_password=False))
        return
    raise SchemaOutOfDate(
        f"the database schema is at revision {current or 'none'}, the code needs {head}: "
        "run `backupbot db upgrade` first"
    )
