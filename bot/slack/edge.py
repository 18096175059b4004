"""What every listener shares: the use-cases, the people directory, the Web API client, a work pool.

Hazard this answers: Bolt runs listeners on a small thread pool and only sends the HTTP answer (the
ack) once a listener calls `ack()`. If listeners made provider calls on that pool, five slow calls
would hold every later ack past Slack's 3 s. So listeners ack first and hand anything slow to
`SlackEdge.later`, a separate pool; Bolt's threads are free again within milliseconds.

The work pool (`WorkPool`): how many requests are worked on at once, and what happens past that.

- What is scarce is the provider, not threads. A request's work is mostly waiting: for the provider,
  for an identical list it joined (`bot.vps.flight`), for Slack. So the pool has many cheap threads
  (`WORK_THREADS`, 128: a parked thread costs a stack, tens of KB resident), and the provider has
  its own limit (`PROVIDER_CONCURRENCY`: httpx's connection pool in `BackupsClient`).
- Why not a few threads: a request waiting on a shared list would hold one of them, and the
  requests queued behind would start only after the shared list was over, each group making its
  own provider call. 100 identical lists on 16 threads took ~7 provider round trips; with a thread
  each they all join the first call and the last answer comes one round trip after the first.
  (Joining identical work at submission was the alternative; it needs the listener to know what a
  request will read, and each request still has its own audit row, rendering and reply to do.)
- Past the threads, a bounded queue (`WORK_QUEUE_LIMIT`). When it is full the request is refused
  at once: the person gets "busy, try again in a minute" (a slash command in its ack, so it costs
  no extra call when we are overloaded; a click through its response_url), nothing is done, and
  `bot.metrics.BUSY_ANSWERS` counts it. Without the bound, an outage grew the queue without limit
  while the response_urls of the waiting requests expired (30 minutes).
- Work runs in a copy of the submitter's context variables (`contextvars.copy_context().run`), so
  a request id or a time budget set for a request follows its work onto the pool.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import functools
import logging
import queue
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from slack_bolt import Ack, Respond
from slack_sdk import WebClient

from bot.approvals import RestoreApprovals
from bot.audit import Actor
from bot.logs import current_request_id
from bot.metrics import BUSY_ANSWERS, WORK_IN_FLIGHT, WORK_QUEUE_DEPTH
from bot.replays import acted_on_before
from bot.service import BackupService, ServiceError
from bot.slack import blocks
from bot.slack.directory import SlackDirectory
from bot.slack.errors import error_notice, unexpected_failure
from bot.slack.notify import post_to_dm, slack_error

log = logging.getLogger(__name__)


# Bolt's `respond`, or `PatientRespond` wrapping it: called with a message's fields.
Responder = Callable[..., Any]

# After this long without an answer from the provider, the person is told we are waiting.
WAITING_NOTICE_AFTER = 3.0
BUSY = "⏳ I'm busy right now and did nothing with that. Please try again in a minute."

T = TypeVar("T")


class WorkQueueFull(RuntimeError):
    """The pool's threads are all taken and its queue is full: the work was not accepted."""


class WorkPool(Executor):
    """A pool of threads started up front, with a bounded queue, whose work runs in the
    submitter's context (see the module docstring). `submit` raises `WorkQueueFull` rather than
    queue past `queue_limit`; `bot.metrics.WORK_QUEUE_DEPTH` and `WORK_IN_FLIGHT` follow every
    item.

    Not a `ThreadPoolExecutor`: that one starts its threads on demand, inside `submit`, under a
    lock that every executor in the process shares, Bolt's listener pool included. A burst of 100
    commands then started 100 threads while Bolt waited for that lock to hand out the acks: ack
    p99 was 5-7x a bare Bolt app's. These threads are all started once, at construction.
    """

    def __init__(self, threads: int, queue_limit: int, *, name: str = "backupbot-work") -> None:
        if threads < 1 or queue_limit < 0:
            raise ValueError(f"threads must be at least 1, queue_limit not negative: {threads}")
        self.threads = threads
        self.queue_limit = queue_limit
        self._admission = threading.Lock()
        self._accepted = 0  # running or queued
        self._closed = False
        self._queue: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()
        self._workers = [
            threading.Thread(target=self._work, name=f"{name}_{n}", daemon=True)
            for n in range(threads)
        ]
        for worker in self._workers:
            worker.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        with self._admission:
            if self._closed:
                raise RuntimeError("cannot schedule new work after shutdown")
            if self._accepted >= self.threads + self.queue_limit:
                raise WorkQueueFull(
                    f"{self.threads} running and {self.queue_limit} waiting: not accepted"
                )
            self._accepted += 1
        WORK_QUEUE_DEPTH.inc()
        future: Future[T] = Future()
        self._queue.put(_WorkItem(future, contextvars.copy_context(), fn, args, kwargs))
        return future

    def accepted(self) -> int:
        """Items running or waiting."""
        with self._admission:
            return self._accepted

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new work; what was accepted still runs (unless `cancel_futures`)."""
        with self._admission:
            if self._closed:
                return
            self._closed = True
        if cancel_futures:
            with contextlib.suppress(queue.Empty):
                while True:
                    item = self._queue.get_nowait()
                    if item is not None:
                        WORK_QUEUE_DEPTH.dec()
                        item.future.cancel()
                        self._release()
        for _ in self._workers:
            self._queue.put(None)  # after every item already queued
        if wait:
            for worker in self._workers:
                worker.join()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            WORK_QUEUE_DEPTH.dec()
            if not item.future.set_running_or_notify_cancel():  # cancelled while it waited
                self._release()
                continue
            WORK_IN_FLIGHT.inc()
            try:
                result = item.context.run(item.fn, *item.args, **item.kwargs)
            except BaseException as exc:
                item.future.set_exception(exc)
            else:
                item.future.set_result(result)
            finally:
                WORK_IN_FLIGHT.dec()
                self._release()
            del item  # not kept alive (nor its result) while the thread waits for the next

    def _release(self) -> None:
        with self._admission:
            self._accepted -= 1


@dataclass
class _WorkItem:
    future: Future[Any]
    context: contextvars.Context
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class Waiting(enum.Enum):
    """How a slow answer is announced: not at all, as a new private message that the answer
    replaces (a slash command), or in place of the message clicked (a page, a delete card)."""

    NONE = "none"
    NEW_MESSAGE = "new"
    IN_PLACE = "in place"


class PatientRespond:
    """Bolt's `respond`, which first says "waiting for the provider…" when the answer is slow,
    and then has the answer replace that notice."""

    def __init__(self, respond: Respond, waiting: Waiting, after: float) -> None:
        self._respond = respond
        self._lock = threading.Lock()
        self._answered = False
        self._notice_shown = False
        self._timer: threading.Timer | None = None
        if waiting is not Waiting.NONE and respond.response_url:
            self._timer = threading.Timer(after, self._notice, args=(waiting,))
            self._timer.daemon = True
            self._timer.start()

    @property
    def response_url(self) -> str | None:
        return self._respond.response_url

    def __call__(self, **message: Any) -> Any:
        with self._lock:  # a notice being posted goes out first, then is replaced
            self._answered = True
            if self._timer is not None:
                self._timer.cancel()
            replace = self._notice_shown
        if replace and message.get("response_type") != "in_channel":
            message["replace_original"] = True
        return self._respond(**message)

    def done(self) -> None:
        with self._lock:
            self._answered = True
            if self._timer is not None:
                self._timer.cancel()

    def _notice(self, waiting: Waiting) -> None:
        with self._lock:
            if self._answered:
                return
            try:
                self._respond(
                    response_type="ephemeral",
                    replace_original=waiting is Waiting.IN_PLACE,
                    **blocks.notice("⏳ Waiting for the provider to answer…"),
                )
                self._notice_shown = True
            except Exception as exc:
                log.warning("could not show the waiting notice (%s)", type(exc).__name__)


@dataclass
class SlackEdge:
    service: BackupService
    approvals: RestoreApprovals
    directory: SlackDirectory
    client: WebClient
    pool: WorkPool
    # Work that races a clock (a trigger_id lives 3 s): never queued behind slow provider calls.
    urgent: WorkPool = field(default_factory=lambda: WorkPool(4, 100, name="backupbot-urgent"))
    _workspace_url: str | None = None

    def workspace_url(self) -> str | None:
        """`https://team.slack.com/`, from auth.test once; None if Slack would not say."""
        if self._workspace_url is None:
            try:
                self._workspace_url = str(self.client.auth_test()["url"])
            except Exception as exc:
                log.warning("auth.test failed: %s", slack_error(exc))
                return None
        return self._workspace_url

    def actor(
        self,
        user_id: str,
        name: str,
        team_id: str | None,
        channel_id: str | None,
        enterprise_id: str | None = None,
    ) -> Actor:
        # Slack's DM channel ids start with D: there the person talks to the bot alone.
        direct = bool(channel_id and channel_id.startswith("D"))
        display = self.directory.display_name(user_id, name)
        return Actor(user_id, display, team_id, channel_id, direct, enterprise_id)

    def actor_of_command(self, command: dict[str, Any]) -> Actor:
        """The person behind a slash command."""
        return self.actor(
            command["user_id"],
            command.get("user_name", ""),
            command.get("team_id"),
            command.get("channel_id"),
            command.get("enterprise_id") or None,
        )

    def actor_of(self, body: dict[str, Any]) -> Actor:
        """The person behind an interaction payload (a click, a menu choice, a form).

        The team is the workspace the action happened in, as a slash command names it: in an
        org-wide install `user.team_id` may be the org (E…), so it comes last.
        """
        user = body.get("user") or {}
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
            "channel_id"
        )
        team = (body.get("team") or {}).get("id") or body.get("team_id") or user.get("team_id")
        enterprise = (body.get("enterprise") or {}).get("id") or body.get("enterprise_id")
        name = user.get("name") or user.get("username") or ""
        return self.actor(user["id"], name, team, channel, enterprise)

    def later(
        self,
        job: Callable[[Actor, Respond], None],
        *,
        respond: Respond,
        who: Callable[[], Actor],
        what: str,
        waiting: Waiting = Waiting.NONE,
        urgent: bool = False,
        ack: Ack | None = None,
        acknowledgement: dict[str, Any] | None = None,
        read_only: bool = False,
    ) -> Future[None] | None:
        """Run `job(who(), respond)` off Bolt's pool, within the provider time budget; any failure
        becomes a message to the person. `waiting`: how to say "waiting for the provider…" if the
        answer takes a while (the answer then replaces that notice).

        `ack`: a listener that has not acked yet leaves it to this, which acks with
        `acknowledgement` once the work is accepted, or with the busy answer when the pool is
        full. A listener that acked already is answered busy through `respond`. Refused work is
        not done at all; None is returned.

        Work that may change something is first checked against the replay ledger (a request
        acted on before does nothing: `bot.replays`). `read_only` work (a list, a page, help)
        changes nothing, so a replay of it is answered again like the original, and costs no
        database write.
        """

        def run() -> None:
            if not read_only and acted_on_before():
                log.warning("a request already acted on came again (replay or retry): not acting")
                return
            actor: Actor | None = None
            patient = PatientRespond(respond, waiting, WAITING_NOTICE_AFTER)
            try:
                actor = who()
                with self.service.someone_waiting():
                    job(actor, patient)
            except ServiceError as exc:
                assert actor is not None  # who() raises no ServiceError
                self.reply_private(patient, actor, error_notice(exc))
            except Exception:
                reference = _reference()
                log.exception("%s failed (reference %s)", what, reference)
                if actor is not None:
                    self.reply_private(patient, actor, unexpected_failure(what, reference))
            finally:
                patient.done()

        try:
            # The pool runs it in a copy of this context: the request id follows.
            future = (self.urgent if urgent else self.pool).submit(run)
        except WorkQueueFull:
            self._busy(ack, respond, who, what)
            return None
        if ack is not None:
            ack(**(acknowledgement or {}))
        future.add_done_callback(_log_escaped)
        return future

    def _busy(self, ack: Ack | None, respond: Respond, who: Callable[[], Actor], what: str) -> None:
        """Say "busy, try again in a minute" at once, and count it."""
        BUSY_ANSWERS.inc()
        log.warning("busy: refused to %s (the work queue is full)", what)
        message = blocks.notice(BUSY)
        if ack is not None:
            ack(response_type="ephemeral", **message)
            return
        try:  # acked already (a click): its response_url, else the fallbacks of reply_private
            self.reply_private(respond, who(), message)
        except Exception as exc:
            log.warning("could not say busy (%s)", type(exc).__name__)

    def reply_private(
        self,
        respond: Responder,
        actor: Actor,
        message: dict[str, Any],
        *,
        replace_original: bool = False,
    ) -> None:
        """An ephemeral answer through `response_url`; if that fails, `chat.postEphemeral`, then DM.

        `response_url` takes 5 posts within 30 minutes: a person paging a long list can use it up.
        """
        try:
            response = respond(
                response_type="ephemeral", replace_original=replace_original, **message
            )
            if response.status_code == 200:
                return
            log.warning("response_url answered %s; trying chat.postEphemeral", response.status_code)
        except Exception as exc:  # the webhook client raises plain OSErrors
            log.warning("response_url failed (%s); trying chat.postEphemeral", type(exc).__name__)
        if actor.channel_id:
            try:
                self.client.chat_postEphemeral(
                    channel=actor.channel_id, user=actor.user_id, **message
                )
                return
            except Exception as exc:
                log.warning("chat.postEphemeral failed: %s; sending a DM", slack_error(exc))
        try:
            post_to_dm(self.client, actor.user_id, message)
        except Exception as exc:
            log.error("could not reach %s at all (DM failed: %s)", actor.user_id, slack_error(exc))


def guarded(listener: Callable[..., None]) -> Callable[..., None]:
    """A listener from which no exception escapes.

    Bolt throws the ack away when a listener raises after `ack()` (Slack then shows the person an
    error after 3 s, and they retry: for create, a second backup). So a failure is logged with a
    reference, and a listener that had not acked yet acks with an empty 200.
    """

    @functools.wraps(listener)
    def run(**kwargs: Any) -> None:
        try:
            listener(**kwargs)
        except Exception:
            log.exception("listener %s failed (reference %s)", listener.__name__, _reference())
            ack = kwargs.get("ack")
            if ack is not None and getattr(ack, "response", True) is None:
                ack()

    return run


def _reference() -> str:
    return current_request_id() or secrets.token_hex(4)  # the request id: in every log line


def _log_escaped(future: Future[None]) -> None:
    """A failure that escaped even the handlers above (they should not let one out): say so."""
    exc = future.exception()
    if exc is not None:
        log.error("background work failed and nobody was told: %r", exc)
