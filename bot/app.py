"""Wiring: settings → database → provider client → use-cases → watcher → the Slack app.

The one place that knows how the parts fit; `BackupBot.close()` releases them all, in order.
Production (`backupbot run`), the console and the tests all build the bot here.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from bot.approvals import ApprovalRunner, ApprovalSettings, RestoreApprovals
from bot.audit import AuditLog, CheckpointWriter
from bot.config import Settings
from bot.db import ensure_schema, make_engine, make_session_factory
from bot.health import HealthMonitor, HealthSettings, utcnow
from bot.logs import MIN_MASKED_ANYWHERE, protect
from bot.metrics import JobStates
from bot.policy import Policy
from bot.replays import RequestLedger
from bot.service import BackupService
from bot.slack.app import SlackApp, SlackConnection, build_slack_app
from bot.slack.health_post import SlackHealthPoster
from bot.slack.serving import (
    HttpServer,
    metrics_app,
    metrics_only_app,
    run_socket_mode,
    wsgi_app,
)
from bot.vps.client import BackupsClient
from bot.watch import Watcher, WatchSettings
from bot.wsgi_server import WsgiApp, WsgiServer

log = logging.getLogger(__name__)


@dataclass
class BackupBot:
    """The bot and everything it owns."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    vps: BackupsClient
    service: BackupService
    approvals: RestoreApprovals
    watcher: Watcher
    runner: ApprovalRunner
    slack: SlackApp
    checkpoints: CheckpointWriter | None = None  # with AUDIT_SIGNING_KEY: signed checkpoints
    health: HealthMonitor | None = None  # status, the health sweep, alerts, the daily digest
    job_states: JobStates | None = None  # the job and approval gauges, read at each scrape
    _ledger_engine: Engine | None = None  # the replay ledger's own pool (see _ledger_pool)

    def healthy(self) -> bool:
        """Whether the database answers (for `/healthz`)."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except Exception as exc:
            log.warning("health check: database unreachable (%s)", type(exc).__name__)
            return False

    def start_workers(self) -> BackupBot:
        """Start the background work: replies when backups finish, and approved restores (what
        a restart left half-done included)."""
        self.watcher.start()
        self.runner.start()
        if self.checkpoints is not None:
            self.checkpoints.start()
        if self.health is not None and (
            self.health.settings.sweep_every is not None or self.health.settings.digest_channel
        ):
            self.health.start()
        return self

    def http_server(self, host: str = "0.0.0.0", port: int = 3000) -> HttpServer:  # noqa: S104
        secret = self.settings.slack_signing_secret
        application = wsgi_app(
            self.slack.app,
            self.healthy,
            signing_secret=secret.reveal() if secret else None,
            first_time=RequestLedger(self._ledger_pool()).first_time,
            # With METRICS_PORT, /metrics moves there (off the port Slack reaches).
            metrics=None if self.settings.metrics_port else self.metrics_endpoint(),
        )
        return HttpServer(application, host=host, port=port)

    def _ledger_pool(self) -> Engine:
        """The replay ledger's own connections: its check comes first in every job that may
        change something, so it never waits behind a burst of work holding the main pool's."""
        if self._ledger_engine is None:
            self._ledger_engine = make_engine(
                self.settings.database_url, pool_size=4, max_overflow=16
            )
        return self._ledger_engine

    def metrics_endpoint(self) -> WsgiApp:
        """`GET /metrics` (behind METRICS_TOKEN when set)."""
        if self.job_states is None:
            self.job_states = JobStates(self.sessions)
        token = self.settings.metrics_token
        return metrics_app(self.job_states.refresh, token.reveal() if token else None)

    def metrics_server(self, host: str = "0.0.0.0", port: int | None = None) -> WsgiServer:  # noqa: S104
        """`GET /metrics` and `GET /healthz` on METRICS_PORT (or `port`); `start()` it."""
        chosen = self.settings.metrics_port if port is None else port
        application = metrics_only_app(self.metrics_endpoint(), self.healthy)
        return WsgiServer(application, host=host, port=chosen or 0, threads=2, ident="backupbot")

    def run_socket_mode(self, stop: threading.Event | None = None) -> None:
        assert self.settings.slack_app_token is not None
        run_socket_mode(self.slack.app, self.settings.slack_app_token.reveal(), stop)

    def close(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.stop()
        if self.health is not None:
            self.health.stop()
        # The runner may be sending a restore: it ends its step before the client closes.
        self.runner.stop(timeout=120)
        self.watcher.stop()
        self.slack.close()
        self.vps.close()
        if self._ledger_engine is not None:
            self._ledger_engine.dispose()
        self.engine.dispose()


def build_app(
    settings: Settings,
    *,
    socket_mode: bool | None = None,
    vps: BackupsClient | None = None,
    client: Any = None,
    watch_settings: WatchSettings | None = None,
    approval_tuning: dict[str, Any] | None = None,
    verify_token: bool = True,
    health_tuning: dict[str, Any] | None = None,
    health_clock: Callable[[], datetime] = utcnow,
) -> BackupBot:
    """`client`: a `slack_sdk.WebClient` to use instead of one on SLACK_API_URL;
    `approval_tuning`: `ApprovalSettings` fields to change (the runner's pace, in tests);
    `health_tuning`, `health_clock`: the health monitor's `HealthSettings` fields to change, and
    its clock (in tests)."""
    settings.require("SLACK_BOT_TOKEN", "VPS_API_TOKEN")
    protect_secrets(settings)
    socket_mode = settings.socket_mode if socket_mode is None else socket_mode
    if not socket_mode:
        settings.require("SLACK_SIGNING_SECRET")
    engine = make_engine(settings.database_url)
    try:
        ensure_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    sessions = make_session_factory(engine)
    if vps is None:
        assert settings.vps_api_token is not None
        vps = BackupsClient(
            settings.vps_api_url,
            settings.vps_api_token,
            read_timeout=settings.vps_timeout_seconds,
            max_connections=settings.provider_concurrency,
        )
    slack = SlackConnection(settings, client)
    audit = AuditLog(sessions)
    watcher = Watcher(
        sessions,
        vps,
        slack.notifier,
        audit,
        settings=watch_settings
        or WatchSettings(
            first_poll=settings.watch_poll_seconds,
            deadline=timedelta(hours=settings.watch_deadline_hours),
            lease_seconds=settings.worker_lease_seconds,
        ),
    )
    policy = Policy(settings.roles, channels=settings.channels, groups=slack.directory)
    tuned = dataclasses.replace(approval_settings(settings), **(approval_tuning or {}))
    approvals = RestoreApprovals(sessions, vps, audit, policy, slack.board, settings=tuned)
    health = HealthMonitor(
        sessions,
        vps,
        audit,
        SlackHealthPoster(slack.client),
        settings=dataclasses.replace(health_settings(settings), **(health_tuning or {})),
        clock=health_clock,
        approvers_of=approvals.traces_of,
    )
    service = BackupService(
        vps,
        audit,
        policy,
        watcher=watcher,
        announcer=slack.announcer,
        traces_of=approvals.traces_of,
        health=health,
        deletes_need_approval=settings.delete_requires_approval,
    )
    runner = ApprovalRunner(sessions, vps, audit, slack.board, watcher, approvals)
    approvals.poke = runner.poke
    try:
        slack_app = build_slack_app(
            settings,
            slack,
            service,
            approvals,
            socket_mode=socket_mode,
            verify_token=verify_token,
        )
    except BaseException:
        vps.close()
        engine.dispose()
        raise
    key, every = settings.audit_signing_key, timedelta(hours=settings.audit_checkpoint_hours)
    checkpoints = CheckpointWriter(audit, key.reveal(), every) if key else None
    if checkpoints is not None and settings.audit_channel:
        checkpoints.on_checkpoint = slack.checkpoint_poster(settings.audit_channel)
    return BackupBot(
        settings,
        engine,
        sessions,
        vps,
        service,
        approvals,
        watcher,
        runner,
        slack_app,
        checkpoints,
        health,
    )


def approval_settings(settings: Settings) -> ApprovalSettings:
    return ApprovalSettings(
        ttl=timedelta(minutes=settings.approval_ttl_minutes),
        required=settings.restore_approvals_required,
        safety_backup=settings.restore_safety_backup,
        approvals_channel=settings.approvals_channel,
        delete_requires_approval=settings.delete_requires_approval,
        lease_seconds=settings.worker_lease_seconds,
    )


def health_settings(settings: Settings) -> HealthSettings:
    minutes = settings.health_sweep_minutes
    return HealthSettings(
        stale_after=timedelta(hours=settings.backup_stale_hours),
        sweep_every=timedelta(minutes=minutes) if minutes > 0 else None,
        alerts_channel=settings.alerts_channel,
        digest_channel=settings.digest_channel,
        digest_time=settings.digest_time,
        lease_seconds=settings.worker_lease_seconds,
    )


def protect_secrets(settings: Settings) -> None:
    """Mask every configured secret in every log record; say which are too short to be masked
    inside other text (by name: never the value, nor its length)."""
    named = settings.named_secrets()
    protect(value for values in named.values() for value in values)
    for name, values in named.items():
        if any(len(value) < MIN_MASKED_ANYWHERE for value in values):
            log.warning(
                "%s is shorter than %d characters: logs mask it only where it stands alone; "
                "use a long random value",
                name,
                MIN_MASKED_ANYWHERE,
            )
