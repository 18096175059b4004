"""`/backup …`: parse, ack at once, then one use-case off Bolt's threads, then render the answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App, Respond

from bot.audit import Actor
from bot.metrics import COMMANDS
from bot.slack import blocks
from bot.slack.edge import Responder, SlackEdge, Waiting, guarded
from bot.slack.listeners import observe
from bot.slack.listeners.replies import (
    audit_query,
    create,
    export_audit,
    offer_delete,
    request_restore,
    show_audit,
    show_list,
    show_status,
)
from bot.slack.parser import (
    COMMAND_NAME,
    SUBCOMMANDS,
    USAGE,
    AuditCommand,
    AuditExportCommand,
    Command,
    CreateCommand,
    DeleteCommand,
    HelpCommand,
    ListCommand,
    ParseError,
    RestoreCommand,
    StatusCommand,
    parse,
)


def register(app: App, edge: SlackEdge) -> None:
    app.command(COMMAND_NAME)(guarded(_handler(edge)))


def _handler(edge: SlackEdge) -> Any:
    def handle_backup(ack: Ack, command: dict[str, Any], respond: Respond) -> None:
        text = command.get("text") or ""
        who = lambda: edge.actor_of_command(command)  # noqa: E731 - looked up off Bolt's threads
        # `later` acks: with the answer given here once the work is accepted, or "busy".
        try:
            parsed = parse(text)
        except ParseError as exc:
            answer = blocks.notice(f"⚠️ {exc.message}\n```{exc.usage}```")
            observe.count(COMMANDS, _attempted(text), "invalid")
            _answer_at_once(edge, ack, respond, who, text, answer, problem=exc.message)
            return
        if isinstance(parsed, HelpCommand):
            observe.count(COMMANDS, "help", "ok")
            _answer_at_once(edge, ack, respond, who, text, blocks.help_message(USAGE))
            return
        _run_later(edge, parsed, text, ack, respond, who)

    return handle_backup


def _run_later(
    edge: SlackEdge,
    parsed: Command,
    text: str,
    ack: Ack,
    respond: Respond,
    who: Callable[[], Actor],
) -> None:
    """Everything else: `later` acks once the work is accepted (or says busy), then runs it."""
    run = lambda actor, reply: run_command(edge, parsed, actor, reply)  # noqa: E731
    what = f"run `{COMMAND_NAME} {text.strip()[:80]}`"
    name, waiting = _NAMES.get(type(parsed), "other"), Waiting.NEW_MESSAGE
    read_only = isinstance(parsed, _READ_ONLY)
    observe.later(
        edge, COMMANDS, name, run, respond=respond, who=who, what=what, waiting=waiting, ack=ack,
        read_only=read_only,
    )  # fmt: skip


def _answer_at_once(
    edge: SlackEdge,
    ack: Ack,
    respond: Respond,
    who: Callable[[], Actor],
    text: str,
    answer: dict[str, Any],
    problem: str | None = None,
) -> None:
    """Help and malformed commands: the answer goes in the ack; only the audit row is written
    later, on the work pool."""
    record = lambda actor, _: edge.service.command_answered(actor, text, problem)  # noqa: E731
    what = "record a command" if problem else "record help"
    edge.later(
        record,
        respond=respond,
        who=who,
        what=what,
        ack=ack,
        acknowledgement=answer,
        read_only=True,
    )


_NAMES: dict[type, str] = {
    ListCommand: "list",
    CreateCommand: "create",
    DeleteCommand: "delete",
    RestoreCommand: "restore",
    AuditCommand: "audit",
    AuditExportCommand: "audit_export",
}


# Commands that change nothing: a replay of one is answered again (see `SlackEdge.later`).
_READ_ONLY = (ListCommand, StatusCommand, AuditCommand, AuditExportCommand)


def _attempted(text: str) -> str:
    """The subcommand a malformed command was meant to be, if it names one; else "unknown"."""
    first = text.strip().split(maxsplit=1)[0].lower() if text.strip() else "help"
    return first if first in SUBCOMMANDS else "unknown"


def run_command(edge: SlackEdge, parsed: Command, actor: Actor, respond: Responder) -> None:
    """The slow half of a command, on the work pool; `ServiceError`s are answered by `later`."""
    if isinstance(parsed, ListCommand):
        server = parsed.server.argument if parsed.server else None
        show_list(edge, actor, respond, server, parsed.backup_type, public=parsed.public)
    elif isinstance(parsed, CreateCommand):
        create(edge, actor, respond, parsed.server.argument, parsed.description)
    elif isinstance(parsed, DeleteCommand):
        offer_delete(edge, actor, respond, parsed.backup_id)
    elif isinstance(parsed, RestoreCommand):
        request_restore(edge, actor, respond, parsed.backup_id, parsed.reason or "")
    elif isinstance(parsed, StatusCommand):
        show_status(edge, actor, respond, parsed.server.argument if parsed.server else None)
    elif isinstance(parsed, AuditCommand):
        show_audit(edge, actor, respond, audit_query(parsed))
    elif isinstance(parsed, AuditExportCommand):
        export_audit(edge, actor, respond, parsed)
    else:  # pragma: no cover - the parser returns only the types above
        raise TypeError(f"unhandled command {parsed!r}")
