"""Serving the Bolt app: HTTP mode (`POST /slack/events`, `GET /healthz`) on waitress, or Socket
Mode with slack_sdk's built-in WebSocket client (no public URL needed, no extra dependency)."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk.signature import SignatureVerifier

from bot.replays import fingerprint
from bot.wsgi_server import WsgiApp, WsgiServer

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
# Slack's payloads are a few kB; a message with 50 blocks is well under 100 kB.
MAX_BODY = 1 << 20


def wsgi_app(
    app: App,
    healthy: Callable[[], bool],
    *,
    signing_secret: str | None = None,
    first_time: Callable[[str], bool] | None = None,
) -> WsgiApp:
    """`POST /slack/events` to Bolt through the gate below, `GET /healthz`, 404 otherwise.

    The gate, in order: a body over `MAX_BODY` is 413 (waitress refuses it before reading, see
    `HttpServer`); a bad or stale signature is 401; a body Slack would never send is 400 (Bolt
    would parse it first and answer 500 with a traceback in the log); a request already acted on
    (`first_time` says no: the same signature again, or an event Slack retries) is 200 with no
    action.
    """
    slack = SlackRequestHandler(app, path=EVENTS_PATH)
    verifier = SignatureVerifier(signing_secret) if signing_secret else None

    def events(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
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
        key = _request_key(shape, headers)
        if first_time is not None and key is not None and not first_time(key):
            log.warning("a request already acted on came again (replay or retry): not acting")
            start_response("200 OK", [("Content-Length", "0")])
            return [b""]
        environ["wsgi.input"] = io.BytesIO(body)
        return slack(environ, start_response)

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == EVENTS_PATH and method == "POST":
            return events(environ, start_response)
        if path == HEALTH_PATH and method in ("GET", "HEAD"):
            ok = healthy()
            status = "200 OK" if ok else "503 Service Unavailable"
            return _json(
                start_response, status, {"ok": ok, "database": "ok" if ok else "unreachable"}
            )
        return _json(start_response, "404 Not Found", {"ok": False, "error": "not_found"})

    return application


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
        super().__init__(
            application, host=host, port=port, threads=8, max_request_body_size=MAX_BODY
        )


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
