"""The bot's Prometheus metrics: one set of names, defined once, in prometheus-client's registry.

Served as `GET /metrics` (on `PORT` in HTTP mode, on `METRICS_PORT` in Socket Mode). Every name is
prefixed `backupbot_`. Counters only ever grow in one process; tests read deltas.
No module outside `bot/` needs to know the names: the domain and the edge call these objects.
"""

from __future__ import annotations

import logging
import threading

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bot.db import Approval, ApprovalState, WatchJob, WatchState

log = logging.getLogger(__name__)

# Requests from people -------------------------------------------------------------------------

COMMANDS = Counter(
    "backupbot_commands",
    "Slash commands answered, by subcommand and outcome (ok, denied, error, busy, invalid).",
    ["command", "outcome"],
)
ACTIONS = Counter(
    "backupbot_actions",
    "Interactive actions (buttons, menus, view submissions), by action and outcome.",
    ["action", "outcome"],
)
ACK_SECONDS = Histogram(
    "backupbot_ack_seconds",
    "Time from a Slack request's arrival to its acknowledgement, by kind (command, action, view,"
    " event).",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0),
)

# The work pool behind the acks ----------------------------------------------------------------

WORK_QUEUE_DEPTH = Gauge(
    "backupbot_work_queue_depth", "Work items accepted and waiting for a worker thread."
)
WORK_IN_FLIGHT = Gauge("backupbot_work_in_flight", "Work items running on a worker thread.")
BUSY_ANSWERS = Counter(
    "backupbot_busy_answers",
    "Requests answered 'busy, try again in a minute' because the work queue was full.",
)

# The provider ---------------------------------------------------------------------------------

PROVIDER_SECONDS = Histogram(
    "backupbot_provider_request_seconds",
    "Provider API call latency (each HTTP attempt), by endpoint template and method.",
    ["endpoint", "method"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0),
)
PROVIDER_ERRORS = Counter(
    "backupbot_provider_errors",
    "Provider answers that were not a success, by endpoint template and status (an HTTP status,"
    " or timeout / connect / invalid_body).",
    ["endpoint", "status"],
)
SHARED_READS = Counter(
    "backupbot_provider_shared_reads",
    "Provider reads answered by joining an identical read already in flight (single-flight).",
)

# Durable jobs ---------------------------------------------------------------------------------

WATCH_JOBS = Gauge("backupbot_watch_jobs", "Backup watch jobs by state.", ["state"])
APPROVALS = Gauge("backupbot_approvals", "Approvals (restores, deletes) by state.", ["state"])
STATES_READABLE = Gauge(
    "backupbot_job_states_readable",
    "1 if the last scrape could count watch jobs and approvals in the database, else 0 (the two"
    " gauges above are then absent rather than stale).",
)


class _Count:
    """One count in flight: scrapes that arrive meanwhile wait for it rather than start another."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: dict[str, dict[str, int]] | None = None
        self.error: BaseException | None = None


class JobStates:
    """Sets `WATCH_JOBS` and `APPROVALS` before each scrape, with one GROUP BY query each.

    The counts are the database's, so every instance on one database reports the same: aggregate
    them with max(), not sum(). A scrape never waits more than `timeout` for the database: past it,
    or when the database is down, it answers without the two gauges and with
    `backupbot_job_states_readable 0`. At most one count runs at a time (a slow database is not
    sent a query per scrape), on a daemon thread: a count stuck on an unreachable database never
    holds up the process's exit.
    """

    def __init__(self, sessions: sessionmaker[Session], *, timeout: float = 2.0) -> None:
        self._sessions = sessions
        self._timeout = timeout
        self._lock = threading.Lock()
        self._pending: _Count | None = None

    def refresh(self) -> None:
        with self._lock:
            pending = self._pending
            if pending is None:
                pending = self._pending = _Count()
                threading.Thread(
                    target=self._run, args=(pending,), name="backupbot-metrics", daemon=True
                ).start()
        if not pending.done.wait(self._timeout) or pending.result is None:
            why = type(pending.error).__name__ if pending.error else "no answer in time"
            log.warning("metrics: cannot count jobs and approvals (%s)", why)
            with self._lock:
                WATCH_JOBS.clear()
                APPROVALS.clear()
                STATES_READABLE.set(0)
            return
        counts = pending.result
        with self._lock:
            for gauge, states in (
                (WATCH_JOBS, counts["watch"]),
                (APPROVALS, counts["approvals"]),
            ):
                for state, count in states.items():  # every known state: 0 when nobody is in it
                    gauge.labels(state).set(count)
            STATES_READABLE.set(1)

    def _run(self, pending: _Count) -> None:
        try:
            pending.result = self._count()
        except Exception as exc:  # the database is down: the scrape says so
            pending.error = exc
        finally:
            with self._lock:
                self._pending = None
            pending.done.set()

    def _count(self) -> dict[str, dict[str, int]]:
        watch = {state.value: 0 for state in WatchState}
        approvals = {state.value: 0 for state in ApprovalState}
        with self._sessions() as session:
            for state, count in session.execute(
                select(WatchJob.state, func.count()).group_by(WatchJob.state)
            ):
                watch[state] = count
            for state, count in session.execute(
                select(Approval.state, func.count()).group_by(Approval.state)
            ):
                approvals[state] = count
        return {"watch": watch, "approvals": approvals}
