"""The terminal chat: scripted conversations with the real app, checked for facts (ids, sizes,
who), not for layout; the same Web API calls as the HTTP app; nothing left running afterwards."""

from __future__ import annotations

import io
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from bot.config import load_settings
from bot.console import ConsoleOptions, WorkspaceOptions, run
from bot.console.chat import Console
from bot.console.render import Names, format_date, mrkdwn
from bot.console.workspace import Workspace
from bot.simulator import Simulator
from bot.slack.app import HttpServer, build_app
from bot.slack.blocks import PAGE_SIZE, human_size
from bot.slackdouble import Event, RecordedCall, RecordedResponse, SlackSender

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
    assert "completed in about" in done and human_size(finished["size_mb"]) in done
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


def test_an_ephemeral_card_can_be_pressed_only_by_its_reader(
    console: Console, world: Workspace
) -> None:
    backup_id = int(sim(world).add_backup(12346)["id"])
    card = play(console, f"/backup delete {backup_id}")
    number = re.findall(r"\[(\d+)\] Delete\b", card)[-1]
    out = play(console, f"/as bob\n{number}")
    assert "Only @alice can see that message" in out
    assert sim(world).backup(backup_id) is not None


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
    assert "MANUAL BACKUPS" in out and "automatic ·" not in out.split("MANUAL BACKUPS")[1]


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


def test_trace_shows_every_web_api_call(console: Console) -> None:
    out = play(console, "/trace on\n/backup list cache-01")
    assert "· response_url(response_type=ephemeral, replace_original=False) → ok" in out
    quiet = play(console, "/trace off\n/backup list cache-01")
    assert "· response_url" not in quiet and "BACKUPS OF CACHE-01" in quiet


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


# -- the same app as over HTTP --------------------------------------------------------------------


def _normalized(events: list[Event]) -> list[tuple[str, Any]]:
    """What the bot sent Slack, without the per-run ids and the cached people lookups."""

    def scrub(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items() if k not in ("ts", "thread_ts")}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    out: list[tuple[str, Any]] = []
    for event in events:
        if isinstance(event, RecordedCall) and event.method != "users.info":
            out.append((event.method, scrub(event.args)))
        elif isinstance(event, RecordedResponse):
            out.append(("response_url", scrub(event.body)))
    return out


def test_the_console_sends_what_the_http_app_sends(
    console: Console, world: Workspace, tmp_path: Path
) -> None:
    """A second app, built as `backupbot run` builds it, on the same Slack and provider."""
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
    bot = build_app(load_settings(environ=environ, env_file=None))
    server = HttpServer(bot, host="127.0.0.1", port=0).start()
    sender = SlackSender(server.url, "another-secret", slack)
    backup_id = int(simulator.add_backup(12346, size_mb=512)["id"])
    try:
        for user, text in [
            ("U_ALICE", "list"),
            ("U_ALICE", "list db-server-01 manual"),
            ("U_ALICE", f"delete {backup_id}"),
            ("U_CAROL", "create web-server-01"),
        ]:
            console.user_id = user
            before = len(slack.events)
            console.handle(f"/backup {text}")
            by_console = _normalized(slack.events[before:])

            before, answered = len(slack.events), len(slack.responses)
            assert sender.slash_command(text, user_id=user, channel_id="C_OPS").status == 200
            deadline = time.monotonic() + 10
            while len(slack.responses) == answered and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)
            by_http = _normalized(slack.events[before:])
            assert by_console and by_console == by_http, text
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
    seen: dict[str, str] = {}
    real_start = Workspace.start

    def spy(self: Workspace) -> Workspace:
        started = real_start(self)
        assert self.slack is not None and self.server is not None
        seen.update(slack=self.slack.api_url, app=self.server.url, sim=sim(self).base_url)
        return started

    script = tmp_path / "chat.txt"
    script.write_text("/backup list\n/backup create cache-01\n/wait 10 completed\n/quit\n/who\n")
    out = io.StringIO()
    Workspace.start = spy  # type: ignore[method-assign]
    try:
        code = run(ConsoleOptions(script=script, workspace=FAST), io.StringIO(), out)
    finally:
        Workspace.start = real_start  # type: ignore[method-assign]
    assert code == 0, out.getvalue()
    assert "completed in about" in out.getvalue()
    assert "You are alice" in out.getvalue() and "/who" not in out.getvalue()  # /quit stops
    deadline = time.monotonic() + 5
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [t.name for t in set(threading.enumerate()) - before] == []
    assert all(_refused(url) for url in seen.values()), seen


def _cli(*args: str, stdin: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VPS_", "SLACK_", "BACKUP_"))}
    env.pop("DATABASE_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(ROOT)},
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
    assert "BACKUPS OF WEB-SERVER-01" in result.stdout
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
