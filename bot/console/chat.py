"""The terminal chat: what a person types goes to the bot as Slack would send it; what the bot
does in Slack is drawn in the terminal.

Input: `/backup …` becomes a signed slash-command request to the app's `/slack/events`; a number
(or `/click LABEL`) presses a button or picks a menu option, sending the `block_actions` payload
Slack would send for that message; everything else starting with `/` is the console's own (see
`HELP`). Output: every Web API call and response_url post the bot makes reaches the Slack double,
whose model of the workspace (messages, edits, threads, ephemeral messages) the console diffs
after each one and draws: new messages, "(updated)" ones, replaced ones, thread replies indented
under a quote of their parent. A message can arrive at any time (the watcher's thread reply does):
it is printed above the prompt without eating what the person was typing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from bot.console.options import ConsoleError
from bot.console.render import (
    Choice,
    Names,
    Style,
    blocks_to_lines,
    clean,
    confirm_question,
    display_width,
    mrkdwn,
    plain,
    stand_ins_for,
    wrap,
)
from bot.sandbox.slack import Message, RecordedCall, RecordedResponse, SlackDouble, SlackSender
from bot.sandbox.workspace import PEOPLE, ROOMS, Workspace

HELP = """\
Type what you would type in Slack; Backup Bot answers `/backup …`, e.g.
  /backup help                     /backup list web-server-01 manual
  /backup create web-server-01 before deploy
  /backup delete 1003               /backup restore 103 bad deploy
The console's own commands:
  1, 2, …          press the button or pick the menu option with that number
  /click WORDS     press the button or option these words name: its label (Next), its value
                   (delete:1003) or its label and row (delete 1003); never a guess between two
  y / n            answer a confirm dialog ("Delete this backup?")
  (a line)         fill in an open form's text box and submit it; /cancel closes the form
  /as NAME         be someone else (alice, bob, carol, or a user id such as U_BOB)
  /in CHANNEL      talk in another channel (#ops, #random), or in your DM with the bot (dm)
  /who             who you are, the people and channels, and everyone's roles
  /home            open Backup Bot's App Home tab
  /sweep           run the backup health sweep now: alerts (and recoveries) go to #ops
  /choices         list the buttons and options you can still press
  /trace on|off    also show every Web API call the bot makes
  /wait [SECONDS] [TEXT]   wait for the bot's next message (containing TEXT), 30 s at most
  /expect TEXT     fail the script unless TEXT was in the answer to the last command
  /sleep SECONDS   pause
  /help            this help           /quit (or Ctrl-D, Ctrl-C)   leave"""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_VIEW_METHODS = ("views.open", "views.update", "views.publish")
_MY_DM = "dm"  # where `/in dm` puts you: the bot's DM with whoever you are at the moment

log = logging.getLogger(__name__)


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


# -- the terminal ----------------------------------------------------------------------------


class Terminal:
    """Writes lines; in interactive mode, lines arriving while the prompt waits are printed above
    it and the prompt is redrawn with what the person had typed so far.

    With readline on a terminal, the rows the prompt and the typed text take (wrapped at the
    terminal's width) are cleared first and redrawn after. Without readline, into a pipe, or on a
    dumb terminal nothing is cleared: the message starts on a new line and the prompt is printed
    again (what was typed stays on the row above, and is still part of the line being typed).
    `width` (a function: terminals get resized) wraps long lines; characters the output's encoding
    cannot show become ASCII stand-ins or "?", never an error."""

    def __init__(
        self,
        out: TextIO,
        *,
        interactive: bool,
        width: Callable[[], int] | None = None,
        dumb: bool = False,
        readline: Any = None,  # what tells what was typed so far; default: readline, if any
    ) -> None:
        self._out = out
        self._interactive = interactive
        self._width = width
        self._lock = threading.Lock()
        self._prompt: str | None = None
        self._readline: Any = readline
        self._tty = _isatty(out)
        self._dumb = dumb
        self._encoding = getattr(out, "encoding", None) or "utf-8"
        self._stand_ins = stand_ins_for(self._encoding)
        if interactive and readline is None:
            with contextlib.suppress(ImportError):
                import readline as module

                self._readline = module

    def fit(self, text: str) -> str:
        """`text` as the output's encoding can show it."""
        if self._stand_ins is None:
            return text
        text = text.translate(self._stand_ins)
        try:
            return text.encode(self._encoding, "replace").decode(self._encoding)
        except LookupError:
            return text.encode("ascii", "replace").decode("ascii")

    def write(self, lines: Iterable[str]) -> None:
        width = self._width() if self._width is not None else 0
        rows = [row for line in lines for row in (wrap(line, width) if width > 0 else [line])]
        text = self.fit("".join(f"{row}\n" for row in rows))
        with self._lock:
            if self._prompt is None:
                self._out.write(text)
            elif self._readline is not None and self._tty and not self._dumb:
                typed = self._readline.get_line_buffer()
                shown = display_width(self._prompt + typed)
                columns = max(1, shutil.get_terminal_size().columns)
                up = max(0, math.ceil(shown / columns) - 1)
                clear = "\r\x1b[2K" + "\x1b[1A\x1b[2K" * up
                self._out.write(clear + text + self.fit(self._prompt + typed))
            else:
                self._out.write("\n" + text + self.fit(self._prompt))
            self._out.flush()

    def read(self, prompt: str) -> str:
        """One line from the person (EOFError on Ctrl-D, KeyboardInterrupt on Ctrl-C)."""
        with self._lock:
            self._prompt = prompt
        try:
            return input(self.fit(prompt))
        finally:
            with self._lock:
                self._prompt = None


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


# -- choices ---------------------------------------------------------------------------------


@dataclass
class NumberedChoice:
    """Where a numbered choice lives: a message in the double (or an ack only the app sent)."""

    choice: Choice
    channel_id: str
    message_ts: str | None  # None: a message that exists only as the app's HTTP answer (ack)
    revision: int  # the message's number of edits when the choice was drawn
    visible_to: str | None  # ephemeral: the only person who can press it
    local_blocks: list[dict[str, Any]] = field(default_factory=list)  # an ack's blocks
    local_ts: str = ""  # the ts Slack would give the ack's message
    in_view: bool = False


@dataclass(frozen=True)
class OpenForm:
    """A modal with one text box, as the app opened it: what the next line typed fills in."""

    view: dict[str, Any]
    block_id: str
    action_id: str
    label: str

    @classmethod
    def of(cls, event: RecordedCall) -> OpenForm | None:
        if event.method not in ("views.open", "views.update"):
            return None
        view = (event.response or {}).get("view")
        if not isinstance(view, dict):
            return None
        inputs = [
            block
            for block in view.get("blocks") or []
            if block.get("type") == "input"
            and (block.get("element") or {}).get("type") == "plain_text_input"
        ]
        if len(inputs) != 1:
            return None
        block = inputs[0]
        label = clean(str((block.get("label") or {}).get("text", "Answer")))
        return cls(view, str(block.get("block_id")), str(block["element"].get("action_id")), label)

    def errors_in(self, answer: str) -> dict[str, str]:
        """`response_action: errors` in the app's answer: the modal stays open."""
        try:
            body = json.loads(answer) if answer.strip() else {}
        except ValueError:
            return {}
        if not isinstance(body, dict) or body.get("response_action") != "errors":
            return {}
        return {str(k): clean(str(v)) for k, v in (body.get("errors") or {}).items()}


@dataclass
class DrawnState:
    """How a message looked when it was last drawn, so an edit or deletion is drawn once."""

    edits: int
    deleted: bool


class ScriptFailed(Exception):
    pass


class Console:
    """One person at a terminal, talking to the bot in `workspace` as any of its users."""

    def __init__(
        self,
        workspace: Workspace,
        out: TextIO,
        *,
        user_id: str = "U_ALICE",
        channel_id: str = "C_OPS",
        style: Style | None = None,
        interactive: bool = False,
        trace: bool = False,
        quiet_seconds: float = 0.3,
        answer_timeout: float = 15.0,
        width: Callable[[], int] | None = None,
        dumb: bool = False,
    ) -> None:
        assert workspace.slack is not None and workspace.sender is not None
        assert workspace.bot is not None
        self.workspace = workspace
        self.slack: SlackDouble = workspace.slack
        self.sender: SlackSender = workspace.sender
        self.style = style or Style(False)
        self.interactive = interactive
        self.trace = trace
        self.quiet_seconds = quiet_seconds
        self.answer_timeout = answer_timeout
        self.terminal = Terminal(out, interactive=interactive, width=width, dumb=dumb)
        self.names = Names(user=self._user_name, channel=self._channel_name)
        resolved_user = self._resolve_user(user_id)
        if resolved_user is None:
            people = ", ".join(self._user_name(u) or u for u in self._people())
            raise ConsoleError(f"there is nobody called {user_id!r} here; choose one of {people}")
        self.user_id = resolved_user
        resolved_channel = self._resolve_channel(channel_id)
        if resolved_channel is None:
            rooms = ", ".join(f"#{self._channel_name(c)}" for c in self._channels())
            raise ConsoleError(f"there is no channel {channel_id!r} here; choose one of {rooms}")
        self._room = resolved_channel  # a channel id, or _MY_DM
        self.transcript: list[str] = []  # every line shown, without colours
        self.output: list[str] = []  # the lines the bot's messages drew (what /wait reads)
        self.failures: list[str] = []
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._seen: dict[tuple[str, str], DrawnState] = {}
        self._choices: dict[int, NumberedChoice] = {}
        self._next_number = 1
        self._shown = 0  # messages, errors and views drawn so far (trace lines do not count)
        self._last_shown_at = 0.0
        self._turn_start = 0  # `output` index where the answer to the last command starts
        self._search_from = 0  # `/wait TEXT` looks in `output` from here
        self._async_from = 0  # `/wait` (no text) wants something drawn after this count
        self._pending: NumberedChoice | None = None  # a confirm dialog waiting for y/n
        self._form: OpenForm | None = None  # a modal with a text input, waiting to be filled
        self._quit = False
        for message in self.slack.messages:  # what was there before this console: not news
            self._seen[(message.channel, message.ts)] = DrawnState(
                len(message.edits), message.deleted
            )
        self._unsubscribe: Callable[[], None] | None = self.slack.on_event(self._on_event)

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    @property
    def channel_id(self) -> str:
        """Where you type: a channel, or (after `/in dm`) the DM of whoever you are now."""
        if self._room == _MY_DM:
            return self.slack.open_dm(self.user_id)
        return self._room

    @channel_id.setter
    def channel_id(self, channel_id: str) -> None:
        self._room = channel_id

    # -- names and people ----------------------------------------------------------------

    def _user_name(self, user_id: str) -> str | None:
        user = self.slack.user(user_id)
        return user.name if user is not None else None

    def _channel_name(self, channel_id: str) -> str | None:
        channel = self.slack.channel(channel_id)
        if channel is None:
            return None
        if channel.im_user:
            return f"DM with @{self._user_name(channel.im_user) or channel.im_user}"
        return channel.name

    def _resolve_user(self, wanted: str) -> str | None:
        key = wanted.strip().removeprefix("@").removeprefix("<@").removesuffix(">").casefold()
        for person in self._people():
            if key in (person.casefold(), (self._user_name(person) or "").casefold()):
                return person
        return None

    def _resolve_channel(self, wanted: str) -> str | None:
        key = wanted.strip().removeprefix("#").casefold()
        for channel_id in self._channels():
            channel = self.slack.channel(channel_id)
            if channel is not None and key in (channel.id.casefold(), channel.name.casefold()):
                return channel.id
        if key in (_MY_DM, "direct", "dm with the bot"):
            return _MY_DM
        return None

    def _people(self) -> list[str]:
        return [p.user_id for p in PEOPLE if self.slack.user(p.user_id) is not None]

    def _channels(self) -> list[str]:
        return [r.channel_id for r in ROOMS]

    def _roles(self, user_id: str) -> str:
        assert self.workspace.bot is not None
        roles = self.workspace.bot.service.policy.roles_of(user_id)
        order = ["admin", "operator", "approver", "auditor", "viewer"]
        names = sorted((r.value for r in roles), key=order.index)
        return ", ".join(names) or "no role"

    def prompt(self) -> str:
        if self._form is not None:
            return f"{self._form.label} (/cancel closes the form)> "
        if self._pending is not None:
            _question, yes, no = confirm_question(self._pending.choice.confirm or {}, self.names)
            return f"{yes} (y) or {no} (n)? "
        return f"{self._user_name(self.user_id)} in {self._where(self.channel_id)}> "

    def _where(self, channel_id: str) -> str:
        channel = self.slack.channel(channel_id)
        if channel is not None and channel.im_user:
            if channel.im_user == self.user_id:
                return "your DM with the bot"
            return self._channel_name(channel_id) or channel_id
        return f"#{self._channel_name(channel_id) or channel_id}"

    # -- output --------------------------------------------------------------------------

    def say(self, *lines: str, shown: bool = False) -> None:
        """Print lines (console notes, messages); `shown` marks them as the bot's output."""
        with self._changed:
            plain_lines = [strip_ansi(line) for line in lines]
            self.transcript.extend(plain_lines)
            self.terminal.write(lines)
            if shown:
                self.output.extend(plain_lines)
                self._shown += 1
                self._last_shown_at = time.monotonic()
            self._changed.notify_all()

    def note(self, text: str) -> None:
        self.say(self.style.dim(text))

    def banner(self) -> None:
        s = self.style
        people = " · ".join(f"{self._user_name(u)} ({self._roles(u)})" for u in self._people())
        rooms = []
        for channel_id in self._channels():
            channel = self.slack.channel(channel_id)
            if channel is not None:
                member = "" if channel.member else " (the bot is not invited there)"
                rooms.append(f"#{channel.name}{member}")
        self.say(
            s.bold("Backup Bot console") + " — the real bot, a simulated Slack, a simulated VPS "
            "provider.",
            f"You are {s.bold(self._user_name(self.user_id) or self.user_id)} in "
            f"{self._where(self.channel_id)}. People: {people}.",
            f"Channels: {', '.join(rooms)}. Try {s.code('/backup list')}, "
            f"{s.code('/backup create web-server-01 before deploy')}, "
            f"{s.code('/backup delete ID')}.",
            f"Press buttons by number; {s.code('/as bob')} switches person, "
            f"{s.code('/in #random')} channel; {s.code('/help')} for more, "
            f"{s.code('/quit')} or Ctrl-D to leave.",
            "",
        )

    # -- what the bot does in Slack --------------------------------------------------------

    def _on_event(self, event: RecordedCall | RecordedResponse) -> None:
        """Called by the double for every call and response_url post (on its threads)."""
        with self._changed:
            try:
                self._show_event(event)
            except Exception as exc:  # drawing failed: say so, rather than lose it silently
                log.exception("the console could not show %r", event)
                self._drawing_failed("what the bot did in Slack", exc, "")
            self._diff()

    def _drawing_failed(self, what: str, exc: Exception, text: str) -> None:
        gist = " ".join(clean(text).split())[:200]
        self.say(
            self.style.danger(f"! could not draw {what} ({_one_line(exc)})")
            + (f"; its text: {gist}" if gist else "")
            + self.style.dim(f" (details in {self._log_path()})"),
            shown=True,
        )

    def _log_path(self) -> str:
        path = self.workspace.log_path
        return str(path) if path is not None else "the log"

    def _show_event(self, event: RecordedCall | RecordedResponse) -> None:
        if isinstance(event, RecordedCall):
            if event.method in _VIEW_METHODS and event.ok:
                self._draw_view(event)
            elif not event.ok:
                where = event.args.get("channel")
                suffix = f" in {self._where(clean(str(where)))}" if where else ""
                self.say(
                    self.style.dim(f"· Slack refused {event.method}{suffix}: {event.error}"),
                    shown=True,
                )
            elif self.trace:
                self.say(self.style.dim(f"· {event.method}{_brief(event.args)} → ok"))
        elif not event.ok:
            self.say(
                self.style.dim(f"· a response_url post was refused: {event.error}"),
                shown=True,
            )
        elif self.trace:
            self.say(self.style.dim(f"· response_url{_brief(event.body)} → ok"))

    def _diff(self) -> None:
        """Draw what changed in the double's model since the last look."""
        for message in self.slack.messages:
            key = (message.channel, message.ts)
            seen = self._seen.get(key)
            change: str | None
            if seen is None:
                self._seen[key] = DrawnState(len(message.edits), message.deleted)
                if message.deleted:
                    continue
                change = None
            elif message.deleted and not seen.deleted:
                seen.deleted = True
                change = "deleted"
            elif len(message.edits) > seen.edits:
                seen.edits = len(message.edits)
                via = message.edits[-1].via
                change = "replaced" if via == "response_url" else "updated"
            else:
                continue
            try:
                self._draw_message(message, change)
            except Exception as exc:
                log.exception("the console could not draw message %s in %s", key[1], key[0])
                self._drawing_failed("a message", exc, message.text)

    def _draw_message(self, message: Message, change: str | None) -> None:
        s = self.style
        who = (
            "backupbot"
            if message.user == self.slack.bot_user_id
            else "@" + (self._user_name(message.user) or message.user)
        )
        head = [s.bold(who), "in", self._where(message.channel)]
        if message.ephemeral:
            seer = self._user_name(message.visible_to or "") or message.visible_to
            head.append(s.dim(f"· only visible to @{seer}"))
        reply = message.thread_ts is not None and message.thread_ts != message.ts
        indent = "    " if reply else ""
        lines: list[str] = []
        if change == "deleted":
            self.say(f"{indent}✗ {' '.join(head)} deleted “{self._gist(message)}”", shown=True)
            return
        if change == "updated":
            was = _first_line(message.edits[-1].text) if message.edits else ""
            head.append(s.dim(f"· (updated; was “{self._short(was)}”)"))
        elif change == "replaced":
            was = _first_line(message.edits[-1].text) if message.edits else ""
            head.append(s.dim(f"· (replaces “{self._short(was)}”)"))
        if reply:
            parent = self.slack.message(message.channel, message.thread_ts or "")
            quote = self._gist(parent) if parent is not None else message.thread_ts
            lines.append(f"{indent}↳ {' '.join(head)} · in the thread of “{quote}”")
        else:
            lines.append("┌ " + " ".join(head))
        body = self._body(
            message.blocks,
            message.text,
            lambda choice: self._number(
                NumberedChoice(
                    choice,
                    message.channel,
                    message.ts,
                    len(message.edits),
                    message.visible_to if message.ephemeral else None,
                )
            ),
        )
        lines.extend(f"{indent}│ {line}" for line in body)
        lines.extend(f"{indent}│ 📎 {name}" for name in self._files(message))
        self.say(*lines, "", shown=True)

    def _files(self, message: Message) -> list[str]:
        """The files shared in a message, as a person sees their names and sizes."""
        shared = {upload.file_id: upload for upload in self.slack.files}
        found = [shared[file_id] for file_id in message.files if file_id in shared]
        return [f"{upload.filename} ({upload.length:,} bytes)" for upload in found]

    def _body(
        self, blocks: list[dict[str, Any]], text: str, number: Callable[[Choice], int]
    ) -> list[str]:
        if blocks:
            return blocks_to_lines(blocks, self.names, number, self.style)
        return mrkdwn(text, self.names, self.style)

    def _gist(self, message: Message | None) -> str:
        if message is None:
            return ""
        return self._short(_first_line(message.text))

    def _short(self, text: str, width: int = 60) -> str:
        flat = " ".join(strip_ansi(" ".join(mrkdwn(text, self.names))).split())
        return flat if len(flat) <= width else flat[: width - 1] + "…"

    def _number(self, ref: NumberedChoice) -> int:
        number = self._next_number
        self._next_number += 1
        self._choices[number] = ref
        return number

    def _draw_view(self, event: RecordedCall) -> None:
        view = event.args.get("view") or {}
        s = self.style
        if event.method == "views.publish":
            who = self._user_name(str(event.args.get("user_id", ""))) or "?"
            head = f"┌ {s.bold('App Home')} of @{who} (Backup Bot's Home tab)"
        else:
            title = plain(view.get("title"), self.names)
            verb = {"views.open": "opened", "views.update": "updated"}
            head = f"┌ {s.bold('Form')} “{title}” {verb[event.method]} (a modal)"
        body = blocks_to_lines(
            view.get("blocks") or [],
            self.names,
            lambda choice: self._number(NumberedChoice(choice, "", None, 0, None, in_view=True)),
            s,
        )
        lines = [head, *(f"│ {line}" for line in body)]
        form = OpenForm.of(event) if view.get("type") == "modal" else None
        if form is not None:
            self._form = form
            lines.append(
                f"│ {s.dim('type the answer on the next line; it is submitted with Enter')}"
            )
        elif view.get("type") == "modal":
            submit = plain(view.get("submit"), self.names)
            close = plain(view.get("close"), self.names) or "Cancel"
            buttons = " / ".join(b for b in (submit, close) if b)
            lines.append(
                f"│ {s.dim(f'[{buttons}] (only forms with one text box can be filled here)')}"
            )
        self.say(*lines, "", shown=True)

    def submit_form(self, text: str) -> None:
        """The line typed into the open form's text box, submitted as Slack would."""
        form = self._form
        assert form is not None
        start = self._begin_turn()
        values = {form.block_id: {form.action_id: text}}
        answer = self.sender.view_submission(form.view, user_id=self.user_id, values=values)
        errors = form.errors_in(answer.text) if answer.status == 200 else {}
        if answer.status != 200:
            self._form = None
            self._ack(answer.status, answer.text, "the form")
        elif errors:
            self.say(*(self.style.danger(f"! {message}") for message in errors.values()))
            return  # the form stays open, as in Slack
        else:
            self._form = None
            self.note("Form submitted.")
        self._settle(start)

    # -- sending ---------------------------------------------------------------------------

    def slash(self, text: str) -> None:
        """`/backup …` (or any slash command the app knows), as Slack would send it."""
        command, _, rest = text.strip().partition(" ")
        start = self._begin_turn()
        answer = self.sender.slash_command(
            rest.strip(), user_id=self.user_id, channel_id=self.channel_id, command=command
        )
        self._ack(answer.status, answer.text, f"{command} {rest}".strip())
        self._settle(start)

    def _ack(self, status: int, text: str, what: str) -> None:
        """The app's HTTP answer: Slack shows a non-empty one to the person alone."""
        if status != 200:
            self.say(
                self.style.danger(
                    f"! the app answered HTTP {status} to {what}: {clean(text)[:200]}"
                ),
                shown=True,
            )
            return
        if not text.strip():
            return
        try:
            body = json.loads(text)
        except ValueError:
            body = {"text": text}
        if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
            return
        with self._changed:
            fake_ts = f"{time.time():.6f}"
            blocks = list(body.get("blocks") or [])
            public = body.get("response_type") == "in_channel"
            head = [self.style.bold("backupbot"), "in", self._where(self.channel_id)]
            if not public:
                head.append(self.style.dim(f"· only visible to @{self._user_name(self.user_id)}"))
            lines = ["┌ " + " ".join(head)]
            channel_id, user_id = self.channel_id, self.user_id
            body_lines = self._body(
                blocks,
                str(body.get("text", "")),
                lambda choice: self._number(
                    NumberedChoice(
                        choice,
                        channel_id,
                        None,
                        0,
                        None if public else user_id,
                        local_blocks=blocks,
                        local_ts=fake_ts,
                    )
                ),
            )
            lines.extend(f"│ {line}" for line in body_lines)
            self.say(*lines, "", shown=True)

    def pick(self, number: int) -> None:
        ref = self._choices.get(number)
        if ref is None:
            self.note(f"There is no choice {number}. /choices lists the ones you can press.")
            return
        if ref.in_view:
            self.note("Buttons inside forms and the Home tab cannot be pressed from the console.")
            return
        if not self._still_there(ref):
            return
        if ref.choice.confirm:
            question, yes, no = confirm_question(ref.choice.confirm, self.names)
            self._pending = ref
            self.say(f"? {question}", self.style.dim(f"  y = {yes}, n = {no}"))
            return
        self._press(ref)

    def _still_there(self, ref: NumberedChoice) -> bool:
        """Whether the person can still press `ref`: they see its message, and the message is
        the version the choice was drawn from (else a note says why not)."""
        if ref.visible_to is not None and ref.visible_to != self.user_id:
            owner = self._user_name(ref.visible_to)
            self.note(
                f"Only @{owner} can see that message, so only they can press it "
                f"(/as {owner} to be them)."
            )
            return False
        if ref.message_ts is None:
            return True
        message = self._current(ref)
        if message is None:
            self.note("That message is gone, and its buttons with it.")
            return False
        if len(message.edits) != ref.revision:
            self.note("That message has changed since: pick from its newest version.")
            return False
        return True

    def _current(self, ref: NumberedChoice) -> Message | None:
        if ref.message_ts is None:
            return None
        message = self.slack.message(ref.channel_id, ref.message_ts)
        return None if message is None or message.deleted else message

    def answer(self, line: str) -> None:
        """A y/n answer to the pending confirm dialog: "y" presses the button if it is still
        there as it was drawn (the message may have changed while the dialog was open)."""
        ref, self._pending = self._pending, None
        assert ref is not None
        _question, yes, _no = confirm_question(ref.choice.confirm or {}, self.names)
        if line.strip().casefold() not in ("y", "yes", yes.casefold()):
            self.note("Dialog closed; nothing was sent.")
            return
        if self._still_there(ref):
            self._press(ref)

    def _press(self, ref: NumberedChoice) -> None:
        message = self._current(ref)
        if ref.message_ts is not None and message is None:
            self.note("That message is gone, and its buttons with it.")
            return
        blocks = message.blocks if message is not None else ref.local_blocks
        action = _action_as_drawn(blocks, ref.choice)
        if action is None:
            self.note("That button is not on the message any more.")
            return
        start = self._begin_turn()
        if message is not None:
            answer = self.sender.block_actions(
                action, user_id=self.user_id, channel_id=message.channel, message=message
            )
        else:
            answer = self.sender.block_actions(
                action,
                user_id=self.user_id,
                channel_id=ref.channel_id,
                response_url=self.slack.response_url(
                    channel_id=ref.channel_id, user_id=self.user_id
                ),
                container={
                    "type": "message",
                    "message_ts": ref.local_ts,
                    "channel_id": ref.channel_id,
                    "is_ephemeral": True,
                },
            )
        self._ack(answer.status, answer.text, f"pressing “{ref.choice.label}”")
        self._settle(start)

    def click(self, words: str) -> None:
        """Press the one choice on screen that `words` name best (see `Choice.rank`): its exact
        value or label, else whole words of its label and value, else of its row too. When
        several are named equally well nothing is pressed: they are listed with their numbers."""
        if not words.strip():
            self.note("Usage: /click WORDS, e.g. /click Next, /click delete:1003 or /click 2")
            return
        ranked: dict[int, list[int]] = {}
        for number in sorted(self._choices):
            if self._pressable(number):
                rank = self._choices[number].choice.rank(words)
                if rank is not None:
                    ranked.setdefault(rank, []).append(number)
        if not ranked:
            self.note(f"No button or option matching “{words.strip()}” is on screen.")
            return
        found = ranked[min(ranked)]
        if len(found) > 1:
            lines = [f"  [{number}] {self._describe(number)}" for number in found[-10:]]
            more = f" (the newest 10 of {len(found)})" if len(found) > 10 else ""
            self.say(
                self.style.danger(
                    f"“{words.strip()}” could be any of these{more}; nothing was pressed. "
                    "Type its number, or more words (/choices lists everything):"
                ),
                *lines,
            )
            return
        number = found[0]
        self.say(self.style.dim(f"  (pressing [{number}] {self._describe(number)})"))
        self.pick(number)

    def _describe(self, number: int) -> str:
        choice = self._choices[number].choice
        on = f" on “{self._short(choice.context, 50)}”" if choice.context else ""
        return f"{choice.label}{on}"

    def _pressable(self, number: int) -> bool:
        """On a message this person sees, in its newest version."""
        ref = self._choices[number]
        if ref.in_view or ref.visible_to not in (None, self.user_id):
            return False
        if ref.message_ts is None:
            return True
        message = self._current(ref)
        return message is not None and len(message.edits) == ref.revision

    def home(self) -> None:
        event = {
            "token": self.sender.verification_token,
            "team_id": self.sender.team_id,
            "api_app_id": self.sender.api_app_id,
            "type": "event_callback",
            "event_id": f"Ev{int(time.time() * 1000)}",
            "event_time": int(time.time()),
            "event": {
                "type": "app_home_opened",
                "user": self.user_id,
                "channel": self.slack.dm_channel_id(self.user_id),
                "tab": "home",
            },
        }
        start = self._begin_turn()
        answer = self.sender.post(json.dumps(event), "application/json")
        self._ack(answer.status, "", "opening the Home tab")
        self._settle(start)

    # -- waiting ---------------------------------------------------------------------------

    def _begin_turn(self) -> int:
        with self._lock:
            self._turn_start = self._search_from = len(self.output)
            return self._shown

    def _settle(self, start: int) -> None:
        """Wait for the answer: something drawn, the bot's work for it done (a refusal may come
        before its fallback), then a short quiet spell; or a timeout."""
        deadline = time.monotonic() + self.answer_timeout
        with self._changed:
            while self._shown == start:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.note("(no answer yet; it will show up here when it comes)")
                    break
                self._changed.wait(remaining)
            while self._work_pending() and time.monotonic() < deadline:
                self._changed.wait(0.02)
            while True:
                quiet_for = time.monotonic() - self._last_shown_at
                remaining = min(self.quiet_seconds - quiet_for, deadline - time.monotonic())
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            self._async_from = self._shown

    def _work_pending(self) -> bool:
        """Work the bot accepted (for this command or an earlier one) and has not finished."""
        bot = self.workspace.bot
        if bot is None:
            return False
        edge = bot.slack.edge
        return edge.pool.accepted() + edge.urgent.accepted() > 0

    def wait(self, seconds: float, text: str) -> bool:
        """`/wait`: for text since the last command, or for anything new since its answer."""
        deadline = time.monotonic() + seconds
        wanted = text.casefold()
        with self._changed:
            while True:
                if wanted:
                    found = any(
                        wanted in line.casefold() for line in self.output[self._search_from :]
                    )
                else:
                    found = self._shown > self._async_from
                if found:
                    # Let the rest of that burst (a reply and its parent's update) arrive too.
                    while time.monotonic() - self._last_shown_at < self.quiet_seconds:
                        self._changed.wait(self.quiet_seconds)
                    self._search_from = len(self.output)
                    self._async_from = self._shown
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    what = f"“{text}”" if text else "a message from the bot"
                    self.failures.append(f"/wait {seconds:g} {text}".strip())
                    self.say(self.style.danger(f"✗ waited {seconds:g} s for {what}: nothing came"))
                    return False
                self._changed.wait(remaining)

    def expect(self, text: str) -> bool:
        with self._lock:
            answer = self.output[self._turn_start :]
        if any(text.casefold() in line.casefold() for line in answer):
            self.note(f"✓ found “{text}”")
            return True
        self.failures.append(f"/expect {text}")
        self.say(self.style.danger(f"✗ expected “{text}” in the answer to the last command"))
        return False

    # -- the loop --------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._quit

    def handle(self, line: str) -> None:
        """One line typed by the person (or read from a script)."""
        text = line.strip()
        if not text:
            return
        if self._form is not None and not text.startswith("/"):
            self.submit_form(text)
            return
        if self._form is not None:
            self._form = None
            self.note("Form closed; nothing was sent.")
            if text.casefold() == "/cancel":
                return
        if self._pending is not None and not text.startswith("/"):
            self.answer(text)
            return
        if self._pending is not None:
            self._pending = None
            self.note("Dialog closed; nothing was sent.")
        if text.isdecimal():  # not isdigit(): "²" is a digit that int() refuses
            self.pick(int(text))
            return
        if not text.startswith("/"):
            self.note(
                "Plain messages go nowhere here: Backup Bot listens to /backup … "
                "(try /backup help), and /help lists the console's commands."
            )
            return
        word, _, rest = text.partition(" ")
        rest = rest.strip()
        command = word.casefold()
        handler = self._commands().get(command)
        if handler is not None:
            handler(rest)
        elif command == "/backup":
            self.slash(text)
        else:
            self.note(
                f"Backup Bot has no {word} command. It answers /backup …; "
                "/help lists the console's own commands."
            )

    def handle_safely(self, line: str) -> bool:
        """`handle`, but a line that fails (the app timed out, a bug) costs one line on the
        screen and a traceback in the log, not the session. False if it failed."""
        try:
            self.handle(line)
        except Exception as exc:
            log.exception("the console could not handle the line %r", line)
            self._pending = None
            self.say(
                self.style.danger(f"! that did not work: {_one_line(exc)}")
                + self.style.dim(f" (details in {self._log_path()})")
            )
            return False
        return True

    def _commands(self) -> dict[str, Callable[[str], None]]:
        return {
            "/help": lambda _rest: self.say(*HELP.splitlines(), ""),
            "/?": lambda _rest: self.say(*HELP.splitlines(), ""),
            "/as": self._as,
            "/in": self._in,
            "/channel": self._in,
            "/who": lambda _rest: self._who(),
            "/whoami": lambda _rest: self._who(),
            "/home": lambda _rest: self.home(),
            "/sweep": lambda _rest: self.sweep(),
            "/click": self.click,
            "/choices": lambda _rest: self._list_choices(),
            "/trace": self._trace,
            "/wait": self._wait_command,
            "/expect": lambda rest: self.expect(rest) and None,
            "/sleep": self._sleep,
            "/quit": self._stop,
            "/exit": self._stop,
        }

    def sweep(self) -> None:
        """`/sweep`: what the background worker does every HEALTH_SWEEP_MINUTES, now."""
        bot = self.workspace.bot
        if bot is None or bot.health is None:
            self.note("This bot has no health monitor.")
            return
        start = self._begin_turn()
        report = bot.health.sweep(force=True)
        if report is None:
            self.note("Another sweep is running just now; try again in a moment.")
            return
        if report.problem is not None:
            self.note(f"Sweep: the provider did not answer ({report.problem}).")
            return
        where = bot.health.settings.alerts_channel
        posted = f"{report.posted} posted in {self._where(where)}" if where else "none posted"
        self.note(
            f"Swept {report.servers} servers ({report.backups} backups): {report.unhealthy} "
            f"{'needs' if report.unhealthy == 1 else 'need'} attention; "
            f"{len(report.opened)} new incidents, {len(report.resolved)} "
            f"resolved; alerts and recovery replies: {posted}."
        )
        if report.posted:
            self._settle(start)

    def _stop(self, _rest: str) -> None:
        self._quit = True

    def _as(self, rest: str) -> None:
        user_id = self._resolve_user(rest) if rest else None
        if user_id is None:
            people = ", ".join(f"{self._user_name(u)} ({u})" for u in self._people())
            self.note(f"Who? The people here are {people}.")
            return
        self.user_id = user_id
        where = f", in {self._where(self.channel_id)}" if self._room == _MY_DM else ""
        self.note(f"You are now {self._user_name(user_id)} ({self._roles(user_id)}){where}.")

    def _in(self, rest: str) -> None:
        channel_id = self._resolve_channel(rest) if rest else None
        if channel_id is None:
            rooms = ", ".join(f"#{self._channel_name(c)}" for c in self._channels())
            self.note(f"Which channel? There are {rooms} (and `dm`, your DM with the bot).")
            return
        self.channel_id = channel_id
        channel = self.slack.channel(self.channel_id)
        member = "" if channel is None or channel.member else " (the bot is not a member here)"
        self.note(f"You are now in {self._where(self.channel_id)}{member}.")

    def _who(self) -> None:
        lines = [f"You are {self._user_name(self.user_id)} in {self._where(self.channel_id)}."]
        for user_id in self._people():
            me = "  ← you" if user_id == self.user_id else ""
            lines.append(f"  {self._user_name(user_id):<8} {user_id:<9} {self._roles(user_id)}{me}")
        for channel_id in self._channels():
            channel = self.slack.channel(channel_id)
            if channel is not None:
                member = "the bot is a member" if channel.member else "the bot is not a member"
                lines.append(f"  #{channel.name:<7} {channel.id:<9} {member}")
        self.say(*lines)

    def _list_choices(self) -> None:
        lines = []
        for number in sorted(self._choices):
            if not self._pressable(number):
                continue
            lines.append(f"  [{number}] {self._describe(number)}")
        self.say(*(lines[-30:] or ["  (nothing to press)"]))

    def _trace(self, rest: str) -> None:
        self.trace = rest.strip().casefold() not in ("off", "no", "0", "false")
        self.note(f"Tracing Web API calls is {'on' if self.trace else 'off'}.")

    def _wait_command(self, rest: str) -> None:
        seconds, text = 30.0, rest
        first, _, remainder = rest.partition(" ")
        with contextlib.suppress(ValueError):
            seconds, text = float(first), remainder
        self.wait(seconds, text.strip())

    def _sleep(self, rest: str) -> None:
        try:
            seconds = float(rest)
        except ValueError:
            self.note("Usage: /sleep SECONDS")
            return
        time.sleep(max(0.0, seconds))

    def run_lines(self, lines: Iterable[str]) -> int:
        """A script: each line is echoed after the prompt, as if typed. 1 if a check failed."""
        for raw in lines:
            line = raw.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            self.say(self.prompt() + line)
            if not self.handle_safely(line):
                self.failures.append(line)
            if self._quit:
                break
        return 1 if self.failures else 0

    def run_interactive(self) -> int:
        while not self._quit:
            prompt = self.prompt()
            try:
                line = self.terminal.read(prompt)
            except EOFError:
                self.terminal.write([""])
                break
            with self._lock:
                self.transcript.append(prompt + line)
            self.handle_safely(line)
        return 0


def _action_as_drawn(blocks: list[dict[str, Any]], choice: Choice) -> dict[str, Any] | None:
    """The `actions[0]` for the element `choice` was drawn from: found by its block_id and
    action_id (by position only in an app's answer, whose blocks may have no ids), and only if
    it is still that element (the same button value, or a menu that still has the option)."""
    if choice.block_id:
        candidates = [b for b in blocks if str(b.get("block_id", "")) == choice.block_id]
    else:
        candidates = blocks[choice.block_index : choice.block_index + 1]
    try:
        action = SlackSender.action_for(
            candidates, choice.action_id, choice.value if choice.option else None
        )
    except ValueError:
        return None
    if choice.option:
        drawn = (action.get("selected_option") or {}).get("value")
    else:
        drawn = action.get("value")
    return action if drawn == choice.value else None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    return f"{name}: {text[:200]}" if text else name


def _first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0] if text else ""


def _brief(args: Mapping[str, Any]) -> str:
    shown = []
    for key, value in args.items():
        if key in ("blocks", "text", "view", "attachments") or value in (None, ""):
            continue
        if isinstance(value, str | int | float | bool):
            shown.append(clean(f"{key}={value}"))
    return f"({', '.join(shown)})" if shown else ""
