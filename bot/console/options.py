"""The console's knobs and command-line arguments (light: no Slack or database imports)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path


class ConsoleError(Exception):
    """The console cannot start as asked (an unknown person, a missing script…); says why."""


@dataclass(frozen=True)
class WorkspaceOptions:
    """The embedded world; the defaults are the demo's."""

    complete_after: float = 8.0  # seconds a new backup stays in_progress at the "provider"
    first_poll: float = 2.0  # the watcher's first look at a new backup
    max_poll: float = 2.0  # and how often it looks again
    tick: float = 0.5  # how often the watcher looks for due jobs
    history_days: int = 7  # daily automatic backups seeded per server
    # cache-01's newest automatic backup failed: `/backup status` and `/sweep` have one to show.
    failed_backup: bool = True
    log_file: Path | None = None  # the bot's log; default: inside the temporary directory
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. {"BACKUP_CHANNELS": "C_OPS"}


@dataclass(frozen=True)
class ConsoleOptions:
    script: Path | None = None  # a file of lines to play; "-" reads stdin
    user: str = "U_ALICE"
    channel: str = "C_OPS"
    color: bool | None = None  # None: when writing to a terminal and NO_COLOR is unset
    trace: bool = False
    workspace: WorkspaceOptions = field(default_factory=WorkspaceOptions)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--script",
        type=Path,
        metavar="FILE",
        help="play the lines of FILE (- for stdin) as if typed, print the transcript and exit "
        "(1 if a /wait or /expect in it failed); stdin is read this way when it is not a terminal",
    )
    add(
        "--as",
        dest="user",
        default="alice",
        metavar="USER",
        help="who you are at first: alice (operator), bob (approver, auditor) or carol (viewer); "
        "default: %(default)s",
    )
    add(
        "--channel",
        default="#ops",
        help="where you type at first: #ops, or #random where the bot is not invited "
        "(default: %(default)s)",
    )
    add(
        "--complete-after",
        type=float,
        default=WorkspaceOptions.complete_after,
        metavar="SECONDS",
        help="how long a new backup takes at the simulated provider (default: %(default)s)",
    )
    add(
        "--poll",
        type=float,
        default=WorkspaceOptions.first_poll,
        metavar="SECONDS",
        help="how often the watcher asks the provider about a running backup "
        "(default: %(default)s)",
    )
    add(
        "--log",
        type=Path,
        metavar="FILE",
        help="append the bot's log to FILE (default: a temporary file, removed on exit)",
    )
    add(
        "--delete-approval",
        action="store_true",
        help="deletes need an approver's approval, as restores do (DELETE_REQUIRES_APPROVAL=true)",
    )
    add("--trace", action="store_true", help="also show every Web API call the bot makes")
    add("--no-color", action="store_true", help="no ANSI colours (also: NO_COLOR=1)")


def from_args(args: argparse.Namespace) -> ConsoleOptions:
    if args.complete_after < 0 or args.poll <= 0:
        raise ConsoleError("--complete-after must be 0 or more and --poll more than 0")
    if args.script is not None and str(args.script) != "-" and not args.script.is_file():
        raise ConsoleError(f"no script file {str(args.script)!r}")
    return ConsoleOptions(
        script=args.script,
        user=args.user,
        channel=args.channel,
        color=False if args.no_color else None,
        trace=args.trace,
        workspace=WorkspaceOptions(
            complete_after=args.complete_after,
            first_poll=args.poll,
            max_poll=max(args.poll, 0.1),
            log_file=args.log,
            extra_env={"DELETE_REQUIRES_APPROVAL": "true"} if args.delete_approval else {},
        ),
    )
