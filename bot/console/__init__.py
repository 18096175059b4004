"""`backupbot console` and `backupbot demo`: the whole bot in a terminal, no Slack workspace needed.

Like Hubot's shell adapter or Errbot's text backend, but driving the very Bolt app production
runs: see `bot.console.workspace` for the world it runs in and `bot.console.chat` for the chat.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from bot.console.options import (
    ConsoleError,
    ConsoleOptions,
    WorkspaceOptions,
    add_arguments,
    from_args,
)

__all__ = [
    "ConsoleError",
    "ConsoleOptions",
    "WorkspaceOptions",
    "add_arguments",
    "from_args",
    "run",
]


def run(
    options: ConsoleOptions,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Start the world, chat (interactively, or through a script), stop everything. Exit code:
    0, or 1 when a script's `/wait` or `/expect` failed, 130 on Ctrl-C during a script."""
    from bot.console.chat import Console
    from bot.console.render import Style
    from bot.console.workspace import Workspace

    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    scripted = options.script is not None or not stdin.isatty()
    color = options.color
    if color is None:
        color = stdout.isatty() and not os.environ.get("NO_COLOR")
    if not scripted:
        stdout.write("Starting Backup Bot, a simulated Slack and a simulated VPS provider…\n")
        stdout.flush()
    workspace = Workspace(options.workspace)
    console: Console | None = None
    try:
        workspace.start()
        console = Console(
            workspace,
            stdout,
            user_id=options.user,
            channel_id=options.channel,
            style=Style(color),
            interactive=not scripted,
            trace=options.trace,
        )
        console.banner()
        try:
            if not scripted:
                return console.run_interactive()
            return console.run_lines(_script_lines(options.script, stdin))
        except KeyboardInterrupt:
            stdout.write("\n")
            return 130 if scripted else 0
    finally:
        if console is not None:
            console.close()
        workspace.close()


def _script_lines(script: Path | None, stdin: TextIO) -> Iterable[str]:
    if script is None or str(script) == "-":
        yield from stdin
        return
    with open(script, encoding="utf-8") as handle:
        yield from handle
