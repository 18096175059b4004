"""What the listeners tell the operators: each command and action counted by name and outcome
(`backupbot_commands`, `backupbot_actions`); the request id carried onto Bolt's listener threads.

The outcome of a command is known only after its ack, when the use-case has run on the work pool:
`later` wraps the job there. Outcomes: ok; denied (the policy said no); invalid (the person asked
for something that is not there or cannot be done: a malformed command, an unknown server or
backup, a wrong confirmation); error (the provider, Slack or our own code failed). Names are a
closed set (subcommands, our action names), never text a person typed.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

from prometheus_client import Counter
from slack_bolt import Ack, App, Respond

from bot.approvals import BackupNotRestorable, NoSuchApproval, NotDecidable, WrongConfirmation
from bot.audit import Actor
from bot.service import BackupNotFinished, Denied, NoSuchBackup, UnknownServer
from bot.slack.edge import Responder, SlackEdge, Waiting

P = ParamSpec("P")
T = TypeVar("T")

_INVALID = (
    UnknownServer,
    NoSuchBackup,
    BackupNotFinished,
    BackupNotRestorable,
    NoSuchApproval,
    WrongConfirmation,
)

# A job may return an outcome when it answered a failure itself instead of raising.
Job = Callable[[Actor, Responder], str | None]


def outcome_of(error: BaseException | None) -> str:
    if error is None:
        return "ok"
    if isinstance(error, Denied | NotDecidable):
        return "denied"
    if isinstance(error, _INVALID):
        return "invalid"
    return "error"


def count(counter: Counter, name: str, outcome: str) -> None:
    counter.labels(name, outcome).inc()


def later(
    edge: SlackEdge,
    counter: Counter,
    name: str,
    job: Job,
    *,
    respond: Respond,
    who: Callable[[], Actor],
    what: str,
    waiting: Waiting = Waiting.NONE,
    urgent: bool = False,
    ack: Ack | None = None,
    read_only: bool = False,
) -> Future[None] | None:
    """`edge.later`, with the outcome counted once the job has run (or failed to start), or as
    `busy` when the work queue turned it away (None then)."""

    def counted_who() -> Actor:
        try:
            return who()
        except BaseException:
            count(counter, name, "error")
            raise

    def counted_job(actor: Actor, reply: Responder) -> None:
        try:
            outcome = job(actor, reply)
        except BaseException as exc:
            count(counter, name, outcome_of(exc))
            raise
        count(counter, name, outcome or "ok")

    future = edge.later(
        counted_job,
        respond=respond,
        who=counted_who,
        what=what,
        waiting=waiting,
        urgent=urgent,
        ack=ack,
        read_only=read_only,
    )
    if future is None:
        count(counter, name, "busy")
    return future


class _InContext(Executor):
    """An executor that runs each task in a copy of the submitter's context (`contextvars`), so
    the request id set where a request arrived follows it onto the pool's threads."""

    def __init__(self, inner: Executor) -> None:
        self._inner = inner

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        return self._inner.submit(contextvars.copy_context().run, fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._inner.shutdown(wait=wait, cancel_futures=cancel_futures)


def carry_context_to_listeners(app: App) -> None:
    """Bolt runs each listener on its executor, which copies no context: make it copy the one of
    the thread the request arrived on (the WSGI worker, the Socket Mode handler)."""
    runner: Any = app.listener_runner
    if not isinstance(runner.listener_executor, _InContext):
        runner.listener_executor = _InContext(runner.listener_executor)
        runner.lazy_listener_runner.executor = runner.listener_executor
