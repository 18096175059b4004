"""The Slack double on the wire: one WSGI app for the Web API (`/api/<method>`), the minted
response_urls (`/response/<id>`) and the upload URLs of files upload v2 (`/upload/v1/<id>`),
served on loopback by the project's `WsgiServer`.

`slack_sdk.WebClient(base_url=double.api_url)`, `slack_sdk.webhook.WebhookClient(response_url)`
and `WebClient.files_upload_v2` talk to it unmodified.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from bot.sandbox.slack.webapi import SlackWebApi
from bot.wsgi_server import WsgiApp, WsgiServer

log = logging.getLogger("bot.sandbox.slack")


def make_app(api: SlackWebApi) -> WsgiApp:
    """The WSGI app that answers for `api`."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        parts = environ.get("PATH_INFO", "").strip("/").split("/")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw: bytes = environ["wsgi.input"].read(length) if length > 0 else b""
        headers: dict[str, str] = {}
        try:
            if len(parts) == 2 and parts[0] == "api":
                status, body, headers = _api(api, parts[1], environ, raw)
            elif len(parts) == 2 and parts[0] == "response":
                status, body = api.respond(parts[1], _json_object(raw))
            elif len(parts) == 3 and parts[:2] == ["upload", "v1"]:
                status, text = api.upload(parts[2], raw)
                return _answer(start_response, status, text.encode(), "text/plain")
            else:
                return _answer(start_response, 404, b"not found", "text/plain")
        except Exception:
            log.exception("the Slack double failed on %s", environ.get("PATH_INFO"))
            status, body = 500, {"ok": False, "error": "internal_error"}
        return _answer(
            start_response, status, json.dumps(body).encode(), "application/json", headers
        )

    return app


def _api(
    api: SlackWebApi, method: str, environ: dict[str, Any], raw: bytes
) -> tuple[int, dict[str, Any], dict[str, str]]:
    args: dict[str, Any] = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    if environ.get("CONTENT_TYPE", "").startswith("application/json"):
        body = _json_object(raw)
        if body is None:
            return 200, {"ok": False, "error": "invalid_json"}, {}
        args.update(body)
    else:
        args.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    token = args.pop("token", None)
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    if authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    return api.call(method, args, token)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _answer(
    start_response: Callable[..., Any],
    status: int,
    body: bytes,
    content_type: str,
    headers: dict[str, str] | None = None,
) -> list[bytes]:
    sent = [("Content-Type", f"{content_type}; charset=utf-8"), ("Content-Length", str(len(body)))]
    start_response(f"{status} {HTTPStatus(status).phrase}", sent + list((headers or {}).items()))
    return [body]


class SlackDouble(SlackWebApi):
    """A stateful fake of Slack's Web API and response_urls, served on 127.0.0.1.

    See `SlackState` for the workspace it starts with and what it records, webapi.py for the
    methods it answers and the choices it makes where Slack's documentation is silent.
    """

    _server: WsgiServer | None = None

    def start(self, host: str = "127.0.0.1", port: int = 0) -> SlackDouble:
        """Serve in a daemon thread (port 0 picks a free port); returns self."""
        if self._server is not None:
            raise RuntimeError("the Slack double is already running")
        self._server = WsgiServer(make_app(self), host=host, port=port, ident="SlackDouble")
        self._base_url = self._server.start().url
        log.info("Slack double listening on %s", self._base_url)
        return self

    def stop(self) -> None:
        """Stop serving; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def __enter__(self) -> SlackDouble:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def api_url(self) -> str:
        """`http://127.0.0.1:PORT/api/`, for `WebClient(base_url=...)`."""
        return f"{self.base_url}/api/"
