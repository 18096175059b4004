"""Serving the Bolt app: HTTP mode (`POST /slack/events`, `GET /healthz`) on waitress, or Socket
Mode with slack_sdk's built-in WebSocket client (no public URL needed, no extra dependency)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot.wsgi_server import WsgiApp, WsgiServer

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"


def wsgi_app(app: App, healthy: Callable[[], bool]) -> WsgiApp:
    """`POST /slack/events` to Bolt (signatures checked there), `GET /healthz`, 404 otherwise."""
    slack = SlackRequestHandler(app, path=EVENTS_PATH)

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == EVENTS_PATH and method == "POST":
            return slack(environ, start_response)
        if path == HEALTH_PATH and method in ("GET", "HEAD"):
            ok = healthy()
            status = "200 OK" if ok else "503 Service Unavailable"
            return _json(
                start_response, status, {"ok": ok, "database": "ok" if ok else "unreachable"}
            )
        return _json(start_response, "404 Not Found", {"ok": False, "error": "not_found"})

    return application


def _json(start_response: Callable[..., Any], status: str, payload: Any) -> list[bytes]:
    body = json.dumps(payload).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


class HttpServer(WsgiServer):
    """waitress serving `wsgi_app`; `serve_forever()` in production, `start()` in tests."""

    def __init__(
        self,
        app: App,
        healthy: Callable[[], bool],
        host: str = "0.0.0.0",  # noqa: S104 - behind a load balancer, on every interface
        port: int = 3000,
    ) -> None:
        super().__init__(wsgi_app(app, healthy), host=host, port=port, threads=8)


class SocketModeRunner:
    """Socket Mode: connects out to Slack over a WebSocket (no public URL needed)."""

    def __init__(self, app: App, app_token: str) -> None:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        self._handler = SocketModeHandler(app, app_token)

    def connect(self) -> SocketModeRunner:
        self._handler.connect()
        return self

    def close(self) -> None:
        self._handler.close()


def run_socket_mode(app: App, app_token: str, stop: threading.Event | None = None) -> None:
    """Serve in Socket Mode until `stop` is set (or the process is interrupted)."""
    runner = SocketModeRunner(app, app_token).connect()
    try:
        (stop or threading.Event()).wait()
    finally:
        runner.close()
