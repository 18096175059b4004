"""`backupbot console` and `backupbot demo`: the whole bot in a terminal, no Slack workspace needed.

Like Hubot's shell adapter or Errbot's text backend, but driving the very Bolt app production
runs: see `bot.sandbox.workspace` for the world it runs in and `bot.console.chat` for the chat.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

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


class _Signalled(BaseException):
    """SIGTERM or SIGHUP (the terminal tab closed): leave as after /quit, everything stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def run(
    options: ConsoleOptions,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Start the world, chat (interactively, or through a script), stop everything. Exit code:
    0, or 1 when a script's `/wait` or `/expect` failed, 130 on Ctrl-C during a script, 128 + the
    signal's number after SIGTERM or SIGHUP."""
    from bot.console.chat import Console, Terminal
    from bot.console.render import Style
    from bot.sandbox.workspace import Workspace

    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    scripted = options.script is not None or not stdin.isatty()
    tty = stdout.isatty()
    dumb = os.environ.get("TERM") == "dumb"
    color = options.color
    if color is None:
        color = tty and not os.environ.get("NO_COLOR") and not dumb
    # Neither a terminal that cannot show a character nor a script that is not UTF-8 stops us.
    restorers = [_lenient(stdout), _lenient(stdin)]
    stopping = threading.Event()  # once set, a second signal does not cut the cleanup short

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            raise _Signalled(signum)

    previous = _install(on_signal)
    workspace = Workspace(options.workspace)
    console: Console | None = None
    try:
        if not scripted:
            Terminal(stdout, interactive=False).write(
                ["Starting Backup Bot, a simulated Slack and a simulated VPS provider…"]
            )
        workspace.start()
        console = Console(
            workspace,
            stdout,
            user_id=options.user,
            channel_id=options.channel,
            style=Style(color),
            interactive=not scripted,
            trace=options.trace,
            width=(lambda: shutil.get_terminal_size().columns) if tty else None,
            dumb=dumb,
        )
        console.banner()
        try:
            if not scripted:
                return console.run_interactive()
            return console.run_lines(_script_lines(options.script, stdin))
        except KeyboardInterrupt:
            stdout.write("\n")
            return 130 if scripted else 0
    except _Signalled as signalled:
        return 128 + signalled.signum
    finally:
        stopping.set()
        try:
            if console is not None:
                console.close()
            workspace.close()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for restore in restorers:
                restore()


def _install(handler: Callable[[int, FrameType | None], None]) -> dict[int, Any]:
    """`handler` for SIGTERM and SIGHUP; the handlers it replaced. Only the main thread can set
    signal handlers: elsewhere (a test calling `run` from a thread) nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Any] = {}
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None:
            old = signal.signal(signum, handler)
            previous[signum] = old if old is not None else signal.SIG_DFL
    return previous


def _lenient(stream: TextIO) -> Callable[[], None]:
    """Let `stream` replace what its encoding cannot show or read (an ASCII or Latin-1 terminal,
    a script in another encoding) instead of raising; returns what puts its old handling back."""
    errors = getattr(stream, "errors", None)
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is None or errors in (None, "replace"):
        return lambda: None
    try:
        reconfigure(errors="replace")
    except (ValueError, OSError, io.UnsupportedOperation):
        return lambda: None

    def restore() -> None:
        with contextlib.suppress(ValueError, OSError, io.UnsupportedOperation):
            reconfigure(errors=errors)

    return restore


def _script_lines(script: Path | None, stdin: TextIO) -> Iterable[str]:
    if script is None or str(script) == "-":
        yield from stdin
        return
    with open(script, encoding="utf-8", errors="replace") as handle:
        yield from handle
