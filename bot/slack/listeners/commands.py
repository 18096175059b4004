"""`/backup …`: parse, ack at once, then do the work off Bolt's threads and answer."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk.errors import SlackApiError

from bot.audit import Actor
from bot.db import Outcome
from bot.policy import Action
from bot.slack import blocks
from bot.slack.parser import (
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
    ServerSpec,
    parse,
)
from bot.slack.runtime import Runtime
from bot.vps.models import Backup

log = logging.getLogger(__name__)

COMMAND = "/backup"

# Why the bot could not post in a channel, in words for the person who asked.
_NOT_POSTABLE = {
    "not_in_channel": "I'm not a member of this channel",
    "channel_not_found": "I can't see this channel (private, or a DM I'm not part of)",
    "is_archived": "this channel is archived",
    "restricted_action": "posting in this channel is restricted",
}


def register(app: App, runtime: Runtime) -> None:
    app.command(COMMAND)(_handler(runtime))


def _handler(runtime: Runtime) -> Any:
    def handle_backup(ack: Ack, command: dict[str, Any], respond: Respond) -> None:
        text = command.get("text") or ""
        user_id = command["user_id"]
        channel_id = command.get("channel_id")
        try:
            parsed = parse(text)
        except ParseError as exc:
            ack(**blocks.notice(f"⚠️ {exc.message}\n```{exc.usage}```"))
            runtime.pool.submit(
                _audit, runtime, command, "command", Outcome.ERROR, text, exc.message
            )
            return
        if isinstance(parsed, HelpCommand):
            ack(**blocks.help_message(USAGE))
            runtime.pool.submit(_audit, runtime, command, "help", Outcome.OK, text, "")
            return
        ack()

        def job() -> None:
            actor = runtime.actor(
                user_id, command.get("user_name", ""), command.get("team_id"), channel_id
            )
            run_command(runtime, parsed, actor, respond)

        runtime.later(
            job,
            respond=respond,
            user_id=user_id,
            channel_id=channel_id,
            what=f"run `/backup {text.strip()[:80]}`",
        )

    return handle_backup


def _audit(
    runtime: Runtime,
    command: dict[str, Any],
    action: str,
    outcome: Outcome,
    text: str,
    detail: str,
) -> None:
    """Audit a command answered in the ack itself (help, parse errors), off Bolt's threads."""
    try:
        actor = runtime.actor(
            command["user_id"],
            command.get("user_name", ""),
            command.get("team_id"),
            command.get("channel_id"),
        )
        runtime.service.audit.record(
            actor, action, outcome, parameters={"text": text[:500]}, detail=detail
        )
    except Exception:
        log.exception("could not write the audit row for %s", action)


def server_argument(spec: ServerSpec) -> int | str:
    return spec.id if spec.id is not None else str(spec.name)


def run_command(runtime: Runtime, parsed: Command, actor: Actor, respond: Respond) -> None:
    """The slow half of a command, on the work pool. `ServiceError`s are answered by `later`."""
    if isinstance(parsed, ListCommand):
        show_list(
            runtime,
            actor,
            respond,
            server=server_argument(parsed.server) if parsed.server else None,
            backup_type=parsed.backup_type,
            page=0,
            public=parsed.public,
        )
    elif isinstance(parsed, CreateCommand):
        create(runtime, actor, respond, server_argument(parsed.server), parsed.description)
    elif isinstance(parsed, DeleteCommand):
        offer_delete(runtime, actor, respond, parsed.backup_id)
    elif isinstance(parsed, RestoreCommand):
        restore_unavailable(runtime, actor, respond, parsed.backup_id)
    elif isinstance(parsed, AuditCommand):
        show_audit(runtime, actor, respond, parsed)
    elif isinstance(parsed, AuditExportCommand):
        audit_export_unavailable(runtime, actor, respond)
    else:  # pragma: no cover - the parser returns only the types above
        raise TypeError(f"unhandled command {parsed!r}")


def show_list(
    runtime: Runtime,
    actor: Actor,
    respond: Respond,
    *,
    server: int | str | None,
    backup_type: str | None,
    page: int,
    public: bool,
    replace_original: bool = False,
) -> None:
    listing = runtime.service.list_backups(actor, server, backup_type)
    title = "Backups"
    if listing.server is not None:
        title += f" of {listing.server.name}"
    if backup_type:
        title = f"{backup_type.capitalize()} b{title[1:]}"
    state = blocks.PageState(
        listing.server.id if listing.server else None, backup_type, page, public
    )
    message = blocks.backup_list(
        listing.backups, state=state, title=title, total_size_mb=listing.total_size_mb
    )
    if public:
        response = respond(response_type="in_channel", replace_original=replace_original, **message)
        if response.status_code == 200:
            return
    runtime.reply_private(
        respond, actor.user_id, actor.channel_id, message, replace_original=replace_original
    )


def create(
    runtime: Runtime, actor: Actor, respond: Respond, server: int | str, description: str | None
) -> None:
    backup = runtime.service.create_backup(actor, server, description)
    # From here on the backup is running: whatever fails, the person must hear that it started.
    job_id = _watch(runtime, actor, backup)
    message = blocks.backup_started(backup, actor.user_id)
    channel, thread_ts = actor.channel_id, None
    reason = None
    if channel:
        try:
            thread_ts = str(runtime.client.chat_postMessage(channel=channel, **message)["ts"])
        except SlackApiError as exc:
            error = str(exc.response.get("error", ""))
            reason = _NOT_POSTABLE.get(error, f"Slack refused the message ({error})")
            log.info("cannot post backup %s in %s: %s", backup.id, channel, error)
        except Exception as exc:
            reason = "Slack could not be reached"
            log.warning("cannot post backup %s in %s: %r", backup.id, channel, exc)
    notes = []
    if thread_ts is None:
        posted = runtime.direct_message(actor.user_id, message)
        channel, thread_ts = posted if posted else (None, None)
        where = "our DM" if posted else "nowhere else, so keep this message"
        invite = (
            " Invite me with `/invite @Backup Bot` to get it here next time."
            if (reason == _NOT_POSTABLE["not_in_channel"])
            else ""
        )
        notes.append(
            f"{reason or 'I could not post in this channel'}, so its progress goes to {where}."
            + invite
        )
        runtime.service.audit.record(
            actor,
            "create.notice",
            Outcome.ERROR,
            server_id=backup.server.id,
            backup_id=backup.id,
            detail=f"started message not in channel: {reason}; sent to {where}",
        )
    if job_id is None and runtime.watcher is not None:
        notes.append(
            "I could not record it for tracking, so no reply will come when it finishes: "
            f"check `/backup list {backup.server.id}` later."
        )
    if notes:
        runtime.reply_private(
            respond,
            actor.user_id,
            actor.channel_id,
            blocks.notice(
                f"✅ Backup *{backup.id}* of *{backup.server.name}* started. " + " ".join(notes)
            ),
        )
    if job_id is not None and runtime.watcher is not None:
        try:
            runtime.watcher.attach_thread(job_id, channel, thread_ts)
        except Exception:
            # The job exists: after a grace period its reply goes to the channel, unthreaded.
            log.exception("could not attach the thread of backup %s to its watch job", backup.id)


def _watch(runtime: Runtime, actor: Actor, backup: Backup) -> int | None:
    if runtime.watcher is None:
        return None
    try:
        return runtime.watcher.watch(backup, actor)
    except Exception:
        log.exception("could not write the watch job of backup %s", backup.id)
        runtime.service.audit.record(
            actor,
            "create.untracked",
            Outcome.ERROR,
            server_id=backup.server.id,
            backup_id=backup.id,
            detail="the watch job could not be written; no reply will follow",
        )
        return None


def offer_delete(runtime: Runtime, actor: Actor, respond: Respond, backup_id: int) -> None:
    backup = runtime.service.backup_for_deletion(actor, backup_id)
    runtime.reply_private(respond, actor.user_id, actor.channel_id, blocks.delete_card(backup))


def restore_unavailable(runtime: Runtime, actor: Actor, respond: Respond, backup_id: int) -> None:
    runtime.service.audit.record(
        actor,
        "restore",
        Outcome.ERROR,
        backup_id=backup_id,
        detail="restore approvals are not available in this version",
    )
    runtime.reply_private(
        respond,
        actor.user_id,
        actor.channel_id,
        blocks.notice(
            f"Restoring backup {backup_id} needs an approval flow that this version of "
            "Backup Bot does not have yet, so nothing was restored. Until it does, restore "
            "from the provider's control panel."
        ),
    )


def show_audit(runtime: Runtime, actor: Actor, respond: Respond, parsed: AuditCommand) -> None:
    rows = runtime.service.audit_trail(
        actor,
        user_id=parsed.user_id,
        server=server_argument(parsed.server) if parsed.server else None,
        action=parsed.action,
        since=parsed.since,
    )
    filters = " · ".join(
        part
        for part in (
            f"by <@{parsed.user_id}>" if parsed.user_id else "",
            f"server {parsed.server}" if parsed.server else "",
            f"action {parsed.action}" if parsed.action else "",
            f"since {_age(parsed.since)} ago" if parsed.since else "",
        )
        if part
    )
    runtime.reply_private(
        respond, actor.user_id, actor.channel_id, blocks.audit_trail(rows, filters)
    )


def _age(since: timedelta) -> str:
    seconds = int(since.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def audit_export_unavailable(runtime: Runtime, actor: Actor, respond: Respond) -> None:
    runtime.service.authorize(actor, Action.AUDIT)
    runtime.service.audit.record(
        actor, "audit.export", Outcome.ERROR, detail="export from Slack is not built yet"
    )
    runtime.reply_private(
        respond,
        actor.user_id,
        actor.channel_id,
        blocks.notice(
            "Exporting from Slack is not in this version yet (it would need the `files:write` "
            "scope). An operator can run `backupbot audit export --since 7d -o audit.csv`."
        ),
    )
