"""The console shows backup health: `/backup status`, and `/sweep` raising an alert, then replying
when the server recovers (the demo's cache-01 starts with a failed automatic backup)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import pytest

from bot.console import WorkspaceOptions
from bot.console.chat import Console
from bot.sandbox.workspace import Workspace

FAST = WorkspaceOptions(complete_after=0.5, first_poll=0.1, max_poll=0.1, tick=0.05)


@pytest.fixture
def console() -> Iterator[Console]:
    workspace = Workspace(FAST).start()
    chat = Console(workspace, io.StringIO(), quiet_seconds=0.15, answer_timeout=10)
    try:
        yield chat
    finally:
        chat.close()
        workspace.close()


def play(console: Console, script: str) -> str:
    start = len(console.transcript)
    assert console.run_lines(script.strip().splitlines()) == 0, "\n".join(console.transcript)
    return "\n".join(console.transcript[start:])


def test_status_and_a_sweep_alert_then_a_recovery_reply(console: Console) -> None:
    status = play(console, "/as carol\n/backup status\n/expect Backup health")
    assert re.search(r"⚠️ cache-01 \(12347\) · [a-z, ]*failed since the last good backup", status)
    assert "✅ db-server-01 (12346)" in status and "✅ web-server-01 (12345)" in status
    assert "⋯ [1] List  [2] Create backup…" in status

    swept = play(console, "/sweep")
    assert "┌ backupbot in #ops" in swept and "Disk snapshot failed" in swept
    assert "I'll reply in this thread when it recovers." in swept
    assert re.search(
        r"Swept 3 servers \(\d+ backups\): 1 needs attention; [12] new incidents", swept
    )
    again = play(console, "/sweep")
    assert "0 new incidents" in again and "┌ backupbot" not in again  # one alert per incident

    play(console, "/as alice\n/backup create cache-01 a good one\n/wait 10 completed")
    recovered = play(console, "/sweep")
    assert "in the thread of “❌ Backup" in recovered
    assert "✅ Recovered: cache-01 (12347)" in recovered
    assert "0 need attention" in recovered


def test_the_menu_of_a_status_line_lists_that_server(console: Console) -> None:
    out = play(console, "/backup status\n/click List cache-01")
    assert "Backups of cache-01" in out
