"""Slack messages as terminal text: mrkdwn, `<…>` tokens and Block Kit, with numbered choices.

Pure functions of a message's blocks and a few lookups (user and channel names, the clock), so the
console can draw anything the bot posts and the tests can check the drawing without a terminal.
Interactive elements (buttons, overflow and select options) become `Choice`s; the caller numbers
them, and the number is printed where Slack would draw the element.
"""

from __future__ import annotations

import re
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


PLAIN = Style(False)


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
    pieces = text.split("```")
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
    text = str(obj.get("text", ""))
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

    def matches(self, words: str, *, label_only: bool = False) -> bool:
        """Every word is in the label (or, unless `label_only`, the context or option value)."""
        haystack = self.label
        if not label_only:
            haystack += f"\n{self.context}\n{self.value if self.option else ''}"
        wanted = words.casefold().split()
        return bool(wanted) and all(word in haystack.casefold() for word in wanted)


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
        return [style.bold(plain(block.get("text"), names).upper())]
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
                parts.append(f"[{element.get('alt_text', 'image')}]")
            else:
                parts.append(" ".join(text_object(element, names, style)))
        return [style.dim(" · ".join(p for p in parts if p))] if parts else []
    if kind == "actions":
        return _elements(block.get("elements") or [], block_id, index, names, number, style)
    if kind == "image":
        return [style.dim(f"[image: {block.get('alt_text', '')}]")]
    if kind == "input":
        return _input(block, names, style)
    if kind == "rich_text":
        return [_rich_text(block)]
    if kind == "file":
        return [style.dim("[a file]")]
    return [style.dim(f"[{kind} block]")]


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
            lines.append(style.dim(f"[{kind}: not available in the console]"))
    if buttons:
        lines.append("   ".join(buttons))
    return lines


def _input(block: Mapping[str, Any], names: Names, style: Style) -> list[str]:
    label = plain(block.get("label"), names)
    element = block.get("element") or {}
    hint = plain(block.get("hint"), names)
    placeholder = plain(element.get("placeholder"), names)
    optional = " (optional)" if block.get("optional") else ""
    line = f"{style.bold(label)}{optional}: ▭ {placeholder or element.get('type', 'input')}"
    return [line, style.dim(hint)] if hint else [line]


def _rich_text(block: Mapping[str, Any]) -> str:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            if isinstance(node.get("text"), str):
                found.append(node["text"])
            for child in node.get("elements") or []:
                walk(child)

    walk(block)
    return "".join(found)


def confirm_question(confirm: Mapping[str, Any], names: Names) -> tuple[str, str, str]:
    """(question, yes label, no label) of a confirm dialog."""
    title = plain(confirm.get("title"), names) or "Are you sure?"
    text = plain(confirm.get("text"), names)
    yes = plain(confirm.get("confirm"), names) or "Yes"
    no = plain(confirm.get("deny"), names) or "Cancel"
    return (f"{title} {text}".strip(), yes, no)


__all__ = [
    "PLAIN",
    "Choice",
    "Names",
    "Style",
    "blocks_to_lines",
    "confirm_question",
    "format_date",
    "mrkdwn",
    "text_object",
]
