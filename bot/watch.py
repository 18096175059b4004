"""Durable "tell the thread when backup N finishes" jobs: batched polling, leases, one reply each.

How a job lives:

1. `watch()` writes the job *before* the "started" message is posted, and `attach_thread()` adds the
   message's ts after; a crash in between leaves a job that still gets answered (top-level).
2. Each round a watcher claims due jobs under a lease (`SELECT … FOR UPDATE SKIP LOCKED` on
   PostgreSQL, then a conditional UPDATE that also guards SQLite), lists each server's backups
   **once** for all of that server's jobs, and records what it saw. A job not finished is polled
   again later, with backoff up to a cap.
3. A job whose outcome is known stays pending until its reply is posted (`notified_at`). The reply
   is posted only by the lease holder, after renewing the lease, so several instances sharing one
   database answer each backup once. A dead instance's lease expires and another takes over.
   Leases are measured on the database's clock and renewed per server polled (bot/leases.py), so
   neither skewed hosts nor a long round let two instances act on one job.

What is left: when Slack takes a reply but its answer is lost (a timeout), or the process dies
between Slack's answer and writing `notified_at`, the reply is posted again on the next attempt.
Closing that needs reading the thread back (`conversations.history` scopes), which we chose not to
ask for. If Slack refuses a reply for as long as `deadline`, one last try goes to the requester's
DM; after that the job is closed with an error in the audit table.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session, sessionmaker

from bot.audit import Actor, AuditLog
from bot.db import Outcome, WatchJob, WatchState
from bot.leases import Leases, worker_name
from bot.logs import current_request_id, request_scope
from bot.rounds import Rounds
from bot.vps.client import BackupsClient
from bot.vps.errors import UnexpectedResponse, VpsError
from bot.vps.models import Backup, Phase

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class WatchSettings:
    first_poll: float = 10.0  # seconds to the first poll (WATCH_POLL_SECONDS)
    max_poll: float = 300.0  # the backoff's cap
    backoff: float = 1.5
    deadline: timedelta = timedelta(hours=24)  # then tracking gives up, and says so
    lease_seconds: float = 300.0  # longer than any one round's provider + Slack calls
    batch: int = 1000  # jobs claimed per round
    vanish_misses: int = 2  # consecutive listings without the backup before "vanished"
    thread_grace: timedelta = timedelta(minutes=2)  # wait this long for attach_thread()
    tick: float = 1.0  # how often the loop looks for due jobs


class DeliveryFailed(Exception):
    """Slack did not take the reply; the watcher tries again later."""


@dataclass(frozen=True)
class Delivery:
    channel_id: str
    ts: str
    note: str = ""  # e.g. "sent by DM: not_in_channel"


@dataclass(frozen=True)
class FinishedBackup:
    """What a thread reply tells: the facts of one watch job whose outcome is known."""

    backup_id: int
    server_id: int
    server_name: str
    state: str  # a `WatchState` value other than watching
    status: str  # the provider's last status text
    size_mb: float | None
    expires_at: datetime | None
    created_at: datetime
    seen_running_at: datetime | None
    finished_at: datetime | None
    last_error: str
    description: str
    requester_id: str
    channel_id: str | None
    thread_ts: str | None
    update_parent: bool = True  # the parent is our "started" message, not someone's card

    @classmethod
    def of(cls, job: WatchJob) -> FinishedBackup:
        return cls(
            backup_id=job.backup_id,
            server_id=job.server_id,
            server_name=job.server_name,
            state=job.state,
            status=job.status,
            size_mb=job.size_mb,
            expires_at=job.expires_at,
            created_at=job.backup_created_at,
            seen_running_at=job.seen_running_at,
            finished_at=job.finished_at,
            last_error=job.last_error,
            description=job.description,
            requester_id=job.requester_id,
            channel_id=job.channel_id,
            thread_ts=job.thread_ts,
            update_parent=job.update_parent,
        )


class Notifier(Protocol):
    """Posts a finished backup's reply (the Slack side implements it); raises `DeliveryFailed`.

    `direct=True` asks for the requester's DM instead of the channel (the last attempt).
    """

    def notify(self, finished: FinishedBackup, *, direct: bool = False) -> Delivery: ...


@dataclass
class RoundStats:
    claimed: int = 0
    list_calls: int = 0
    finished: int = 0
    notified: int = 0


class Watcher(Rounds):
    """Runs rounds on a background thread (`start`/`stop`) or one at a time (`run_once`)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        client: BackupsClient,
        notifier: Notifier,
        audit: AuditLog,
        *,
        settings: WatchSettings | None = None,
        owner: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
    ) -> None:
        self._sessions = sessions
        self._client = client
        self._notifier = notifier
        self._audit = audit
        self.settings = settings or WatchSettings()
        self.owner = owner or worker_name()
        self._leases = Leases(sessions, WatchJob, self.owner)
        self._clock = clock
        self._rng = rng or random.Random()
        super().__init__("backupbot-watch", lambda: self.settings.tick)

    # -- registering (called by the create flow) -------------------------------------------

    def watch(self, backup: Backup, actor: Actor) -> int:
        """Write the job for a backup just created; returns its id for `attach_thread`."""
        now = self._clock()
        job = WatchJob(
            backup_id=backup.id,
            server_id=backup.server.id,
            server_name=backup.server.name[:255],
            channel_id=actor.channel_id,
            requester_id=actor.user_id,
            requester_name=actor.name[:255],
            team_id=actor.team_id,
            backup_created_at=backup.created_at,
            registered_at=now,
            state=WatchState.WATCHING.value,
            status=backup.status[:64],
            description=backup.description or "",
            next_poll_at=now + timedelta(seconds=self.settings.first_poll),
            attempts=0,
            misses=0,
            last_error="",
            notify_attempts=0,
            request_id=current_request_id(),
        )
        with self._sessions.begin() as session:
            session.add(job)
            session.flush()
            return job.id

    def attach_thread(
        self,
        job_id: int,
        channel_id: str | None,
        thread_ts: str | None,
        *,
        update_parent: bool = True,
    ) -> None:
        """Where the "started" message went: the thread the reply belongs in. `update_parent`:
        False when the thread's parent is another message (an approval card), left as it is."""
        with self._sessions.begin() as session:
            session.execute(
                update(WatchJob)
                .where(WatchJob.id == job_id)
                .values(channel_id=channel_id, thread_ts=thread_ts, update_parent=update_parent)
            )
        self.poke()

    def threads_of(self, backup_ids: set[int]) -> dict[int, tuple[str, str]]:
        """Where each of these backups was announced: (channel, ts) of its thread."""
        columns = (WatchJob.backup_id, WatchJob.channel_id, WatchJob.thread_ts)
        with self._sessions() as session:
            rows = session.execute(select(*columns).where(WatchJob.backup_id.in_(backup_ids)))
            return {row.backup_id: (row.channel_id, row.thread_ts) for row in rows if row.thread_ts}

    def thread_if_missing(
        self, backup_id: int, channel_id: str | None, thread_ts: str | None
    ) -> None:
        """`attach_thread` for a backup's job that has no thread yet (a restart came between
        writing the job and attaching its thread), replying under another message."""
        with self._sessions.begin() as session:
            attached = session.execute(
                update(WatchJob)
                .where(WatchJob.backup_id == backup_id, WatchJob.thread_ts.is_(None))
                .values(channel_id=channel_id, thread_ts=thread_ts, update_parent=False)
            ).rowcount  # type: ignore[attr-defined]
        if attached:
            self.poke()

    def state_of(self, backup_id: int) -> WatchState | None:
        """What is known of a watched backup's outcome (None: it is not watched)."""
        with self._sessions() as session:
            state = session.scalar(select(WatchJob.state).where(WatchJob.backup_id == backup_id))
        return WatchState(state) if state is not None else None

    # -- the loop --------------------------------------------------------------------------

    def run_once(self) -> RoundStats:
        stats = RoundStats()
        jobs = self._claim()
        stats.claimed = len(jobs)
        if not jobs:
            return stats
        try:
            by_server: dict[int, list[WatchJob]] = defaultdict(list)
            for job in jobs:
                if job.state == WatchState.WATCHING.value:
                    by_server[job.server_id].append(job)
            for server_id, server_jobs in by_server.items():
                if self.stopping():
                    break
                # A fresh lease per server: a round of slow answers never outlives its lease,
                # and jobs whose lease was lost meanwhile are left to whoever holds them now.
                server_jobs = self._leases.renew(server_jobs, self._lease)
                if not server_jobs:
                    continue
                stats.list_calls += 1
                try:
                    stats.finished += self._poll_server(server_id, server_jobs)
                except Exception:
                    # One server's odd answer must not starve the others' jobs.
                    log.exception("watch: polling server %s failed", server_id)
            for job in jobs:
                if self.stopping():
                    break
                if job.state == WatchState.WATCHING.value:
                    continue
                try:
                    # As part of the request that started the backup: its id on the reply's log
                    # lines and audit row.
                    with request_scope(job.request_id) if job.request_id else nullcontext():
                        if self._deliver(job):
                            stats.notified += 1
                except Exception:
                    log.exception("watch: replying for backup %s failed", job.backup_id)
        finally:
            self._leases.release(jobs)
        return stats

    # -- claiming --------------------------------------------------------------------------

    def _claim(self) -> list[WatchJob]:
        now = self._clock()
        due = and_(WatchJob.notified_at.is_(None), WatchJob.next_poll_at <= now)
        return self._leases.claim(
            due,
            lease=self._lease,
            order_by=WatchJob.next_poll_at,
            limit=self.settings.batch,
        )

    @property
    def _lease(self) -> timedelta:
        return timedelta(seconds=self.settings.lease_seconds)

    def _save(self, job: WatchJob, **values: object) -> bool:
        """Write `values` only while we still hold the job's lease; mirrors them on `job`."""
        if not self._leases.save(job, **self._fit(values)):
            log.warning("lost the lease on watch job %s (backup %s)", job.id, job.backup_id)
            return False
        return True

    @staticmethod
    def _fit(values: dict[str, object]) -> dict[str, object]:
        """Provider text clipped to its column, so an odd answer cannot wedge a job."""
        limits = {"status": 64, "last_error": 2000}
        return {
            key: value[: limits[key]] if key in limits and isinstance(value, str) else value
            for key, value in values.items()
        }

    # -- polling ---------------------------------------------------------------------------

    def _interval(self, attempts: int) -> timedelta:
        growth = self.settings.backoff ** min(attempts, 60)  # no float overflow, ever
        seconds = min(self.settings.max_poll, self.settings.first_poll * growth)
        return timedelta(seconds=seconds * self._rng.uniform(0.9, 1.1))

    def _poll_server(self, server_id: int, jobs: list[WatchJob]) -> int:
        """One list call for all of this server's jobs; returns how many finished."""
        try:
            # Watched backups are the ones people created: manual. Filtering keeps it one page.
            answer = self._client.list_backups(server_id=server_id, backup_type="manual")
            listing = {b.id: b for b in answer.backups}
            unreadable = answer.unreadable_ids
        except VpsError as exc:
            log.warning("watch: listing server %s failed: %s", server_id, exc.message)
            for job in jobs:
                self._unreachable(job, exc)
            return sum(1 for job in jobs if job.state != WatchState.WATCHING.value)
        finished = 0
        now = self._clock()
        for job in jobs:
            backup = listing.get(job.backup_id)
            if backup is None and job.backup_id in unreadable:
                # Its row came in a shape we cannot read: not gone, just not readable this time.
                problem = UnexpectedResponse("the provider's row for it could not be read")
                self._unreachable(job, problem)
                finished += int(job.state != WatchState.WATCHING.value)
                continue
            if backup is None:
                misses = job.misses + 1
                if misses >= self.settings.vanish_misses:
                    finished += self._finish(job, WatchState.VANISHED, misses=misses)
                else:
                    self._save(
                        job,
                        misses=misses,
                        next_poll_at=now + timedelta(seconds=self.settings.first_poll),
                    )
                continue
            phase = backup.phase
            if phase is Phase.COMPLETED:
                finished += self._finish(
                    job,
                    WatchState.COMPLETED,
                    status=backup.status,
                    size_mb=backup.size_mb,
                    expires_at=backup.expires_at,
                    misses=0,
                )
            elif phase is Phase.FAILED:
                finished += self._finish(
                    job,
                    WatchState.FAILED,
                    status=backup.status,
                    size_mb=backup.size_mb,
                    last_error=backup.message or "",
                    misses=0,
                )
            elif now - job.registered_at > self.settings.deadline:
                finished += self._finish(
                    job,
                    WatchState.GAVE_UP,
                    status=backup.status,
                    last_error=f"still {backup.status} after {_hours(self.settings.deadline)}",
                )
            else:
                self._save(
                    job,
                    status=backup.status,
                    attempts=job.attempts + 1,
                    misses=0,
                    seen_running_at=now,
                    next_poll_at=now + self._interval(job.attempts + 1),
                )
        return finished

    def _unreachable(self, job: WatchJob, exc: VpsError) -> None:
        now = self._clock()
        if now - job.registered_at > self.settings.deadline:
            self._finish(job, WatchState.GAVE_UP, last_error=exc.message)
            return
        self._save(
            job,
            attempts=job.attempts + 1,
            last_error=exc.message,
            next_poll_at=now + self._interval(job.attempts + 1),
        )

    def _finish(self, job: WatchJob, state: WatchState, **values: object) -> int:
        return int(self._save(job, state=state.value, finished_at=self._clock(), **values))

    # -- replying --------------------------------------------------------------------------

    def _deliver(self, job: WatchJob) -> bool:
        now = self._clock()
        if job.thread_ts is None and now - job.registered_at < self.settings.thread_grace:
            # The "started" message may still be on its way; answer in its thread if it comes.
            self._save(job, next_poll_at=now + timedelta(seconds=self.settings.first_poll))
            return False
        if not self._leases.renew([job], self._lease):
            log.warning("lost the lease on watch job %s (backup %s)", job.id, job.backup_id)
            return False
        attempts = job.notify_attempts + 1
        try:
            delivery = self._notifier.notify(
                FinishedBackup.of(job), direct=self._last_chance(job, now)
            )
        except Exception as exc:
            # DeliveryFailed, or anything else (a timeout may even hide a reply Slack took).
            reason = str(exc) if isinstance(exc, DeliveryFailed) else type(exc).__name__
            if not isinstance(exc, DeliveryFailed):
                log.warning("reply for backup %s failed unexpectedly: %r", job.backup_id, exc)
            if self._last_chance(job, now):
                log.error("giving up replying for backup %s: %s", job.backup_id, reason)
                self._save(
                    job, notify_attempts=attempts, notified_at=now, last_error=f"reply: {reason}"
                )
                self._record(job, Outcome.ERROR, f"reply could not be delivered: {reason}")
                return False
            self._save(
                job,
                notify_attempts=attempts,
                last_error=f"reply: {reason}"[:2000],
                next_poll_at=now + self._interval(attempts),
            )
            return False
        self._save(
            job,
            notified_at=self._clock(),
            reply_channel_id=delivery.channel_id,
            reply_ts=delivery.ts,
            notify_attempts=attempts,
        )
        self._record(job, None, delivery.note)
        return True

    def _last_chance(self, job: WatchJob, now: datetime) -> bool:
        """Slack has refused the reply for as long as we track a backup: one try by DM, then stop.

        Counted from when the outcome was known, so a late outcome still gets a full day.
        """
        since = job.finished_at or job.registered_at
        return now - since > self.settings.deadline

    def _record(self, job: WatchJob, outcome: Outcome | None, note: str) -> None:
        if outcome is None:
            outcome = Outcome.OK if job.state == WatchState.COMPLETED.value else Outcome.ERROR
        detail = job.status or job.state
        if job.last_error:
            detail += f": {job.last_error}"
        if note:
            detail += f" ({note})"
        self._audit.record(
            Actor(job.requester_id, job.requester_name, job.team_id, job.channel_id),
            f"backup.{job.state}",
            outcome,
            server_id=job.server_id,
            backup_id=job.backup_id,
            parameters={"size_mb": job.size_mb} if job.size_mb is not None else {},
            detail=detail,
        )


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g} h"
