"""A faithful Slack test double: the Web API, response_urls and file uploads on loopback HTTP.

`SlackDouble` is a real HTTP server on 127.0.0.1 that the unmodified `slack_sdk.WebClient`
(`base_url=double.api_url`), `slack_sdk.webhook.WebhookClient` (a minted `response_url`) and
`WebClient.files_upload_v2` talk to. It keeps a model of what Slack would show (messages, edits,
ephemeral messages, threads, reactions, modals, Home tabs, uploaded files), records every call,
and can be told to rate-limit or fail the next calls of a method. `SlackSender` is the other
direction: it sends what Slack sends to an app's `/slack/events` (slash commands, `block_actions`,
`view_submission`), form-encoded and signed exactly as SLACK-WIRE.md describes.

Only the standard library and `slack_sdk` are used, so the terminal console can import it too.

Where Slack's documentation is silent the double chooses, and says so here:
- a `response_url` answers `{"ok": true}` (HTTP 200) on success; past its 5 posts it answers
  HTTP 404 `{"ok": false, "error": "used_url"}`, after 30 minutes HTTP 404 `expired_url`, an
  unknown URL HTTP 404 `no_service`, a body that is not JSON HTTP 400 `invalid_payload`, a message
  without text or blocks HTTP 400 `no_text`, bad blocks HTTP 400 `invalid_blocks`. Only successful
  posts count towards the 5.
- `thread_ts` must name a visible (not ephemeral, not deleted) message of the same channel, else
  `thread_not_found`: Slack is laxer here, but a reply to an ephemeral message is always a bug.
- a `trigger_id` is valid only if minted by `new_trigger_id()` (the sender does it), once, for 3 s:
  unknown → `invalid_arguments` ("invalid `trigger_id`"), reused → `exchanged_trigger_id`,
  late → `expired_trigger_id`.
- Slack fills in missing `block_id`s and `action_id`s of stored blocks; so does the double (the
  recorded call keeps the blocks exactly as sent, `Message.blocks` holds the stored version).

Socket Mode: `apps.connections.open` (authenticated by the app-level token `app_token`, `xapp-…`)
answers `ws://127.0.0.1:PORT/socket/<ticket>` on the same server, where a minimal RFC 6455 endpoint
says `hello`, carries envelopes (`socket_send`, `socket_slash_command`, `socket_block_actions`,
built exactly as `SlackSender` builds its payloads) and records the app's acks (`socket_ack`).
There the double chooses too:
- a ticket serves one connection; an unknown or used one gets HTTP 401 `invalid_ticket`.
- a bot token on apps.connections.open, or an app token on any other method, gets
  `not_allowed_token_type`.
- `accepts_response_payload` is true for slash commands, view_submission and block_suggestion.
- an idle connection is pinged every `socket_ping_interval` seconds; `stop()` sends close 1001
  (going away) before it hangs up.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import email.parser
import email.policy
import hashlib
import http.client
import itertools
import json
import logging
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit
from zoneinfo import ZoneInfo

from slack_sdk.signature import SignatureVerifier

__all__ = [
    "DEFAULT_APP_TOKEN",
    "DEFAULT_BOT_TOKEN",
    "Channel",
    "Event",
    "Message",
    "MessageEdit",
    "RecordedCall",
    "RecordedResponse",
    "Response",
    "SlackDouble",
    "SlackSender",
    "SocketEnvelope",
    "UploadedFile",
    "User",
]

log = logging.getLogger(__name__)

DEFAULT_BOT_TOKEN = "xoxb-111-222-slackdouble"  # noqa: S105 - a fake token for a fake Slack
DEFAULT_APP_TOKEN = "xapp-1-A111-333-slackdouble"  # noqa: S105 - the app-level one (Socket Mode)
TS_START = 1_700_000_000_000_100  # microseconds: the first ts is "1700000000.000100"
TS_STEP = 100
MAX_TEXT = 40_000
JSON_ARGS = ("blocks", "attachments", "view", "files", "metadata")


# -- what the double records and models --------------------------------------------------------


@dataclass(frozen=True)
class RecordedCall:
    """One Web API call as received, with the answer the double gave."""

    method: str
    args: dict[str, Any]  # the arguments, token removed, JSON strings (blocks, view…) decoded
    at: float  # time.time() when it was answered
    status: int = 200
    response: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.response.get("ok") is True

    @property
    def error(self) -> str | None:
        error = self.response.get("error")
        return error if isinstance(error, str) else None


@dataclass(frozen=True)
class RecordedResponse:
    """One post to a minted response_url, with the answer the double gave."""

    url_id: str
    body: dict[str, Any]
    at: float
    status: int = 200
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


Event = RecordedCall | RecordedResponse


@dataclass(frozen=True)
class SocketEnvelope:
    """One envelope the double sent to the app over Socket Mode."""

    envelope_id: str
    type: str  # "slash_commands", "interactive", "events_api"
    payload: dict[str, Any]
    accepts_response_payload: bool

    @property
    def response_url(self) -> str | None:
        url = self.payload.get("response_url")
        return url if isinstance(url, str) else None

    @property
    def response_url_id(self) -> str | None:
        """The `url_id` that `RecordedResponse`s to this envelope's response_url carry."""
        url = self.response_url
        return url.rstrip("/").rsplit("/", 1)[-1] if url else None

    def message(self) -> dict[str, Any]:
        """The envelope as sent on the wire."""
        out: dict[str, Any] = {
            "envelope_id": self.envelope_id,
            "payload": self.payload,
            "type": self.type,
            "accepts_response_payload": self.accepts_response_payload,
        }
        if self.type == "events_api":
            out.update(retry_attempt=0, retry_reason="")
        return out


@dataclass(frozen=True)
class MessageEdit:
    """A previous version of a message, kept when it was updated or deleted."""

    text: str
    blocks: list[dict[str, Any]]
    at: float
    via: str


@dataclass
class Message:
    """A message as Slack would show it. Copies are handed out; the double keeps the original."""

    channel: str
    ts: str
    user: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    ephemeral: bool = False
    visible_to: str | None = None  # the one user who sees an ephemeral message
    attachments: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    via: str = "chat.postMessage"
    deleted: bool = False
    reactions: dict[str, list[str]] = field(default_factory=dict)
    edits: list[MessageEdit] = field(default_factory=list)

    @property
    def updated(self) -> int:
        """How many times the message was edited."""
        return len(self.edits)

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts


@dataclass
class UploadedFile:
    """A file that went through files.getUploadURLExternal (and maybe the rest of the upload)."""

    file_id: str
    filename: str
    length: int
    title: str | None = None
    alt_txt: str | None = None
    snippet_type: str | None = None
    content: bytes | None = None  # None until the bytes were posted to the upload URL
    completed: bool = False
    channel: str | None = None
    initial_comment: str | None = None
    thread_ts: str | None = None
    message_ts: str | None = None


@dataclass
class User:
    id: str
    name: str
    real_name: str
    display_name: str
    team_id: str
    tz: str
    email: str | None = None
    is_bot: bool = False
    deleted: bool = False


@dataclass
class Channel:
    id: str
    name: str
    member: bool = True  # is the bot a member (else not_in_channel)
    archived: bool = False
    private: bool = False
    users: frozenset[str] | None = None  # human members; None means everybody
    im_user: str | None = None  # set for a DM channel

    @property
    def is_im(self) -> bool:
        return self.im_user is not None


# -- internals ---------------------------------------------------------------------------------


class _ApiError(Exception):
    def __init__(self, error: str, status: int = 200, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.extra = extra


@dataclass
class _Answer:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _ResponseUrl:
    url_id: str
    created: float
    channel_id: str | None
    user_id: str | None
    original_ts: str | None
    posts: int = 0


@dataclass
class _Trigger:
    created: float
    user_id: str | None
    used: bool = False


@dataclass
class _Fault:
    remaining: int
    error: str
    status: int
    retry_after: int | None = None


@dataclass
class _ViewRecord:
    view: dict[str, Any]
    user_id: str | None
    closed: bool = False


def _json_answer(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Answer:
    body = json.dumps(payload).encode()
    return _Answer(status, body, headers=headers or {})


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _decode_json_args(args: dict[str, Any]) -> dict[str, Any]:
    """Form posts carry blocks/view/files as JSON strings; JSON posts carry objects. Unify."""
    out = dict(args)
    for name in JSON_ARGS:
        value = out.get(name)
        if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
            with contextlib.suppress(ValueError):
                out[name] = json.loads(value)
    return out


def _parse_body(raw: bytes, content_type: str) -> dict[str, Any]:
    kind = content_type.split(";")[0].strip().lower()
    if not raw:
        return {}
    if kind == "application/json":
        try:
            data = json.loads(raw)
        except ValueError as error:
            raise _ApiError("invalid_json") from error
        if not isinstance(data, dict):
            raise _ApiError("invalid_json")
        return data
    if kind == "multipart/form-data":
        return _parse_multipart(raw, content_type)
    return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))


def _parse_multipart(raw: bytes, content_type: str) -> dict[str, Any]:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    parsed = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    fields: dict[str, Any] = {}
    for part in parsed.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        fields[name] = data if part.get_filename() else data.decode("utf-8", "replace")
    return fields


def _format_ts(micros: int) -> str:
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def _short_id(seed: str, length: int = 5) -> str:
    """A stable id of letters and digits, as Slack invents for missing block_id/action_id."""
    digest = hashlib.sha1(seed.encode(), usedforsecurity=False).digest()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(alphabet[b % len(alphabet)] for b in digest[:length])


def _default_name(user_id: str) -> str:
    return user_id.lstrip("UW_").lower() or user_id.lower()


# -- Block Kit validation (the limits of SLACK-WIRE.md) -----------------------------------------

_BLOCK_TYPES = frozenset(
    {
        "actions",
        "context",
        "divider",
        "file",
        "header",
        "image",
        "input",
        "markdown",
        "rich_text",
        "section",
        "table",
        "video",
    }
)
_INTERACTIVE = frozenset(
    {
        "button",
        "checkboxes",
        "datepicker",
        "datetimepicker",
        "email_text_input",
        "number_input",
        "overflow",
        "plain_text_input",
        "radio_buttons",
        "static_select",
        "external_select",
        "users_select",
        "conversations_select",
        "channels_select",
        "multi_static_select",
        "multi_external_select",
        "multi_users_select",
        "multi_conversations_select",
        "multi_channels_select",
        "timepicker",
        "url_text_input",
        "rich_text_input",
        "file_input",
    }
)
_OPTION_LIMITS = {
    "overflow": 5,
    "static_select": 100,
    "multi_static_select": 100,
    "radio_buttons": 10,
    "checkboxes": 10,
}


def _err(message: str, pointer: str) -> str:
    return f"[ERROR] {message} [json-pointer:{pointer}]"


def _text_errors(
    value: Any, pointer: str, limit: int, plain_only: bool = False, required: bool = True
) -> list[str]:
    if value is None:
        return [_err("missing required field: text", pointer)] if required else []
    if not isinstance(value, dict):
        return [_err("must be a text object", pointer)]
    allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if value.get("type") not in allowed:
        return [_err(f"must be one of {', '.join(allowed)}", f"{pointer}/type")]
    text = value.get("text")
    if not isinstance(text, str) or not text:
        return [_err("must be more than 0 characters", f"{pointer}/text")]
    if len(text) > limit:
        return [_err(f"must be less than {limit + 1} characters", f"{pointer}/text")]
    return []


def _str_limit(value: Any, pointer: str, limit: int) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, str):
        return [_err("must be a string", pointer)]
    if len(value) > limit:
        return [_err(f"must be less than {limit + 1} characters", pointer)]
    return []


def _confirm_errors(confirm: Any, pointer: str) -> list[str]:
    if confirm is None:
        return []
    if not isinstance(confirm, dict):
        return [_err("must be an object", pointer)]
    return (
        _text_errors(confirm.get("title"), f"{pointer}/title", 100, plain_only=True)
        + _text_errors(confirm.get("text"), f"{pointer}/text", 300)
        + _text_errors(confirm.get("confirm"), f"{pointer}/confirm", 30, plain_only=True)
        + _text_errors(confirm.get("deny"), f"{pointer}/deny", 30, plain_only=True)
    )


def _element_errors(element: Any, pointer: str) -> list[str]:
    if not isinstance(element, dict) or not isinstance(element.get("type"), str):
        return [_err("missing required field: type", pointer)]
    kind = element["type"]
    errors = _str_limit(element.get("action_id"), f"{pointer}/action_id", 255)
    if kind == "button":
        errors += _text_errors(element.get("text"), f"{pointer}/text", 75, plain_only=True)
        errors += _str_limit(element.get("value"), f"{pointer}/value", 2000)
        errors += _str_limit(element.get("url"), f"{pointer}/url", 3000)
        if element.get("style") not in (None, "primary", "danger"):
            errors.append(_err("must be one of primary, danger", f"{pointer}/style"))
    if kind in _OPTION_LIMITS:
        options = element.get("options")
        limit = _OPTION_LIMITS[kind]
        if options is None and kind.endswith("static_select"):
            options = [o for g in element.get("option_groups") or [] for o in g.get("options", [])]
        if not isinstance(options, list) or not options:
            errors.append(_err("must provide at least 1 option", f"{pointer}/options"))
        else:
            if len(options) > limit:
                errors.append(_err(f"no more than {limit} items allowed", f"{pointer}/options"))
            for i, option in enumerate(options):
                where = f"{pointer}/options/{i}"
                if not isinstance(option, dict):
                    errors.append(_err("must be an option object", where))
                    continue
                errors += _text_errors(option.get("text"), f"{where}/text", 75)
                errors += _str_limit(option.get("value"), f"{where}/value", 150)
    errors += _confirm_errors(element.get("confirm"), f"{pointer}/confirm")
    return errors


def _block_errors(blocks: Any, limit: int, pointer: str = "/blocks") -> list[str]:
    """Slack-style `[ERROR] … [json-pointer:…]` messages; empty when the blocks are valid."""
    if not isinstance(blocks, list):
        return [_err("must be an array", pointer)]
    errors: list[str] = []
    if len(blocks) > limit:
        errors.append(_err(f"no more than {limit} items allowed", pointer))
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        where = f"{pointer}/{i}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            errors.append(_err("missing required field: type", where))
            continue
        kind = block["type"]
        if kind not in _BLOCK_TYPES:
            errors.append(_err(f"unsupported type: {kind}", f"{where}/type"))
            continue
        block_id = block.get("block_id")
        errors += _str_limit(block_id, f"{where}/block_id", 255)
        if isinstance(block_id, str):
            if block_id in block_ids:
                errors.append(_err(f"duplicate block_id: {block_id}", f"{where}/block_id"))
            block_ids.add(block_id)
        elements: list[Any] = []
        if kind == "section":
            fields_ = block.get("fields")
            if block.get("text") is None and not fields_:
                errors.append(_err("must provide either text or fields", where))
            errors += _text_errors(block.get("text"), f"{where}/text", 3000, required=False)
            if fields_ is not None:
                if not isinstance(fields_, list) or len(fields_) > 10:
                    errors.append(_err("no more than 10 items allowed", f"{where}/fields"))
                else:
                    for j, item in enumerate(fields_):
                        errors += _text_errors(item, f"{where}/fields/{j}", 2000)
            if block.get("accessory") is not None:
                elements = [block["accessory"]]
                errors += _element_errors(block["accessory"], f"{where}/accessory")
        elif kind == "header":
            errors += _text_errors(block.get("text"), f"{where}/text", 150, plain_only=True)
        elif kind in ("actions", "context"):
            elements = block.get("elements") or []
            most = 25 if kind == "actions" else 10
            if not isinstance(block.get("elements"), list) or not elements:
                errors.append(_err("must provide at least 1 item", f"{where}/elements"))
            elif len(elements) > most:
                errors.append(_err(f"no more than {most} items allowed", f"{where}/elements"))
            if kind == "actions":
                for j, element in enumerate(elements):
                    errors += _element_errors(element, f"{where}/elements/{j}")
        elif kind == "input":
            errors += _text_errors(block.get("label"), f"{where}/label", 2000, plain_only=True)
            if block.get("element") is None:
                errors.append(_err("missing required field: element", f"{where}/element"))
            else:
                elements = [block["element"]]
                errors += _element_errors(block["element"], f"{where}/element")
        elif kind == "image":
            if not block.get("image_url") and not block.get("slack_file"):
                errors.append(_err("missing required field: image_url", where))
            errors += _str_limit(block.get("alt_text"), f"{where}/alt_text", 2000)
        action_ids = [e.get("action_id") for e in elements if isinstance(e, dict)]
        named = [a for a in action_ids if isinstance(a, str)]
        if len(named) != len(set(named)):
            errors.append(_err("duplicate action_id", where))
    return errors


def _view_errors(view: Any, pointer: str = "/view") -> list[str]:
    if not isinstance(view, dict):
        return [_err("must be an object", pointer)]
    kind = view.get("type")
    if kind not in ("modal", "home"):
        return [_err("must be one of modal, home", f"{pointer}/type")]
    errors = _block_errors(view.get("blocks"), 100, f"{pointer}/blocks")
    errors += _str_limit(view.get("callback_id"), f"{pointer}/callback_id", 255)
    errors += _str_limit(view.get("private_metadata"), f"{pointer}/private_metadata", 3000)
    errors += _str_limit(view.get("external_id"), f"{pointer}/external_id", 255)
    if kind == "modal":
        errors += _text_errors(view.get("title"), f"{pointer}/title", 24, plain_only=True)
        for name in ("submit", "close"):
            errors += _text_errors(
                view.get(name), f"{pointer}/{name}", 24, plain_only=True, required=False
            )
        blocks = view.get("blocks") if isinstance(view.get("blocks"), list) else []
        has_input = any(isinstance(b, dict) and b.get("type") == "input" for b in blocks)
        if has_input and view.get("submit") is None:
            errors.append(_err("must provide submit when blocks include an input", pointer))
    return errors


def _fill_ids(blocks: list[dict[str, Any]], seed: str) -> list[dict[str, Any]]:
    """A copy with the block_id and action_id that Slack invents where the app gave none."""
    filled = copy.deepcopy(blocks)
    for i, block in enumerate(filled):
        if not isinstance(block, dict):
            continue
        block.setdefault("block_id", _short_id(f"{seed}/{i}"))
        candidates: list[Any] = []
        if isinstance(block.get("accessory"), dict):
            candidates.append(block["accessory"])
        if isinstance(block.get("element"), dict):
            candidates.append(block["element"])
        if block.get("type") == "actions" and isinstance(block.get("elements"), list):
            candidates.extend(block["elements"])
        for j, element in enumerate(candidates):
            if isinstance(element, dict) and element.get("type") in _INTERACTIVE:
                element.setdefault("action_id", _short_id(f"{seed}/{i}/{j}"))
    return filled


def _tz_fields(tz: str) -> tuple[str, int]:
    try:
        now = datetime.now(ZoneInfo(tz))
    except (KeyError, ValueError, OSError):  # unknown zone, or no tz database installed
        return tz, 0
    offset = now.utcoffset()
    return now.tzname() or tz, int(offset.total_seconds()) if offset is not None else 0


# -- Socket Mode: a minimal RFC 6455 server side ------------------------------------------------

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OP_CONTINUATION, _OP_TEXT, _OP_BINARY = 0x0, 0x1, 0x2
_OP_CLOSE, _OP_PING, _OP_PONG = 0x8, 0x9, 0xA
_MAX_MESSAGE = 16 * 1024 * 1024
_APP_TOKEN_METHODS = frozenset({"apps.connections.open"})


def _ws_accept(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    digest = hashlib.sha1((key + _WS_GUID).encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def _ws_frame(opcode: int, payload: bytes = b"") -> bytes:
    """One final, unmasked frame: a server never masks (RFC 6455 §5.1)."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return head + payload


def _unmask(data: bytes, mask: bytes) -> bytes:
    if not data:
        return data
    key = (mask * (len(data) // 4 + 1))[: len(data)]
    value = int.from_bytes(data, "big") ^ int.from_bytes(key, "big")
    return value.to_bytes(len(data), "big")


def _accepts_response_payload(kind: str, payload: Mapping[str, Any]) -> bool:
    if kind == "slash_commands":
        return True
    return kind == "interactive" and payload.get("type") in ("view_submission", "block_suggestion")


class _SocketClosed(Exception):
    """The app hung up, or broke the protocol (then `code` is the close code to send)."""

    def __init__(self, code: int | None = None) -> None:
        super().__init__(code)
        self.code = code


class _Socket:
    """One app connection. Its handler thread reads; any thread sends (frames are whole)."""

    def __init__(self, ticket: str, connection: socket.socket, ping_interval: float | None) -> None:
        self.ticket = ticket
        self.connection = connection
        self.thread = threading.current_thread()
        self._send_lock = threading.Lock()
        self._buffer = bytearray()
        connection.settimeout(ping_interval)

    def send(self, opcode: int, payload: bytes = b"") -> None:
        with self._send_lock:
            self.connection.sendall(_ws_frame(opcode, payload))

    def send_json(self, message: Mapping[str, Any]) -> None:
        self.send(_OP_TEXT, json.dumps(message).encode())

    def read_frame(self) -> tuple[bool, int, bytes]:
        """(fin, opcode, unmasked payload) of the next frame."""
        first, second = self._take(2)
        if first & 0x70 or not second & 0x80:  # no extension was agreed; clients must mask
            raise _SocketClosed(1002)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self._take(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self._take(8))
        if size > _MAX_MESSAGE:
            raise _SocketClosed(1009)
        mask = self._take(4)
        return bool(first & 0x80), first & 0x0F, _unmask(self._take(size), mask)

    def _take(self, size: int) -> bytes:
        while len(self._buffer) < size:
            try:
                chunk = self.connection.recv(65536)
            except TimeoutError:  # idle: ping, as Slack does, and keep waiting
                self.send(_OP_PING, b"slackdouble")
                continue
            if not chunk:
                raise _SocketClosed()
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


# -- the double ---------------------------------------------------------------------------------


class SlackDouble:
    """A stateful fake of Slack's Web API and response_urls, served over loopback HTTP.

    The bot is `bot_user_id`/`bot_id`, authenticated by `bot_token`. With `seed`, the workspace
    has users U_ALICE, U_BOB, U_CAROL, channel C_OPS (#ops, the bot is a member) and C_RANDOM
    (#random, it is not). All state sits behind one lock; every method is thread-safe.
    """

    def __init__(
        self,
        *,
        bot_token: str = DEFAULT_BOT_TOKEN,
        team_id: str = "T111",
        team_domain: str = "test-domain",
        team_name: str = "Test Workspace",
        bot_user_id: str = "U_BOT",
        bot_id: str = "B_BOT",
        bot_name: str = "backupbot",
        app_id: str = "A111",
        host: str = "127.0.0.1",
        port: int = 0,
        seed: bool = True,
        response_url_max_posts: int = 5,
        response_url_ttl: float = 30 * 60,
        trigger_ttl: float = 3.0,
        app_token: str = DEFAULT_APP_TOKEN,
        socket_ping_interval: float | None = 0.5,
    ) -> None:
        self.team_id, self.team_domain, self.team_name = team_id, team_domain, team_name
        self.bot_user_id, self.bot_id, self.bot_name, self.app_id = (
            bot_user_id,
            bot_id,
            bot_name,
            app_id,
        )
        self.response_url_max_posts = response_url_max_posts
        self.response_url_ttl = response_url_ttl
        self.trigger_ttl = trigger_ttl
        self._host, self._port = host, port
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._lifecycle = threading.Lock()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None
        self._bot_token = bot_token
        self._tokens: set[str] = {bot_token}
        self._app_token = app_token
        self._app_tokens: set[str] = {app_token}
        self.socket_ping_interval = socket_ping_interval
        self._socket_tickets: dict[str, bool] = {}  # ticket → used
        self._sockets: list[_Socket] = []
        self._users: dict[str, User] = {}
        self._channels: dict[str, Channel] = {}
        self._usergroups: dict[str, list[str]] = {}
        self._listeners: list[Callable[[Event], None]] = []
        self._ids = itertools.count(1)
        self._ts = TS_START - TS_STEP
        self._skew = 0.0
        self._clear_state()
        self.add_user(bot_user_id, bot_name, real_name=bot_name, team_id=team_id, is_bot=True)
        if seed:
            self.add_user("U_ALICE", "alice", real_name="Alice Archer", team_id=team_id)
            self.add_user("U_BOB", "bob", real_name="Bob Baker", team_id=team_id)
            self.add_user("U_CAROL", "carol", real_name="Carol Cole", team_id=team_id)
            self.add_channel("C_OPS", "ops")
            self.add_channel("C_RANDOM", "random", member=False)

    def _clear_state(self) -> None:
        self._calls: list[RecordedCall] = []
        self._responses: list[RecordedResponse] = []
        self._events: list[Event] = []
        self._messages: dict[tuple[str, str], Message] = {}
        self._files: dict[str, UploadedFile] = {}
        self._views: dict[str, _ViewRecord] = {}
        self._home: dict[str, str] = {}
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._triggers: dict[str, _Trigger] = {}
        self._faults: dict[str, list[_Fault]] = {}
        self._opened_dms: set[str] = set()
        self._socket_envelopes: dict[str, SocketEnvelope] = {}
        self._socket_acks: dict[str, dict[str, Any]] = {}

    # -- serving -----------------------------------------------------------------------------

    def start(self) -> SlackDouble:
        """Serve in a daemon thread (port 0 picks a free port); returns self."""
        with self._lifecycle:
            if self._server is not None:
                raise RuntimeError("the Slack double is already running")
            server = _HTTPServer((self._host, self._port), self)
            port = server.server_address[1]
            self._base_url = f"http://{self._host}:{port}"
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"slack-double-{port}",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread
        log.info("Slack double listening on %s", self._base_url)
        return self

    def stop(self) -> None:
        """Stop serving and close open connections; safe to call twice."""
        with self._lifecycle:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        sockets = self._close_sockets(1001, "going away")
        for connection in server.open_connections():
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for session in sockets:
            session.thread.join(timeout=5)
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> SlackDouble:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT` of the running (or last run) server."""
        if self._base_url is None:
            raise RuntimeError("the Slack double has not been started")
        return self._base_url

    @property
    def api_url(self) -> str:
        """`http://127.0.0.1:PORT/api/`, for `WebClient(base_url=...)`."""
        return f"{self.base_url}/api/"

    @property
    def bot_token(self) -> str:
        """The bot token the double accepts (`add_token` accepts more)."""
        return self._bot_token

    @property
    def app_token(self) -> str:
        """The app-level token apps.connections.open accepts (`add_app_token` accepts more)."""
        return self._app_token

    # -- configuration -----------------------------------------------------------------------

    def add_token(self, token: str) -> None:
        """Accept one more bot token."""
        with self._lock:
            self._tokens.add(token)

    def add_app_token(self, token: str) -> None:
        """Accept one more app-level token (Socket Mode)."""
        with self._lock:
            self._app_tokens.add(token)

    def add_user(
        self,
        user_id: str,
        name: str,
        real_name: str | None = None,
        team_id: str = "T111",
        tz: str = "Europe/London",
        *,
        display_name: str | None = None,
        email: str | None = None,
        is_bot: bool = False,
        deleted: bool = False,
    ) -> User:
        user = User(
            id=user_id,
            name=name,
            real_name=real_name if real_name is not None else name,
            display_name=display_name if display_name is not None else name,
            team_id=team_id,
            tz=tz,
            email=email,
            is_bot=is_bot,
            deleted=deleted,
        )
        with self._lock:
            self._users[user_id] = user
        return user

    def add_usergroup(self, group_id: str, members: Iterable[str]) -> None:
        with self._lock:
            self._usergroups[group_id] = list(members)

    def add_channel(
        self,
        channel_id: str,
        name: str,
        member: bool = True,
        archived: bool = False,
        *,
        private: bool = False,
        users: Iterable[str] | None = None,
    ) -> Channel:
        """Add or replace a channel. `member`: is the bot in it. `users`: None = everybody."""
        channel = Channel(
            id=channel_id,
            name=name,
            member=member,
            archived=archived,
            private=private,
            users=frozenset(users) if users is not None else None,
        )
        with self._lock:
            self._channels[channel_id] = channel
        return channel

    def rate_limit(self, method: str, count: int = 1, retry_after: int = 1) -> None:
        """The next `count` calls of `method` get HTTP 429, Retry-After and `ratelimited`."""
        with self._lock:
            fault = _Fault(count, "ratelimited", 429, retry_after)
            self._faults.setdefault(method, []).append(fault)

    def fail(self, method: str, error: str, count: int = 1, status: int = 200) -> None:
        """The next `count` calls of `method` answer `{"ok": false, "error": error}`."""
        with self._lock:
            self._faults.setdefault(method, []).append(_Fault(count, error, status))

    def advance(self, seconds: float) -> None:
        """Move the double's clock forward (response_url and trigger_id expiry)."""
        with self._lock:
            self._skew += seconds

    def reset(self) -> None:
        """Forget calls, responses, messages, views, files, URLs and pending faults.

        Users, channels, usergroups and tokens stay; `ts` keeps increasing.
        """
        with self._lock:
            self._clear_state()
            self._changed.notify_all()

    def add_message(
        self,
        channel: str,
        text: str,
        user_id: str = "U_ALICE",
        *,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
    ) -> Message:
        """A message that a person posted (the bot did not), e.g. to thread under or to fail
        chat.update with cant_update_message."""
        with self._lock:
            try:
                target = self._resolve_channel(channel)
            except _ApiError as error:
                raise ValueError(f"{error.error}: {channel!r}") from error
            ts = self._next_ts()
            message = Message(
                channel=target.id,
                ts=ts,
                user=user_id,
                text=text,
                blocks=_fill_ids(blocks or [], f"{target.id}/{ts}"),
                thread_ts=thread_ts,
                via="user",
            )
            self._messages[(target.id, ts)] = message
            self._mark_root(target.id, thread_ts)
            return copy.deepcopy(message)

    def response_url(
        self,
        name: str | None = None,
        *,
        channel_id: str | None = None,
        user_id: str | None = None,
        message_ts: str | None = None,
    ) -> str:
        """Mint a fresh response_url. The context says where its messages go: `channel_id`,
        `user_id` (who sees ephemeral ones) and `message_ts` (what replace_original edits)."""
        with self._lock:
            url_id = name or f"R{next(self._ids):06d}"
            if url_id in self._response_urls:
                raise ValueError(f"response_url {url_id!r} already exists")
            self._response_urls[url_id] = _ResponseUrl(
                url_id, self._now(), channel_id, user_id, message_ts
            )
        return f"{self.base_url}/response/{url_id}"

    def new_trigger_id(self, user_id: str | None = None) -> str:
        """Mint a trigger_id that views.open/views.push accept once within `trigger_ttl`."""
        with self._lock:
            n = next(self._ids)
            trigger = f"{int(time.time())}.{n}.{_short_id(f'trigger/{n}', 12).lower()}"
            self._triggers[trigger] = _Trigger(self._now(), user_id)
        return trigger

    # -- observation -------------------------------------------------------------------------

    @property
    def calls(self) -> list[RecordedCall]:
        with self._lock:
            return list(self._calls)

    @property
    def responses(self) -> list[RecordedResponse]:
        with self._lock:
            return list(self._responses)

    @property
    def events(self) -> list[Event]:
        """Calls and response_url posts, in the order they were answered."""
        with self._lock:
            return list(self._events)

    @property
    def messages(self) -> list[Message]:
        """Copies of every message (deleted ones too, flagged), in ts order."""
        with self._lock:
            return [copy.deepcopy(m) for m in sorted(self._messages.values(), key=_ts_key)]

    @property
    def files(self) -> list[UploadedFile]:
        with self._lock:
            return [copy.deepcopy(f) for f in self._files.values()]

    @property
    def views(self) -> list[dict[str, Any]]:
        """The current version of every view opened, pushed, updated or published."""
        with self._lock:
            return [copy.deepcopy(r.view) for r in self._views.values()]

    def calls_to(self, method: str) -> list[RecordedCall]:
        with self._lock:
            return [c for c in self._calls if c.method == method]

    def message(self, channel: str, ts: str) -> Message | None:
        with self._lock:
            found = self._messages.get((self._channel_id(channel), ts))
            return copy.deepcopy(found) if found is not None else None

    def messages_in(
        self,
        channel: str,
        *,
        thread_ts: str | None = None,
        include_ephemeral: bool = True,
        include_deleted: bool = False,
    ) -> list[Message]:
        channel_id = self._channel_id(channel)
        return [
            m
            for m in self.messages
            if m.channel == channel_id
            and (thread_ts is None or m.thread_ts == thread_ts)
            and (include_ephemeral or not m.ephemeral)
            and (include_deleted or not m.deleted)
        ]

    def last_message(self, channel: str | None = None) -> Message | None:
        found = [m for m in self.messages if not m.deleted]
        if channel is not None:
            channel_id = self._channel_id(channel)
            found = [m for m in found if m.channel == channel_id]
        return found[-1] if found else None

    def view(self, view_id: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._views.get(view_id)
            return copy.deepcopy(record.view) if record is not None else None

    def open_views(self, user_id: str | None = None) -> list[dict[str, Any]]:
        """Modals still open (not closed by a submission), for one user or all."""
        with self._lock:
            return [
                copy.deepcopy(r.view)
                for r in self._views.values()
                if r.view.get("type") == "modal"
                and not r.closed
                and (user_id is None or r.user_id == user_id)
            ]

    def home_view(self, user_id: str) -> dict[str, Any] | None:
        with self._lock:
            view_id = self._home.get(user_id)
            return self.view(view_id) if view_id is not None else None

    def user(self, user_id: str) -> User | None:
        with self._lock:
            found = self._users.get(user_id)
            return copy.deepcopy(found) if found is not None else None

    def channel(self, channel_id: str) -> Channel | None:
        with self._lock:
            found = self._channels.get(channel_id)
            if found is None and channel_id[:1] in ("U", "W") and channel_id in self._users:
                found = self._dm(channel_id)
            return copy.deepcopy(found) if found is not None else None

    def dm_channel_id(self, user_id: str) -> str:
        """The id of the bot's DM with a user ("U_ALICE" → "D_ALICE")."""
        return f"D{user_id[1:]}" if user_id[:1] in ("U", "W") else f"D{user_id}"

    def open_dm(self, user_id: str) -> str:
        """The bot's DM with a user, opened if it was not yet (as `conversations.open` would, but
        without recording a call), so `channel()` knows it; returns its id."""
        with self._lock:
            return self._dm(user_id).id

    def message_payload(self, message: Message) -> dict[str, Any]:
        """The message as Slack shows it to apps (e.g. inside a block_actions payload)."""
        with self._lock:
            return self._message_json(message)

    def on_event(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call `callback` with every RecordedCall/RecordedResponse (on the server's thread,
        outside the double's lock). Returns a function that unsubscribes."""
        with self._lock:
            self._listeners.append(callback)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._listeners.remove(callback)

        return unsubscribe

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 5.0) -> Event:
        """The first recorded call/response (already recorded or arriving) that satisfies the
        predicate; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                events = self._events
                if len(events) < seen:  # reset() emptied the record
                    seen = 0
                for event in events[seen:]:
                    if predicate(event):
                        return event
                seen = len(events)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    recorded = ", ".join(_describe(e) for e in events[-10:]) or "nothing"
                    raise TimeoutError(f"no matching Slack event in {timeout}s; last: {recorded}")
                self._changed.wait(remaining)

    # -- Socket Mode -------------------------------------------------------------------------

    @property
    def socket_connections(self) -> int:
        """How many Socket Mode connections are open."""
        with self._lock:
            return len(self._sockets)

    def socket_connected(self, timeout: float = 0.0) -> bool:
        """Whether an app is connected over Socket Mode, waiting up to `timeout` s for one."""
        return self._wait_sockets(lambda: bool(self._sockets), timeout)

    def socket_disconnected(self, timeout: float = 0.0) -> bool:
        """Whether no app is connected, waiting up to `timeout` s for the last to hang up."""
        return self._wait_sockets(lambda: not self._sockets, timeout)

    def socket_send(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        accepts_response_payload: bool | None = None,
    ) -> str:
        """Send an envelope (`kind`: "slash_commands", "interactive", "events_api") to the
        newest connection; returns its envelope_id. RuntimeError when no app is connected."""
        return self._socket_send(kind, payload, accepts_response_payload).envelope_id

    def socket_ack(self, envelope_id: str, timeout: float = 3.0) -> dict[str, Any]:
        """The payload of the app's ack of an envelope (`{}` for a bare ack), waiting up to
        `timeout` s for it; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while envelope_id not in self._socket_acks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no ack of envelope {envelope_id} in {timeout}s")
                self._changed.wait(remaining)
            return copy.deepcopy(self._socket_acks[envelope_id])

    def socket_slash_command(
        self,
        text: str,
        user_id: str = "U_ALICE",
        channel_id: str = "C_OPS",
        command: str = "/backup",
        *,
        response_url: str | None = None,
        trigger_id: str | None = None,
    ) -> SocketEnvelope:
        """A slash command as a `slash_commands` envelope: the payload `SlackSender.slash_command`
        posts, with a response_url and trigger_id minted here."""
        builder = _PayloadBuilder(self)
        builder.slash_command(
            text, user_id, channel_id, command, response_url=response_url, trigger_id=trigger_id
        )
        assert builder.last_payload is not None
        return self._socket_send("slash_commands", builder.last_payload)

    def socket_block_actions(
        self,
        action: Mapping[str, Any],
        user_id: str = "U_ALICE",
        channel_id: str | None = None,
        message: Mapping[str, Any] | Message | None = None,
        response_url: str | None = None,
        container: Mapping[str, Any] | None = None,
        *,
        trigger_id: str | None = None,
    ) -> SocketEnvelope:
        """A button/menu interaction as an `interactive` envelope: the payload
        `SlackSender.block_actions` posts (see there for `message` and `container`)."""
        builder = _PayloadBuilder(self)
        builder.block_actions(
            action, user_id, channel_id, message, response_url, container, trigger_id=trigger_id
        )
        assert builder.last_payload is not None
        return self._socket_send("interactive", builder.last_payload)

    def socket_click(
        self, message: Message, action_id: str, user_id: str = "U_ALICE", value: str | None = None
    ) -> SocketEnvelope:
        """`SlackSender.click` over Socket Mode."""
        action = SlackSender.action_for(message.blocks, action_id, value)
        return self.socket_block_actions(action, user_id=user_id, message=message)

    def socket_disconnect(self, reason: str = "refresh_requested") -> int:
        """Tell every connected app to reconnect (Slack's `disconnect` message); returns how
        many connections were told."""
        with self._lock:
            sockets = list(self._sockets)
        message = {"type": "disconnect", "reason": reason, "debug_info": {"host": "slackdouble"}}
        told = 0
        for session in sockets:
            with contextlib.suppress(OSError):
                session.send_json(message)
                told += 1
        return told

    def _wait_sockets(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def _socket_send(
        self, kind: str, payload: Mapping[str, Any], accepts: bool | None = None
    ) -> SocketEnvelope:
        envelope = SocketEnvelope(
            envelope_id=str(uuid.uuid4()),
            type=kind,
            payload=copy.deepcopy(dict(payload)),
            accepts_response_payload=(
                _accepts_response_payload(kind, payload) if accepts is None else accepts
            ),
        )
        with self._lock:
            if not self._sockets:
                raise RuntimeError("no app is connected over Socket Mode")
            session = self._sockets[-1]
            self._socket_envelopes[envelope.envelope_id] = envelope
        try:
            session.send_json(envelope.message())
        except OSError as error:
            raise ConnectionError(f"the Socket Mode connection failed: {error}") from error
        log.debug("slack double → socket %s %s", kind, envelope.envelope_id)
        return envelope

    def _close_sockets(self, code: int, reason: str) -> list[_Socket]:
        with self._lock:
            sockets = list(self._sockets)
        for session in sockets:
            with contextlib.suppress(OSError):
                session.send(_OP_CLOSE, struct.pack("!H", code) + reason.encode())
        return sockets

    def _serve_socket(self, handler: _Handler, ticket: str) -> None:
        """The WebSocket handshake, then the connection until either side closes it."""
        handler.close_connection = True
        headers = handler.headers
        key = (headers.get("Sec-WebSocket-Key") or "").strip()
        hops = {t.strip().lower() for t in (headers.get("Connection") or "").split(",")}
        if (headers.get("Upgrade") or "").strip().lower() != "websocket" or "upgrade" not in hops:
            handler._send(_Answer(426, b"upgrade_required", "text/plain; charset=utf-8"))
            return
        if not key or (headers.get("Sec-WebSocket-Version") or "").strip() != "13":
            answer = _Answer(400, b"bad_handshake", "text/plain; charset=utf-8")
            answer.headers["Sec-WebSocket-Version"] = "13"
            handler._send(answer)
            return
        with self._lock:
            fresh = self._socket_tickets.get(ticket) is False
            if fresh:
                self._socket_tickets[ticket] = True
        if not fresh:
            handler._send(_Answer(401, b"invalid_ticket", "text/plain; charset=utf-8"))
            return
        handler.send_response(101, "Switching Protocols")
        handler.send_header("Upgrade", "websocket")
        handler.send_header("Connection", "Upgrade")
        handler.send_header("Sec-WebSocket-Accept", _ws_accept(key))
        handler.end_headers()
        threading.current_thread().name = f"slack-double-socket-{ticket}"
        session = _Socket(ticket, handler.connection, self.socket_ping_interval)
        try:
            with self._lock:
                count = len(self._sockets) + 1
            session.send_json(
                {
                    "type": "hello",
                    "num_connections": count,
                    "debug_info": {
                        "host": "slackdouble",
                        "build_number": 1,
                        "approximate_connection_time": 18060,
                    },
                    "connection_info": {"app_id": self.app_id},
                }
            )
            with self._lock:
                self._sockets.append(session)
                self._changed.notify_all()
            log.info("Slack double: an app connected over Socket Mode (%s)", ticket)
            self._socket_loop(session)
        except _SocketClosed as closed:
            if closed.code is not None:
                with contextlib.suppress(OSError):
                    session.send(_OP_CLOSE, struct.pack("!H", closed.code))
        except OSError:  # reset, or stop() shut the connection
            pass
        finally:
            with self._lock:
                if session in self._sockets:
                    self._sockets.remove(session)
                self._changed.notify_all()
            log.info("Slack double: a Socket Mode connection closed (%s)", ticket)

    def _socket_loop(self, session: _Socket) -> None:
        kind: int | None = None
        parts: list[bytes] = []
        while True:
            fin, opcode, data = session.read_frame()
            if opcode == _OP_CLOSE:
                with contextlib.suppress(OSError):
                    session.send(_OP_CLOSE, data[:2])
                return
            if opcode == _OP_PING:
                session.send(_OP_PONG, data)
                continue
            if opcode == _OP_PONG:
                continue
            if opcode in (_OP_TEXT, _OP_BINARY) and kind is None:
                kind, parts = opcode, [data]
            elif opcode == _OP_CONTINUATION and kind is not None:
                parts.append(data)
            else:
                raise _SocketClosed(1002)
            if sum(len(p) for p in parts) > _MAX_MESSAGE:
                raise _SocketClosed(1009)
            if fin:
                if kind == _OP_TEXT:
                    self._socket_received(b"".join(parts))
                kind, parts = None, []

    def _socket_received(self, raw: bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            log.warning("Slack double: the app sent Socket Mode text that is not JSON")
            return
        envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
        if not isinstance(envelope_id, str):
            log.warning("Slack double: a Socket Mode message without envelope_id")
            return
        payload = message.get("payload")
        with self._lock:
            if envelope_id not in self._socket_envelopes:
                log.warning("Slack double: an ack of unknown envelope %s", envelope_id)
            self._socket_acks.setdefault(envelope_id, payload if isinstance(payload, dict) else {})
            self._changed.notify_all()

    # -- internals: state (callers hold the lock) ---------------------------------------------

    def _now(self) -> float:
        return time.monotonic() + self._skew

    def _next_ts(self) -> str:
        self._ts += TS_STEP
        return _format_ts(self._ts)

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):08d}"

    def _channel_id(self, channel: str) -> str:
        with self._lock:
            if channel[:1] in ("U", "W") and channel in self._users:
                return self.dm_channel_id(channel)
            return channel

    def _dm(self, user_id: str) -> Channel:
        channel_id = self.dm_channel_id(user_id)
        channel = self._channels.get(channel_id)
        if channel is None:
            channel = Channel(id=channel_id, name=channel_id, im_user=user_id)
            self._channels[channel_id] = channel
        return channel

    def _resolve_channel(self, value: Any, error: str = "channel_not_found") -> Channel:
        if not isinstance(value, str) or not value:
            raise _ApiError(error)
        if value in self._channels:
            return self._channels[value]
        if value[:1] in ("U", "W") and value in self._users:
            return self._dm(value)
        if value[:1] == "D":
            for user_id in self._users:
                if self.dm_channel_id(user_id) == value:
                    return self._dm(user_id)
        name = value.removeprefix("#")
        for channel in self._channels.values():
            if channel.name == name and not channel.is_im:
                return channel
        raise _ApiError(error)

    @staticmethod
    def _check_postable(channel: Channel) -> None:
        if channel.archived:
            raise _ApiError("is_archived")
        if not channel.is_im and not channel.member:
            raise _ApiError("not_in_channel")

    def _visible(self, channel_id: str, ts: Any) -> Message | None:
        if not isinstance(ts, str):
            return None
        found = self._messages.get((channel_id, ts))
        if found is None or found.ephemeral or found.deleted:
            return None
        return found

    def _thread_root(self, channel_id: str, thread_ts: Any) -> str | None:
        if thread_ts in (None, ""):
            return None
        parent = self._visible(channel_id, str(thread_ts))
        if parent is None:
            raise _ApiError("thread_not_found")
        return parent.thread_ts or parent.ts

    def _content(self, args: Mapping[str, Any], required: bool = True) -> dict[str, Any]:
        """text/blocks/attachments validated; keys absent from args are absent from the result."""
        content: dict[str, Any] = {}
        if "text" in args and args["text"] is not None:
            content["text"] = str(args["text"])
        if args.get("markdown_text"):
            content["text"] = str(args["markdown_text"])
        for name in ("blocks", "attachments"):
            value = args.get(name)
            if value is None or value == "":
                continue
            if not isinstance(value, list):
                raise _ApiError(f"invalid_{name}")
            content[name] = value
        if required and not (
            content.get("text") or content.get("blocks") or content.get("attachments")
        ):
            raise _ApiError("no_text")
        if len(content.get("text", "")) > MAX_TEXT:
            raise _ApiError("msg_too_long")
        if "blocks" in content:
            errors = _block_errors(content["blocks"], 50)
            if errors:
                raise _ApiError(
                    "invalid_blocks", errors=errors, response_metadata={"messages": errors}
                )
        if len(content.get("attachments", [])) > 100:
            raise _ApiError("too_many_attachments")
        return content

    def _post(
        self,
        channel: str,
        content: Mapping[str, Any],
        *,
        via: str,
        thread_ts: str | None = None,
        ephemeral: bool = False,
        visible_to: str | None = None,
        files: list[str] | None = None,
    ) -> Message:
        ts = self._next_ts()
        message = Message(
            channel=channel,
            ts=ts,
            user=self.bot_user_id,
            text=content.get("text", ""),
            blocks=_fill_ids(content.get("blocks", []), f"{channel}/{ts}"),
            thread_ts=thread_ts,
            ephemeral=ephemeral,
            visible_to=visible_to,
            attachments=copy.deepcopy(content.get("attachments", [])),
            files=list(files or []),
            via=via,
        )
        self._messages[(channel, ts)] = message
        if not ephemeral:
            self._mark_root(channel, thread_ts)
        return message

    def _mark_root(self, channel: str, thread_ts: str | None) -> None:
        """A message with replies becomes a thread root: its thread_ts is its own ts."""
        parent = self._messages.get((channel, thread_ts)) if thread_ts else None
        if parent is not None and parent.thread_ts is None:
            parent.thread_ts = parent.ts

    def _edit(self, message: Message, content: Mapping[str, Any], via: str) -> None:
        message.edits.append(
            MessageEdit(message.text, copy.deepcopy(message.blocks), time.time(), via)
        )
        if "text" in content:
            message.text = content["text"]
        if "blocks" in content:
            seed = f"{message.channel}/{message.ts}/{len(message.edits)}"
            message.blocks = _fill_ids(content["blocks"], seed)
        if "attachments" in content:
            message.attachments = copy.deepcopy(content["attachments"])

    def _message_json(self, message: Message) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "message",
            "user": message.user,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "text": message.text,
            "ts": message.ts,
            "team": self.team_id,
        }
        if message.blocks:
            out["blocks"] = copy.deepcopy(message.blocks)
        if message.attachments:
            out["attachments"] = copy.deepcopy(message.attachments)
        if message.thread_ts is not None:
            out["thread_ts"] = message.thread_ts
        if message.thread_ts == message.ts:
            replies = [
                m
                for m in self._messages.values()
                if m.channel == message.channel
                and m.thread_ts == message.ts
                and m.ts != message.ts
                and not m.ephemeral
                and not m.deleted
            ]
            out["reply_count"] = len(replies)
            out["latest_reply"] = max((m.ts for m in replies), key=_ts_value, default=message.ts)
        if message.edits:
            out["edited"] = {"user": message.user, "ts": f"{message.edits[-1].at:.6f}"}
        if message.files:
            out["files"] = [
                self._file_json(self._files[f]) for f in message.files if f in self._files
            ]
        if message.reactions:
            out["reactions"] = [
                {"name": name, "users": list(users), "count": len(users)}
                for name, users in message.reactions.items()
            ]
        return out

    def _permalink(self, message: Message) -> str:
        link = (
            f"https://{self.team_domain}.slack.com/archives/{message.channel}/"
            f"p{message.ts.replace('.', '')}"
        )
        if message.is_reply:
            link += f"?thread_ts={message.thread_ts}&cid={message.channel}"
        return link

    def _file_json(self, upload: UploadedFile) -> dict[str, Any]:
        name = upload.filename
        extension = name.rsplit(".", 1)[-1].lower() if "." in name else "text"
        out: dict[str, Any] = {
            "id": upload.file_id,
            "created": int(time.time()),
            "timestamp": int(time.time()),
            "name": name,
            "title": upload.title or name,
            "mimetype": "text/plain" if extension in ("txt", "text", "log") else "",
            "filetype": extension,
            "user": self.bot_user_id,
            "size": len(upload.content or b""),
            "mode": "hosted",
            "is_external": False,
            "url_private": f"https://files.slack.com/files-pri/{self.team_id}-{upload.file_id}/{name}",
            "permalink": f"https://{self.team_domain}.slack.com/files/{self.bot_user_id}/"
            f"{upload.file_id}/{name}",
            "channels": [upload.channel] if upload.channel else [],
        }
        if upload.alt_txt:
            out["alt_txt"] = upload.alt_txt
        return out

    def _view_json(
        self, view: Mapping[str, Any], view_id: str, previous: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        root = previous.get("root_view_id", view_id) if previous else view_id
        return {
            "id": view_id,
            "team_id": self.team_id,
            "type": view.get("type"),
            "blocks": _fill_ids(list(view.get("blocks") or []), f"view/{view_id}"),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{_short_id(f'hash/{next(self._ids)}', 8)}",
            "title": copy.deepcopy(view.get("title")),
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "close": copy.deepcopy(view.get("close")),
            "submit": copy.deepcopy(view.get("submit")),
            "previous_view_id": None,
            "root_view_id": root,
            "app_id": self.app_id,
            "external_id": view.get("external_id", ""),
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }

    def _parse_view(self, args: Mapping[str, Any]) -> dict[str, Any]:
        view = args.get("view")
        if not isinstance(view, dict):
            raise _ApiError("invalid_arguments", response_metadata={"messages": ["invalid `view`"]})
        errors = _view_errors(view)
        if errors:
            raise _ApiError("invalid_arguments", response_metadata={"messages": errors})
        return view

    def _use_trigger(self, trigger_id: Any) -> _Trigger:
        trigger = self._triggers.get(trigger_id) if isinstance(trigger_id, str) else None
        if trigger is None:
            messages = ["invalid `trigger_id`"]
            raise _ApiError("invalid_arguments", response_metadata={"messages": messages})
        if trigger.used:
            raise _ApiError("exchanged_trigger_id")
        if self._now() - trigger.created > self.trigger_ttl:
            raise _ApiError("expired_trigger_id")
        trigger.used = True
        return trigger

    def _find_view(self, args: Mapping[str, Any]) -> _ViewRecord:
        view_id, external_id = args.get("view_id"), args.get("external_id")
        if view_id:
            record = self._views.get(str(view_id))
            if record is not None:
                return record
        elif external_id:
            for record in self._views.values():
                if record.view.get("external_id") == external_id:
                    return record
        raise _ApiError("not_found")

    def _close_view(self, view_id: str) -> None:
        with self._lock:
            record = self._views.get(view_id)
            if record is None:
                return
            root = record.view.get("root_view_id")
            for other in self._views.values():
                if other.view.get("root_view_id") == root:
                    other.closed = True

    def _replace_view(self, view_id: str, view: Mapping[str, Any]) -> None:
        with self._lock:
            record = self._views.get(view_id)
            if record is not None:
                record.view = self._view_json(view, view_id, record.view)

    def _record(self, event: Event) -> list[Callable[[Event], None]]:
        if isinstance(event, RecordedCall):
            self._calls.append(event)
        else:
            self._responses.append(event)
        self._events.append(event)
        self._changed.notify_all()
        return list(self._listeners)

    @staticmethod
    def _notify(listeners: list[Callable[[Event], None]], event: Event) -> None:
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                log.exception("a Slack double listener failed")

    # -- the Web API -------------------------------------------------------------------------

    def _handle_api(
        self,
        method: str,
        args: dict[str, Any],
        authorization: str | None,
        parse_error: str | None = None,
    ) -> _Answer:
        token = args.pop("token", None)
        args = _decode_json_args(args)
        headers: dict[str, str] = {}
        with self._lock:
            status = 200
            handler = _API_METHODS.get(method)
            try:
                if handler is None:
                    raise _ApiError("unknown_method")
                if parse_error is not None:
                    raise _ApiError(parse_error)
                if authorization and authorization.lower().startswith("bearer "):
                    token = authorization[7:].strip()
                if not token:
                    raise _ApiError("not_authed")
                self._check_token(method, token)
                fault = self._take_fault(method)
                if fault is not None:
                    if fault.retry_after is not None:
                        headers["Retry-After"] = str(fault.retry_after)
                    raise _ApiError(fault.error, status=fault.status)
                payload = {"ok": True, **handler(self, args)}
            except _ApiError as error:
                status = error.status
                payload = {"ok": False, "error": error.error, **error.extra}
            record = RecordedCall(method, args, time.time(), status, payload)
            listeners = self._record(record)
        log.debug("slack double %s → %s", method, payload.get("error", "ok"))
        self._notify(listeners, record)
        return _json_answer(status, payload, headers)

    def _check_token(self, method: str, token: str) -> None:
        """Bot tokens for the Web API, app-level tokens for apps.connections.open."""
        wants_app = method in _APP_TOKEN_METHODS
        accepted, other = (
            (self._app_tokens, self._tokens) if wants_app else (self._tokens, self._app_tokens)
        )
        if token not in accepted:
            raise _ApiError("not_allowed_token_type" if token in other else "invalid_auth")

    def _take_fault(self, method: str) -> _Fault | None:
        queue = self._faults.get(method)
        if not queue:
            return None
        fault = queue[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            queue.pop(0)
        return fault

    def _api_apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        ticket = uuid.uuid4().hex
        self._socket_tickets[ticket] = False
        return {"url": f"ws{self.base_url.removeprefix('http')}/socket/{ticket}"}

    def _api_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_name,
            "user": self.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _api_chat_post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"))
        self._check_postable(channel)
        content = self._content(args)
        thread_ts = self._thread_root(channel.id, args.get("thread_ts"))
        message = self._post(channel.id, content, via="chat.postMessage", thread_ts=thread_ts)
        return {"channel": channel.id, "ts": message.ts, "message": self._message_json(message)}

    def _api_chat_post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"))
        user_id = args.get("user")
        if not user_id:
            raise _ApiError("invalid_arguments", response_metadata={"messages": ["missing `user`"]})
        if user_id not in self._users:
            raise _ApiError("user_not_found")
        self._check_postable(channel)
        if channel.is_im and channel.im_user != user_id:
            raise _ApiError("user_not_in_channel")
        if channel.users is not None and user_id not in channel.users:
            raise _ApiError("user_not_in_channel")
        content = self._content(args)
        thread_ts = args.get("thread_ts") or None
        message = self._post(
            channel.id,
            content,
            via="chat.postEphemeral",
            thread_ts=str(thread_ts) if thread_ts else None,
            ephemeral=True,
            visible_to=str(user_id),
        )
        return {"message_ts": message.ts}

    def _api_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"))
        message = self._visible(channel.id, args.get("ts"))
        if message is None:
            raise _ApiError("message_not_found")
        if message.user != self.bot_user_id:
            raise _ApiError("cant_update_message")
        if channel.archived:
            raise _ApiError("is_inactive")
        content = self._content(args)
        self._edit(message, content, "chat.update")
        return {
            "channel": channel.id,
            "ts": message.ts,
            "text": message.text,
            "message": self._message_json(message),
        }

    def _api_chat_get_permalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"))
        message = self._visible(channel.id, args.get("message_ts"))
        if message is None:
            raise _ApiError("message_not_found")
        return {"channel": channel.id, "permalink": self._permalink(message)}

    def _api_conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        if args.get("channel"):
            channel = self._resolve_channel(args["channel"])
            return {"channel": {"id": channel.id}}
        users = [u.strip() for u in str(args.get("users") or "").split(",") if u.strip()]
        if not users:
            raise _ApiError("users_list_not_supplied")
        for user_id in users:
            if user_id not in self._users:
                raise _ApiError("user_not_found")
        if len(users) > 1:
            raise _ApiError("not_supported", response_metadata={"messages": ["mpims unmodelled"]})
        channel = self._dm(users[0])
        already = channel.id in self._opened_dms
        self._opened_dms.add(channel.id)
        answer: dict[str, Any] = {"channel": {"id": channel.id}}
        if already:
            answer = {"no_op": True, "already_open": True, **answer}
        return answer

    def _api_conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"))
        if channel.is_im:
            return {
                "channel": {
                    "id": channel.id,
                    "created": 1_600_000_000,
                    "is_im": True,
                    "is_org_shared": False,
                    "user": channel.im_user,
                    "is_user_deleted": False,
                    "priority": 0,
                }
            }
        info: dict[str, Any] = {
            "id": channel.id,
            "name": channel.name,
            "is_channel": not channel.private,
            "is_group": channel.private,
            "is_im": False,
            "is_mpim": False,
            "is_private": channel.private,
            "created": 1_600_000_000,
            "is_archived": channel.archived,
            "is_general": channel.name == "general",
            "name_normalized": channel.name,
            "is_shared": False,
            "is_org_shared": False,
            "is_member": channel.member,
            "creator": "",
        }
        if channel.users is not None:
            info["num_members"] = len(channel.users) + (1 if channel.member else 0)
        return {"channel": info}

    def _api_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self._users.get(str(args.get("user") or ""))
        if user is None:
            raise _ApiError("user_not_found")
        tz_label, tz_offset = _tz_fields(user.tz)
        profile: dict[str, Any] = {
            "real_name": user.real_name,
            "display_name": user.display_name,
            "real_name_normalized": user.real_name,
            "display_name_normalized": user.display_name,
            "team": user.team_id,
        }
        if user.email is not None:
            profile["email"] = user.email
        return {
            "user": {
                "id": user.id,
                "team_id": user.team_id,
                "name": user.name,
                "deleted": user.deleted,
                "real_name": user.real_name,
                "tz": user.tz,
                "tz_label": tz_label,
                "tz_offset": tz_offset,
                "profile": profile,
                "is_admin": False,
                "is_owner": False,
                "is_bot": user.is_bot,
                "is_app_user": False,
                "updated": 1_600_000_000,
            }
        }

    def _api_usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        members = self._usergroups.get(str(args.get("usergroup") or ""))
        if members is None:
            raise _ApiError("no_such_subteam")
        return {"users": list(members)}

    def _api_views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        trigger = self._use_trigger(args.get("trigger_id"))
        view = self._parse_view(args)
        if view.get("type") != "modal":
            raise _ApiError("invalid_arguments", response_metadata={"messages": ["must be modal"]})
        view_id = self._next_id("V")
        record = _ViewRecord(self._view_json(view, view_id, None), trigger.user_id)
        self._views[view_id] = record
        return {"view": copy.deepcopy(record.view)}

    def _api_views_push(self, args: dict[str, Any]) -> dict[str, Any]:
        trigger = self._use_trigger(args.get("trigger_id"))
        view = self._parse_view(args)
        open_views = [
            r
            for r in self._views.values()
            if r.view.get("type") == "modal" and not r.closed and r.user_id == trigger.user_id
        ]
        if not open_views:
            raise _ApiError("not_found")
        parent = open_views[-1].view
        view_id = self._next_id("V")
        pushed = self._view_json(view, view_id, parent)
        pushed["previous_view_id"] = parent["id"]
        self._views[view_id] = _ViewRecord(pushed, trigger.user_id)
        return {"view": copy.deepcopy(pushed)}

    def _api_views_update(self, args: dict[str, Any]) -> dict[str, Any]:
        record = self._find_view(args)
        wanted_hash = args.get("hash")
        if wanted_hash and wanted_hash != record.view.get("hash"):
            raise _ApiError("hash_conflict")
        view = self._parse_view(args)
        updated = self._view_json(view, record.view["id"], record.view)
        updated["previous_view_id"] = record.view.get("previous_view_id")
        record.view = updated
        return {"view": copy.deepcopy(updated)}

    def _api_views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = str(args.get("user_id") or "")
        if user_id not in self._users:
            raise _ApiError("invalid_arguments", response_metadata={"messages": ["invalid user"]})
        view = self._parse_view(args)
        if view.get("type") != "home":
            raise _ApiError("invalid_arguments", response_metadata={"messages": ["must be home"]})
        view_id = self._home.get(user_id) or self._next_id("V")
        previous = self._views.get(view_id)
        wanted_hash = args.get("hash")
        if previous is not None and wanted_hash and wanted_hash != previous.view.get("hash"):
            raise _ApiError("hash_conflict")
        published = self._view_json(view, view_id, None)
        self._views[view_id] = _ViewRecord(published, user_id)
        self._home[user_id] = view_id
        return {"view": copy.deepcopy(published)}

    def _api_reactions_add(self, args: dict[str, Any]) -> dict[str, Any]:
        name = str(args.get("name") or "").strip(":")
        if not name:
            raise _ApiError("invalid_name")
        if not args.get("channel") or not args.get("timestamp"):
            raise _ApiError("no_item_specified")
        channel = self._resolve_channel(args.get("channel"))
        if channel.archived:
            raise _ApiError("is_archived")
        message = self._visible(channel.id, args.get("timestamp"))
        if message is None:
            raise _ApiError("message_not_found")
        users = message.reactions.setdefault(name, [])
        if self.bot_user_id in users:
            raise _ApiError("already_reacted")
        users.append(self.bot_user_id)
        return {}

    def _api_files_get_upload_url_external(self, args: dict[str, Any]) -> dict[str, Any]:
        filename = args.get("filename")
        if not filename:
            raise _ApiError("invalid_arguments", response_metadata={"messages": ["filename"]})
        try:
            length = int(args.get("length") or 0)
        except (TypeError, ValueError) as error:
            raise _ApiError("invalid_arguments") from error
        if length <= 0:
            raise _ApiError("missing_argument")
        file_id = self._next_id("F")
        self._files[file_id] = UploadedFile(
            file_id=file_id,
            filename=str(filename),
            length=length,
            alt_txt=args.get("alt_txt") or None,
            snippet_type=args.get("snippet_type") or None,
        )
        return {"upload_url": f"{self.base_url}/upload/v1/{file_id}", "file_id": file_id}

    def _api_files_complete_upload_external(self, args: dict[str, Any]) -> dict[str, Any]:
        items = args.get("files")
        if not isinstance(items, list) or not items:
            raise _ApiError("invalid_arguments", response_metadata={"messages": ["files"]})
        uploads: list[UploadedFile] = []
        for item in items:
            upload = self._files.get(item.get("id", "")) if isinstance(item, dict) else None
            if upload is None or upload.content is None or upload.completed:
                raise _ApiError("file_not_found")
            uploads.append(upload)
        target = args.get("channel_id") or (str(args.get("channels") or "").split(",")[0] or None)
        channel: Channel | None = None
        thread_ts: str | None = None
        if target:
            channel = self._resolve_channel(target, error="invalid_channel")
            self._check_postable(channel)
            thread_ts = self._thread_root(channel.id, args.get("thread_ts"))
        comment = args.get("initial_comment") or None
        for item, upload in zip(items, uploads, strict=True):
            upload.title = item.get("title") or upload.filename
            upload.completed = True
            upload.channel = channel.id if channel else None
            upload.initial_comment = comment
            upload.thread_ts = thread_ts
        if channel is not None:
            message = self._post(
                channel.id,
                {"text": comment or ""},
                via="files.completeUploadExternal",
                thread_ts=thread_ts,
                files=[u.file_id for u in uploads],
            )
            for upload in uploads:
                upload.message_ts = message.ts
        return {"files": [{"id": u.file_id, "title": u.title} for u in uploads]}

    # -- upload URLs and response_urls -------------------------------------------------------

    def _handle_upload(self, file_id: str, raw: bytes, content_type: str) -> _Answer:
        content = raw
        if content_type.lower().startswith("multipart/form-data"):
            fields = _parse_multipart(raw, content_type)
            parts = [v for v in fields.values() if isinstance(v, bytes)]
            content = parts[0] if parts else b""
        with self._lock:
            upload = self._files.get(file_id)
            if upload is None or upload.completed:
                return _Answer(404, b"file_not_found", "text/plain; charset=utf-8")
            upload.content = content
        return _Answer(200, f"OK - {len(content)}".encode(), "text/plain; charset=utf-8")

    def _handle_response(self, url_id: str, raw: bytes, content_type: str) -> _Answer:
        body: dict[str, Any] = {}
        with self._lock:
            status, error = 200, None
            try:
                body = self._response_body(raw, content_type)
                self._apply_response(url_id, body)
            except _ApiError as failure:
                status, error = failure.status, failure.error
            record = RecordedResponse(url_id, body, time.time(), status, error)
            listeners = self._record(record)
        self._notify(listeners, record)
        payload: dict[str, Any] = {"ok": True} if error is None else {"ok": False, "error": error}
        return _json_answer(status, payload)

    @staticmethod
    def _response_body(raw: bytes, content_type: str) -> dict[str, Any]:
        try:
            if content_type.lower().startswith("application/x-www-form-urlencoded"):
                form = dict(parse_qsl(raw.decode("utf-8", "replace")))
                body = json.loads(form.get("payload", ""))
            else:
                body = json.loads(raw or b"null")
        except ValueError as error:
            raise _ApiError("invalid_payload", status=400) from error
        if not isinstance(body, dict):
            raise _ApiError("invalid_payload", status=400)
        return body

    def _apply_response(self, url_id: str, body: dict[str, Any]) -> None:
        entry = self._response_urls.get(url_id)
        if entry is None:
            raise _ApiError("no_service", status=404)
        if self._now() - entry.created > self.response_url_ttl:
            raise _ApiError("expired_url", status=404)
        if entry.posts >= self.response_url_max_posts:
            raise _ApiError("used_url", status=404)
        original = None
        if entry.channel_id is not None and entry.original_ts is not None:
            original = self._messages.get((entry.channel_id, entry.original_ts))
            if original is not None and original.deleted:
                original = None
        if _truthy(body.get("delete_original")):
            if original is None:
                raise _ApiError("message_not_found", status=404)
            original.edits.append(
                MessageEdit(original.text, copy.deepcopy(original.blocks), time.time(), "delete")
            )
            original.deleted = True
            entry.posts += 1
            return
        try:
            content = self._content(_decode_json_args(body))
        except _ApiError as failure:
            failure.status = 400
            raise
        if _truthy(body.get("replace_original")) and original is not None:
            self._edit(original, content, "response_url")
        elif entry.channel_id is not None:
            ephemeral = body.get("response_type", "ephemeral") != "in_channel"
            thread_ts = body.get("thread_ts") or None
            message = self._post(
                entry.channel_id,
                content,
                via="response_url",
                thread_ts=str(thread_ts) if thread_ts else None,
                ephemeral=ephemeral,
                visible_to=entry.user_id if ephemeral else None,
            )
            if entry.original_ts is None:
                entry.original_ts = message.ts
        entry.posts += 1


def _ts_value(ts: str) -> tuple[int, int]:
    seconds, _, micros = ts.partition(".")
    return int(seconds), int(micros or 0)


def _ts_key(message: Message) -> tuple[int, int]:
    return _ts_value(message.ts)


def _describe(event: Event) -> str:
    if isinstance(event, RecordedCall):
        return f"{event.method}({event.error or 'ok'})"
    return f"response_url {event.url_id}({event.error or 'ok'})"


_API_METHODS: dict[str, Callable[[SlackDouble, dict[str, Any]], dict[str, Any]]] = {
    "apps.connections.open": SlackDouble._api_apps_connections_open,
    "auth.test": SlackDouble._api_auth_test,
    "chat.postMessage": SlackDouble._api_chat_post_message,
    "chat.postEphemeral": SlackDouble._api_chat_post_ephemeral,
    "chat.update": SlackDouble._api_chat_update,
    "chat.getPermalink": SlackDouble._api_chat_get_permalink,
    "conversations.open": SlackDouble._api_conversations_open,
    "conversations.info": SlackDouble._api_conversations_info,
    "users.info": SlackDouble._api_users_info,
    "usergroups.users.list": SlackDouble._api_usergroups_users_list,
    "views.open": SlackDouble._api_views_open,
    "views.push": SlackDouble._api_views_push,
    "views.update": SlackDouble._api_views_update,
    "views.publish": SlackDouble._api_views_publish,
    "reactions.add": SlackDouble._api_reactions_add,
    "files.getUploadURLExternal": SlackDouble._api_files_get_upload_url_external,
    "files.completeUploadExternal": SlackDouble._api_files_complete_upload_external,
}


# -- HTTP plumbing --------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], double: SlackDouble) -> None:
        self.double = double
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, alive: bool) -> None:
        with self._open_lock:
            if alive:
                self._open.add(connection)
            else:
                self._open.discard(connection)

    def open_connections(self) -> list[socket.socket]:
        with self._open_lock:
            return list(self._open)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # a client hanging up is no fault
            return
        log.exception("Slack double connection from %s failed", client_address[0])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "SlackDouble/1.0"
    sys_version = ""

    @property
    def double(self) -> SlackDouble:
        return cast(_HTTPServer, self.server).double

    def setup(self) -> None:
        super().setup()
        cast(_HTTPServer, self.server).track(self.connection, True)

    def finish(self) -> None:
        cast(_HTTPServer, self.server).track(self.connection, False)
        with contextlib.suppress(ConnectionError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced; the double logs what matters to the `bot.slackdouble` logger."""

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._send(_Answer(400, b"bad request", "text/plain; charset=utf-8"))
            return
        raw = self.rfile.read(length) if length else b""
        target = urlsplit(self.path)
        content_type = self.headers.get("Content-Type") or ""
        parts = target.path.strip("/").split("/")
        try:
            if len(parts) == 2 and parts[0] == "api":
                args: dict[str, Any] = dict(parse_qsl(target.query, keep_blank_values=True))
                parse_error = None
                try:
                    args.update(_parse_body(raw, content_type))
                except _ApiError as error:
                    parse_error = error.error
                authorization = self.headers.get("Authorization")
                answer = self.double._handle_api(parts[1], args, authorization, parse_error)
            elif len(parts) == 2 and parts[0] == "response":
                answer = self.double._handle_response(parts[1], raw, content_type)
            elif len(parts) == 3 and parts[:2] == ["upload", "v1"]:
                answer = self.double._handle_upload(parts[2], raw, content_type)
            else:
                answer = _Answer(404, b"not found", "text/plain; charset=utf-8")
        except Exception:
            log.exception("Slack double failed on %s", self.path)
            answer = _json_answer(500, {"ok": False, "error": "internal_error"})
        self._send(answer)

    def do_GET(self) -> None:
        parts = urlsplit(self.path).path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "socket":
            try:
                self.double._serve_socket(self, parts[1])
            except Exception:
                log.exception("Slack double failed on %s", self.path)
            return
        self.do_POST()

    def _send(self, answer: _Answer) -> None:
        try:
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)
        except ConnectionError:
            self.close_connection = True


# -- the sender: what Slack posts to an app -----------------------------------------------------


@dataclass(frozen=True)
class Response:
    """The app's answer to a request the sender made (httpx-like)."""

    status: int
    headers: dict[str, str]  # names lower-cased
    text: str

    @property
    def status_code(self) -> int:
        return self.status

    @property
    def body(self) -> str:
        return self.text

    def json(self) -> Any:
        return json.loads(self.text)


class SlackSender:
    """Posts signed Slack requests (slash commands, interactions) to an app's endpoint.

    `app_url` is the endpoint, e.g. `http://127.0.0.1:3000/slack/events` (`/slack/events` is added
    when the URL has no path). With a `double`, response_urls and trigger_ids are minted there and
    user/channel names come from it.
    """

    def __init__(
        self,
        app_url: str,
        signing_secret: str,
        double: SlackDouble | None = None,
        *,
        team_id: str = "T111",
        team_domain: str = "test-domain",
        api_app_id: str = "A111",
        verification_token: str = "verification_token",  # noqa: S107 - Slack's fixture value
        timeout: float = 10.0,
    ) -> None:
        parts = urlsplit(app_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {app_url!r}")
        self.app_url = (
            app_url if parts.path not in ("", "/") else app_url.rstrip("/") + "/slack/events"
        )
        self.signing_secret = signing_secret
        self.double = double
        self.team_id, self.team_domain = team_id, team_domain
        self.api_app_id = api_app_id
        self.verification_token = verification_token
        self.timeout = timeout
        self._verifier = SignatureVerifier(signing_secret)
        self._counter = itertools.count(1)
        self.last_payload: dict[str, Any] | None = None
        self.last_response_url: str | None = None
        self.last_trigger_id: str | None = None

    # -- raw ---------------------------------------------------------------------------------

    def post(
        self,
        body: bytes | str,
        content_type: str = "application/x-www-form-urlencoded",
        timestamp: int | str | None = None,
        signature: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """POST `body` signed with the secret (or with the `signature`/`timestamp` given)."""
        raw = body.encode() if isinstance(body, str) else body
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        if signature is None:
            signature = self._verifier.generate_signature(timestamp=stamp, body=raw)
        sent = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": signature,
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            "Content-Length": str(len(raw)),
            **(headers or {}),
        }
        parts = urlsplit(self.app_url)
        connection_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        connection = connection_class(parts.hostname or "", parts.port, timeout=self.timeout)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("POST", path, body=raw, headers=sent)
            answer = connection.getresponse()
            text = answer.read().decode("utf-8", "replace")
            return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, text)
        finally:
            connection.close()

    def post_form(self, fields: Mapping[str, str], **kwargs: Any) -> Response:
        return self.post(urlencode(fields), "application/x-www-form-urlencoded", **kwargs)

    def post_payload(self, payload: Mapping[str, Any], **kwargs: Any) -> Response:
        """An interaction: form field `payload=<url-encoded JSON>`."""
        self.last_payload = dict(payload)
        return self.post_form({"payload": json.dumps(payload)}, **kwargs)

    # -- what Slack sends --------------------------------------------------------------------

    def slash_command(
        self,
        text: str,
        user_id: str = "U_ALICE",
        channel_id: str = "C_OPS",
        command: str = "/backup",
        team_id: str | None = None,
        user_name: str | None = None,
        *,
        channel_name: str | None = None,
        response_url: str | None = None,
        trigger_id: str | None = None,
    ) -> Response:
        response_url = response_url or self._response_url(channel_id, user_id, None)
        trigger_id = trigger_id or self._trigger_id(user_id)
        fields = {
            "token": self.verification_token,
            "team_id": team_id or self.team_id,
            "team_domain": self.team_domain,
            "channel_id": channel_id,
            "channel_name": channel_name or self._channel_name(channel_id),
            "user_id": user_id,
            "user_name": user_name or self._user_name(user_id),
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": trigger_id,
        }
        self.last_payload = dict(fields)
        return self.post_form(fields)

    def block_actions(
        self,
        action: Mapping[str, Any],
        user_id: str = "U_ALICE",
        channel_id: str | None = None,
        message: Mapping[str, Any] | Message | None = None,
        response_url: str | None = None,
        container: Mapping[str, Any] | None = None,
        *,
        trigger_id: str | None = None,
    ) -> Response:
        """A button/menu interaction. `message` (a payload dict or a double's Message) is the
        message clicked; an ephemeral one, or none, gives an `is_ephemeral: true` container and no
        `message` field, as Slack does."""
        shown: dict[str, Any] | None = None
        ephemeral = message is None
        message_ts: str | None = None
        if isinstance(message, Message):
            channel_id = channel_id or message.channel
            ephemeral, message_ts = message.ephemeral, message.ts
            if not ephemeral:
                shown = self._message_payload(message)
        elif message is not None:
            shown = dict(message)
            message_ts = str(shown.get("ts", ""))
        channel_id = channel_id or "C_OPS"
        if container is None:
            if message_ts is None:
                message_ts = self._latest_ephemeral_ts(channel_id, user_id)
            container = {
                "type": "message",
                "message_ts": message_ts,
                "channel_id": channel_id,
                "is_ephemeral": ephemeral,
            }
        message_ts = str(container.get("message_ts") or message_ts or "")
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": self._user_json(user_id),
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "container": dict(container),
            "trigger_id": trigger_id or self._trigger_id(user_id),
            "team": {"id": self.team_id, "domain": self.team_domain},
            "channel": {"id": channel_id, "name": self._channel_name(channel_id)},
        }
        if shown is not None:
            payload["message"] = shown
        payload["response_url"] = response_url or self._response_url(
            channel_id, user_id, message_ts or None
        )
        payload["actions"] = [dict(action)]
        self.last_response_url = payload["response_url"]
        return self.post_payload(payload)

    def click(
        self,
        message: Message,
        action_id: str,
        user_id: str = "U_ALICE",
        value: str | None = None,
    ) -> Response:
        """Click the element `action_id` of a double's message (a confirm dialog is assumed
        accepted); `value` picks an overflow/select option."""
        action = self.action_for(message.blocks, action_id, value)
        return self.block_actions(action, user_id=user_id, message=message)

    @staticmethod
    def action_for(
        blocks: Iterable[Mapping[str, Any]], action_id: str, value: str | None = None
    ) -> dict[str, Any]:
        """The `actions[0]` Slack sends when the element `action_id` of `blocks` is used."""
        for block in blocks:
            elements = list(block.get("elements") or []) if block.get("type") == "actions" else []
            for key in ("accessory", "element"):
                if isinstance(block.get(key), Mapping):
                    elements.append(block[key])
            for element in elements:
                if element.get("action_id") != action_id:
                    continue
                action: dict[str, Any] = {
                    "action_id": action_id,
                    "block_id": block.get("block_id", ""),
                }
                kind = element.get("type")
                if kind == "button":
                    action["text"] = copy.deepcopy(element.get("text"))
                    if element.get("value") is not None:
                        action["value"] = element["value"]
                    if element.get("style"):
                        action["style"] = element["style"]
                action["type"] = kind
                options = list(element.get("options") or [])
                if options:
                    chosen = [o for o in options if value is None or o.get("value") == value]
                    if not chosen:
                        continue  # the same action_id may be in several blocks (list rows)
                    action["selected_option"] = copy.deepcopy(chosen[0])
                action["action_ts"] = f"{time.time():.6f}"
                return action
        wanted = f" with an option of value {value!r}" if value is not None else ""
        raise ValueError(f"no element with action_id {action_id!r}{wanted} in these blocks")

    def view_submission(
        self,
        view: Mapping[str, Any],
        user_id: str = "U_ALICE",
        values: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Response:
        """Submit a modal. `values` is `{block_id: {action_id: value}}`: a plain value is shaped
        from the input's element type (text, select, checkboxes, date…); a dict is sent as is.
        With a double, the app's answer (close, update, push, errors) is applied to its views."""
        state = self._state_values(view, values or {})
        sent_view = {
            "id": view.get("id") or f"V{next(self._counter):08d}",
            "team_id": self.team_id,
            "type": view.get("type", "modal"),
            "blocks": copy.deepcopy(list(view.get("blocks") or [])),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "state": {"values": state},
            "hash": view.get("hash", f"{int(time.time())}.abcd1234"),
            "title": copy.deepcopy(view.get("title")),
            "clear_on_close": view.get("clear_on_close", False),
            "notify_on_close": view.get("notify_on_close", False),
            "close": copy.deepcopy(view.get("close")),
            "submit": copy.deepcopy(view.get("submit")),
            "previous_view_id": view.get("previous_view_id"),
            "root_view_id": view.get("root_view_id", view.get("id")),
            "app_id": view.get("app_id", self.api_app_id),
            "external_id": view.get("external_id", ""),
            "app_installed_team_id": self.team_id,
            "bot_id": view.get("bot_id", ""),
        }
        payload = {
            "type": "view_submission",
            "team": {"id": self.team_id, "domain": self.team_domain},
            "user": self._user_json(user_id),
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "trigger_id": self._trigger_id(user_id),
            "view": sent_view,
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }
        answer = self.post_payload(payload)
        self._apply_view_answer(sent_view["id"], answer)
        return answer

    # -- helpers -----------------------------------------------------------------------------

    def _apply_view_answer(self, view_id: str, answer: Response) -> None:
        if self.double is None or answer.status != 200:
            return
        action: dict[str, Any] = {}
        if answer.text.strip():
            with contextlib.suppress(ValueError):
                parsed = answer.json()
                action = parsed if isinstance(parsed, dict) else {}
        kind = action.get("response_action")
        if kind == "errors":
            return
        if kind == "update" and isinstance(action.get("view"), dict):
            self.double._replace_view(view_id, action["view"])
        elif kind != "push":
            self.double._close_view(view_id)

    def _response_url(self, channel_id: str, user_id: str, message_ts: str | None) -> str:
        if self.double is not None:
            url = self.double.response_url(
                channel_id=channel_id, user_id=user_id, message_ts=message_ts
            )
        else:
            n = next(self._counter)
            url = f"https://hooks.slack.com/actions/{self.team_id}/{n}/{_short_id(str(n), 24)}"
        self.last_response_url = url
        return url

    def _trigger_id(self, user_id: str) -> str:
        if self.double is not None:
            trigger = self.double.new_trigger_id(user_id)
        else:
            n = next(self._counter)
            trigger = f"{int(time.time())}.{n}.{_short_id(f'trigger/{n}', 12).lower()}"
        self.last_trigger_id = trigger
        return trigger

    def _user_name(self, user_id: str) -> str:
        user = self.double.user(user_id) if self.double is not None else None
        return user.name if user is not None else _default_name(user_id)

    def _user_json(self, user_id: str) -> dict[str, Any]:
        name = self._user_name(user_id)
        return {"id": user_id, "username": name, "name": name, "team_id": self.team_id}

    def _channel_name(self, channel_id: str) -> str:
        channel = self.double.channel(channel_id) if self.double is not None else None
        if channel is None:
            return "directmessage" if channel_id.startswith("D") else channel_id.lower()
        return "directmessage" if channel.is_im else channel.name

    def _message_payload(self, message: Message) -> dict[str, Any]:
        if self.double is not None:
            return self.double.message_payload(message)
        out: dict[str, Any] = {
            "type": "message",
            "user": message.user,
            "text": message.text,
            "ts": message.ts,
            "blocks": copy.deepcopy(message.blocks),
        }
        if message.thread_ts:
            out["thread_ts"] = message.thread_ts
        return out

    def _latest_ephemeral_ts(self, channel_id: str, user_id: str) -> str:
        if self.double is not None:
            for message in reversed(self.double.messages_in(channel_id)):
                if message.ephemeral and message.visible_to == user_id:
                    return message.ts
        return f"{time.time():.6f}"

    def _state_values(
        self, view: Mapping[str, Any], values: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        elements: dict[tuple[str, str], Mapping[str, Any]] = {}
        for block in view.get("blocks") or []:
            element = block.get("element")
            if block.get("type") == "input" and isinstance(element, Mapping):
                elements[(str(block.get("block_id")), str(element.get("action_id")))] = element
        state: dict[str, dict[str, Any]] = {}
        for block_id, actions in values.items():
            for action_id, value in actions.items():
                element = elements.get((block_id, action_id), {"type": "plain_text_input"})
                state.setdefault(block_id, {})[action_id] = (
                    dict(value) if isinstance(value, Mapping) else _shape_value(element, value)
                )
        return state


class _PayloadBuilder(SlackSender):
    """SlackSender's payloads, kept in `last_payload` instead of posted: Socket Mode carries
    them in envelopes, unsigned."""

    def __init__(self, double: SlackDouble) -> None:
        super().__init__(
            double.base_url,
            "socket-mode-signs-nothing",
            double,
            team_id=double.team_id,
            team_domain=double.team_domain,
            api_app_id=double.app_id,
        )

    def post(
        self,
        body: bytes | str,
        content_type: str = "application/x-www-form-urlencoded",
        timestamp: int | str | None = None,
        signature: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        return Response(200, {}, "")


def _shape_value(element: Mapping[str, Any], value: Any) -> dict[str, Any]:
    """The state entry Slack sends for an input element holding `value`."""
    kind = str(element.get("type", "plain_text_input"))
    options = list(element.get("options") or [])

    def option(wanted: Any) -> dict[str, Any]:
        for candidate in options:
            if candidate.get("value") == wanted:
                return copy.deepcopy(dict(candidate))
        return {"text": {"type": "plain_text", "text": str(wanted)}, "value": str(wanted)}

    shaped: dict[str, Any] = {"type": kind}
    if kind in ("static_select", "external_select", "radio_buttons"):
        shaped["selected_option"] = option(value) if value is not None else None
    elif kind in ("multi_static_select", "multi_external_select", "checkboxes"):
        shaped["selected_options"] = [option(v) for v in value or []]
    elif kind == "datepicker":
        shaped["selected_date"] = value
    elif kind == "timepicker":
        shaped["selected_time"] = value
    elif kind == "users_select":
        shaped["selected_user"] = value
    elif kind == "multi_users_select":
        shaped["selected_users"] = list(value or [])
    elif kind == "conversations_select":
        shaped["selected_conversation"] = value
    elif kind == "channels_select":
        shaped["selected_channel"] = value
    else:
        shaped["value"] = None if value is None else str(value)
    return shaped
