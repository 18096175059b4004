"""The `/backup` command grammar: the slash command's text in, a typed command out.

`parse()` is pure (no Slack, no I/O). It understands what Slack does to the text on the way: HTML
escaping (`&amp;` `&lt;` `&gt;`), `<@U…>` mentions, `<#C…|name>` channels, names auto-linked as
`<http://…|label>`, and smart quotes. Every mistake becomes a `ParseError` whose `message` names
the problem in one sentence and whose `usage` shows the right form; values the user typed are
echoed in `backticks`, shortened, never as Python reprs.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, NoReturn, TypeAlias, cast

from bot.ages import UNIT_NAMES, AgeError, AgeProblem, parse_age
from bot.policy import Action
from bot.vps.models import BACKUP_TYPES, BackupType

COMMAND_NAME = "/backup"

AUDIT_ACTIONS: tuple[str, ...] = tuple(action.value for action in Action)
SUBCOMMANDS: tuple[str, ...] = ("help", "list", "create", "delete", "restore", "status", "audit")

_USAGE_LINES: dict[str, tuple[str, ...]] = {
    "help": (f"{COMMAND_NAME} help",),
    "list": (f"{COMMAND_NAME} list [SERVER] [manual|automatic] [public]",),
    "create": (f"{COMMAND_NAME} create SERVER [description…]",),
    "delete": (f"{COMMAND_NAME} delete BACKUP_ID",),
    "restore": (f"{COMMAND_NAME} restore BACKUP_ID [reason…]",),
    "status": (f"{COMMAND_NAME} status [SERVER]",),
    "audit": (
        f"{COMMAND_NAME} audit [@user] [server:SERVER] [action:ACTION] [outcome:ok|denied|error]"
        " [approval:N] [since:7d]",
        f"{COMMAND_NAME} audit export [the same filters] [format:csv|jsonl]",
    ),
}

USAGE: str = "\n".join(line for lines in _USAGE_LINES.values() for line in lines)
"""Every form of the command, one line each."""


def usage_for(subcommand: str) -> str:
    """The usage line(s) of one subcommand (`"audit export"` too); the full `USAGE` otherwise."""
    key = " ".join(subcommand.split()).lower()
    if key == "audit export":
        return _USAGE_LINES["audit"][1]
    lines = _USAGE_LINES.get(key)
    return "\n".join(lines) if lines else USAGE


class ParseError(Exception):
    """The text is not a valid command: `message` says why, `usage` shows the right form."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message, usage)
        self.message = message
        self.usage = usage

    def __str__(self) -> str:
        return self.message


# --- the typed commands --------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    """A server as the user named it: by numeric id or by name, exactly one of the two."""

    id: int | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if (self.id is None) == (self.name is None):
            raise ValueError("ServerSpec needs exactly one of id and name")

    def __str__(self) -> str:
        return str(self.id) if self.id is not None else str(self.name)

    @property
    def argument(self) -> int | str:
        """What the use-cases take: the id, or the name to look up."""
        return self.id if self.id is not None else str(self.name)


@dataclass(frozen=True)
class HelpCommand:
    """`/backup` or `/backup help`."""


@dataclass(frozen=True)
class ListCommand:
    """`/backup list [SERVER] [manual|automatic] [public]`; `public` posts the list in channel."""

    server: ServerSpec | None = None
    backup_type: BackupType | None = None
    public: bool = False


@dataclass(frozen=True)
class CreateCommand:
    """`/backup create SERVER [description…]`."""

    server: ServerSpec
    description: str | None = None


@dataclass(frozen=True)
class DeleteCommand:
    """`/backup delete BACKUP_ID`."""

    backup_id: int


@dataclass(frozen=True)
class RestoreCommand:
    """`/backup restore BACKUP_ID [reason…]`: asks approvers; the reason is shown on the card."""

    backup_id: int
    reason: str | None = None


@dataclass(frozen=True)
class StatusCommand:
    """`/backup status [SERVER]`: backup health of every server, or one with its timeline."""

    server: ServerSpec | None = None


@dataclass(frozen=True)
class AuditCommand:
    """`/backup audit [@user] [server:X] [action:Y] [outcome:Z] [approval:N] [since:7d]`; None
    is "any"."""

    user_id: str | None = None
    server: ServerSpec | None = None
    action: str | None = None
    since: timedelta | None = None
    approval_id: int | None = None  # the whole story of one restore
    outcome: str | None = None  # ok, denied or error


@dataclass(frozen=True)
class AuditExportCommand:
    """`/backup audit export [the same filters] [format:jsonl]`: a file to the requester."""

    filters: AuditCommand = AuditCommand()
    format: ExportFormat = "csv"


Command: TypeAlias = (
    HelpCommand
    | ListCommand
    | CreateCommand
    | DeleteCommand
    | RestoreCommand
    | StatusCommand
    | AuditCommand
    | AuditExportCommand
)


# --- tokens: what Slack sent, split into words and Slack references -----------------------------

# macOS and Slack autocorrect turn quotes curly; the grammar only knows the straight ones.
_SMART_QUOTES = str.maketrans(
    {
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
    }
)
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">"}
# One pass over the text, so `&amp;lt;` (a typed "&lt;") becomes "&lt;" and not "<".
_MARKUP_OR_ENTITY = re.compile(r"<([^<>]*)>|&(amp|lt|gt);")
_SLACK_ID = re.compile(r"[A-Za-z0-9_]+")  # "_": the readable ids of the demo and tests

_Kind: TypeAlias = Literal["word", "mention", "channel", "usergroup", "special"]
# (what follows "<", the kind of reference, how the user wrote it)
_REFERENCES: tuple[tuple[str, _Kind, str], ...] = (
    ("@", "mention", "@"),
    ("#", "channel", "#"),
    ("!subteam^", "usergroup", "@"),
)


@dataclass(frozen=True)
class _Token:
    kind: _Kind
    text: str  # readable: a word without its quotes or escapes, "@name" for a mention
    raw: str  # as Slack sent it
    end: int  # offset just past the token
    quoted: bool = False  # a quoted word is never a keyword
    ref: str | None = None  # the Slack id of a mention, channel or user group


class _TokenError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _unescape(text: str) -> str:
    return re.sub(r"&(amp|lt|gt);", lambda m: _ENTITIES[m.group(1)], text)


def _markup(raw: str, end: int) -> _Token:
    """A `<…>` reference. Links become words: Slack auto-links names like `db1.example.com`."""
    target, _, label = raw[1:-1].partition("|")
    label = _unescape(label)
    for prefix, kind, sigil in _REFERENCES:
        ref = target[len(prefix) :]
        if target.startswith(prefix) and _SLACK_ID.fullmatch(ref):
            shown = label.removeprefix(sigil) or ref
            return _Token(kind, sigil + shown, raw, end, ref=ref)
    if target.startswith("!"):  # <!here>, <!channel>, <!everyone>, <!date^…|fallback>
        return _Token("special", label or "@" + target[1:].split("^", 1)[0], raw, end)
    return _Token("word", label or _unescape(target), raw, end)


def _readable(text: str) -> str:
    """Text with Slack's references and escapes turned back into what the user typed."""

    def replace(match: re.Match[str]) -> str:
        if match.group(2):
            return _ENTITIES[match.group(2)]
        return _markup(match.group(0), 0).text

    return _MARKUP_OR_ENTITY.sub(replace, text)


_CLOSING_SINGLE_QUOTE = re.compile(r"'(?=\s|\Z)")


def _closing_single_quote(text: str, start: int) -> int | None:
    """Where a token opened by `'` closes: a `'` followed by whitespace or the end."""
    match = _CLOSING_SINGLE_QUOTE.search(text, start + 1)
    return match.start() if match else None


def _next_token(text: str, pos: int) -> _Token | None:
    """The token at or after `pos`, or None at the end.

    Double quotes group words anywhere in a token (`server:"a b"`) and must be closed. A single
    quote groups only when it opens a token and a matching one closes it; elsewhere it is an
    apostrophe.
    """
    length = len(text)
    while pos < length and text[pos].isspace():
        pos += 1
    if pos >= length:
        return None
    start = pos
    if text[pos] == "<":
        close = text.find(">", pos)
        if close != -1 and (close + 1 == length or text[close + 1].isspace()):
            return _markup(text[pos : close + 1], close + 1)
    if text[pos] == "'":
        close = _closing_single_quote(text, pos)
        if close is not None:
            inner = " ".join(_readable(text[pos + 1 : close]).split())
            return _Token("word", inner, text[start : close + 1], close + 1, quoted=True)
    parts: list[str] = []
    quoted = False
    while pos < length and not text[pos].isspace():
        char = text[pos]
        if char == '"':
            close = text.find('"', pos + 1)
            if close == -1:
                raise _TokenError(
                    f"There is an unclosed double quote before {_show(text[pos + 1 :])}: "
                    "close it or remove it."
                )
            parts.append(" ".join(_readable(text[pos + 1 : close]).split()))
            quoted = True
            pos = close + 1
        elif char == "<" and (close := text.find(">", pos)) != -1:
            parts.append(_readable(text[pos : close + 1]))
            pos = close + 1
        else:
            stop = pos + 1
            while stop < length and not text[stop].isspace() and text[stop] not in '"<':
                stop += 1
            parts.append(_unescape(text[pos:stop]))
            pos = stop
    return _Token("word", "".join(parts), text[start:pos], pos, quoted=quoted)


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def next(self) -> _Token | None:
        token = _next_token(self.text, self.pos)
        if token is not None:
            self.pos = token.end
        return token

    def rest(self) -> list[_Token]:
        tokens: list[_Token] = []
        while (token := self.next()) is not None:
            tokens.append(token)
        return tokens

    def remainder(self) -> str:
        return self.text[self.pos :]


# --- messages -----------------------------------------------------------------------------------

_SHOW_LIMIT = 40


# Messages go out as Slack mrkdwn: an echoed value must not close its code span or carry `<…>`
# markup (a typed "&lt;!channel&gt;" arrives decoded as "<!channel>"), whoever renders them.
_DEFANG = str.maketrans({"`": "'", "<": "\u2039", ">": "\u203a"})


def _show(value: str) -> str:
    """A value the user typed, fit to quote in a one-line mrkdwn message."""
    value = " ".join(value.split())
    if len(value) > _SHOW_LIMIT:
        value = value[: _SHOW_LIMIT - 1] + "…"
    return "`" + value.translate(_DEFANG) + "`"


def _describe(token: _Token) -> str:
    """What a non-word token is, for "… not <this>" messages."""
    if token.kind == "mention":
        return f"a mention of a person ({_show(token.text)})"
    if token.kind == "channel":
        return f"a channel ({_show(token.text)})"
    if token.kind == "usergroup":
        return f"a user group ({_show(token.text)})"
    return _show(token.text)


def _closest(word: str, options: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word.lower(), list(options), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _did_you_mean(suggestion: str | None) -> str:
    return f" Did you mean {_show(suggestion)}?" if suggestion else ""


def _usage_of(subcommand: str) -> str:
    """The usage to show with an error: for audit's filters, the filter line alone."""
    return _USAGE_LINES["audit"][0] if subcommand == "audit" else usage_for(subcommand)


def _fail(message: str, subcommand: str) -> NoReturn:
    raise ParseError(message, _usage_of(subcommand))


# --- values -------------------------------------------------------------------------------------

_MAX_ID = 2**63 - 1  # fits a BIGINT column; also keeps int() away from its digit limit
# Unquoted: letters (any script), digits, `.`, `_`, `-`. Quoted, a name may hold anything printable
# (the provider allows "Web Server 01"), so every name the provider allows can be typed.
_SERVER_NAME = re.compile(r"[^\W_][\w.-]*")
_SERVER_NAME_MAX = 255
_SIGNED_NUMBER = re.compile(r"[+-]?[0-9]+")


def positive_id(value: str) -> int | None:
    """`value` as a positive id, or None when it is not one (too large included)."""
    if not value.isascii() or not value.isdigit():
        return None
    digits = value.lstrip("0")
    if not digits or len(digits) > len(str(_MAX_ID)):
        return None
    number = int(digits)
    return number if number <= _MAX_ID else None


def _bad_id(value: str, what: str) -> str:
    """Why `value` is not a positive id, for a message about `what` ("A backup id")."""
    if value.isascii() and value.isdigit() and value.strip("0"):
        return f"{what} {_show(value)} is too large."
    return f"{what} is a positive whole number, not {_show(value)}."


def _server_spec(token: _Token, subcommand: str, role: str) -> ServerSpec:
    """A SERVER argument: a positive id or a name; `role` names the slot in messages."""
    if token.kind != "word":
        _fail(f"{role} needs a server id or name, not {_describe(token)}.", subcommand)
    value = token.text
    if _SIGNED_NUMBER.fullmatch(value):
        number = positive_id(value)
        if number is None:
            _fail(_bad_id(value, "A server id"), subcommand)
        return ServerSpec(id=number)
    quoted_ok = token.quoted and value.strip() and value.isprintable()
    if not (quoted_ok or _SERVER_NAME.fullmatch(value)):
        _fail(
            f"{_show(value)} is not a server id or name: a name has letters, digits, "
            "`-`, `_` and `.`, and starts with a letter or digit (put any other name in "
            'quotes, like `"Web Server 01"`).',
            subcommand,
        )
    if len(value) > _SERVER_NAME_MAX:
        _fail(
            f"{_show(value)} is too long for a server name "
            f"({_SERVER_NAME_MAX} characters at most).",
            subcommand,
        )
    return ServerSpec(name=value)


def _backup_id(token: _Token, subcommand: str) -> int:
    if token.kind != "word":
        _fail(f"{subcommand} needs a backup id, not {_describe(token)}.", subcommand)
    digits = token.text.removeprefix("#")  # "#123", as backups are shown
    number = positive_id(digits)
    if number is None:
        _fail(_bad_id(digits or token.text, "A backup id"), subcommand)
    return number


_SINCE_HINT = f"a number and a unit, {UNIT_NAMES}, like `since:7d`"


def _is_age(word: str) -> bool:
    try:
        parse_age(word)
    except AgeError as error:
        return error.problem in (AgeProblem.ZERO, AgeProblem.TOO_FAR)
    return True


def _since(value: str) -> timedelta:
    try:
        return parse_age(value)
    except AgeError as error:
        problem, text = error.problem, error.text
    if problem is AgeProblem.UNKNOWN_UNIT:
        _fail(f"{_show(text)} is not a unit of `since:`: it takes {_SINCE_HINT}.", "audit")
    if problem is AgeProblem.ZERO:
        _fail("`since:` must be longer than zero, like `since:7d`.", "audit")
    if problem is AgeProblem.TOO_FAR:
        _fail(f"`since:{value}` goes back too far; the limit is 100 years.", "audit")
    _fail(f"`since:` takes {_SINCE_HINT}; {_show(value)} is not one.", "audit")


def _description(raw: str) -> str | None:
    """The rest of the text, with one surrounding pair of quotes dropped and whitespace tidied.

    Quotes are optional and an unbalanced one is kept as typed: the description is free text.
    """
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        inner = text[1:-1]
        if (text[0] == '"' and '"' not in inner) or (text[0] == "'" and _only_apostrophes(inner)):
            text = inner
    return " ".join(_readable(text).split()) or None


def _only_apostrophes(text: str) -> bool:
    """True when every `'` in `text` sits inside a word (`it's`), so none closes a quote."""
    return all(
        0 < index < len(text) - 1 and text[index - 1].isalnum() and text[index + 1].isalnum()
        for index, char in enumerate(text)
        if char == "'"
    )


# --- the subcommands ----------------------------------------------------------------------------


def _parse_help(scanner: _Scanner) -> Command:
    # `help list` and the like are natural to type; the help text covers every subcommand.
    return HelpCommand()


def _parse_list(scanner: _Scanner) -> Command:
    server: ServerSpec | None = None
    backup_type: BackupType | None = None
    public = False
    for token in scanner.rest():
        keyword = token.text.lower() if token.kind == "word" and not token.quoted else None
        if keyword == "manual" or keyword == "automatic":
            if backup_type == keyword:
                _fail(f"The backup type {_show(keyword)} is given twice.", "list")
            if backup_type is not None:
                _fail(
                    f"Give one backup type, not both {_show(backup_type)} and {_show(keyword)}.",
                    "list",
                )
            backup_type = keyword
        elif keyword == "public":
            if public:
                _fail("`public` is given twice.", "list")
            public = True
        elif server is not None and token.kind == "word":
            suggestion = _closest(token.text, (*BACKUP_TYPES, "public"))
            if suggestion:
                message = f"Unknown backup type {_show(token.text)}.{_did_you_mean(suggestion)}"
                _fail(message, "list")
            _fail(
                f"{_show(token.text)} is not a backup type (manual or automatic), and list takes "
                f"only one server ({_show(str(server))} is already given).",
                "list",
            )
        else:
            server = _server_spec(token, "list", "list")
    return ListCommand(server=server, backup_type=backup_type, public=public)


def _parse_create(scanner: _Scanner) -> Command:
    token = scanner.next()
    if token is None:
        _fail("create needs a server: its id or name.", "create")
    server = _server_spec(token, "create", "create")
    return CreateCommand(server=server, description=_description(scanner.remainder()))


def _one_backup_id(scanner: _Scanner, subcommand: str) -> int:
    token = scanner.next()
    if token is None:
        _fail(f"{subcommand} needs a backup id, like `{subcommand} 123`.", subcommand)
    backup_id = _backup_id(token, subcommand)
    extra = scanner.remainder().strip()
    if extra:
        _fail(
            f"Too many arguments: {subcommand} takes one backup id; remove {_show(extra)}.",
            subcommand,
        )
    return backup_id


def _parse_delete(scanner: _Scanner) -> Command:
    return DeleteCommand(backup_id=_one_backup_id(scanner, "delete"))


def _parse_restore(scanner: _Scanner) -> Command:
    token = scanner.next()
    if token is None:
        _fail("restore needs a backup id, like `restore 123`.", "restore")
    backup_id = _backup_id(token, "restore")
    return RestoreCommand(backup_id=backup_id, reason=_description(scanner.remainder()))


def _parse_status(scanner: _Scanner) -> Command:
    token = scanner.next()
    if token is None:
        return StatusCommand()
    server = _server_spec(token, "status", "status")
    extra = scanner.remainder().strip()
    if extra:
        _fail(
            f"Too many arguments: status takes one server at most; remove {_show(extra)}.",
            "status",
        )
    return StatusCommand(server=server)


_AUDIT_FILTERS = ("server", "action", "outcome", "approval", "since")
_AUDIT_FILTER_LIST = "@user, `server:`, `action:`, `outcome:`, `approval:` and `since:`"
ExportFormat: TypeAlias = Literal["csv", "jsonl"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("csv", "jsonl")
OUTCOMES = ("ok", "denied", "error")
_FILTER = re.compile(r"([A-Za-z][A-Za-z_-]*):(.*)", re.DOTALL)
_PERSON_WORDS = ("user", "by", "who", "person", "actor")


def _filter_parts(token: _Token) -> tuple[str, str] | None:
    """`key:value` as (key, the value as Slack sent it); None for anything else."""
    if token.kind != "word":
        return None
    match = _FILTER.fullmatch(token.raw)
    return (match.group(1), match.group(2)) if match else None


def _unknown_audit_word(token: _Token) -> str:
    """Why a bare word is not an audit filter, with the filter it most likely meant."""
    word = token.text
    lowered = word.lower()
    if lowered == "export":
        return "`export` goes right after audit: `/backup audit export` (then any filters)."
    if word.startswith("@"):
        return (
            f"{_show(word)} did not reach me as a Slack mention: pick the person from the "
            "@ autocomplete list."
        )
    suggestion: str | None = None
    if lowered in AUDIT_ACTIONS:
        suggestion = f"action:{lowered}"
    elif _is_age(lowered):
        suggestion = f"since:{lowered}"
    elif _SERVER_NAME.fullmatch(word):
        suggestion = f"server:{word}"
    return (
        f"Unknown audit filter {_show(word)}; filters are {_AUDIT_FILTER_LIST}."
        f"{_did_you_mean(suggestion)}"
    )


def _parse_audit(scanner: _Scanner) -> Command:
    tokens = scanner.rest()
    if tokens and tokens[0].kind == "word" and tokens[0].text.lower() == "export":
        fmt: list[ExportFormat] = []
        filters = _audit_filters(tokens[1:], "audit export", fmt)
        return AuditExportCommand(filters, fmt[0] if fmt else "csv")
    return _audit_filters(tokens, "audit", None)


def _audit_filters(
    tokens: list[_Token], subcommand: str, fmt: list[ExportFormat] | None
) -> AuditCommand:
    """The filters after `audit` (or `audit export`, which also takes `format:` into `fmt`)."""
    allowed = (*_AUDIT_FILTERS, "format") if fmt is not None else _AUDIT_FILTERS
    user: _Token | None = None
    given: dict[str, str] = {}  # filter name -> how it was given, for the duplicate message
    server: ServerSpec | None = None
    action: str | None = None
    since: timedelta | None = None
    approval_id: int | None = None
    outcome: str | None = None
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token.kind == "mention":
            if user is not None:
                _fail(
                    f"audit takes one person; {_show(user.text)} and {_show(token.text)} "
                    "are both given.",
                    subcommand,
                )
            user = token
            continue
        if token.kind != "word":
            _fail(f"audit can filter by a person (@user), not by {_describe(token)}.", subcommand)
        parts = _filter_parts(token)
        if parts is None:
            _fail(_unknown_audit_word(token), subcommand)
        key, value_raw = parts
        name = key.lower()
        if name not in allowed:
            if name in _PERSON_WORDS:
                hint = " To filter by a person, @-mention them."
            elif name == "format":
                hint = " `format:` goes with `audit export`."
            else:
                hint = _did_you_mean(f"{s}:" if (s := _closest(name, allowed)) else None)
            _fail(
                f"Unknown audit filter {_show(key + ':')}; filters are {_AUDIT_FILTER_LIST}.{hint}",
                subcommand,
            )
        value = _next_token(value_raw, 0)
        if value is None:
            # `server: web-01`: a space after the colon is easy to type; take the next word.
            following = tokens[index] if index < len(tokens) else None
            if following is None or following.kind != "word" or _filter_parts(following):
                _fail(f"`{name}:` needs a value, like {_show(_EXAMPLES[name])}.", subcommand)
            value = following
            index += 1
        shown = f"{name}:{value.text}"
        if name in given:
            _fail(
                f"Give `{name}:` once, not twice ({_show(given[name])} and {_show(shown)}).",
                subcommand,
            )
        given[name] = shown
        if name == "server":
            server = _server_spec(value, "audit", "`server:`")
        elif name == "action":
            action = _audit_action(value)
        elif name == "approval":
            approval_id = positive_id(value.text.removeprefix("#"))
            if value.kind != "word" or approval_id is None:
                _fail("`approval:` needs an approval number, like `approval:7`.", subcommand)
        elif name == "outcome":
            outcome = _one_of(value, "outcome", OUTCOMES, subcommand)
        elif name == "format" and fmt is not None:
            fmt.append(cast(ExportFormat, _one_of(value, "format", EXPORT_FORMATS, subcommand)))
        else:
            if value.kind != "word":
                _fail(f"`since:` needs a time like `7d`, not {_describe(value)}.", "audit")
            since = _since(value.text)
    return AuditCommand(
        user_id=user.ref if user is not None else None,
        server=server,
        action=action,
        since=since,
        approval_id=approval_id,
        outcome=outcome,
    )


def _alternatives(choices: tuple[str, ...]) -> str:
    shown = [f"`{choice}`" for choice in choices]
    return f"{', '.join(shown[:-1])} or {shown[-1]}" if len(shown) > 1 else shown[0]


def _one_of(value: _Token, name: str, choices: tuple[str, ...], subcommand: str) -> str:
    word = value.text.lower()
    if value.kind != "word" or word not in choices:
        _fail(
            f"`{name}:` takes {_alternatives(choices)}, not {_describe(value)}."
            f"{_did_you_mean(_closest(word, choices))}",
            subcommand,
        )
    return word


_EXAMPLES = {
    "server": "server:web-01",
    "action": "action:restore",
    "outcome": "outcome:denied",
    "approval": "approval:7",
    "since": "since:7d",
    "format": "format:jsonl",
}


def _audit_action(token: _Token) -> str:
    if token.kind != "word":
        _fail(f"`action:` needs an action name, not {_describe(token)}.", "audit")
    action = token.text.lower()
    if action not in AUDIT_ACTIONS:
        _fail(
            f"{_show(token.text)} is not an audit action; use one of {', '.join(AUDIT_ACTIONS)}."
            f"{_did_you_mean(_closest(action, AUDIT_ACTIONS))}",
            "audit",
        )
    return action


_PARSERS: dict[str, Callable[[_Scanner], Command]] = {
    "help": _parse_help,
    "list": _parse_list,
    "create": _parse_create,
    "delete": _parse_delete,
    "restore": _parse_restore,
    "status": _parse_status,
    "audit": _parse_audit,
}

# Words people reach for that are not subcommands, with the one they mean.
_SYNONYMS = {
    "ls": "list",
    "show": "list",
    "new": "create",
    "make": "create",
    "backup": "create",
    "rm": "delete",
    "del": "delete",
    "remove": "delete",
    "rollback": "restore",
    "revert": "restore",
    "log": "audit",
    "logs": "audit",
    "history": "audit",
    "?": "help",
    "health": "status",
    "stat": "status",
}


def parse(text: str) -> Command:
    """The command in a `/backup` slash command's `text`; `ParseError` says what is wrong."""
    scanner = _Scanner(text.translate(_SMART_QUOTES))
    try:
        head = scanner.next()
    except _TokenError as error:
        raise ParseError(error.message, USAGE) from None
    if head is None:
        return HelpCommand()
    name = head.text.lower() if head.kind == "word" else ""
    parser = _PARSERS.get(name)
    if parser is None:
        suggestion = (_SYNONYMS.get(name) or _closest(name, SUBCOMMANDS)) if name else None
        raise ParseError(
            f"{_show(head.text)} is not a {COMMAND_NAME} command.{_did_you_mean(suggestion)}",
            USAGE,
        )
    try:
        return parser(scanner)
    except _TokenError as error:
        raise ParseError(error.message, _usage_of(name)) from None
