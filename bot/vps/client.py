"""The httpx client of the provider's Backups API: one pool, timeouts, safe retries, typed errors.

Retries follow what each request may safely repeat:

- GET is retried with backoff and jitter on connection errors, timeouts, 502/503/504 and 429.
- POST /backups/ is never sent again once it may have reached the provider: after a timeout, a
  dropped connection, any 5xx (a gateway may answer 502/504 and still pass the request on) or a
  2xx whose body is not a backup, the client lists the server's backups for a short window and
  looks for a new manual backup with that description, comparing with a listing taken just before
  the POST. Found: that is the backup. Not found: `OutcomeUnknown`, for a person to check. Only a
  request that certainly did not arrive (no connection) or a 429 is sent again.
- DELETE is idempotent and retried like GET; when a retry that followed an ambiguous failure gets
  404, the first attempt most likely deleted it, and `DeleteOutcome.ALREADY_DELETED` says so.
- POST /servers/{id}/restore/ is never repeated unless the provider certainly did not act on it
  (no connection, 429): a restore overwrites a disk, and an unclear outcome is reported as
  `OutcomeUnknown` for a person to check.

A time budget (`with client.budget(seconds):`, a context variable: it follows work handed to a
pool in a copied context) bounds every call made under it: read timeouts shrink to what is left,
and a retry (or a `Retry-After`) that would end past the budget is not waited for — the error
says at once when to try again (`retry_after`). Someone waiting in chat gets an answer in seconds;
the watcher, outside any budget, waits as long as it takes.

Reads are single-flight (`bot.vps.flight`): identical lists in flight at the same moment share one
provider request, each caller waiting within its own budget. Never stale: a list that starts after
the shared one finished makes its own, and so does one that starts after any write through this
client finished (a write epoch is part of the key), so a person who just deleted a backup never
sees a listing the provider made before the delete. Callers with a budget share only with callers
with a budget: a background worker never gets a timeout cut to someone else's patience.

Concurrency: at most `max_connections` requests are at the provider at once (httpx's pool; a
request waits for a free connection within its own timeout, and that wait counts as a timeout).

Metrics (`bot.metrics`): every HTTP attempt is timed in `PROVIDER_SECONDS` by endpoint template
(`/backups/`, `/backups/{id}/`, `/servers/{id}/restore/`) and method; every answer that is not a
success in `PROVIDER_ERRORS` by endpoint and status (the HTTP status, or `timeout`, `connect` for a
connection that failed or dropped, `invalid_body` for a 2xx that is not the documented shape).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn

import httpx

from bot.config import Secret
from bot.metrics import PROVIDER_ERRORS, PROVIDER_SECONDS, SHARED_READS
from bot.vps.errors import (
    AuthenticationFailed,
    NotFound,
    OutcomeUnknown,
    ProviderUnavailable,
    Rejected,
    ServerBusy,
    UnexpectedResponse,
    VpsError,
)
from bot.vps.flight import FlightTimeout, SingleFlight
from bot.vps.models import (
    Backup,
    BackupList,
    BackupPage,
    DeleteOutcome,
    RestoreAccepted,
    parse_backup,
    parse_backup_page,
)

log = logging.getLogger(__name__)

# Errors raised before any byte of the request reached the provider: always safe to repeat.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Errors after the request may have reached the provider: it may or may not have acted on it.
_AMBIGUOUS = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    # Anything else httpx raises (unsupported scheme, decoding, redirects…): not safe to assume
    # it was not sent, and it must still come out as one of our typed errors.
    httpx.RequestError,
)
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Answers that mean the provider did not act on the request, even for a POST: a 503 may come
# from a gateway that passed the request on, so only a rate limit counts.
_NOT_PROCESSED_STATUSES = frozenset({429})
# Seconds of budget a state-changing POST needs left before it is sent at all (at most a third
# of the whole budget).
_POST_FLOOR = 5.0
_budget: ContextVar[float] = ContextVar("vps_budget", default=0.0)
# The end of the current time budget (time.monotonic()), per thread; None: no budget.
_deadline: ContextVar[float | None] = ContextVar("vps_deadline", default=None)
_BUSY_WORDS = ("in progress", "already running", "busy", "currently being", "locked")
_MAX_PAGES = 100
_DETAIL_LIMIT = 300
_ID_SEGMENT = re.compile(r"/[0-9]+(?=/)")
# A read's single-flight key: (server_id, backup_type, write epoch, under a budget).
_ReadKey = tuple[int | None, str | None, int, bool]


class BackupsClient:
    """Client of `VPS-BACKUPS-API.md`. Thread-safe; create one per process and `close()` it."""

    def __init__(
        self,
        base_url: str,
        token: str | Secret,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        max_retry_after: float = 60.0,
        reconcile_attempts: int = 4,
        reconcile_delay: float = 1.0,
        max_connections: int = 32,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        raw_token = token.reveal() if isinstance(token, Secret) else token
        if not raw_token:
            raise ValueError("the Backups API token is empty")
        self._token = raw_token
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self.base_url = base_url.rstrip("/")
        self._origin = httpx.URL(self.base_url).copy_with(path="/", query=None, fragment=None)
        self._base_path = httpx.URL(self.base_url).path.rstrip("/")
        self._reads: SingleFlight[_ReadKey, BackupList] = SingleFlight(on_join=SHARED_READS.inc)
        self._writes = itertools.count(1)
        self._epoch = 0  # bumped as each write (POST, DELETE) ends: reads after it start anew
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_retry_after = max_retry_after
        self.reconcile_attempts = reconcile_attempts
        self.reconcile_delay = reconcile_delay
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._http = httpx.Client(
            base_url=self.base_url + "/",
            headers={
                "Authorization": f"Bearer {raw_token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": "backupbot",
            },
            timeout=self._timeout,
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
            ),
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"BackupsClient(base_url={self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BackupsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def budget(self, seconds: float) -> Iterator[None]:
        """Bound every call this thread makes inside the block to `seconds` in all."""
        token = _deadline.set(time.monotonic() + seconds)
        total = _budget.set(seconds)
        try:
            yield
        finally:
            _deadline.reset(token)
            _budget.reset(total)

    def _enough_time_to_post(self, what: str) -> None:
        """A POST that changes something is not sent with too little of the budget left: cut
        short by its own timeout it would be unclear, and then it must never be sent again."""
        deadline = _deadline.get()
        floor = min(_POST_FLOOR, _budget.get() / 3)
        if deadline is not None and deadline - time.monotonic() < floor:
            log.info("%s: not sent, the time budget is nearly used up", what)
            raise ProviderUnavailable(
                "The VPS provider is answering slowly, so nothing was sent yet. Try again in a "
                "minute."
            )

    def _request_timeout(self) -> httpx.Timeout:
        deadline = _deadline.get()
        if deadline is None:
            return self._timeout
        left = max(0.5, deadline - time.monotonic())
        read = min(self._timeout.read or left, left)
        return httpx.Timeout(read, connect=min(self._timeout.connect or read, read))

    # -- the four operations -------------------------------------------------------------------

    def list_backups(
        self, server_id: int | None = None, backup_type: str | None = None
    ) -> BackupList:
        """All backups, optionally of one server and/or one type, in the provider's order.

        Shared with an identical list already in flight (see the module docstring)."""
        if server_id is not None:
            _positive(server_id, "server_id")
        deadline = _deadline.get()
        key = (server_id, backup_type, self._epoch, deadline is not None)
        wait = None if deadline is None else max(0.5, deadline - time.monotonic())
        try:
            return self._reads.do(
                key, lambda: self._list_backups(server_id, backup_type), wait=wait
            )
        except FlightTimeout:
            # What this caller would have got alone when its read timed out at its deadline.
            self._unavailable(
                None, "list backups", httpx.ReadTimeout("budget"), False, waited=False
            )

    def _list_backups(self, server_id: int | None, backup_type: str | None) -> BackupList:
        params: dict[str, str] = {}
        if server_id is not None:
            params["server_id"] = str(server_id)
        if backup_type is not None:
            params["backup_type"] = backup_type
        response = self._idempotent("GET", "backups/", params=params, what="list backups")
        page = self._page(response)
        count, backups = page.count, page.backups
        unreadable, unreadable_ids = page.unreadable, set(page.unreadable_ids)
        pages = 1
        while page.following is not None:
            deadline = _deadline.get()
            if deadline is not None and time.monotonic() > deadline:
                raise ProviderUnavailable(
                    f"The VPS provider's backup list is long and slow today ({pages} pages read "
                    "in the time there was). Try again later."
                )
            if pages >= _MAX_PAGES:
                raise UnexpectedResponse(f"The provider's backup list ran past {_MAX_PAGES} pages.")
            # A relative link is relative to the page it came in (httpx's base_url would not be).
            url = self._same_origin(str(response.url.join(page.following)))
            response = self._idempotent("GET", url, what="list backups")
            page = self._page(response)
            backups.extend(page.backups)
            unreadable += page.unreadable
            unreadable_ids |= page.unreadable_ids
            pages += 1
        return BackupList(count, tuple(backups), unreadable, frozenset(unreadable_ids))

    def find_backup(self, backup_id: int, server_id: int | None = None) -> Backup:
        """One backup by id (the API has no GET for one backup, so this lists)."""
        for backup in self.list_backups(server_id=server_id).backups:
            if backup.id == backup_id:
                return backup
        raise NotFound(f"Backup {backup_id} was not found at the provider.", kind="backup")

    def create_backup(self, server_id: int, description: str | None = None) -> Backup:
        """Start a manual backup; returns it `in_progress`. See the module docstring on retries."""
        _positive(server_id, "server_id")
        body: dict[str, Any] = {"server_id": server_id}
        if description:
            body["description"] = description
        known = {b.id for b in self.list_backups(server_id=server_id).backups}
        what = f"create a backup of server {server_id}"
        attempt = 0
        while True:
            self._enough_time_to_post(what)
            try:
                response = self._attempt("POST", "backups/", json=body)
            except _NOT_SENT as exc:
                self._log_failure("POST", "backups/", exc)
                attempt = self._retry_or_raise(attempt, None, what, exc)
                continue
            except _AMBIGUOUS as exc:
                self._log_failure("POST", "backups/", exc)
                return self._confirm_create(server_id, description, known, _describe(exc), None)
            self._log_response(response)
            status = response.status_code
            if response.is_success:
                try:
                    return parse_backup(self._json(response))
                except UnexpectedResponse:
                    self._invalid_body(response)
                    cause = f"{_status_line(response)} with a body that is not a backup"
                    return self._confirm_create(server_id, description, known, cause, status)
            if status in _NOT_PROCESSED_STATUSES:
                attempt = self._retry_or_raise(attempt, response, what)
                continue
            if status >= 500:
                cause = _status_line(response)
                return self._confirm_create(server_id, description, known, cause, status)
            self._raise_for(response, kind="server", subject=f"Server {server_id}")

    def delete_backup(self, backup_id: int) -> DeleteOutcome:
        """Delete a backup permanently."""
        _positive(backup_id, "backup_id")
        path = f"backups/{backup_id}/"
        what = f"delete backup {backup_id}"
        ambiguous = False
        attempt = 0
        while True:
            try:
                response = self._attempt("DELETE", path)
            except _NOT_SENT as exc:
                self._log_failure("DELETE", path, exc)
                attempt = self._retry_or_raise(attempt, None, what, exc, unknown=ambiguous)
                continue
            except _AMBIGUOUS as exc:
                self._log_failure("DELETE", path, exc)
                ambiguous = True
                attempt = self._retry_or_raise(attempt, None, what, exc, unknown=True)
                continue
            self._log_response(response)
            status = response.status_code
            if response.is_success:
                return DeleteOutcome.DELETED
            if status == 404 and ambiguous:
                log.info("backup %s answered 404 on a retried DELETE: already deleted", backup_id)
                return DeleteOutcome.ALREADY_DELETED
            if status in _RETRY_STATUSES:
                ambiguous = ambiguous or status not in _NOT_PROCESSED_STATUSES
                attempt = self._retry_or_raise(attempt, response, what, unknown=ambiguous)
                continue
            self._raise_for(response, kind="backup", subject=f"Backup {backup_id}")

    def restore_server(self, server_id: int, backup_id: int) -> RestoreAccepted:
        """Ask the provider to overwrite the server's disk from a backup. Never sent twice."""
        _positive(server_id, "server_id")
        _positive(backup_id, "backup_id")
        path = f"servers/{server_id}/restore/"
        what = f"restore server {server_id} from backup {backup_id}"
        attempt = 0
        while True:
            self._enough_time_to_post(what)
            try:
                response = self._attempt("POST", path, json={"backup_id": backup_id})
            except _NOT_SENT as exc:
                self._log_failure("POST", path, exc)
                attempt = self._retry_or_raise(attempt, None, what, exc)
                continue
            except _AMBIGUOUS as exc:
                self._log_failure("POST", path, exc)
                raise OutcomeUnknown(
                    f"The provider did not confirm the request to {what} ({_describe(exc)}). "
                    "The restore may have started: check the server before trying again.",
                ) from None
            self._log_response(response)
            status = response.status_code
            if response.is_success:
                # Any 2xx is accepted (the contract): an odd body must not hide that it started.
                try:
                    data = self._json(response, allow_empty=True)
                except UnexpectedResponse:
                    self._invalid_body(response)
                    data = None
                return RestoreAccepted(
                    server_id=server_id,
                    backup_id=backup_id,
                    status_code=status,
                    detail=_detail(data) if data is not None else None,
                )
            if status in _NOT_PROCESSED_STATUSES:
                attempt = self._retry_or_raise(attempt, response, what)
                continue
            if status >= 500:
                raise OutcomeUnknown(
                    f"The provider answered {_status_line(response)} to the request to {what}. "
                    "It may or may not have started the restore: check the server before "
                    "trying again.",
                    status_code=status,
                )
            if status == 404:
                # The provider's 404 detail says whether the server or the backup is missing.
                kind = "backup" if "backup" in _detail_of(response).lower() else "server"
                subject = f"Backup {backup_id}" if kind == "backup" else f"Server {server_id}"
                self._raise_for(response, kind=kind, subject=subject)
            self._raise_for(response, kind="server", subject=f"Server {server_id}")

    # -- plumbing ------------------------------------------------------------------------------

    def _attempt(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        """One HTTP attempt, timed and counted in the provider metrics; a write, once over,
        starts a new read epoch (see the module docstring)."""
        endpoint = self._endpoint(url)
        started = time.monotonic()
        try:
            response = self._http.request(
                method, url, params=params, json=json, timeout=self._request_timeout()
            )
        except httpx.TimeoutException:
            PROVIDER_ERRORS.labels(endpoint, "timeout").inc()
            raise
        except httpx.RequestError:
            PROVIDER_ERRORS.labels(endpoint, "connect").inc()
            raise
        finally:
            PROVIDER_SECONDS.labels(endpoint, method).observe(time.monotonic() - started)
            if method != "GET":
                self._epoch = next(self._writes)
        if not response.is_success:
            PROVIDER_ERRORS.labels(endpoint, str(response.status_code)).inc()
        return response

    def _endpoint(self, url: str) -> str:
        """The endpoint template of a request URL: `/backups/`, `/backups/{id}/`, …"""
        path = httpx.URL(url).path if "://" in url else url.partition("?")[0]
        if path.startswith(self._base_path + "/"):
            path = path[len(self._base_path) :]
        path = "/" + path.lstrip("/")
        return _ID_SEGMENT.sub("/{id}", path)

    def _invalid_body(self, response: httpx.Response) -> None:
        PROVIDER_ERRORS.labels(self._endpoint(str(response.request.url)), "invalid_body").inc()

    def _idempotent(
        self,
        method: str,
        url: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._attempt(method, url, params=params)
            except (*_NOT_SENT, *_AMBIGUOUS) as exc:
                self._log_failure(method, url, exc)
                attempt = self._retry_or_raise(attempt, None, what, exc)
                continue
            self._log_response(response)
            if response.is_success:
                return response
            if response.status_code in _RETRY_STATUSES:
                attempt = self._retry_or_raise(attempt, response, what)
                continue
            if response.status_code == 404:
                # The list endpoint itself is missing: the base URL is wrong, not a backup.
                raise UnexpectedResponse(
                    f"The provider has no backup list at {self.base_url}/backups/ (404): check "
                    "VPS_API_URL (it usually ends in /api/v1).",
                    status_code=404,
                )
            self._raise_for(response, kind="backup", subject="The backup list")

    def _retry_or_raise(
        self,
        attempt: int,
        response: httpx.Response | None,
        what: str,
        exc: Exception | None = None,
        *,
        unknown: bool = False,
    ) -> int:
        """Sleep before the next attempt and return its number, or raise when none is left."""
        delay = self._rng.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt))
        if response is not None and response.status_code in (429, 503):
            retry_after = _retry_after(response)
            if retry_after is not None:
                if retry_after > self.max_retry_after:
                    self._unavailable(response, what, exc, unknown, waited=False)
                delay = retry_after + self._rng.uniform(0, 0.1)
        if attempt >= self.max_retries:
            self._unavailable(response, what, exc, unknown, waited=True)
        deadline = _deadline.get()
        if deadline is not None and time.monotonic() + delay > deadline:
            # Someone is waiting: say now when to try again rather than after the wait.
            self._unavailable(response, what, exc, unknown, waited=attempt > 0)
        log.info("retrying %s in %.2f s (attempt %d)", what, delay, attempt + 2)
        self._sleep(delay)
        return attempt + 1

    def _unavailable(
        self,
        response: httpx.Response | None,
        what: str,
        exc: Exception | None,
        unknown: bool,
        *,
        waited: bool,
    ) -> NoReturn:
        """Raise the error for a call that will not be tried again; its message gives the reason
        (what was asked is the caller's to say: it knows what the person asked for)."""
        cls = OutcomeUnknown if unknown else ProviderUnavailable
        status = response.status_code if response is not None else None
        retry_after = _retry_after(response) if response is not None else None
        attempts = f" ({self.max_retries + 1} attempts)" if waited and self.max_retries else ""
        if status == 429:
            message = f"The VPS provider is rate limiting us{attempts}."
        elif response is not None:
            message = (
                f"The VPS provider is unavailable: it answered {_status_line(response)}{attempts}."
            )
        else:
            message = f"The VPS provider could not be reached ({_describe(exc)}){attempts}."
        if retry_after:
            message += f" It asks us to wait {math.ceil(retry_after)} s: try again then."
        else:
            message += " Try again later."
        if unknown:
            message += " An earlier attempt may have gone through: check before trying again."
        log.info("%s: giving up (%s)", what, message)
        raise cls(self._redact(message), status_code=status, retry_after=retry_after)

    def _confirm_create(
        self,
        server_id: int,
        description: str | None,
        known: set[int],
        cause: str,
        status: int | None,
    ) -> Backup:
        """After a POST that may have created a backup, find it by listing for a short window.

        Ours is a new manual backup with our description; never a second POST. It looks
        `reconcile_attempts` times, `reconcile_delay` apart; someone waiting (a time budget) gets
        what is left of it and a second more, so a POST that used it all up is still looked for
        once. (The approvals runner, which has no one waiting, looks again on its next rounds.)
        """
        window = self.reconcile_attempts * (self.reconcile_delay + (self._timeout.read or 10.0))
        deadline = _deadline.get()
        if deadline is not None:
            window = min(window, max(0.0, deadline - time.monotonic()) + 1.0)
        end = time.monotonic() + window
        with self.budget(window):
            others: list[Backup] = []
            for attempt in range(self.reconcile_attempts):
                if attempt:
                    if time.monotonic() + self.reconcile_delay > end:
                        break
                    self._sleep(self.reconcile_delay)
                try:
                    listing = self.list_backups(server_id=server_id)
                except VpsError as exc:
                    raise OutcomeUnknown(
                        f"The provider did not confirm the new backup of server {server_id} "
                        f"({cause}), and listing its backups to check failed too "
                        f"({exc.message}). Check its backups before trying again.",
                        status_code=status or exc.status_code,
                    ) from None
                new = [b for b in listing.backups if b.id not in known and b.is_manual]
                ours = [b for b in new if b.description == (description or "")]
                others = [b for b in new if b not in ours]
                if len(ours) == 1:
                    log.warning(
                        "creating a backup of server %s was unclear (%s); found it by listing: "
                        "backup %s",
                        server_id,
                        cause,
                        ours[0].id,
                    )
                    return ours[0]
                if len(ours) > 1:
                    ids = ", ".join(str(b.id) for b in sorted(ours, key=lambda b: b.id))
                    raise OutcomeUnknown(
                        f"The provider did not confirm the new backup of server {server_id} "
                        f"({cause}), and several backups like it appeared ({ids}). Check which "
                        "one is yours before trying again.",
                        status_code=status,
                    )
        elsewhere = (
            f" (new backups from elsewhere: {', '.join(str(b.id) for b in others)})"
            if others
            else ""
        )
        raise OutcomeUnknown(
            f"The provider did not confirm the new backup of server {server_id} ({cause}), "
            f"and none has appeared yet{elsewhere}. It may still appear: check its backups in "
            "a minute before trying again.",
            status_code=status,
        )

    def _raise_for(self, response: httpx.Response, *, kind: str, subject: str) -> NoReturn:
        status = response.status_code
        detail = self._redact(_detail_of(response))
        # The status line and the provider's own words, without saying the same thing twice.
        answered = _status_line(response)
        if detail.casefold() not in answered.casefold():
            answered += f": {detail}"
        if status in (401, 403):
            raise AuthenticationFailed(
                f"The VPS provider refused our API token ({answered}). Check VPS_API_TOKEN.",
                status_code=status,
            )
        if status == 404:
            raise NotFound(f"{subject} was not found at the provider.", kind=kind)
        if status in (409, 423) or (
            status == 400 and any(word in detail.lower() for word in _BUSY_WORDS)
        ):
            raise ServerBusy(f"The server is busy: {detail}", status_code=status)
        if 400 <= status < 500:
            raise Rejected(f"The VPS provider rejected the request: {detail}", status_code=status)
        if status >= 500:
            raise ProviderUnavailable(
                f"The VPS provider failed: it answered {answered}.",
                status_code=status,
            )
        raise UnexpectedResponse(
            f"The VPS provider answered with an unexpected {_status_line(response)}.",
            status_code=status,
        )

    def _page(self, response: httpx.Response) -> BackupPage:
        """One page of a list; a body of the wrong shape keeps the status it came with, so the
        audit row says what the provider answered."""
        try:
            return parse_backup_page(self._json(response))
        except UnexpectedResponse as exc:
            self._invalid_body(response)
            exc.status_code = exc.status_code or response.status_code
            raise

    def _json(self, response: httpx.Response, *, allow_empty: bool = False) -> Any:
        if allow_empty and not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError:
            raise UnexpectedResponse(
                f"The VPS provider answered {_status_line(response)} with a body that is not "
                f"JSON ({response.headers.get('content-type', 'no content type')}).",
                status_code=response.status_code,
            ) from None

    def _same_origin(self, url: str) -> str:
        parsed = httpx.URL(url)
        if parsed.is_relative_url:
            return url
        if (parsed.scheme, parsed.host, parsed.port) != (
            self._origin.scheme,
            self._origin.host,
            self._origin.port,
        ):
            # Following it would hand our Bearer token to another host.
            raise UnexpectedResponse(
                "The provider's backup list points to its next page on another host; "
                "not following it."
            )
        return url

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "**********")

    def _log_response(self, response: httpx.Response) -> None:
        request = response.request
        log.debug(
            "%s %s -> %s in %.0f ms",
            request.method,
            request.url.raw_path.decode("ascii", "replace"),
            response.status_code,
            response.elapsed.total_seconds() * 1000,
        )

    def _log_failure(self, method: str, url: str, exc: Exception) -> None:
        log.warning("%s %s failed: %s", method, url, _describe(exc))


def _positive(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _describe(exc: Exception | None) -> str:
    if exc is None:
        return "no answer"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection failed"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the connection was dropped"
    return type(exc).__name__


def _status_line(response: httpx.Response) -> str:
    return f"HTTP {response.status_code} {response.reason_phrase}".rstrip()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _detail_of(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        data = None
    return _detail(data) or _status_line(response)


def _detail(data: Any) -> str:
    """The provider's explanation: `detail`, `message` or `error`, else DRF-style field errors."""
    if isinstance(data, dict):
        for key in ("detail", "message", "error"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value.get("detail")
            if isinstance(value, str) and value.strip():
                return _clip(value.strip())
        parts = []
        for key, value in data.items():
            if isinstance(value, list):
                value = " ".join(str(v) for v in value)
            parts.append(f"{key}: {value}")
        return _clip("; ".join(parts))
    if isinstance(data, list):
        return _clip(" ".join(str(v) for v in data))
    if isinstance(data, str):
        return _clip(data)
    return ""


def _clip(text: str) -> str:
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 1] + "…"
