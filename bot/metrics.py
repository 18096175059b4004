"""The bot's Prometheus metrics: one set of names, defined once, in prometheus-client's registry.

Served as `GET /metrics` (on `PORT` in HTTP mode, on `METRICS_PORT` in Socket Mode). Every name is
prefixed `backupbot_`. Counters only ever grow in one process; tests read deltas.
No module outside `bot/` needs to know the names: the domain and the edge call these objects.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
APPROVALS = Gauge("backupbot_approvals", "Restore approvals by state.", ["state"])
