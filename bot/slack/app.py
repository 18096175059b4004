"""`build_app`: the one Bolt app that production, the tests and the console all run.

HTTP mode is served by waitress (a production WSGI server, pure Python, also embeddable in a
thread, so the tests run the very server production runs): `POST /slack/events` goes to Bolt with
its signature verification on, `GET /healthz` answers for load balancers. Socket Mode uses
slack_sdk's built-in WebSocket client, so no extra dependency.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)
from sqlalchemy import Engine, text

from bot.audit import AuditLog
from bot.config import Settings
from bot.db import ensure_schema, make_engine, make_session_factory
from bot.policy import Policy
from bot.service import BackupService
from bot.slack.directory import SlackDirectory
from bot.slack.listeners import register_listeners
from bot.slack.notify import SlackNotifier
from bot.slack.runtime import Runtime
from bot.vps.client import BackupsClient
from bot.watch import Watcher, WatchSettings

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"

# Bolt's listener threads only parse and ack; the slow half runs on the work pool.
LISTENER_THREADS = 8
WORK_THREADS = 16


@dataclass
class BackupBot:
    """The app and everything it owns, so one `close()` releases it all."""

    app: App
    runtime: Runtime
    engine: Engine
    vps: BackupsClient
    watcher: Watcher
    listener_pool: ThreadPoolExecutor
    _closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def service(self) -> BackupService:
        return self.runtime.service

    def healthy(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except Exception as exc:
            log.warning("health check: database unreachable (%s)", type(exc).__name__)
            return False

    def start_watcher(self) -> BackupBot:
        """Start replying in threads when backups finish (jobs left by a restart included)."""
        self.watcher.start()
        return self

    def close(self) -> None:
        self.watcher.stop()
        self.listener_pool.shutdown(wait=True, cancel_futures=False)
        self.runtime.pool.shutdown(wait=True, cancel_futures=False)
        for closer in reversed(self._closers):
            closer()
        self.vps.close()
        self.engine.dispose()


def web_client(settings: Settings) -> WebClient:
    """slack_sdk's client on SLACK_API_URL, retrying connection errors and rate limits."""
    token = settings.slack_bot_token.reveal() if settings.slack_bot_token else None
    return WebClient(
        token=token,
        base_url=settings.slack_api_url,
        timeout=15,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=2),
            RateLimitErrorRetryHandler(max_retry_count=3),
        ],
    )


def build_app(
    settings: Settings,
    *,
    socket_mode: bool | None = None,
    vps: BackupsClient | None = None,
    client: WebClient | None = None,
    watch_settings: WatchSettings | None = None,
    verify_token: bool = True,
) -> BackupBot:
    """Wire config → database → provider client → use-cases → Bolt listeners."""
    settings.require("SLACK_BOT_TOKEN", "VPS_API_TOKEN")
    socket_mode = settings.socket_mode if socket_mode is None else socket_mode
    if not socket_mode:
        settings.require("SLACK_SIGNING_SECRET")
    engine = make_engine(settings.database_url)
    ensure_schema(engine)
    sessions = make_session_factory(engine)
    if vps is None:
        assert settings.vps_api_token is not None
        vps = BackupsClient(
            settings.vps_api_url,
            settings.vps_api_token,
            read_timeout=settings.vps_timeout_seconds,
        )
    client = client or web_client(settings)
    directory = SlackDirectory(client)
    policy = Policy(settings.roles, channels=settings.channels, groups=directory)
    audit = AuditLog(sessions)
    service = BackupService(vps, audit, policy)
    watcher = Watcher(
        sessions,
        vps,
        SlackNotifier(client),
        audit,
        settings=watch_settings
        or WatchSettings(
            first_poll=settings.watch_poll_seconds,
            deadline=timedelta(hours=settings.watch_deadline_hours),
        ),
    )
    runtime = Runtime(
        service=service,
        directory=directory,
        client=client,
        pool=ThreadPoolExecutor(WORK_THREADS, thread_name_prefix="backupbot-work"),
        watcher=watcher,
    )
    signing_secret = settings.slack_signing_secret.reveal() if settings.slack_signing_secret else ""
    listener_pool = ThreadPoolExecutor(LISTENER_THREADS, thread_name_prefix="bolt")
    app = App(
        client=client,
        signing_secret=signing_secret,
        request_verification_enabled=not socket_mode,
        token_verification_enabled=verify_token,
        listener_executor=listener_pool,
    )
    register_listeners(app, runtime)
    return BackupBot(
        app=app,
        runtime=runtime,
        engine=engine,
        vps=vps,
        watcher=watcher,
        listener_pool=listener_pool,
    )


def wsgi_app(bot: BackupBot) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    """`POST /slack/events` to Bolt, `GET /healthz`, 404 for anything else."""
    slack = SlackRequestHandler(bot.app, path=EVENTS_PATH)

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == EVENTS_PATH and method == "POST":
            return slack(environ, start_response)
        if path == HEALTH_PATH and method in ("GET", "HEAD"):
            ok = bot.healthy()
            body = json.dumps({"ok": ok, "database": "ok" if ok else "unreachable"}).encode()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(
                status,
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        body = b'{"ok": false, "error": "not_found"}'
        start_response(
            "404 Not Found",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return application


class HttpServer:
    """waitress serving `wsgi_app(bot)`; `serve_forever()` in production, `start()` in tests."""

    def __init__(self, bot: BackupBot, host: str = "0.0.0.0", port: int = 3000) -> None:  # noqa: S104
        from waitress.server import create_server

        self._server = create_server(
            wsgi_app(bot), host=host, port=port, threads=8, ident="backupbot"
        )
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.effective_port)  # type: ignore[union-attr]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve_forever(self) -> None:
        """Serve until `request_stop()` (e.g. from a SIGTERM handler); then finish the workers."""
        try:
            self._server.run()
        finally:
            self._server.task_dispatcher.shutdown()  # type: ignore[union-attr]

    def start(self) -> HttpServer:
        self._thread = threading.Thread(target=self.serve_forever, name="waitress", daemon=True)
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Ask the loop to close every socket and return; safe from a signal handler."""
        from waitress import wasyncore

        server: Any = self._server
        # Close from inside waitress's own loop (woken by its trigger): closing the socket from
        # another thread races its select() (EBADF) or waits out the loop's 1 s timeout.
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))

    def stop(self) -> None:
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout=5)


class SocketModeRunner:
    """Socket Mode: connects out to Slack over a WebSocket (no public URL needed)."""

    def __init__(self, bot: BackupBot, app_token: str) -> None:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        self._handler = SocketModeHandler(bot.app, app_token)

    def connect(self) -> SocketModeRunner:
        self._handler.connect()
        return self

    def close(self) -> None:
        self._handler.close()


def run_socket_mode(
    bot: BackupBot, settings: Settings, stop: threading.Event | None = None
) -> None:
    """Serve in Socket Mode until `stop` is set (or the process is interrupted)."""
    assert settings.slack_app_token is not None
    runner = SocketModeRunner(bot, settings.slack_app_token.reveal()).connect()
    try:
        (stop or threading.Event()).wait()
    finally:
        runner.close()
