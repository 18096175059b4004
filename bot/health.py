"""Backup health: status per server, the sweep that raises alerts once per incident, the digest.

The question behind every restore is "do we have a good, recent backup?". This module answers it
for every server the provider knows (servers are known through their backups), with the calls the
bot already makes:

- **Status** (`HealthMonitor.status`): one list of all backups (paged by the client), classified
  per server by `classify` (pure): the newest completed backup and its age, the newest automatic
  one, backups in progress, failures of the last 7 days, total size, and the problems: *stale*
  (the newest completed backup is older than BACKUP_STALE_HOURS, or there is none), *failed* (a
  backup failed since the last good one) and *vanished* (a backup disappeared from the list while
  in progress: an open incident, since one listing alone cannot show it).
- **The sweep** (`sweep`): the same single paged list, every HEALTH_SWEEP_MINUTES for all
  instances together (its row in `health_sweeps` is claimed under a lease, and records when it
  last ran and which backups it saw in progress, to tell one that vanished). Each problem is an
  **incident** in `health_incidents`; while open its `open_key` ("SERVER:KIND") is unique, so
  however many sweeps or instances see it there is one incident, and one alert. An incident is
  resolved by a completed backup newer than the problem (for stale: one within the threshold),
  and the recovery is replied in the alert's thread.
- **The digest** (`digest_if_due`): at DIGEST_TIME (UTC) the status and what was created, deleted
  and restored through the bot since the previous digest, and by whom (from the audit table). One
  row per day (`day` is unique) makes it one digest a day whatever the instances or restarts.

Posting is at most once: a message's row is marked `posting` (durably, under a lease) before it
is sent. A post Slack certainly refused goes back to `due` and is tried again later; a post whose
outcome is unclear (a timeout, a dropped connection), or a row found still `posting` after its
worker died, becomes `unknown` and is never sent again. The residual window: the worker dying (or
Slack's answer being lost) between Slack taking the message and the row recording it. Then the
message was most likely posted once and the row says `unknown`; it is never posted twice. A worker
dying in the instant between marking `posting` and sending loses that one message (the audit
table says so; the next digest still shows the server's status).

Nothing here knows Slack: alerts, replies and digests go through the `HealthPoster` port.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bot.audit import Actor, AuditEntry, AuditLog
from bot.db import HealthDigest, HealthIncident, HealthSweep, IncidentKind, Outcome, PostState
from bot.leases import Leases, worker_name
from bot.policy import Action
from bot.rounds import Rounds
from bot.vps.client import BackupsClient
from bot.vps.errors import VpsError
from bot.vps.models import Backup, Phase, ServerRef

log = logging.getLogger(__name__)

# The audit rows of what the bot does on its own are recorded under this "person".
HEALTH_ACTOR_ID = "backupbot"
HEALTH_ACTOR_NAME = "Backup Bot (health)"
_SWEEP_ROW = 1
_KIND_ORDER = (IncidentKind.STALE, IncidentKind.FAILED, IncidentKind.VANISHED)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class HealthSettings:
    stale_after: timedelta = timedelta(hours=36)  # BACKUP_STALE_HOURS
    sweep_every: timedelta | None = timedelta(minutes=30)  # HEALTH_SWEEP_MINUTES; None: on demand
    alerts_channel: str | None = None  # ALERTS_CHANNEL; None: incidents recorded, not posted
    digest_channel: str | None = None  # DIGEST_CHANNEL; None: no digest
    digest_time: time = time(8, 0)  # DIGEST_TIME, UTC
    failure_window: timedelta = timedelta(days=7)  # "failures in the last 7 days"
    timeline_days: int = 14  # `/backup status SERVER`
    lease_seconds: float = 300.0  # WORKER_LEASE_SECONDS
    retry: timedelta = timedelta(minutes=2)  # after Slack refused a post
    give_up_after: timedelta = timedelta(hours=12)  # a post refused this long is dropped
    tick: float = 30.0  # how often the worker looks whether something is due
    batch: int = 100  # incidents delivered per round


# -- classification (pure) -----------------------------------------------------------------------


@dataclass(frozen=True)
class OpenIncident:
    """An incident as the status shows it: what, since when, and the backup it is about."""

    id: int
    server: ServerRef
    kind: IncidentKind
    opened_at: datetime
    backup_id: int | None
    backup_created_at: datetime | None
    detail: str
    alert_channel_id: str | None = None
    alert_ts: str | None = None


@dataclass(frozen=True)
class ServerHealth:
    """One server's backups, summed up; `problems` is empty when it is healthy."""

    server: ServerRef
    newest_completed: Backup | None
    newest_automatic: Backup | None
    in_progress: tuple[Backup, ...]
    recent_failures: tuple[Backup, ...]  # failed within the failure window, newest first
    failed_since_good: tuple[Backup, ...]  # newest first
    total_size_mb: float
    backups: int
    stale: bool
    incidents: tuple[OpenIncident, ...] = ()
    listed: bool = True  # False: no backup at the provider now; known from an open incident

    @property
    def vanished(self) -> tuple[OpenIncident, ...]:
        return tuple(i for i in self.incidents if i.kind is IncidentKind.VANISHED)

    @property
    def problems(self) -> tuple[IncidentKind, ...]:
        found = []
        if self.stale:
            found.append(IncidentKind.STALE)
        if self.failed_since_good:
            found.append(IncidentKind.FAILED)
        if self.vanished:
            found.append(IncidentKind.VANISHED)
        return tuple(found)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def age(self, now: datetime) -> timedelta | None:
        """How old the newest completed backup is (None: there is none)."""
        if self.newest_completed is None:
            return None
        return now - self.newest_completed.created_at

    def sort_key(self) -> tuple[Any, ...]:
        """Worst first: unhealthy, most problems, oldest good backup (none is oldest), name."""
        newest = self.newest_completed.created_at if self.newest_completed else None
        return (
            self.healthy,
            -len(self.problems),
            newest is not None,
            newest or datetime.min.replace(tzinfo=UTC),
            self.server.name.lower(),
            self.server.id,
        )


def _newest(backups: Iterable[Backup]) -> Backup | None:
    return max(backups, key=lambda b: (b.created_at, b.id), default=None)


def _newest_first(backups: Iterable[Backup]) -> tuple[Backup, ...]:
    return tuple(sorted(backups, key=lambda b: (b.created_at, b.id), reverse=True))


def health_of(
    server: ServerRef,
    backups: Sequence[Backup],
    now: datetime,
    stale_after: timedelta,
    failure_window: timedelta = timedelta(days=7),
) -> ServerHealth:
    """One server's health from its backups. Stale: the newest completed backup is *older*
    than `stale_after` (exactly that old is not stale), or there is none although the server's
    first backup is older than that (a new server whose first backup is still running has had
    no time to be stale yet)."""
    by_phase: dict[Phase, list[Backup]] = {phase: [] for phase in Phase}
    for backup in backups:  # `phase` reads the status once per backup: a sweep has thousands
        by_phase[backup.phase].append(backup)
    completed, failed = by_phase[Phase.COMPLETED], by_phase[Phase.FAILED]
    newest_completed = _newest(completed)
    good_since = newest_completed.created_at if newest_completed else None
    return ServerHealth(
        server=server,
        newest_completed=newest_completed,
        newest_automatic=_newest(b for b in backups if b.backup_type == "automatic"),
        in_progress=_newest_first(by_phase[Phase.RUNNING]),
        recent_failures=_newest_first(b for b in failed if now - b.created_at <= failure_window),
        failed_since_good=_newest_first(
            b for b in failed if good_since is None or b.created_at > good_since
        ),
        total_size_mb=sum(b.size_mb or 0 for b in backups),
        backups=len(backups),
        stale=_stale(newest_completed, backups, now, stale_after),
    )


def _stale(
    newest_completed: Backup | None, backups: Sequence[Backup], now: datetime, after: timedelta
) -> bool:
    """Measured from the newest completed backup or, without one, from the first backup of all
    (how long the server has gone without a good one); no backups at all is stale."""
    if newest_completed is not None:
        since: datetime | None = newest_completed.created_at
    else:
        since = min((b.created_at for b in backups), default=None)
    return since is None or now - since > after


def classify(
    backups: Iterable[Backup],
    now: datetime,
    stale_after: timedelta,
    failure_window: timedelta = timedelta(days=7),
) -> list[ServerHealth]:
    """Every server with backups, worst first."""
    by_server: dict[int, list[Backup]] = defaultdict(list)
    names: dict[int, ServerRef] = {}
    for backup in backups:
        by_server[backup.server.id].append(backup)
        names[backup.server.id] = backup.server
    found = [
        health_of(names[server_id], listed, now, stale_after, failure_window)
        for server_id, listed in by_server.items()
    ]
    return sorted(found, key=ServerHealth.sort_key)


@dataclass(frozen=True)
class DayOfBackups:
    """One UTC day of a server's timeline and the backups created on it, newest first."""

    day: date
    backups: tuple[Backup, ...]

    @property
    def phase(self) -> Phase | None:
        """The day at a glance: completed if any completed, else failed if any, else running."""
        phases = {b.phase for b in self.backups}
        for phase in (Phase.COMPLETED, Phase.FAILED, Phase.RUNNING):
            if phase in phases:
                return phase
        return None


def timeline(backups: Iterable[Backup], now: datetime, days: int = 14) -> list[DayOfBackups]:
    """The last `days` UTC days (today included), newest first, each with its backups."""
    today = now.astimezone(UTC).date()
    by_day: dict[date, list[Backup]] = defaultdict(list)
    for backup in backups:
        by_day[backup.created_at.astimezone(UTC).date()].append(backup)
    return [
        DayOfBackups(day, _newest_first(by_day.get(day, ())))
        for day in (today - timedelta(days=offset) for offset in range(days))
    ]


@dataclass(frozen=True)
class StatusReport:
    """`/backup status [SERVER]`: every server worst first (or the one asked for, with its
    timeline), as of `now`."""

    servers: tuple[ServerHealth, ...]
    now: datetime
    stale_after: timedelta
    server: ServerRef | None = None
    timeline: tuple[DayOfBackups, ...] = ()
    unreadable: int = 0  # rows the provider sent in a shape we could not read (left out)

    @property
    def unhealthy(self) -> int:
        return sum(1 for s in self.servers if not s.healthy)


# -- ports ----------------------------------------------------------------------------------------


class NotPosted(Exception):
    """Slack did not take a message. `unclear`: it may have (a timeout, a dropped connection),
    so it must not be sent again; otherwise it certainly did not, and may be tried again later,
    unless `final` (the channel is not postable: trying again cannot help)."""

    def __init__(self, reason: str, *, unclear: bool = False, final: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unclear = unclear
        self.final = final


# A message found still `posting` after its worker's lease ran out: it may have gone out.
_WORKER_DIED = NotPosted("its worker stopped while posting", unclear=True)


@dataclass(frozen=True)
class Posted:
    channel_id: str
    ts: str


@dataclass(frozen=True)
class Alert:
    """What an alert (or its recovery reply) tells."""

    incident: OpenIncident
    stale_after: timedelta
    now: datetime
    recovered_by: Backup | None = None  # for the recovery reply


@dataclass(frozen=True)
class Activity:
    """One thing done through the bot, for the digest: who did what to which backup."""

    entry: AuditEntry
    approvers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Digest:
    """The daily digest: the status, and what was done through the bot since `since`."""

    day: date
    since: datetime
    until: datetime
    status: StatusReport | None
    status_problem: str | None  # why the status could not be read, if it could not
    created: tuple[Activity, ...]
    deleted: tuple[Activity, ...]
    restored: tuple[Activity, ...]
    more: int = 0  # rows past what is shown


class HealthPoster(Protocol):
    """Posts health messages (the Slack side implements it); raises `NotPosted`."""

    def post_alert(self, channel_id: str, alert: Alert) -> Posted: ...

    def post_recovery(self, alert: Alert) -> Posted: ...

    def post_digest(self, channel_id: str, digest: Digest) -> Posted: ...


class Approvers(Protocol):
    @property
    def approvers(self) -> tuple[str, ...]: ...


# -- reports --------------------------------------------------------------------------------------


@dataclass
class SweepReport:
    """What one sweep saw and did."""

    servers: int = 0
    backups: int = 0
    unhealthy: int = 0
    opened: list[OpenIncident] = field(default_factory=list)
    resolved: list[OpenIncident] = field(default_factory=list)
    posted: int = 0  # alerts and recovery replies posted in the delivery that followed
    problem: str | None = None  # the provider's answer when the list failed


# -- the monitor ----------------------------------------------------------------------------------


class HealthMonitor(Rounds):
    """Status, sweeps, alerts and digests. Runs on its own thread (`start`/`stop`) or a step at
    a time (`sweep`, `deliver`, `digest_if_due`, `run_once`). Thread-safe."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        client: BackupsClient,
        audit: AuditLog,
        poster: HealthPoster | None,
        *,
        settings: HealthSettings | None = None,
        owner: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        approvers_of: Callable[[set[int]], Mapping[int, Approvers]] = lambda _: {},
    ) -> None:
        self._sessions = sessions
        self._client = client
        self._audit = audit
        self.poster = poster
        self.settings = settings or HealthSettings()
        self.owner = owner or worker_name()
        self._clock = clock
        self._approvers_of = approvers_of
        self._sweeps = Leases(sessions, HealthSweep, self.owner)
        self._incidents = Leases(sessions, HealthIncident, self.owner)
        self._digests = Leases(sessions, HealthDigest, self.owner)
        super().__init__("backupbot-health", lambda: self.settings.tick)
        self._lock = threading.Lock()
        self._recovered: dict[int, Backup] = {}  # incident id → the backup that resolved it

    # -- status -------------------------------------------------------------------------------

    def status(self, server: ServerRef | None = None) -> StatusReport:
        """Every server worst first, or one server with its timeline. One list call (paged);
        raises `VpsError` when the provider does not answer."""
        now = self._clock()
        answer = self._client.list_backups(server_id=server.id if server else None)
        backups = [b for b in answer.backups if server is None or b.server.id == server.id]
        servers = self._with_incidents(classify(backups, now, *self._windows()), server)
        days: tuple[DayOfBackups, ...] = ()
        if server is not None:
            if servers:
                server = servers[0].server
            days = tuple(timeline(backups, now, self.settings.timeline_days))
        return StatusReport(
            tuple(servers), now, self.settings.stale_after, server, days, answer.unreadable
        )

    def _windows(self) -> tuple[timedelta, timedelta]:
        return self.settings.stale_after, self.settings.failure_window

    def open_incidents(self, server_id: int | None = None) -> list[OpenIncident]:
        query = select(HealthIncident).where(HealthIncident.open_key.is_not(None))
        if server_id is not None:
            query = query.where(HealthIncident.server_id == server_id)
        with self._sessions() as session:
            return [_incident(row) for row in session.scalars(query.order_by(HealthIncident.id))]

    def _with_incidents(
        self, servers: list[ServerHealth], only: ServerRef | None
    ) -> list[ServerHealth]:
        """The servers with their open incidents, and the servers whose every backup is gone
        while an incident is open (they are not in the list any more, and are the worst)."""
        incidents: dict[int, list[OpenIncident]] = defaultdict(list)
        for incident in self.open_incidents(only.id if only else None):
            incidents[incident.server.id].append(incident)
        listed = {s.server.id for s in servers}
        merged = [_replace_incidents(s, tuple(incidents.get(s.server.id, ()))) for s in servers]
        for server_id, open_ones in incidents.items():
            if server_id not in listed:
                merged.append(_unlisted(open_ones))
        return sorted(merged, key=ServerHealth.sort_key)

    # -- the sweep ------------------------------------------------------------------------------

    def sweep(self, *, force: bool = False) -> SweepReport | None:
        """Sweep if one is due for all instances (or now, `force`), then deliver what is due.
        None: not due, or another instance is sweeping."""
        now = self._clock()
        row = self._claim_sweep(now, force)
        if row is None:
            return None
        report = SweepReport()
        try:
            self._sweep(row, now, report)
        finally:
            self._sweeps.release([row])
        report.posted = self.deliver()
        return report

    def _claim_sweep(self, now: datetime, force: bool) -> HealthSweep | None:
        self._ensure_sweep_row()
        every = self.settings.sweep_every
        if force:
            due: Any = true()
        elif every is None:
            return None
        else:
            due = or_(HealthSweep.last_sweep_at.is_(None), HealthSweep.last_sweep_at <= now - every)
        rows = self._sweeps.claim(
            and_(HealthSweep.id == _SWEEP_ROW, due),
            lease=timedelta(seconds=self.settings.lease_seconds),
            order_by=HealthSweep.id,
            limit=1,
        )
        return rows[0] if rows else None

    def _ensure_sweep_row(self) -> None:
        """The sweep's row, made on the first start: the first background sweep comes one
        interval later (restarts keep the schedule; `sweep(force=True)` sweeps at once)."""
        with self._sessions() as session:
            if session.get(HealthSweep, _SWEEP_ROW) is not None:
                return
        try:
            with self._sessions.begin() as session:
                session.add(
                    HealthSweep(
                        id=_SWEEP_ROW, last_sweep_at=self._clock(), running={}, last_error=""
                    )
                )
        except IntegrityError:
            pass  # another instance made it first

    def _sweep(self, row: HealthSweep, now: datetime, report: SweepReport) -> None:
        try:
            answer = self._client.list_backups()  # every backup of every server: one paged list
        except VpsError as exc:
            log.warning("health sweep: listing the backups failed: %s", exc.message)
            report.problem = exc.message
            self._sweeps.save(row, last_sweep_at=now, last_error=exc.message[:2000])
            return
        servers = classify(answer.backups, now, *self._windows())
        present = {b.id for b in answer.backups} | set(answer.unreadable_ids)
        before: dict[str, Any] = dict(row.running or {})
        running = {
            str(b.id): {
                "server_id": b.server.id,
                "server": b.server.name[:255],
                "created_at": b.created_at.isoformat(),
            }
            for b in answer.backups
            if b.phase is Phase.RUNNING
        }
        vanished: list[tuple[int, dict[str, Any]]] = []
        if answer.unreadable > len(answer.unreadable_ids):
            # A row without a readable id may be any backup: none is taken for gone this time.
            running = {**before, **running}
        else:
            vanished = [(int(k), v) for k, v in before.items() if int(k) not in present]
        report.servers, report.backups = len(servers), len(answer.backups)
        report.unhealthy = sum(1 for s in servers if not s.healthy)
        self._update_incidents(servers, vanished, now, report)
        self._sweeps.save(row, last_sweep_at=now, running=running, last_error="")
        log.info(
            "health sweep: %d servers, %d backups, %d unhealthy; %d incidents opened, %d resolved",
            report.servers,
            report.backups,
            report.unhealthy,
            len(report.opened),
            len(report.resolved),
        )

    def _update_incidents(
        self,
        servers: list[ServerHealth],
        vanished: list[tuple[int, dict[str, Any]]],
        now: datetime,
        report: SweepReport,
    ) -> None:
        by_id = {s.server.id: s for s in servers}
        with self._sessions() as session:
            open_rows = list(
                session.scalars(select(HealthIncident).where(HealthIncident.open_key.is_not(None)))
            )
        open_keys = {row.open_key for row in open_rows}
        for row in open_rows:
            health = by_id.get(row.server_id)
            good = health.newest_completed if health else None
            if row.kind == IncidentKind.STALE.value:
                recovered = health is not None and not health.stale
            else:
                # As `failed_since_good` counts: a failure no later than the good one is over.
                since = row.backup_created_at or row.opened_at
                recovered = good is not None and good.created_at >= since
            if recovered and self._resolve(row, now, good):
                report.resolved.append(_incident(row))
                open_keys.discard(row.open_key)
        new: list[HealthIncident] = []
        for health in servers:
            server = health.server
            if health.stale and _key(server.id, IncidentKind.STALE) not in open_keys:
                good = health.newest_completed
                new.append(
                    _new_incident(
                        server,
                        IncidentKind.STALE,
                        now,
                        good,
                        _stale_detail(health, now, self.settings.stale_after),
                    )
                )
            if health.failed_since_good and _key(server.id, IncidentKind.FAILED) not in open_keys:
                first = health.failed_since_good[-1]
                detail = first.message or first.status
                new.append(_new_incident(server, IncidentKind.FAILED, now, first, detail))
        for backup_id, seen in vanished:
            server = ServerRef(int(seen["server_id"]), str(seen.get("server") or ""))
            key = _key(server.id, IncidentKind.VANISHED)
            if key in open_keys:
                continue
            open_keys.add(key)
            created = datetime.fromisoformat(str(seen["created_at"])).astimezone(UTC)
            row = _new_incident(server, IncidentKind.VANISHED, now, None, "")
            row.backup_id, row.backup_created_at = backup_id, created
            row.detail = f"backup {backup_id} disappeared while in progress"
            new.append(row)
        for row in new:
            if self._open(row):
                report.opened.append(_incident(row))

    def _open(self, row: HealthIncident) -> bool:
        """Insert an incident; False when the same one is already open (another instance)."""
        try:
            with self._sessions.begin() as session:
                session.add(row)
            return True
        except IntegrityError:
            log.info("incident %s is already open", row.open_key)
            return False

    def _resolve(self, row: HealthIncident, now: datetime, good: Backup | None) -> bool:
        with self._sessions.begin() as session:
            result = session.execute(
                update(HealthIncident)
                .where(HealthIncident.id == row.id, HealthIncident.open_key.is_not(None))
                .values(
                    open_key=None,
                    resolved_at=now,
                    resolved_by_backup_id=good.id if good else None,
                    next_attempt_at=now,  # the recovery reply is due
                )
                .execution_options(synchronize_session=False)
            )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        row.resolved_at, row.resolved_by_backup_id = now, good.id if good else None
        if good is not None:
            with self._lock:
                self._recovered[row.id] = good
        return True

    # -- alerts and recovery replies ----------------------------------------------------------

    def deliver(self) -> int:
        """Post what is due: new incidents' alerts and resolved ones' recovery replies. Returns
        how many messages were posted."""
        now = self._clock()
        rows = self._incidents.claim(
            HealthIncident.next_attempt_at <= now,
            lease=timedelta(seconds=self.settings.lease_seconds),
            order_by=HealthIncident.next_attempt_at,
            limit=self.settings.batch,
        )
        if not rows:
            return 0
        posted = 0
        try:
            for row in rows:
                if self.stopping():
                    break
                try:
                    posted += self._deliver(row, now)
                except Exception:
                    log.exception("health: delivering incident %s failed", row.id)
        finally:
            self._incidents.release(rows)
        return posted

    def _deliver(self, row: HealthIncident, now: datetime) -> int:
        state = PostState(row.alert_state)
        if state is PostState.POSTING:
            # Found mid-post with its lease run out: its worker died. Never posted again.
            return self._not_posted(row, now, _WORKER_DIED, "alert_state", "alert")
        if state is PostState.DUE:
            return self._post_alert(row, now)
        if row.resolved_at is None:
            # Alerted (or settled) and still open: nothing to do until it is resolved.
            self._incidents.save(row, HealthIncident.resolved_at.is_(None), next_attempt_at=None)
            return 0
        return self._post_recovery(row, now)

    def _post_alert(self, row: HealthIncident, now: datetime) -> int:
        channel = self.settings.alerts_channel
        if row.resolved_at is not None:
            # Resolved before it was alerted: a problem that is over is not announced.
            self._incidents.save(
                row,
                alert_state=PostState.SKIPPED.value,
                reply_state=PostState.SKIPPED.value,
                next_attempt_at=None,
            )
            self._record_alert(row, Outcome.OK, "not posted: resolved before it was alerted")
            return 0
        if channel is None or self.poster is None:
            self._incidents.save(row, alert_state=PostState.SKIPPED.value, next_attempt_at=now)
            self._record_alert(row, Outcome.OK, "not posted: ALERTS_CHANNEL is not set")
            return 0
        if not self._incidents.save(
            row,
            alert_state=PostState.POSTING.value,
            alert_channel_id=channel,
            attempts=row.attempts + 1,
        ):
            return 0
        try:
            posted = self.poster.post_alert(channel, self._alert(row, now))
        except NotPosted as exc:
            return self._not_posted(row, now, exc, "alert_state", "alert")
        self._incidents.save(
            row,
            alert_state=PostState.POSTED.value,
            alert_channel_id=posted.channel_id,
            alert_ts=posted.ts,
            next_attempt_at=now,
        )
        self._record_alert(row, Outcome.OK, f"posted in {posted.channel_id}")
        return 1

    def _post_recovery(self, row: HealthIncident, now: datetime) -> int:
        reply = PostState(row.reply_state) if row.reply_state else PostState.DUE
        if reply is PostState.POSTING:
            return self._not_posted(row, now, _WORKER_DIED, "reply_state", "recovery reply")
        if reply is not PostState.DUE:
            self._incidents.save(row, next_attempt_at=None)
            return 0
        if row.alert_state != PostState.POSTED.value or not row.alert_ts or self.poster is None:
            # No alert thread to reply in: the recovery is in the audit table and the status.
            self._incidents.save(row, reply_state=PostState.SKIPPED.value, next_attempt_at=None)
            self._record_alert(
                row, Outcome.OK, "recovered; no alert thread to reply in", recovered=True
            )
            return 0
        if not self._incidents.save(
            row, reply_state=PostState.POSTING.value, attempts=row.attempts + 1
        ):
            return 0
        try:
            posted = self.poster.post_recovery(self._alert(row, now, recovery=True))
        except NotPosted as exc:
            return self._not_posted(row, now, exc, "reply_state", "recovery reply")
        self._incidents.save(
            row, reply_state=PostState.POSTED.value, reply_ts=posted.ts, next_attempt_at=None
        )
        self._record_alert(
            row, Outcome.OK, f"recovery replied in {posted.channel_id}", recovered=True
        )
        return 1

    def _not_posted(
        self, row: HealthIncident, now: datetime, exc: NotPosted, column: str, what: str
    ) -> int:
        recovered = column == "reply_state"
        settled: tuple[PostState, str] | None = None
        if exc.unclear:
            settled = (
                PostState.UNKNOWN,
                f"the {what} may or may not have been posted ({exc.reason}); not posted again",
            )
        elif exc.final or now - row.opened_at > self.settings.give_up_after:
            settled = (PostState.FAILED, f"the {what} could not be posted: {exc.reason}")
        if settled is not None:
            state, detail = settled
            self._incidents.save(
                row, **{column: state.value}, next_attempt_at=now if not recovered else None
            )
            self._record_alert(row, Outcome.ERROR, detail, recovered=recovered)
            return 0
        log.info("health: %s of incident %s not posted (%s); later", what, row.id, exc.reason)
        self._incidents.save(
            row, **{column: PostState.DUE.value}, next_attempt_at=now + self.settings.retry
        )
        return 0

    def _alert(self, row: HealthIncident, now: datetime, *, recovery: bool = False) -> Alert:
        # The backup that resolved it, as the sweep saw it (no provider call of its own; after
        # a restart, or on another instance, the reply names it by id).
        with self._lock:
            recovered_by = self._recovered.pop(row.id, None) if recovery else None
        return Alert(_incident(row), self.settings.stale_after, now, recovered_by=recovered_by)

    def _record_alert(
        self, row: HealthIncident, outcome: Outcome, detail: str, *, recovered: bool = False
    ) -> None:
        action = f"{Action.ALERT.value}.recovered" if recovered else Action.ALERT.value
        channel = row.alert_channel_id or self.settings.alerts_channel
        try:
            self._audit.record(
                Actor(HEALTH_ACTOR_ID, HEALTH_ACTOR_NAME, None, channel),
                action,
                outcome,
                server_id=row.server_id,
                backup_id=row.backup_id,
                parameters={"incident": row.id, "kind": row.kind},
                detail=f"{row.kind}: {row.detail}; {detail}" if row.detail else detail,
            )
        except Exception:
            log.exception("health: the audit row of incident %s was not written", row.id)

    # -- the digest ---------------------------------------------------------------------------

    def digest_if_due(self) -> str | None:
        """Post today's digest if its time has come and it was not posted (or tried) yet, and
        settle an earlier day's that is still being retried. Returns the state the digest it
        handled is left in, or None when none was due."""
        channel = self.settings.digest_channel
        if channel is None:
            return None
        now = self._clock()
        slot = datetime.combine(now.astimezone(UTC).date(), self.settings.digest_time, UTC)
        if now >= slot:
            self._ensure_digest_row(slot)
        rows = self._digests.claim(
            HealthDigest.next_attempt_at <= now,
            lease=timedelta(seconds=self.settings.lease_seconds),
            order_by=HealthDigest.day,
            limit=2,
        )
        state = None
        try:
            for row in rows:
                self._post_digest(row, channel, now)
                state = row.state
        finally:
            self._digests.release(rows)
        return state

    def _ensure_digest_row(self, slot: datetime) -> None:
        day = slot.date().isoformat()
        with self._sessions() as session:
            if session.scalar(select(HealthDigest.id).where(HealthDigest.day == day)) is not None:
                return
            previous = session.scalars(
                select(HealthDigest).where(HealthDigest.day < day).order_by(HealthDigest.day.desc())
            ).first()
        since = slot - timedelta(days=1)
        if previous is not None:
            since = previous.posted_at or previous.due_at
        try:
            with self._sessions.begin() as session:
                session.add(
                    HealthDigest(
                        day=day,
                        due_at=slot,
                        since=since,
                        state=PostState.DUE.value,
                        attempts=0,
                        next_attempt_at=slot,
                        detail="",
                    )
                )
        except IntegrityError:
            pass  # another instance made today's row first: one row, one digest

    def _post_digest(self, row: HealthDigest, channel: str, now: datetime) -> None:
        state = PostState(row.state)
        if state is PostState.POSTING:
            detail = "may or may not have been posted (its worker stopped while posting)"
            self._digests.save(
                row, state=PostState.UNKNOWN.value, next_attempt_at=None, detail=detail
            )
            self._record_digest(row, Outcome.ERROR, f"{detail}; not posted again")
            return
        if state is not PostState.DUE:
            self._digests.save(row, next_attempt_at=None)
            return
        if now - row.due_at > self.settings.give_up_after:
            self._digests.save(row, state=PostState.FAILED.value, next_attempt_at=None)
            self._record_digest(row, Outcome.ERROR, f"not posted in time: {row.detail}")
            return
        digest = self.digest(row.since, now, row.due_at.date())
        if self.poster is None:
            self._digests.save(row, state=PostState.SKIPPED.value, next_attempt_at=None)
            return
        if not self._digests.save(
            row, state=PostState.POSTING.value, channel_id=channel, attempts=row.attempts + 1
        ):
            return
        try:
            posted = self.poster.post_digest(channel, digest)
        except NotPosted as exc:
            if exc.unclear:
                self._digests.save(
                    row,
                    state=PostState.UNKNOWN.value,
                    next_attempt_at=None,
                    detail=exc.reason[:2000],
                )
                self._record_digest(
                    row,
                    Outcome.ERROR,
                    f"may or may not have been posted ({exc.reason}); not posted again",
                )
                return
            if exc.final:
                self._digests.save(
                    row, state=PostState.FAILED.value, next_attempt_at=None, detail=exc.reason
                )
                self._record_digest(row, Outcome.ERROR, f"not posted: {exc.reason}")
                return
            self._digests.save(
                row,
                state=PostState.DUE.value,
                detail=exc.reason[:2000],
                next_attempt_at=now + self.settings.retry,
            )
            log.info("health: the digest of %s was not posted (%s); later", row.day, exc.reason)
            return
        self._digests.save(
            row,
            state=PostState.POSTED.value,
            channel_id=posted.channel_id,
            ts=posted.ts,
            posted_at=now,
            next_attempt_at=None,
            detail="",
        )
        counts = (len(digest.created), len(digest.deleted), len(digest.restored))
        self._record_digest(
            row,
            Outcome.OK,
            f"posted in {posted.channel_id}: {digest.status.unhealthy if digest.status else '?'} "
            f"servers need attention; {counts[0]} created, {counts[1]} deleted, {counts[2]} "
            "restored since the previous digest",
        )

    def digest(self, since: datetime, until: datetime, day: date) -> Digest:
        """The digest's facts: the status now and what was done through the bot since `since`."""
        status: StatusReport | None = None
        problem = None
        try:
            status = self.status()
        except VpsError as exc:
            problem = exc.message
        kinds: dict[str, list[AuditEntry]] = {}
        more = 0
        limit = 200
        for action in (Action.CREATE, Action.DELETE, Action.RESTORE):
            rows = self._audit.recent(limit + 1, action=action.value, outcome="ok", since=since)
            exact = [r for r in rows if r.action == action.value and r.occurred_at <= until]
            more += max(0, len(exact) - limit)
            kinds[action.value] = exact[:limit][::-1]  # oldest first
        approval_ids = {
            r.approval_id for r in kinds[Action.RESTORE.value] if r.approval_id is not None
        }
        traces = self._approvers_of(approval_ids) if approval_ids else {}

        def activity(rows: list[AuditEntry]) -> tuple[Activity, ...]:
            return tuple(
                Activity(
                    r, tuple(traces[r.approval_id].approvers) if r.approval_id in traces else ()
                )
                for r in rows
            )

        return Digest(
            day,
            since,
            until,
            status,
            problem,
            activity(kinds[Action.CREATE.value]),
            activity(kinds[Action.DELETE.value]),
            activity(kinds[Action.RESTORE.value]),
            more,
        )

    def _record_digest(self, row: HealthDigest, outcome: Outcome, detail: str) -> None:
        try:
            self._audit.record(
                Actor(HEALTH_ACTOR_ID, HEALTH_ACTOR_NAME, None, row.channel_id),
                Action.DIGEST.value,
                outcome,
                parameters={"day": row.day, "since": row.since.isoformat()},
                detail=detail,
            )
        except Exception:
            log.exception("health: the audit row of the digest of %s was not written", row.day)

    # -- the loop -----------------------------------------------------------------------------

    def run_once(self) -> SweepReport | None:
        """One round: a sweep if one is due, what is due to post, the digest if due."""
        report = self.sweep()
        if report is None:
            self.deliver()
        self.digest_if_due()
        return report


# -- helpers --------------------------------------------------------------------------------------


def _key(server_id: int, kind: IncidentKind) -> str:
    return f"{server_id}:{kind.value}"


def _new_incident(
    server: ServerRef, kind: IncidentKind, now: datetime, backup: Backup | None, detail: str
) -> HealthIncident:
    return HealthIncident(
        server_id=server.id,
        server_name=server.name[:255],
        kind=kind.value,
        open_key=_key(server.id, kind),
        opened_at=now,
        backup_id=backup.id if backup else None,
        backup_created_at=backup.created_at if backup else None,
        detail=detail[:2000],
        alert_state=PostState.DUE.value,
        attempts=0,
        next_attempt_at=now,
    )


def _stale_detail(health: ServerHealth, now: datetime, stale_after: timedelta) -> str:
    hours = f"{stale_after.total_seconds() / 3600:g} h"
    if health.newest_completed is None:
        return f"no completed backup at all (threshold {hours})"
    age = now - health.newest_completed.created_at
    return (
        f"newest completed backup {health.newest_completed.id} is "
        f"{age.total_seconds() / 3600:.1f} h old (threshold {hours})"
    )


def _incident(row: HealthIncident) -> OpenIncident:
    return OpenIncident(
        id=row.id,
        server=ServerRef(row.server_id, row.server_name or f"server {row.server_id}"),
        kind=IncidentKind(row.kind),
        opened_at=row.opened_at,
        backup_id=row.backup_id,
        backup_created_at=row.backup_created_at,
        detail=row.detail,
        alert_channel_id=row.alert_channel_id,
        alert_ts=row.alert_ts,
    )


def _replace_incidents(health: ServerHealth, incidents: tuple[OpenIncident, ...]) -> ServerHealth:
    if not incidents:
        return health
    return ServerHealth(
        health.server,
        health.newest_completed,
        health.newest_automatic,
        health.in_progress,
        health.recent_failures,
        health.failed_since_good,
        health.total_size_mb,
        health.backups,
        health.stale,
        incidents,
        health.listed,
    )


def _unlisted(incidents: list[OpenIncident]) -> ServerHealth:
    """A server with open incidents and no backup in the list now: it has no good backup."""
    return ServerHealth(
        incidents[0].server, None, None, (), (), (), 0.0, 0, True, tuple(incidents), listed=False
    )


def kinds_in_order(kinds: Iterable[IncidentKind]) -> list[IncidentKind]:
    wanted = set(kinds)
    return [kind for kind in _KIND_ORDER if kind in wanted]


def people(activities: Iterable[Activity]) -> list[tuple[str, int]]:
    """Who did these, most first: (user id, how many)."""
    counted = Counter(a.entry.actor_user_id for a in activities)
    return sorted(counted.items(), key=lambda item: (-item[1], item[0]))
