"""Serving the Bolt app: HTTP mode (`POST /slack/events`, `GET /healthz`, `GET /metrics`) on
waitress, or Socket Mode with slack_sdk's built-in WebSocket client (no public URL needed, no extra
dependency) and `/metrics` on a port of its own.

Both entry points give each Slack request its id (`bot.logs.request_scope`) and time its ack
(`backupbot_ack_seconds`): from the moment the request reaches our code to the moment Bolt hands
back the answer that acks it.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import make_wsgi_app
from slack_bolt import App
from slack_bolt.adapter.socket_mode.builtin import SocketModeHandler
from slack_bolt.adapter.socket_mode.internals import run_bolt_app, send_response
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest

from bot.logs import request_scope
from bot.metrics import ACK_SECONDS
from bot.replays import checked_once, fingerprint
from bot.wsgi_server import WsgiApp, WsgiServer

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
# Slack's payloads are a few kB; a message with 50 blocks is well under 100 kB.
MAX_BODY = 1 << 20
CONNECTION_LIMIT = 1000  # open connections at once (see HttpServer)
IDLE_CONNECTION_SECONDS = 30


def wsgi_app(
    app: App,
    healthy: Callable[[], bool],
    *,
    signing_secret: str | None = None,
    first_time: Callable[[str], bool] | None = None,
    metrics: WsgiApp | None = None,
) -> WsgiApp:
    """`POST /slack/events` to Bolt through the gate below, `GET /healthz`, `GET /metrics` (when
    `metrics` is given: see `metrics_app`), 404 otherwise.

    The gate, in order: a body over `MAX_BODY` is 413 (waitress refuses it before reading, see
    `HttpServer`); a bad or stale signature is 401; a body Slack would never send is 400 (Bolt
    would parse it first and answer 500 with a traceback in the log). A request already acted on
    (the same signature again, or an event Slack retries) is acked, and the work it leads to asks
    `first_time` before acting and does nothing (`bot.replays.checked_once`): no database write
    before an ack.
    """
    slack = SlackRequestHandler(app, path=EVENTS_PATH)
    verifier = SignatureVerifier(signing_secret) if signing_secret else None

    def events(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        arrived = time.perf_counter()
        with request_scope():
            return gate(environ, start_response, arrived)

    def gate(
        environ: dict[str, Any], start_response: Callable[..., Any], arrived: float
    ) -> Iterable[bytes]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            return _json(start_response, "413 Payload Too Large", {"ok": False})
        body = environ["wsgi.input"].read(length)
        headers = {
            "x-slack-request-timestamp": environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", ""),
            "x-slack-signature": environ.get("HTTP_X_SLACK_SIGNATURE", ""),
        }
        if verifier is not None and not _signed(verifier, body, headers):
            return _json(start_response, "401 Unauthorized", {"ok": False, "error": "invalid"})
        shape = payload_shape(body, environ.get("CONTENT_TYPE", ""))
        if isinstance(shape, str):
            log.warning("refusing a signed request Slack would not send: %s", shape)
            return _json(start_response, "400 Bad Request", {"ok": False, "error": shape})
        kind = request_kind(shape)
        log.debug("slack request: %s%s", kind, _retry_note(environ.get("HTTP_X_SLACK_RETRY_NUM")))
        environ["wsgi.input"] = io.BytesIO(body)
        with checked_once(_request_key(shape, headers), first_time):
            answer = slack(environ, start_response)
        ACK_SECONDS.labels(kind).observe(time.perf_counter() - arrived)
        return answer

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == EVENTS_PATH and method == "POST":
            return events(environ, start_response)
        if path == METRICS_PATH and metrics is not None:
            return metrics(environ, start_response)
        if path == HEALTH_PATH and method in ("GET", "HEAD"):
            ok = healthy()
            status = "200 OK" if ok else "503 Service Unavailable"
            return _json(
                start_response, status, {"ok": ok, "database": "ok" if ok else "unreachable"}
            )
        return _json(start_response, "404 Not Found", {"ok": False, "error": "not_found"})

    return application


def metrics_app(refresh: Callable[[], None], token: str | None = None) -> WsgiApp:
    """`GET /metrics`: prometheus-client's exposition (text, or OpenMetrics when asked for), after
    `refresh()` (the gauges read from the database). With `token`, only for a request carrying
    `Authorization: Bearer <token>` (401 otherwise)."""
    exposition = make_wsgi_app()
    expected = f"Bearer {token}".encode() if token else None

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _json(start_response, "405 Method Not Allowed", {"ok": False})
        if expected is not None:
            given = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
            if not hmac.compare_digest(given, expected):
                start_response(
                    "401 Unauthorized",
                    [("WWW-Authenticate", 'Bearer realm="metrics"'), ("Content-Length", "0")],
                )
                return [b""]
        refresh()
        return exposition(environ, start_response)

    return application


def metrics_only_app(metrics: WsgiApp, healthy: Callable[[], bool]) -> WsgiApp:
    """What `METRICS_PORT` serves: `GET /metrics` and `GET /healthz`, 404 otherwise."""

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == METRICS_PATH:
            return metrics(environ, start_response)
        if path == HEALTH_PATH and environ.get("REQUEST_METHOD", "GET") in ("GET", "HEAD"):
            ok = healthy()
            status = "200 OK" if ok else "503 Service Unavailable"
            return _json(start_response, status, {"ok": ok})
        return _json(start_response, "404 Not Found", {"ok": False, "error": "not_found"})

    return application


# What `backupbot_ack_seconds` calls each kind of request (its `kind` label: a closed set).
_PAYLOAD_KINDS = {
    "block_actions": "action",
    "interactive_message": "action",
    "view_submission": "view",
    "view_closed": "view",
    "block_suggestion": "options",
    "shortcut": "shortcut",
    "message_action": "shortcut",
    "event_callback": "event",
}


def request_kind(payload: Mapping[str, Any]) -> str:
    """command, action, view, options, shortcut, event, or other (url_verification, ssl_check)."""
    if "command" in payload:
        return "command"
    return _PAYLOAD_KINDS.get(str(payload.get("type", "")), "other")


def _retry_note(retry: object) -> str:
    return f" (Slack's retry {retry})" if retry else ""


def _signed(verifier: SignatureVerifier, body: bytes, headers: dict[str, str]) -> bool:
    try:
        return verifier.is_valid_request(body, headers)
    except (ValueError, TypeError):  # a timestamp that is not a number, a non-ASCII signature
        return False


def payload_shape(body: bytes, content_type: str) -> dict[str, Any] | str:
    """The request as Slack sends it (a slash command's fields, an interaction's payload, an
    event envelope), or a short reason why it is not one."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "body_not_utf8"
    if content_type.startswith("application/json"):
        data = _json_object(text)
        if data is None or not isinstance(data.get("type"), str):
            return "not_an_event"
        return data
    form = {key: values[-1] for key, values in parse_qs(text, keep_blank_values=True).items()}
    if "payload" in form:
        payload = _json_object(form["payload"])
        if payload is None or not isinstance(payload.get("type"), str):
            return "payload_not_an_object"
        user = payload.get("user")
        if not isinstance(user, dict) or not isinstance(user.get("id"), str):
            return "payload_without_user"
        return payload
    if "command" in form:
        if not form.get("user_id"):
            return "command_without_user"
        return form
    if form.get("ssl_check") == "1":
        return form
    return "unknown_request"


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _request_key(shape: dict[str, Any], headers: dict[str, str]) -> str | None:
    """What identifies a request for replay detection: an event by its id (Slack retries carry
    the same one under a new signature), anything else by its signature. (`X-Slack-Retry-Num`
    is not signed: it changes nothing here.)"""
    event_id = shape.get("event_id")
    if isinstance(event_id, str) and event_id:
        return fingerprint("event", event_id)
    signature = headers["x-slack-signature"]
    return fingerprint("signature", signature) if signature else None


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
        application: WsgiApp,
        host: str = "0.0.0.0",  # noqa: S104 - behind a load balancer, on every interface
        port: int = 3000,
    ) -> None:
        # waitress answers 413 itself for a larger declared or chunked body, before reading it.
        # Past `connection_limit` open connections (waitress's default: 100) it stops accepting:
        # 100 idle keep-alive connections (a proxy's pool, or anyone's) would then hold every
        # ack until one closed, up to `channel_timeout` later. So: room for 1,000, poll() rather
        # than select() (no 1,024-descriptor ceiling), and an idle connection closed after 30 s
        # (a Slack request takes under 3). The process's open-file limit must allow as many.
        super().__init__(
            application,
            host=host,
            port=port,
            threads=8,
            max_request_body_size=MAX_BODY,
            connection_limit=CONNECTION_LIMIT,
            asyncore_use_poll=True,
            channel_timeout=IDLE_CONNECTION_SECONDS,
        )


class _ObservedSocketModeHandler(SocketModeHandler):
    """Bolt's Socket Mode handler, each envelope handled as one request (its own id) and its ack
    timed up to the moment it is sent back over the WebSocket."""

    def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        arrived, started = time.perf_counter(), time.time()
        payload = req.payload if isinstance(req.payload, dict) else {}
        kind = "command" if req.type == "slash_commands" else request_kind(payload)
        with request_scope():
            log.debug("slack request: %s%s", kind, _retry_note(req.retry_attempt))
            response = run_bolt_app(self.app, req)
            send_response(client, req, response, started)
            ACK_SECONDS.labels(kind).observe(time.perf_counter() - arrived)


class SocketModeRunner:
    """Socket Mode: connects out to Slack over a WebSocket (no public URL needed)."""

    def __init__(self, app: App, app_token: str) -> None:
        self._handler = _ObservedSocketModeHandler(app, app_token)

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
