"""The VPS simulator's wire: a WSGI app over `ProviderState`, served by the shared `WsgiServer`.

- Bearer authentication comes before random faults: a bad or missing token is always 401, never a
  random 5xx/429 or hang. Scripted `inject()` faults still come first of all.
- A random timeout hangs before or after processing (`FaultConfig.timeout_mode`), so a client's
  "did my POST land?" check meets both. Hangs and latency end as soon as the simulator stops.
- Paths without the trailing `/` are 404; a method a path does not take is 405 with `Allow`. With
  `page_size` set, lists page as DRF's PageNumberPagination does (`?page=N`, absolute links keeping
  the filters, 404 for a bad page).
- A request is recorded on arrival with status 0, and keeps it if its client left before the
  answer (waitress sees the client go while the app runs, thanks to `channel_request_lookahead`).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from bot.sandbox.vps import state
from bot.wsgi_server import WsgiServer

log = logging.getLogger("bot.sandbox.vps")

Answer = tuple[int, Any, dict[str, str]]  # status, body (JSON; str or bytes: HTML; None), headers
_ROUTES = (
    (re.compile(r"/backups/", re.ASCII), ("GET", "POST")),
    (re.compile(r"/backups/([0-9]+)/", re.ASCII), ("DELETE",)),
    (re.compile(r"/servers/([0-9]+)/restore/", re.ASCII), ("POST",)),
)


class Simulator(state.ProviderState):
    """The provider's Backups API with an in-memory account, served on loopback HTTP."""

    _server: WsgiServer | None = None
    _base_url: str | None = None
    _stopping: threading.Event  # set by stop(): wakes every hang and latency at once

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on `host:port` (0: a free port) in a daemon thread; return the base URL."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._stopping = threading.Event()
        # Each hang holds a worker thread; the lookahead keeps reading, so a client leaving shows.
        self._server = WsgiServer(
            self.wsgi_app,
            host=host,
            port=port,
            threads=32,
            ident="VPSBackupsSimulator",
            channel_request_lookahead=1,
            asyncore_use_poll=True,  # select() refuses descriptors above 1023
        ).start()
        self._base_url = self._server.url + state.API_ROOT
        log.info("VPS Backups API simulator listening on %s", self._base_url)
        return self._base_url

    @property
    def base_url(self) -> str:
        """`http://HOST:PORT/api/v1` of the running (or last run) server."""
        if self._base_url is None:
            raise RuntimeError("the simulator has not been started")
        return self._base_url

    def stop(self) -> None:
        """Stop serving and close every connection, cutting hangs short; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            self._stopping.set()
            server.stop()

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wsgi_app(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """One exchange: recorded, then latency, a fault if one is due, and the API itself."""
        started = time.monotonic()
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        authorized = self._auth_failure(environ.get("HTTP_AUTHORIZATION", "")) is None
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", errors="replace")
        request = state.RecordedRequest(method, path, query, body, authorized, started)
        self.record(request)
        status, payload, headers = self._answer(environ, request, raw)
        elapsed = (time.monotonic() - started) * 1000
        if environ.get("waitress.client_disconnected", lambda: False)():
            text = "%s %s no answer (%d): the client went away after %.0fms"
            log.info(text, method, path, status, elapsed)
        else:  # set before the bytes go out: whoever read the answer finds it recorded
            request.status = status
            log.info("%s %s %d %.0fms", method, path, status, elapsed)
        return _respond(start_response, status, payload, headers)

    def _wait(self, seconds: float) -> bool:
        """Sleep unless the simulator stops meanwhile; True when it stopped."""
        return seconds > 0 and self._stopping.wait(seconds)

    def _auth_failure(self, header: str) -> str | None:
        """None when the Bearer token is right, else the 401 detail."""
        scheme, _, credentials = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return "Authentication credentials were not provided."
        given = credentials.strip().encode("utf-8", errors="replace")
        return None if hmac.compare_digest(given, self.token.encode()) else "Invalid token."

    def _answer(
        self, environ: dict[str, Any], request: state.RecordedRequest, raw: bytes
    ) -> Answer:
        self._wait(self.faults.latency)
        relative = state.relative_path(request.path)
        fault = self.take_fault(request.method, relative, request.authorized) or state.Fault()
        before = 0.0 if fault.after_processing else fault.hang
        if self._wait(before):
            return 503, {"detail": "The simulator stopped."}, {}
        if fault.status is not None and not fault.after_processing:
            return _injected(fault)
        answer = self._process(environ, request, raw)
        self._wait(fault.hang - before)
        if fault.status is not None:
            return _injected(fault)
        if fault.corrupt and isinstance(answer[1], dict):
            for row, override in zip(answer[1].get("results", []), fault.corrupt, strict=False):
                row.update(override)
        return answer

    def _process(
        self, environ: dict[str, Any], request: state.RecordedRequest, raw: bytes
    ) -> Answer:
        if not request.authorized:
            detail = self._auth_failure(environ.get("HTTP_AUTHORIZATION", ""))
            return 401, {"detail": detail}, {"WWW-Authenticate": 'Bearer realm="api"'}
        for pattern, allowed in _ROUTES:
            if (match := pattern.fullmatch(state.relative_path(request.path) or "")) is None:
                continue
            if request.method not in allowed:
                detail = f'Method "{request.method}" not allowed.'
                return 405, {"detail": detail}, {"Allow": ", ".join(allowed)}
            ids = [int(group) for group in match.groups()]
            try:
                if request.method == "GET":
                    host = environ.get("HTTP_HOST") or "{SERVER_NAME}:{SERVER_PORT}".format(
                        **environ
                    )
                    url = f"{environ['wsgi.url_scheme']}://{host}{request.path}"
                    return self._page(self.list_backups(request.query), request.query, url)
                if request.method == "DELETE":
                    self.delete_backup(ids[0])
                    return 204, None, {}
                if ids:
                    return 202, self.restore(ids[0], _json(raw)), {}
                return 201, self.create_backup(_json(raw)), {}
            except state.ApiError as refused:
                return refused.status, refused.body, {}
        return 404, {"detail": state.NOT_FOUND_DETAIL}, {}

    def _page(self, rows: list[dict[str, Any]], query: dict[str, str], url: str) -> Answer:
        size = self.page_size
        if size is None:
            return 200, {"count": len(rows), "results": rows}, {}
        pages = max(1, -(-len(rows) // size))
        wanted = query.get("page", "1")
        number = pages if wanted == "last" else state.as_int(wanted)
        if number is None or not 1 <= number <= pages:
            return 404, {"detail": "Invalid page."}, {}

        def link(target: int) -> str | None:
            kept = {name: value for name, value in query.items() if name != "page"}
            if target > 1:  # DRF drops the parameter for the first page
                kept["page"] = str(target)
            return f"{url}?{urlencode(kept)}".rstrip("?") if 1 <= target <= pages else None

        page = {"count": len(rows), "next": link(number + 1), "previous": link(number - 1)}
        return 200, {**page, "results": rows[(number - 1) * size : number * size]}, {}


def _injected(fault: state.Fault) -> Answer:
    body = {"detail": state.phrase(fault.status or 0)} if fault.body is None else fault.body
    return fault.status or 0, body, fault.headers


def _json(raw: bytes) -> Any:
    """The request body as JSON (an empty body: an empty object), or DRF's 400."""
    if not raw.strip():
        return {}
    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too
        raise state.ApiError(400, {"detail": f"JSON parse error - {exc}"}) from None


def _respond(
    start_response: Callable[..., Any], status: int, body: Any, headers: dict[str, str]
) -> list[bytes]:
    fields = dict(headers)
    payload = b""
    if body is not None and status >= 200 and status not in (204, 304):
        kind = "application/json"
        if isinstance(body, str | bytes):
            payload = body.encode() if isinstance(body, str) else body
            kind = "text/html; charset=utf-8"
        else:
            payload = json.dumps(body).encode()
        if not any(name.lower() == "content-type" for name in fields):
            fields = {"Content-Type": kind, **fields}
        fields["Content-Length"] = str(len(payload))
    start_response(f"{status} {state.phrase(status)}", list(fields.items()))
    return [payload]
