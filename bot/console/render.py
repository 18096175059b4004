"""Slack messages as terminal text: mrkdwn, `<…>` tokens and Block Kit, with numbered choices.

Pure functions of a message's blocks and a few lookups (user and channel names, the clock), so the
console can draw anything the bot posts and the tests can check the drawing without a terminal.
Interactive elements (buttons, overflow and select options) become `Choice`s; the caller numbers
them, and the number is printed where Slack would draw the element.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo
from typing import Any

# -- styles ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Style:
    """ANSI styling, or none (scripts, pipes, NO_COLOR)."""

    color: bool = False

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color and text else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def italic(self, text: str) -> str:
        return self._wrap("3", text)

    def code(self, text: str) -> str:
        return self._wrap("36", text)

    def choice(self, text: str) -> str:
        return self._wrap("1;34", text)

    def danger(self, text: str) -> str:
        return self._wrap("31", text)

    def primary(self, text: str) -> str:
        return self._wrap("32", text)

    def header(self, text: str) -> str:
        """A header block: bold and underlined (in Slack it is large); plain without colours."""
        return self._wrap("1;4", text)


PLAIN = Style(False)


# -- terminal text --------------------------------------------------------------------------

# C0 and C1 control characters but the newline: a bot's text must not move the cursor, clear the
# screen or change the terminal's state (ESC sequences), however it got into a message.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SGR = re.compile(r"\x1b\[[0-9;]*m")


def clean(text: str) -> str:
    """`text` without control characters (tabs become spaces, newlines stay)."""
    return _CONTROL.sub("", text.replace("\t", "    "))


def _char_width(char: str) -> int:
    if unicodedata.combining(char) or char in "\u200b\u200d\ufe0e\ufe0f":
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Columns `text` takes on a terminal (ANSI colours take none, wide characters two)."""
    return sum(_char_width(char) for char in _SGR.sub("", text))


# The console's own frame: what each continuation line of a wrapped line starts with.
_GUTTER = re.compile(r"( *)(?:([│┌↳]) )?( *)")
_CONTINUED = {"│": "│ ", "┌": "│ ", "↳": "  "}
_PIECES = re.compile(r"\x1b\[[0-9;]*m|\s+|[^\s\x1b]+|\x1b")


def wrap(line: str, width: int) -> list[str]:
    """`line` cut at spaces into rows of at most `width` columns; each row after the first
    repeats the line's gutter and indent (`    │   `), so a thread reply stays indented. Colours
    open at a cut are closed at the end of the row and reopened after the next row's gutter."""
    if width <= 0 or display_width(line) <= width:
        return [line]
    found = _GUTTER.match(line)
    assert found is not None  # the pattern matches the empty string
    spaces, gutter, indent = found.groups()
    frame = _CONTINUED[gutter] if gutter else ""
    continued = spaces + frame + indent
    if display_width(continued) > width // 2:
        continued = spaces[: width // 4] + frame
    rows: list[str] = []
    row, used = found.group(0), display_width(found.group(0))
    active: list[str] = []  # the colour codes in force
    empty = True  # nothing but the frame on this row yet: never cut before the first word
    wrapped = False  # this row continues a cut one: spaces at its start are dropped

    def cut() -> None:
        nonlocal row, used, empty, wrapped
        rows.append(row.rstrip(" ") + ("\x1b[0m" if active else ""))
        row, used = continued + "".join(active), display_width(continued)
        empty = wrapped = True

    pending: list[str] = []  # colour codes met since the last word: they go with the next one

    def settle() -> None:
        nonlocal row, active, pending
        for code in pending:
            row += code
            active = [] if code in ("\x1b[0m", "\x1b[m") else [*active, code]
        pending = []

    for piece in _PIECES.findall(line[found.end() :]):
        if piece.startswith("\x1b"):
            pending.append(piece)
            continue
        size = display_width(piece)
        if piece.isspace():
            if empty and wrapped:
                continue
            if used + size > width:
                cut()
                continue
            settle()
            row, used = row + piece, used + size
            continue
        if used + size > width and not empty:
            cut()
        settle()
        # A word longer than a row is cut anywhere.
        for part in [piece] if used + size <= width else list(piece):
            step = display_width(part)
            if used + step > width and not empty:
                cut()
            row, used, empty = row + part, used + step, False
    rows.append(row.rstrip(" ") + "".join(pending))
    return rows


# What the console's frame and the bot's usual symbols become on a terminal that cannot show them
# (an ASCII or Latin-1 locale); anything else it cannot show becomes "?".
STAND_INS = {
    "┌": "+",
    "│": "|",
    "─": "-",
    "↳": "->",
    "…": "...",
    "—": "--",
    "\u2013": "-",  # en dash
    "·": "-",
    "“": '"',
    "”": '"',
    "\u2018": "'",  # quotes
    "\u2019": "'",
    "⋯": "...",
    "▾": "v",
    "▭": "[ ]",
    "◀": "<",
    "▶": ">",
    "←": "<-",
    "✓": "ok",
    "✗": "x",
    "✅": "[ok]",
    "❌": "[x]",
    "⏳": "[..]",
    "⛔": "[!]",
    "⚠": "[!]",
    "🗑": "[del]",
    "\ufe0f": "",
}


def stand_ins_for(encoding: str | None) -> dict[int, str] | None:
    """A `str.translate` table of the stand-ins `encoding` needs; None for a UTF encoding."""
    try:
        name = codecs.lookup(encoding or "utf-8").name
    except LookupError:
        name = "ascii"
    if name.startswith("utf"):
        return None
    table: dict[int, str] = {}
    for char, stand_in in STAND_INS.items():
        try:
            char.encode(name)
        except UnicodeEncodeError:
            table[ord(char)] = stand_in
    return table


# -- lookups --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Names:
    """How ids read: `<@U_ALICE>` → `@alice`, `<#C_OPS>` → `#ops`, dates in `tz`."""

    user: Callable[[str], str | None] = lambda _id: None
    channel: Callable[[str], str | None] = lambda _id: None
    tz: tzinfo | None = None  # None: the machine's local time zone
    now: Callable[[], datetime] | None = None

    def user_name(self, user_id: str) -> str:
        return self.user(user_id) or user_id

    def channel_name(self, channel_id: str) -> str:
        return self.channel(channel_id) or channel_id

    def current_time(self) -> datetime:
        now = self.now() if self.now is not None else datetime.now().astimezone()
        return now.astimezone(self.tz) if self.tz is not None else now.astimezone()


# -- dates ----------------------------------------------------------------------------------


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _pretty(moment: datetime, now: datetime, otherwise: str) -> str:
    days = (moment.date() - now.date()).days
    return {0: "Today", -1: "Yesterday", 1: "Tomorrow"}.get(days, otherwise)


def _ago(moment: datetime, now: datetime) -> str:
    seconds = (now - moment).total_seconds()
    future, seconds = seconds < 0, abs(seconds)
    units = (
        (86400 * 365, "year"),
        (86400 * 30, "month"),
        (86400, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    )
    found = next(((size, unit) for size, unit in units if seconds >= size), None)
    if found is None:
        return "just now"
    count = int(seconds // found[0])
    words = f"{count} {found[1]}{'s' if count != 1 else ''}"
    return f"in {words}" if future else f"{words} ago"


def format_date(epoch: int, fmt: str, names: Names) -> str:
    """Slack's `<!date^EPOCH^FMT|…>` in the reader's (this machine's) time zone."""
    now = names.current_time()
    moment = datetime.fromtimestamp(epoch, tz=now.tzinfo)
    date_num = moment.strftime("%Y-%m-%d")
    date = f"{moment:%B} {_ordinal(moment.day)}, {moment.year}"
    date_short = f"{moment:%b} {moment.day}, {moment.year}"
    date_long = f"{moment:%A}, {date}"
    tokens = {
        "date_num": date_num,
        "date": date,
        "date_short": date_short,
        "date_long": date_long,
        "date_pretty": _pretty(moment, now, date),
        "date_short_pretty": _pretty(moment, now, date_short),
        "date_long_pretty": _pretty(moment, now, date_long),
        "time": moment.strftime("%H:%M"),
        "time_secs": moment.strftime("%H:%M:%S"),
        "ago": _ago(moment, now),
    }
    return re.sub(r"\{(\w+)\}", lambda m: tokens.get(m.group(1), m.group(0)), fmt)


# -- mrkdwn ---------------------------------------------------------------------------------

_TOKEN = re.compile(r"<([^<>\n]+)>")
_BOLD = re.compile(r"(?<![\w*])\*(?!\s)([^*\n]+?)(?<!\s)\*(?![\w*])")
_ITALIC = re.compile(r"(?<![\w_])_(?!\s)([^_\n]+?)(?<!\s)_(?![\w_])")
_STRIKE = re.compile(r"(?<![\w~])~(?!\s)([^~\n]+?)(?<!\s)~(?![\w~])")
_INLINE_CODE = re.compile(r"`([^`\n]+)`")


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _token(inner: str, names: Names) -> str:
    target, _, label = inner.partition("|")
    if target.startswith("!date^"):
        parts = target.split("^")
        try:
            return format_date(int(parts[1]), parts[2] if len(parts) > 2 else "{date}", names)
        except (IndexError, ValueError, OverflowError, OSError):
            return unescape(label or target)
    if target.startswith("@"):
        return "@" + (names.user(target[1:]) or unescape(label) or target[1:])
    if target.startswith("#"):
        return "#" + (names.channel(target[1:]) or unescape(label) or target[1:])
    if target.startswith("!subteam^"):
        return unescape(label) if label else "@" + target.removeprefix("!subteam^")
    if target.startswith("!"):
        return "@" + target[1:]
    url = unescape(target)
    return f"{unescape(label)} ({url})" if label and unescape(label) != url else url


def _inline(text: str, names: Names, style: Style) -> str:
    """One stretch of mrkdwn outside code: tokens, then *bold*, _italic_, ~strike~."""
    out: list[str] = []
    last = 0
    for match in _TOKEN.finditer(text):
        out.append(_emphasis(text[last : match.start()], style))
        out.append(_token(match.group(1), names))
        last = match.end()
    out.append(_emphasis(text[last:], style))
    return "".join(out)


def _emphasis(text: str, style: Style) -> str:
    text = _BOLD.sub(lambda m: style.bold(m.group(1)), text)
    text = _ITALIC.sub(lambda m: style.italic(m.group(1)), text)
    text = _STRIKE.sub(lambda m: m.group(1), text)
    return unescape(text)


def mrkdwn(text: str, names: Names, style: Style = PLAIN) -> list[str]:
    """mrkdwn as terminal lines: ```blocks``` indented, `code` highlighted, tokens resolved."""
    lines: list[str] = []
    pieces = clean(text).split("```")
    for index, piece in enumerate(pieces):
        if index % 2 == 1:  # inside a ``` fence: verbatim
            body = piece.strip("\n")
            lines.extend("    " + style.code(unescape(line)) for line in body.splitlines())
            continue
        if not piece:
            continue
        chunk: list[str] = []
        last = 0
        for match in _INLINE_CODE.finditer(piece):
            chunk.append(_inline(piece[last : match.start()], names, style))
            chunk.append(style.code(unescape(match.group(1))))
            last = match.end()
        chunk.append(_inline(piece[last:], names, style))
        rendered = "".join(chunk)
        if index > 0:
            rendered = rendered.removeprefix("\n")
        if index < len(pieces) - 1:
            rendered = rendered.removesuffix("\n")
        if rendered:
            lines.extend(rendered.split("\n"))
    return lines


def text_object(obj: Any, names: Names, style: Style = PLAIN) -> list[str]:
    """A Block Kit text object (plain_text or mrkdwn) or a bare string."""
    if isinstance(obj, str):
        return mrkdwn(obj, names, style)
    if not isinstance(obj, Mapping):
        return []
    text = clean(str(obj.get("text", "")))
    if obj.get("type") == "plain_text":
        return text.split("\n") if text else []
    return mrkdwn(text, names, style)


def plain(obj: Any, names: Names) -> str:
    return " ".join(text_object(obj, names))


# -- Block Kit ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """Something a person can pick: a button, or one option of an overflow/select menu."""

    label: str
    action_id: str
    block_id: str
    block_index: int
    value: str | None = None  # the option's value for menus; the button's value for buttons
    option: bool = False  # a menu option (value picks it) rather than a button
    confirm: Mapping[str, Any] | None = None
    style: str | None = None
    context: str = ""  # the first line of the section it belongs to (which backup, say)

    def rank(self, words: str) -> int | None:
        """How well `words` name this choice, best first: 0 its exact value (`delete:123`) or
        label; 1 every word is a whole word of its label or option value (`delete 123`); 2 of its
        label, value or context (the text of its row: `delete… keep me`); None: not at all."""
        wanted = " ".join(words.casefold().split())
        if not wanted:
            return None
        if wanted in ((self.value or "").casefold(), " ".join(self.label.casefold().split())):
            return 0
        tokens = set(_words(wanted))
        if not tokens:
            return None
        own = set(_words(self.label))
        if self.option:
            own |= set(_words(self.value or ""))
        if tokens <= own:
            return 1
        if tokens <= own | set(_words(self.value or "")) | set(_words(self.context)):
            return 2
        return None


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


Numberer = Callable[[Choice], int]

_DIVIDER = "─" * 40


def blocks_to_lines(
    blocks: Iterable[Mapping[str, Any]],
    names: Names,
    number: Numberer,
    style: Style = PLAIN,
) -> list[str]:
    """Every block as lines; `number(choice)` gives the number printed for each choice."""
    lines: list[str] = []
    blocks = list(blocks)
    # A choice's context says what it acts on: its own section's text for a section's accessory
    # (which backup), else the message's first line (which message).
    heading = next(
        (
            text[0]
            for block in blocks
            if block.get("type") in ("section", "header")
            for text in [text_object(block.get("text"), names)]
            if text
        ),
        "",
    )
    for index, block in enumerate(blocks):
        context = heading
        if block.get("type") == "section":
            own = text_object(block.get("text"), names)
            # A context block right under a section belongs to it (a backup's description).
            following = blocks[index + 1] if index + 1 < len(blocks) else {}
            if following.get("type") == "context":
                for element in following.get("elements") or []:
                    own = [*own, *text_object(element, names)]
            context = " ".join(line.strip() for line in own) if own else heading

        def numbered(choice: Choice, context: str = context) -> int:
            return number(replace(choice, context=context))

        lines.extend(_block(block, index, names, numbered, style))
    return lines


def _block(
    block: Mapping[str, Any], index: int, names: Names, number: Numberer, style: Style
) -> list[str]:
    kind = block.get("type")
    block_id = str(block.get("block_id", ""))
    if kind == "header":
        return [style.header(plain(block.get("text"), names))]
    if kind == "divider":
        return [style.dim(_DIVIDER)]
    if kind == "section":
        lines = text_object(block.get("text"), names, style)
        fields = [" ".join(text_object(f, names, style)) for f in block.get("fields") or []]
        for left, right in zip(fields[::2], [*fields[1::2], ""], strict=False):
            lines.append(f"{left:<38} {right}".rstrip() if right else left)
        accessory = block.get("accessory")
        if isinstance(accessory, Mapping):
            lines.extend(_elements([accessory], block_id, index, names, number, style))
        return lines
    if kind == "context":
        parts = []
        for element in block.get("elements") or []:
            if element.get("type") == "image":
                parts.append(f"[{clean(str(element.get('alt_text', 'image')))}]")
            else:
                parts.append(" ".join(text_object(element, names, style)))
        return [style.dim(" · ".join(p for p in parts if p))] if parts else []
    if kind == "actions":
        return _elements(block.get("elements") or [], block_id, index, names, number, style)
    if kind == "image":
        return [style.dim(f"[image: {clean(str(block.get('alt_text', '')))}]")]
    if kind == "input":
        return _input(block, names, style)
    if kind == "rich_text":
        return _rich_text(block)
    if kind == "file":
        return [style.dim("[a file]")]
    return [style.dim(f"[{clean(str(kind))} block]")]


def _elements(
    elements: Iterable[Mapping[str, Any]],
    block_id: str,
    index: int,
    names: Names,
    number: Numberer,
    style: Style,
) -> list[str]:
    buttons: list[str] = []
    lines: list[str] = []
    for element in elements:
        kind = element.get("type")
        action_id = str(element.get("action_id", ""))
        confirm = element.get("confirm") if isinstance(element.get("confirm"), Mapping) else None
        if kind == "button":
            label = plain(element.get("text"), names)
            choice = Choice(
                label,
                action_id,
                block_id,
                index,
                value=element.get("value"),
                confirm=confirm,
                style=element.get("style"),
            )
            painted = {"danger": style.danger, "primary": style.primary}.get(
                str(element.get("style")), lambda s: s
            )
            buttons.append(f"{style.choice(f'[{number(choice)}]')} {painted(label)}")
        elif element.get("options") is not None or element.get("option_groups") is not None:
            options = list(element.get("options") or [])
            for group in element.get("option_groups") or []:
                options.extend(group.get("options") or [])
            marker = "⋯" if kind == "overflow" else "▾ " + plain(element.get("placeholder"), names)
            picks = []
            for option in options:
                label = plain(option.get("text"), names)
                choice = Choice(
                    label,
                    action_id,
                    block_id,
                    index,
                    value=str(option.get("value", "")),
                    option=True,
                    confirm=confirm,
                )
                picks.append(f"{style.choice(f'[{number(choice)}]')} {label}")
            lines.append(f"{marker.strip()} " + "  ".join(picks))
        else:
            lines.append(style.dim(f"[{clean(str(kind))}: not available in the console]"))
    if buttons:
        lines.append("   ".join(buttons))
    return lines


def _input(block: Mapping[str, Any], names: Names, style: Style) -> list[str]:
    label = plain(block.get("label"), names)
    element = block.get("element") or {}
    hint = plain(block.get("hint"), names)
    placeholder = plain(element.get("placeholder"), names)
    optional = " (optional)" if block.get("optional") else ""
    kind = clean(str(element.get("type", "input")))
    line = f"{style.bold(label)}{optional}: ▭ {placeholder or kind}"
    return [line, style.dim(hint)] if hint else [line]


def _rich_text(block: Mapping[str, Any]) -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            if isinstance(node.get("text"), str):
                found.append(node["text"])
            for child in node.get("elements") or []:
                walk(child)

    walk(block)
    return clean("".join(found)).split("\n")


def confirm_question(confirm: Mapping[str, Any], names: Names) -> tuple[str, str, str]:
    """(question, yes label, no label) of a confirm dialog."""
    title = plain(confirm.get("title"), names) or "Are you sure?"
    text = plain(confirm.get("text"), names)
    yes = plain(confirm.get("confirm"), names) or "Yes"
    no = plain(confirm.get("deny"), names) or "Cancel"
    return (f"{title} {text}".strip(), yes, no)


__all__ = [
    "PLAIN",
    "STAND_INS",
    "Choice",
    "Names",
    "Style",
    "blocks_to_lines",
    "clean",
    "confirm_question",
    "display_width",
    "format_date",
    "mrkdwn",
    "stand_ins_for",
    "text_object",
    "wrap",
]
