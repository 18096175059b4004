"""The terminal chat: scripted conversations with the real app, checked for facts (ids, sizes,
who), not for layout; the same Web API calls as the HTTP app; nothing left running afterwards."""

from __future__ import annotations

import io
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.webhook import WebhookClient

from bot.app import build_app
from bot.cli import main
from bot.config import load_settings
from bot.console import ConsoleOptions, WorkspaceOptions, run
from bot.console.chat import Console, Terminal, _action_as_drawn
from bot.console.render import Choice, Names, Style, display_width, format_date, mrkdwn, wrap
from bot.sandbox.slack import Event, RecordedCall, RecordedResponse, SlackSender
from bot.sandbox.vps import Simulator
from bot.sandbox.workspace import Workspace
from bot.slack.blocks import PAGE_SIZE, human_size
from bot.watch import WatchSettings

ROOT = Path(__file__).resolve().parent.parent
FAST = WorkspaceOptions(complete_after=0.5, first_poll=0.1, max_poll=0.1, tick=0.05)


@pytest.fixture(scope="module")
def world() -> Iterator[Workspace]:
    """One world for the conversations below (each test has its own console and reads the facts
    from the provider as they are when it runs); the tests that stop things start their own."""
    workspace = Workspace(FAST).start()
    try:
        yield workspace
    finally:
        workspace.close()


@pytest.fixture
def console(world: Workspace) -> Iterator[Console]:
    chat = Console(world, io.StringIO(), quiet_seconds=0.15, answer_timeout=10)
    try:
        yield chat
    finally:
        chat.close()


def play(console: Console, script: str) -> str:
    """Run the script; return what it added to the transcript."""
    start = len(console.transcript)
    console.run_lines(script.strip().splitlines())
    return "\n".join(console.transcript[start:])


def sim(world: Workspace) -> Simulator:
    assert world.simulator is not None
    return world.simulator


def backups(world: Workspace, server_id: int | None = None) -> list[dict[str, Any]]:
    """The provider's backups, newest first, as the API shows them."""
    simulator = sim(world)
    found = [simulator.backup(i) for i in list(simulator._backups)]  # type: ignore[attr-defined]
    rows = [b for b in found if b and (server_id is None or b["server"]["id"] == server_id)]
    return sorted(rows, key=lambda b: b["created_at"], reverse=True)


def ids_in(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"Backup (\d+) ·", text)]


# -- list and paging -----------------------------------------------------------------------------


def test_list_is_private_newest_first_with_sizes_and_pages(
    console: Console, world: Workspace
) -> None:
    everything = backups(world)
    pages = math.ceil(len(everything) / PAGE_SIZE)
    assert pages >= 3
    first = play(console, "/backup list")
    assert "only visible to @alice" in first
    assert f"{len(everything)} backups" in first and f"page 1 of {pages}" in first
    created = {b["id"]: b["created_at"] for b in everything}
    page_1 = ids_in(first)
    assert len(page_1) == PAGE_SIZE
    assert [created[i] for i in page_1] == sorted((created[i] for i in page_1), reverse=True)
    assert created[page_1[0]] == everything[0]["created_at"]  # the newest comes first
    for backup in everything:
        if backup["id"] in page_1:
            assert human_size(backup["size_mb"]) in first
    assert "<!date^" not in first  # Slack's date tokens are drawn in local time
    assert re.search(r"created (Today|Yesterday) \d\d:\d\d", first)

    second = play(console, "/click Next")
    assert f"page 2 of {pages}" in second and "(replaces" in second
    page_2 = ids_in(second)
    assert len(page_2) == PAGE_SIZE and not set(page_1) & set(page_2)
    assert min(created[i] for i in page_1) >= max(created[i] for i in page_2)

    number = re.findall(r"\[(\d+)\] ◀ Previous", second)[-1]
    back = play(console, number)  # a bare number presses that button
    assert f"page 1 of {pages}" in back
    assert ids_in(back) == ids_in(first)

    old_next = re.findall(r"\[(\d+)\] Next", first)[-1]
    stale = play(console, old_next)  # a button of a version of the message that is gone
    assert "changed since" in stale


# -- restore with approvals ------------------------------------------------------------------------


def test_a_restore_is_asked_approved_in_the_form_and_accepted(
    console: Console, world: Workspace
) -> None:
    completed = [b for b in backups(world, 12346) if b["status"] == "completed"]
    target = completed[-1]["id"]
    asked = play(console, f"/backup restore {target} bad migration")
    assert "Asked for approval" in asked and "Restore db-server-01?" in asked
    assert "will be lost" in asked and "Reason: bad migration" in asked
    refused = play(console, "/click Approve")  # alice asked, and is no approver anyway
    assert "approver role" in refused
    form = play(console, "/as bob\n/click Approve")
    assert "Form “Approve restore” opened" in form and "Type db-server-01" in form
    wrong = play(console, "db-server-02")
    assert "not the server's name" in wrong
    play(console, "db-server-01")
    done = play(console, "/wait 20 accepted the restore")
    assert console.failures == []
    assert "Safety backup" in done
    assert [r["backup_id"] for r in sim(world).restores][-1:] == [target]
    play(console, "/as alice")


# -- audit review ----------------------------------------------------------------------------------


def test_an_auditor_reads_and_exports_the_log_in_the_console(console: Console) -> None:
    play(console, "/backup list web-server-01")
    rows = play(console, "/as bob\n/backup audit outcome:ok")
    assert "@alice list server 12345" in rows and "outcome ok" in rows
    sent = play(console, "/backup audit export format:jsonl")
    assert "sent to our DM" in sent and "📎 backupbot-audit-" in sent and ".jsonl (" in sent
    play(console, "/as alice")


# -- create and the thread reply ------------------------------------------------------------------


def test_create_posts_in_channel_and_the_thread_reply_arrives_on_its_own(
    console: Console, world: Workspace
) -> None:
    started = play(console, "/backup create web-server-01 before deploy")
    [created] = [b for b in backups(world, 12345) if b["description"] == "before deploy"]
    assert f"Backup {created['id']} of web-server-01" in started
    assert "started by @alice" in started and "only visible" not in started

    done = play(console, "/wait 10 completed")
    assert console.failures == []
    finished = sim(world).backup(created["id"])
    assert finished is not None and finished["status"] == "completed"
    reply = [line for line in done.splitlines() if line.startswith("    ↳")]
    assert reply and "in the thread of" in reply[0] and f"Backup {created['id']}" in reply[0]
    assert re.search(r"completed (within|in between|in) [0-9]", done)
    assert human_size(finished["size_mb"]) in done
    assert "(updated" in done  # the parent's status line was rewritten


def test_create_where_the_bot_is_not_invited_goes_to_the_dm(console: Console) -> None:
    out = play(console, "/in #random\n/backup create cache-01")
    assert "Slack refused chat.postMessage in #random: not_in_channel" in out
    assert "in your DM with the bot" in out and "started by @alice" in out
    assert "Invite me" in out
    reply = play(console, "/wait 10 completed")
    assert "↳ backupbot in your DM with the bot" in reply and "cache-01" in reply


# -- delete ---------------------------------------------------------------------------------------


def test_delete_asks_for_confirmation_then_deletes(console: Console, world: Workspace) -> None:
    backup_id = int(sim(world).add_backup(12346, size_mb=2048, description="old one")["id"])
    card = play(console, f"/backup delete {backup_id}")
    assert f"Delete backup {backup_id}?" in card
    assert "db-server-01" in card and "2.0 GB" in card and "old one" in card

    deletes = len(sim(world).api_calls("DELETE"))
    asked = play(console, "/click Delete")
    assert "Delete this backup?" in asked and "y = Delete, n = Keep it" in asked
    assert len(sim(world).api_calls("DELETE")) == deletes  # nothing is sent before the answer

    done = play(console, "y")
    assert f"Backup {backup_id} deleted by @alice" in done and "(replaces" in done
    assert sim(world).backup(backup_id) is None


def test_declining_the_confirm_dialog_sends_nothing(console: Console, world: Workspace) -> None:
    backup_id = int(sim(world).add_backup(12346, size_mb=100, description="keep me")["id"])
    deletes = len(sim(world).api_calls("DELETE"))
    # This time through the ⋯ menu of the list row (an overflow option, not a button).
    out = play(console, "/backup list db-server-01 manual\n/click Delete… keep me")
    assert f"Delete backup {backup_id}?" in out and "100 MB" in out
    out = play(console, "/click Delete\nn")
    assert "nothing was sent" in out
    assert sim(world).backup(backup_id) is not None
    assert len(sim(world).api_calls("DELETE")) == deletes


def test_a_confirm_answered_after_the_message_changed_presses_nothing(
    console: Console, world: Workspace
) -> None:
    backup_id = int(sim(world).add_backup(12346, description="changes under me")["id"])
    play(console, f"/backup delete {backup_id}")
    assert world.sender is not None and world.sender.last_payload is not None
    card_url = world.sender.last_payload["response_url"]
    deletes = len(sim(world).api_calls("DELETE"))
    assert "Delete this backup?" in play(console, "/click Delete")
    # While the dialog is open, the app replaces the card (say, someone cancelled it elsewhere).
    assert WebhookClient(card_url).send(text="Never mind", replace_original=True).status_code == 200
    out = play(console, "y")
    assert "changed since" in out and "deleted by" not in out
    assert sim(world).backup(backup_id) is not None
    assert len(sim(world).api_calls("DELETE")) == deletes


def test_click_names_whole_words_and_never_guesses(console: Console, world: Workspace) -> None:
    simulator = sim(world)
    alpha = int(simulator.add_backup(12346, description="alpha")["id"])
    alphabet = int(simulator.add_backup(12346, description="alphabet")["id"])  # newer: listed first
    listed = play(console, "/backup list db-server-01 manual")
    assert f"Backup {alpha} ·" in listed and f"Backup {alphabet} ·" in listed
    deletes = len(simulator.api_calls("DELETE"))

    # A substring of another row is no match: "alpha" is in "alphabet", "234" in "(12346)".
    assert f"Delete backup {alpha}?" in play(console, "/click Delete… alpha")
    assert "No button or option matching" in play(console, "/click delete 234")
    # An option's exact value, or its words (the backup id), name one row.
    assert f"Delete backup {alphabet}?" in play(console, f"/click delete:{alphabet}")
    assert f"Delete backup {alpha}?" in play(console, f"/click delete {alpha}")
    # The same label on several rows: nothing is pressed, the candidates are listed.
    many = play(console, "/click Delete…")
    assert "nothing was pressed" in many and "Delete backup" not in many
    assert re.search(rf"\[\d+\] Delete… on “.*Backup {alpha} ·", many)
    assert re.search(rf"\[\d+\] Delete… on “.*Backup {alphabet} ·", many)
    assert len(simulator.api_calls("DELETE")) == deletes


def test_a_press_sends_the_element_as_drawn() -> None:
    """Found by block_id and action_id, not by position; a button with another value now (or a
    menu without the option) is not the one that was drawn."""
    row = {"type": "section", "block_id": "backup_7", "text": {"type": "mrkdwn", "text": "7"}}
    menu = {"type": "overflow", "action_id": "menu", "options": [{"value": "delete:7"}]}
    button = {"type": "button", "action_id": "go", "value": "7", "text": {"type": "plain_text"}}
    blocks: list[dict[str, Any]] = [
        {**row, "accessory": menu},
        {"type": "actions", "block_id": "pager", "elements": [button]},
    ]
    option = Choice("Delete…", "menu", "backup_7", 0, value="delete:7", option=True)
    pressed = Choice("Go", "go", "pager", 1, value="7")
    moved = [{"type": "divider", "block_id": "new"}, *blocks]  # every block one further down
    assert _action_as_drawn(moved, option)["selected_option"] == {"value": "delete:7"}  # type: ignore[index]
    assert _action_as_drawn(moved, pressed)["value"] == "7"  # type: ignore[index]
    changed = [blocks[0], {**blocks[1], "elements": [{**button, "value": "8"}]}]
    assert _action_as_drawn(changed, pressed) is None
    assert _action_as_drawn([{**row, "accessory": {**menu, "options": []}}], option) is None


def test_an_ephemeral_card_can_be_pressed_only_by_its_reader(
    console: Console, world: Workspace
) -> None:
    backup_id = int(sim(world).add_backup(12346)["id"])
    card = play(console, f"/backup delete {backup_id}")
    number = re.findall(r"\[(\d+)\] Delete\b", card)[-1]
    out = play(console, f"/as bob\n{number}")
    assert "Only @alice can see that message" in out
    assert sim(world).backup(backup_id) is not None


def test_my_dm_is_the_dm_of_whoever_i_am_now(console: Console, world: Workspace) -> None:
    assert world.slack is not None and world.sender is not None
    out = play(console, "/in dm\n/as bob\n/backup list cache-01")
    assert "You are now in your DM with the bot" in out
    assert "bob in your DM with the bot> /backup list cache-01" in out
    assert "backupbot in your DM with the bot · only visible to @bob" in out
    assert world.sender.last_payload is not None
    assert world.sender.last_payload["channel_id"] == world.slack.dm_channel_id("U_BOB")
    back = play(console, "/as alice\n/who")
    assert "You are alice in your DM with the bot" in back


# -- roles ----------------------------------------------------------------------------------------


def test_a_viewer_is_told_which_role_creating_needs(console: Console, world: Workspace) -> None:
    creates = len(sim(world).api_calls("POST", "/backups/"))
    out = play(console, "/as carol\n/backup create web-server-01")
    assert "You are now carol (viewer)" in out
    assert "only visible to @carol" in out
    assert "operator" in out and "BACKUP_OPERATORS" in out
    assert len(sim(world).api_calls("POST", "/backups/")) == creates


def test_who_lists_people_roles_and_channels(console: Console) -> None:
    out = play(console, "/who")
    assert re.search(r"alice\s+U_ALICE\s+operator", out)
    assert re.search(r"bob\s+U_BOB\s+approver, auditor", out)
    assert re.search(r"carol\s+U_CAROL\s+viewer", out)
    assert "#random" in out and "not a member" in out


# -- help, home, console commands -----------------------------------------------------------------


def test_help_buttons_answered_in_the_ack_work(console: Console) -> None:
    out = play(console, "/backup help\n/click Manual backups")
    assert "/backup create SERVER" in out
    assert "Manual backups" in out and "automatic ·" not in out.split("│ Manual backups")[1]


def test_home_tab_and_console_notes(console: Console) -> None:
    out = play(console, "/home\nhello bot\n/frobnicate\n/as nobody\n99")
    assert "App Home of @alice" in out and "operator" in out
    assert "Plain messages go nowhere" in out
    assert "no /frobnicate command" in out
    assert "Who?" in out and "There is no choice 99" in out


def test_failed_waits_and_expectations_fail_the_script(console: Console) -> None:
    assert console.run_lines(["/backup list", "/expect Backups", "/wait 0.2"]) == 1
    assert console.failures == ["/wait 0.2"]
    assert console.run_lines(["/expect no such words"]) == 1


def test_a_bad_line_costs_one_line_not_the_session(
    console: Console, world: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = play(console, "²\n٣")  # "²" is a digit int() refuses; "٣" is an (Arabic-Indic) 3
    assert "Plain messages go nowhere" in out and "There is no choice 3" in out

    def time_out(*_args: Any, **_kwargs: Any) -> None:
        raise TimeoutError("timed out")

    monkeypatch.setattr(console.sender, "slash_command", time_out)
    typed = iter(["/backup list", "/who"])

    def read(_prompt: str) -> str:
        try:
            return next(typed)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr(console.terminal, "read", read)
    start = len(console.transcript)
    assert console.run_interactive() == 0
    out = "\n".join(console.transcript[start:])
    assert "! that did not work: TimeoutError: timed out" in out
    assert "You are alice" in out  # the prompt came back and the next line was answered
    assert world.log_path is not None
    log = world.log_path.read_text(encoding="utf-8")
    assert "Traceback" in log and "TimeoutError: timed out" in log
    assert console.run_lines(["/backup list"]) == 1  # in a script, it fails the script


def test_a_message_that_cannot_be_drawn_is_reported(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any) -> None:
        raise RuntimeError("no way")

    monkeypatch.setattr(console, "_draw_message", broken)
    out = play(console, "/backup list cache-01")
    assert "! could not draw a message (RuntimeError: no way); its text: Backups of cache-01" in out


def test_a_terminal_that_cannot_show_unicode_gets_ascii(world: Workspace) -> None:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii", errors="strict", write_through=True)
    chat = Console(world, out, quiet_seconds=0.15, answer_timeout=10)
    try:
        chat.banner()
        chat.run_lines(["/backup list cache-01"])
    finally:
        chat.close()
    screen = raw.getvalue().decode("ascii")
    assert "Backup Bot console -- the real bot" in screen
    assert "+ backupbot in #ops - only visible to @alice" in screen
    assert re.search(r"\| \[ok\] Backup \d+ - cache-01", screen)


def test_trace_shows_every_web_api_call(console: Console) -> None:
    out = play(console, "/trace on\n/backup list cache-01")
    assert "· response_url(response_type=ephemeral, replace_original=False) → ok" in out
    quiet = play(console, "/trace off\n/backup list cache-01")
    assert "· response_url" not in quiet and "Backups of cache-01" in quiet


# -- rendering ------------------------------------------------------------------------------------


def test_mrkdwn_tokens_read_as_in_slack() -> None:
    names = Names(user=lambda u: {"U_ALICE": "alice"}.get(u), channel=lambda c: None, tz=UTC)
    lines = mrkdwn("*Backup 7* by <@U_ALICE> in <#C1|ops> &lt;x&gt; `a*b*c`\n```q\nr```", names)
    assert lines == ["Backup 7 by @alice in #ops <x> a*b*c", "    q", "    r"]
    epoch = int(datetime(2024, 5, 13, 14, 30, tzinfo=UTC).timestamp())
    late = Names(tz=UTC, now=lambda: datetime(2024, 6, 1, tzinfo=UTC))
    assert format_date(epoch, "{date_short_pretty} {time}", late) == "May 13, 2024 14:30"
    same_day = Names(tz=UTC, now=lambda: datetime(2024, 5, 13, 20, tzinfo=UTC))
    assert format_date(epoch, "{date_short_pretty} {time}", same_day) == "Today 14:30"
    assert mrkdwn(f"<!date^{epoch}^{{date_num}}|fallback>", late) == ["2024-05-13"]
    assert mrkdwn("<!date^nonsense^{date}|the fallback>", late) == ["the fallback"]


def test_long_lines_wrap_under_their_gutter_and_indent() -> None:
    line = "    │ " + " ".join(f"word{n}" for n in range(30))
    rows = wrap(line, 40)
    assert len(rows) > 2 and all(display_width(row) <= 40 for row in rows)
    assert all(row.startswith("    │ ") for row in rows)  # a thread reply stays indented
    assert " ".join(row.removeprefix("    │ ") for row in rows) == line.removeprefix("    │ ")
    coloured = wrap("┌ " + Style(True).bold("bold " * 10), 20)
    assert coloured[0].endswith("\x1b[0m") and coloured[1].startswith("│ \x1b[1m")
    assert wrap("│ " + "x" * 50, 20)[1] == "│ " + "x" * 18  # a long word is cut anywhere
    assert Style(True).header("Backups") == "\x1b[1;4mBackups\x1b[0m"
    assert Style(False).header("Backups") == "Backups"


def test_bot_text_cannot_drive_the_terminal_and_wraps(world: Workspace) -> None:
    assert world.slack is not None
    out = io.StringIO()
    chat = Console(world, out, quiet_seconds=0.15, answer_timeout=10, width=lambda: 40)
    try:
        client = WebClient(token=world.slack.bot_token, base_url=world.slack.api_url)
        client.chat_postMessage(
            channel="C_OPS",
            text="evil",
            blocks=[
                {"type": "header", "text": {"type": "plain_text", "text": "Hi\x1b[2J there"}},
                {
                    "type": "section",
                    "text": {
                        "type": "mrkdwn",
                        "text": "bell\x07 \x1b]0;title\x07\r\n" + "long " * 20,
                    },
                },
            ],
        )
        assert chat.wait(5, "bell")
    finally:
        chat.close()
    screen = out.getvalue()
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", screen)  # no ESC, BEL, CR…
    assert "│ Hi[2J there" in screen  # a header is not shouted (nor coloured, here)
    assert all(display_width(line) <= 40 for line in screen.splitlines())
    assert any(len(line) > 40 for line in chat.transcript)  # /wait reads the unwrapped text


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Readline:
    def __init__(self, typed: str) -> None:
        self.typed = typed

    def get_line_buffer(self) -> str:
        return self.typed


def _news_while_typing(
    terminal: Terminal, out: io.StringIO, typed: str, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Someone types `typed` at the prompt and a message arrives: what the screen got."""

    def typing(prompt: str) -> str:
        out.write(prompt + typed)
        terminal.write(["news"])
        return typed

    monkeypatch.setattr("builtins.input", typing)
    assert terminal.read("alice> ") == typed
    return out.getvalue()


def test_news_while_typing_clears_every_row_of_the_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "20")
    typed = "x" * 40  # with the prompt, 47 columns: three rows of 20
    out = _Tty()
    terminal = Terminal(out, interactive=True, readline=_Readline(typed))
    clear = "\r\x1b[2K" + "\x1b[1A\x1b[2K" * 2
    expected = f"alice> {typed}{clear}news\nalice> {typed}"
    assert _news_while_typing(terminal, out, typed, monkeypatch) == expected


def test_news_while_typing_without_readline_clears_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What was typed stays on the screen (it is still part of the line): a new line instead."""
    pipe, no_readline, dumb = io.StringIO(), _Tty(), _Tty()
    for out, terminal in [
        (no_readline, Terminal(no_readline, interactive=False)),
        (pipe, Terminal(pipe, interactive=True, readline=_Readline("abc"))),
        (dumb, Terminal(dumb, interactive=True, readline=_Readline("abc"), dumb=True)),
    ]:
        assert _news_while_typing(terminal, out, "abc", monkeypatch) == "alice> abc\nnews\nalice> "


# -- the same app as over HTTP --------------------------------------------------------------------


def _normalized(events: list[Event], new: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """What the bot sent Slack, without the per-run details: the ids of the backups created in
    the run, times, cached people lookups. Message timestamps become which message of the run
    they name, so a thread reply still says which parent it is in."""
    posted: dict[str, str] = {}
    for event in events:
        if isinstance(event, RecordedCall) and event.method == "chat.postMessage" and event.ok:
            posted[str(event.response.get("ts"))] = f"<message {len(posted) + 1} of the run>"

    def scrub(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: scrub(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if key in ("ts", "thread_ts", "message_ts"):
            return posted.get(str(value), "<a message from before the run>")
        if isinstance(value, str):
            value = re.sub(r"<!date\^\d+\^", "<!date^EPOCH^", value)
            value = re.sub(r"\b(within|in between \d+ s and|in) \d+ s\b", "in N s", value)
            for backup in new:
                value = re.sub(rf"\b{backup['id']}\b", "NEW", value)
                value = value.replace(human_size(backup["size_mb"]), "SIZE")
        return value

    out: list[tuple[str, Any]] = []
    for event in events:
        if isinstance(event, RecordedCall) and event.method != "users.info":
            out.append((event.method, scrub(event.args)))
        elif isinstance(event, RecordedResponse):
            out.append(("response_url", scrub(event.body)))
    return out


def test_the_console_talks_to_the_app_over_signed_http(console: Console, world: Workspace) -> None:
    """Not a shortcut into the app: the console's requests go to the HTTP server, which turns
    away a request signed with another secret, and so it does when the console uses one."""
    slack, server = world.slack, world.server
    assert slack is not None and server is not None
    assert console.sender.app_url == f"{server.url}/slack/events"
    forger = SlackSender(console.sender.app_url, "not-the-signing-secret", slack)
    assert forger.slash_command("list").status == 401
    honest = console.sender
    console.sender = forger
    try:
        before = len(slack.events)
        out = play(console, "/backup list")
        assert "the app answered HTTP 401" in out and "Backup" not in out.split("401", 1)[1]
        assert slack.events[before:] == []
    finally:
        console.sender = honest
    assert "only visible to @alice" in play(console, "/backup list cache-01")


def test_the_console_sends_what_the_http_app_sends(
    console: Console, world: Workspace, tmp_path: Path
) -> None:
    """A second app, built as `backupbot run` builds it, on the same Slack and provider: the
    same commands and button presses make the same Web API calls and response_url posts."""
    slack, simulator, settings = world.slack, sim(world), world.settings
    assert slack is not None and settings is not None and settings.vps_api_token is not None
    environ = {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": "another-secret",
        "SLACK_API_URL": slack.api_url,
        "VPS_API_URL": simulator.base_url,
        "VPS_API_TOKEN": settings.vps_api_token.reveal(),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'http.db'}",
        "BACKUP_OPERATORS": "U_ALICE",
        "BACKUP_APPROVERS": "U_BOB",
        "BACKUP_AUDITORS": "U_BOB",
    }
    watch = WatchSettings(
        first_poll=0.1, max_poll=0.1, tick=0.05, thread_grace=timedelta(seconds=30)
    )
    bot = build_app(load_settings(environ=environ, env_file=None), watch_settings=watch)
    server = bot.http_server(host="127.0.0.1", port=0).start()
    sender = SlackSender(server.url, "another-secret", slack)
    bot.start_workers()
    backup_id = int(simulator.add_backup(12346, size_mb=512)["id"])

    drawn = [""]  # what the console drew for the last line

    def by_console(user: str, line: str) -> None:
        console.user_id = user
        if line.startswith("/click "):  # by number: the HTTP app's message has the button too
            line = re.findall(rf"\[(\d+)\] {line.removeprefix('/click ')}", drawn[0])[-1]
        drawn[0] = play(console, line)
        if line.endswith("the same"):
            console.wait(10, ". Expires:")

    def by_http(user: str, line: str) -> None:
        if line.startswith("/click "):  # press the button on the newest message, as drawn
            label = line.removeprefix("/click ")
            message = [m for m in slack.messages if not m.deleted][-1]
            [(action_id, value)] = [
                (str(e["action_id"]), e.get("value"))
                for b in message.blocks
                if b["type"] == "actions"
                for e in b["elements"]
                if e["type"] == "button" and e["text"]["text"].startswith(label)
            ]
            action = SlackSender.action_for(message.blocks, action_id)
            assert action.get("value") == value
            answer = sender.block_actions(action, user_id=user, message=message)
        else:
            answer = sender.slash_command(line.split(" ", 1)[1], user_id=user, channel_id="C_OPS")
        assert answer.status == 200
        wanted = ". Expires:" if line.endswith("the same") else ""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            count = len(slack.events)
            time.sleep(0.25)  # the burst is over when nothing came for a while
            quiet = count > before and count == len(slack.events)
            if quiet and wanted in repr(slack.events[before:]):
                break

    try:
        for user, line in [
            ("U_ALICE", "/backup list"),
            ("U_ALICE", "/click Next"),  # a button press: block_actions, replace_original
            ("U_ALICE", "/backup list db-server-01 manual"),
            ("U_ALICE", f"/backup delete {backup_id}"),
            ("U_CAROL", "/backup create web-server-01"),
            ("U_ALICE", "/backup create web-server-01 the same"),  # a thread reply follows
        ]:
            known = {b["id"] for b in backups(world)}
            before = len(slack.events)
            by_console(user, line)
            sent_by_console = slack.events[before:]
            before = len(slack.events)
            by_http(user, line)
            sent_by_http = slack.events[before:]
            new = [b for b in backups(world) if b["id"] not in known]
            assert sent_by_console, line
            assert _normalized(sent_by_console, new) == _normalized(sent_by_http, new), line
            if line.endswith("the same"):
                replies = [
                    e
                    for e in sent_by_console
                    if isinstance(e, RecordedCall) and e.args.get("thread_ts")
                ]
                assert replies, sent_by_console
    finally:
        server.stop()
        bot.close()


# -- nothing left running -------------------------------------------------------------------------


def _refused(url: str) -> bool:
    host, port = url.split("//")[1].split("/")[0].split(":")
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, int(port))) != 0


def test_run_stops_every_thread_and_port(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    signals = {signal.SIGTERM: signal.getsignal(signal.SIGTERM)}
    signals[signal.SIGHUP] = signal.getsignal(signal.SIGHUP)
    seen: dict[str, str] = {}
    directories: list[Path] = []
    real_start = Workspace.start

    def spy(self: Workspace) -> Workspace:
        started = real_start(self)
        assert self.slack is not None and self.server is not None and self.directory is not None
        seen.update(slack=self.slack.api_url, app=self.server.url, sim=sim(self).base_url)
        directories.append(self.directory)
        assert signal.getsignal(signal.SIGTERM) != signals[signal.SIGTERM]  # run's own
        return started

    script = tmp_path / "chat.txt"
    script.write_text("/backup list\n/backup create cache-01\n/wait 10 completed\n/quit\n/who\n")
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="latin-1", write_through=True)  # not UTF-8, strict
    Workspace.start = spy  # type: ignore[method-assign]
    try:
        code = run(ConsoleOptions(script=script, workspace=FAST), io.StringIO(), out)
    finally:
        Workspace.start = real_start  # type: ignore[method-assign]
    screen = raw.getvalue().decode("latin-1")
    assert code == 0, screen
    assert ". Expires:" in screen and "+ backupbot in #ops" in screen
    assert "You are alice" in screen and "/who" not in screen  # /quit stops
    assert out.errors == "strict"  # put back as it was
    assert root.handlers == handlers and root.level == level  # the bot's log is unhooked
    assert {s: signal.getsignal(s) for s in signals} == signals
    assert directories and not directories[0].exists()  # database, log: all gone
    deadline = time.monotonic() + 5
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [t.name for t in set(threading.enumerate()) - before] == []
    assert all(_refused(url) for url in seen.values()), seen


def _environ(**extra: str) -> dict[str, str]:
    """This environment without the bot's settings (the console must not need them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VPS_", "SLACK_", "BACKUP_"))}
    env.pop("DATABASE_URL", None)
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _cli(*args: str, stdin: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env=_environ(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(stdin, timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)  # nothing of its process group is left running
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_demo_plays_a_script_on_stdin_without_reading_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SLACK_BOT_TOKEN=not-a-token\nDATABASE_URL=nonsense\n")
    script = """
        /backup list web-server-01
        /backup create web-server-01 before deploy
        /wait 15 completed
        /as carol
        /backup create web-server-01
        /expect BACKUP_OPERATORS
    """
    result = _cli("demo", "--complete-after", "0.5", "--poll", "0.2", stdin=script, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Backups of web-server-01" in result.stdout
    assert re.search(r"Backup \d+ of web-server-01 \(12345\) completed", result.stdout)
    assert "needs the operator role" in result.stdout
    assert "\x1b[" not in result.stdout  # no colours into a pipe
    assert "Traceback" not in result.stderr


def test_console_script_file_and_its_exit_status(tmp_path: Path) -> None:
    script = tmp_path / "check.txt"
    script.write_text("# a comment\n/backup help\n/expect /backup create SERVER\n/expect nope\n")
    result = _cli("console", "--script", str(script), "--as", "bob", stdin="", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "You are bob" in result.stdout
    assert "✓ found" in result.stdout and "✗ expected “nope”" in result.stdout


def test_an_unknown_person_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["console", "--as", "dave", "--script", "-"]) == 2
    assert "nobody called 'dave'" in capsys.readouterr().err


class _Screen:
    """Everything a child process writes to a file descriptor, read as it comes on a thread (so
    the child never blocks on a full pipe or pty)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._fd, 4096)
            except OSError:  # EIO: the pty's other side is closed
                return
            if not chunk:
                return
            with self._lock:
                self._chunks.append(chunk)

    @property
    def text(self) -> str:
        with self._lock:
            return b"".join(self._chunks).decode("utf-8", "replace")

    def wait_for(self, wanted: str, count: int = 1, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.text.count(wanted) < count:
            assert time.monotonic() < deadline, f"no {wanted!r} in {self.text!r}"
            time.sleep(0.02)

    def join(self) -> None:
        self._thread.join(5)


def _leftovers(directory: Path) -> list[Path]:
    return list(directory.glob("backupbot-console-*"))


def test_demo_in_a_terminal_answers_and_leaves_on_ctrl_d(tmp_path: Path) -> None:
    """The demo as a person runs it: in a terminal (a pty), on a dumb one here (no colours, no
    cursor tricks), typing a command, then Ctrl-D."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    main_fd, terminal_fd = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "demo", "--complete-after", "0.5", "--poll", "0.2"],
        cwd=tmp_path,
        env=_environ(TMPDIR=str(temp), TERM="dumb"),
        stdin=terminal_fd,
        stdout=terminal_fd,
        stderr=terminal_fd,
        start_new_session=True,
    )
    os.close(terminal_fd)
    screen = _Screen(main_fd)
    try:
        screen.wait_for("alice in #ops> ")
        assert _leftovers(temp)  # the demo's database and log, while it runs
        os.write(main_fd, b"/backup list cache-01\n")
        screen.wait_for("only visible to @alice")
        screen.wait_for("alice in #ops> ", count=2)
        os.write(main_fd, b"\x04")  # Ctrl-D
        assert process.wait(timeout=20) == 0, screen.text
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        screen.join()
        os.close(main_fd)
    assert re.search(r"Backup \d+ · cache-01", screen.text)
    assert not re.search(r"\x1b\[[0-9;]*m", screen.text)  # TERM=dumb: no colours
    assert "Traceback" not in screen.text
    assert _leftovers(temp) == []


def test_sigterm_leaves_as_cleanly_as_quit(tmp_path: Path) -> None:
    """SIGTERM (or SIGHUP: the terminal tab was closed) in the middle of a command."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "console", "--script", "-"],
        cwd=tmp_path,
        env=_environ(TMPDIR=str(temp)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert process.stdin is not None and process.stdout is not None
    screen = _Screen(process.stdout.fileno())
    try:
        process.stdin.write(b"/backup list cache-01\n/sleep 60\n")
        process.stdin.flush()
        screen.wait_for("> /sleep 60")
        assert _leftovers(temp)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 128 + signal.SIGTERM, screen.text
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        screen.join()
        process.stdin.close()
        process.stdout.close()
    assert "Traceback" not in screen.text
    assert _leftovers(temp) == []
