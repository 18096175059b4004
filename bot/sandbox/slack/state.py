"""What the Slack double remembers, apart from any HTTP (that is wsgi.py): the workspace (users,
channels, user groups, tokens), what Slack would show (messages, views, files), the response_urls
and trigger_ids it minted, the faults it was told to inject, and the record of every call.

Everything sits behind one lock. The public methods take it; the helpers that webapi.py uses while
answering a call (`resolve_channel`, `post`, `edit`, ...) expect the caller to hold `lock`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("bot.sandbox.slack")

DEFAULT_BOT_TOKEN = "xoxb-111-222-slackdouble"  # noqa: S105 - a fake token for a fake Slack
DEFAULT_APP_TOKEN = "xapp-1-A111-333-slackdouble"  # noqa: S105 - the app-level one (Socket Mode)
_TS_START = 1_700_000_000_000_100  # microseconds: the first ts is "1700000000.000100"
_TS_STEP = 100


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
    visible_to: str | None = None  # who alone sees an ephemeral message ("": unknown)
    files: list[str] = field(default_factory=list)
    via: str = "chat.postMessage"
    deleted: bool = False
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
    team_id: str
    tz: str
    is_bot: bool = False


@dataclass
class Channel:
    id: str
    name: str
    member: bool = True  # is the bot a member (else not_in_channel)
    archived: bool = False
    im_user: str | None = None  # set for a DM channel

    @property
    def is_im(self) -> bool:
        return self.im_user is not None


class ApiError(Exception):
    """The answer `{"ok": false, "error": error, **extra}` with HTTP `status`."""

    def __init__(self, error: str, status: int = 200, **extra: Any) -> None:
        super().__init__(error)
        self.error, self.status, self.extra = error, status, extra


def invalid_arguments(*messages: str) -> ApiError:
    return ApiError("invalid_arguments", response_metadata={"messages": list(messages)})


@dataclass
class ResponseUrl:
    url_id: str
    created: float
    channel_id: str | None
    user_id: str | None
    original_ts: str | None  # the message replace_original/delete_original act on
    posts: int = 0


@dataclass
class Trigger:
    created: float
    user_id: str | None
    used: bool = False


@dataclass
class Fault:
    remaining: int
    error: str
    status: int
    retry_after: int | None = None


@dataclass
class OpenView:
    view: dict[str, Any]  # as views.* answered it
    user_id: str | None
    closed: bool = False


def short_id(seed: str, length: int = 5) -> str:
    """A stable id of letters and digits, as Slack invents for missing block_id/action_id."""
    digest = hashlib.sha1(seed.encode(), usedforsecurity=False).digest()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(alphabet[b % len(alphabet)] for b in digest[:length])


def elements_of(block: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The interactive elements of a block: its accessory, input element or actions."""
    found = list(block.get("elements") or []) if block.get("type") == "actions" else []
    found += [block[key] for key in ("accessory", "element") if isinstance(block.get(key), dict)]
    return [e for e in found if isinstance(e, dict) and e.get("type") != "image"]


def fill_ids(blocks: list[dict[str, Any]], seed: str) -> list[dict[str, Any]]:
    """A copy with the block_id and action_id that Slack invents where the app gave none."""
    filled = copy.deepcopy(blocks)
    for i, block in enumerate(filled):
        block.setdefault("block_id", short_id(f"{seed}/{i}"))
        for j, element in enumerate(elements_of(block)):
            element.setdefault("action_id", short_id(f"{seed}/{i}/{j}"))
    return filled


class SlackState:
    """The workspace and everything the double remembers; every public method is thread-safe.

    The bot is `bot_user_id`/`bot_id`, authenticated by `bot_token`. With `seed`, the workspace
    has users U_ALICE, U_BOB, U_CAROL, channel C_OPS (#ops, the bot is a member) and C_RANDOM
    (#random, it is not). The rest is Slack's fixture values, as class attributes.
    """

    team_id, team_domain, team_name = "T111", "test-domain", "Test Workspace"
    bot_user_id, bot_id, app_id = "U_BOT", "B_BOT", "A111"
    response_url_max_posts, response_url_ttl, trigger_ttl = 5, 30 * 60.0, 3.0

    def __init__(
        self,
        *,
        bot_token: str = DEFAULT_BOT_TOKEN,
        app_token: str = DEFAULT_APP_TOKEN,
        bot_name: str = "backupbot",
        seed: bool = True,
    ) -> None:
        self.bot_name = bot_name
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.bot_token, self.app_token = bot_token, app_token
        self.socket_mode_url: Callable[[], str] | None = None  # see attach_socket_mode
        self._base_url: str | None = None
        self.users: dict[str, User] = {}
        self.channels: dict[str, Channel] = {}
        self.usergroups: dict[str, list[str]] = {}
        self._listeners: list[Callable[[Event], None]] = []
        self._ids = itertools.count(1)
        self._ts = _TS_START - _TS_STEP
        self._skew = 0.0
        self._clear()
        self.add_user(self.bot_user_id, bot_name, is_bot=True)
        if seed:
            self.add_user("U_ALICE", "alice", real_name="Alice Archer")
            self.add_user("U_BOB", "bob", real_name="Bob Baker")
            self.add_user("U_CAROL", "carol", real_name="Carol Cole")
            self.add_channel("C_OPS", "ops")
            self.add_channel("C_RANDOM", "random", member=False)

    def _clear(self) -> None:
        self.recorded: list[Event] = []
        self.posted: dict[tuple[str, str], Message] = {}
        self.uploads: dict[str, UploadedFile] = {}
        self.view_records: dict[str, OpenView] = {}
        self.homes: dict[str, str] = {}  # user id → the view id of their Home tab
        self.response_urls: dict[str, ResponseUrl] = {}
        self.triggers: dict[str, Trigger] = {}
        self.faults: dict[str, list[Fault]] = {}
        self.opened_dms: set[str] = set()

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT` where the double is (or was last) served."""
        if self._base_url is None:
            raise RuntimeError("the Slack double has not been started")
        return self._base_url

    # -- configuration -----------------------------------------------------------------------

    def attach_socket_mode(self, open_url: Callable[[], str] | None) -> None:
        """apps.connections.open answers `open_url()` (a fresh `ws://` URL); None detaches."""
        with self.lock:
            self.socket_mode_url = open_url

    def add_user(
        self,
        user_id: str,
        name: str,
        real_name: str | None = None,
        *,
        tz: str = "Europe/London",
        is_bot: bool = False,
    ) -> User:
        real = real_name if real_name is not None else name
        user = User(user_id, name, real, self.team_id, tz, is_bot)
        with self.lock:
            self.users[user_id] = user
        return user

    def add_usergroup(self, group_id: str, members: Iterable[str]) -> None:
        with self.lock:
            self.usergroups[group_id] = list(members)

    def add_channel(
        self,
        channel_id: str,
        name: str,
        member: bool = True,
        archived: bool = False,
    ) -> Channel:
        """Add or replace a channel; `member`: is the bot in it (else not_in_channel)."""
        channel = Channel(channel_id, name, member, archived)
        with self.lock:
            self.channels[channel_id] = channel
        return channel

    def rate_limit(self, method: str, count: int = 1, retry_after: int = 1) -> None:
        """The next `count` calls of `method` get HTTP 429, Retry-After and `ratelimited`."""
        self.fail(method, "ratelimited", count, 429, retry_after)

    def fail(
        self,
        method: str,
        error: str,
        count: int = 1,
        status: int = 200,
        retry_after: int | None = None,
    ) -> None:
        """The next `count` calls of `method` answer `{"ok": false, "error": error}`."""
        with self.lock:
            self.faults.setdefault(method, []).append(Fault(count, error, status, retry_after))

    def advance(self, seconds: float) -> None:
        """Move the double's clock forward (response_url and trigger_id expiry)."""
        with self.lock:
            self._skew += seconds

    def reset(self) -> None:
        """Forget calls, responses, messages, views, files, URLs and pending faults.

        Users, channels, usergroups and tokens stay; `ts` keeps increasing.
        """
        with self.lock:
            self._clear()
            self.changed.notify_all()

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
        with self.lock:
            url_id = name or f"R{next(self._ids):06d}"
            if url_id in self.response_urls:
                raise ValueError(f"response_url {url_id!r} already exists")
            self.response_urls[url_id] = ResponseUrl(
                url_id, self.now(), channel_id, user_id, message_ts
            )
        return f"{self.base_url}/response/{url_id}"

    def new_trigger_id(self, user_id: str | None = None) -> str:
        """Mint a trigger_id that views.open accepts once within `trigger_ttl`."""
        with self.lock:
            n = next(self._ids)
            trigger = f"{int(time.time())}.{n}.{short_id(f'trigger/{n}', 12).lower()}"
            self.triggers[trigger] = Trigger(self.now(), user_id)
        return trigger

    # -- observation -------------------------------------------------------------------------

    @property
    def events(self) -> list[Event]:
        """Calls and response_url posts, in the order they were answered."""
        with self.lock:
            return list(self.recorded)

    @property
    def calls(self) -> list[RecordedCall]:
        return [e for e in self.events if isinstance(e, RecordedCall)]

    @property
    def responses(self) -> list[RecordedResponse]:
        return [e for e in self.events if isinstance(e, RecordedResponse)]

    def calls_to(self, method: str) -> list[RecordedCall]:
        return [c for c in self.calls if c.method == method]

    @property
    def messages(self) -> list[Message]:
        """Copies of every message (deleted ones too, flagged), in ts order."""
        with self.lock:
            found = sorted(self.posted.values(), key=lambda m: m.ts)  # same width: sorts as time
            return copy.deepcopy(found)

    @property
    def files(self) -> list[UploadedFile]:
        with self.lock:
            return copy.deepcopy(list(self.uploads.values()))

    def message(self, channel: str, ts: str) -> Message | None:
        with self.lock:
            return copy.deepcopy(self.posted.get((self._channel_id(channel), ts)))

    def messages_in(self, channel: str, *, thread_ts: str | None = None) -> list[Message]:
        """The messages not deleted of a channel (a user id: the bot's DM), or of one thread."""
        channel_id = self._channel_id(channel)
        return [
            m
            for m in self.messages
            if m.channel == channel_id and thread_ts in (None, m.thread_ts) and not m.deleted
        ]

    def view(self, view_id: str) -> dict[str, Any] | None:
        with self.lock:
            record = self.view_records.get(view_id)
            return copy.deepcopy(record.view) if record is not None else None

    def open_views(self, user_id: str | None = None) -> list[dict[str, Any]]:
        """Modals still open (not closed by a submission), for one user or all."""
        with self.lock:
            return [
                copy.deepcopy(r.view)
                for r in self.view_records.values()
                if r.view["type"] == "modal" and not r.closed and user_id in (None, r.user_id)
            ]

    def home_view(self, user_id: str) -> dict[str, Any] | None:
        with self.lock:
            view_id = self.homes.get(user_id)
            return self.view(view_id) if view_id is not None else None

    def user(self, user_id: str) -> User | None:
        with self.lock:
            return copy.deepcopy(self.users.get(user_id))

    def channel(self, channel_id: str) -> Channel | None:
        with self.lock:
            found = self.channels.get(channel_id)
            if found is None and channel_id in self.users:
                found = self.dm(channel_id)
            return copy.deepcopy(found)

    def dm_channel_id(self, user_id: str) -> str:
        """The id of the bot's DM with a user ("U_ALICE" → "D_ALICE")."""
        return f"D{user_id[1:]}" if user_id[:1] in ("U", "W") else f"D{user_id}"

    def open_dm(self, user_id: str) -> str:
        """The bot's DM with a user, opened if it was not yet (as `conversations.open` would, but
        without recording a call), so `channel()` knows it; returns its id."""
        with self.lock:
            return self.dm(user_id).id

    def message_payload(self, message: Message) -> dict[str, Any]:
        """The message as Slack shows it to apps (e.g. inside a block_actions payload)."""
        with self.lock:
            return self.message_json(message)

    def on_event(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call `callback` with every RecordedCall/RecordedResponse (on the server's thread,
        outside the double's lock). Returns a function that unsubscribes."""
        with self.lock:
            self._listeners.append(callback)

        def unsubscribe() -> None:
            with self.lock, contextlib.suppress(ValueError):
                self._listeners.remove(callback)

        return unsubscribe

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 5.0) -> Event:
        """The first recorded call/response (already recorded or arriving) that satisfies the
        predicate; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self.changed:
            while True:
                events = self.recorded
                seen = 0 if len(events) < seen else seen  # reset() emptied the record
                for event in events[seen:]:
                    if predicate(event):
                        return event
                seen = len(events)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    last = [getattr(e, "method", "response_url") for e in events[-10:]]
                    raise TimeoutError(f"no matching Slack event in {timeout}s; last: {last}")
                self.changed.wait(remaining)

    # -- for webapi.py, with the lock held ----------------------------------------------------

    def record(self, event: Event) -> None:
        """Remember an answered call or post and tell the listeners (outside the lock)."""
        with self.lock:
            self.recorded.append(event)
            self.changed.notify_all()
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                log.exception("a Slack double listener failed")

    def now(self) -> float:
        return time.monotonic() + self._skew

    def next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):08d}"

    def take_fault(self, method: str) -> Fault | None:
        queue = self.faults.get(method)
        if not queue:
            return None
        fault = queue[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            queue.pop(0)
        return fault

    def _channel_id(self, channel: str) -> str:
        return self.dm_channel_id(channel) if channel in self.users else channel

    def dm(self, user_id: str) -> Channel:
        channel_id = self.dm_channel_id(user_id)
        if channel_id not in self.channels:
            self.channels[channel_id] = Channel(channel_id, channel_id, im_user=user_id)
        return self.channels[channel_id]

    def resolve_channel(self, value: Any, error: str = "channel_not_found") -> Channel:
        """A channel by id, a DM by its id or by the user's id."""
        if isinstance(value, str) and value in self.users:
            return self.dm(value)
        if isinstance(value, str) and value in self.channels:
            return self.channels[value]
        for user_id in self.users:
            if value == self.dm_channel_id(user_id):
                return self.dm(user_id)
        raise ApiError(error)

    def visible(self, channel_id: str, ts: Any) -> Message | None:
        """A message that is there for everybody (not ephemeral, not deleted)."""
        found = self.posted.get((channel_id, ts)) if isinstance(ts, str) else None
        return found if found is not None and not found.ephemeral and not found.deleted else None

    def thread_root(self, channel_id: str, thread_ts: Any) -> str | None:
        """The ts of the thread a reply to `thread_ts` lands in (a reply to a reply: the root)."""
        if thread_ts in (None, ""):
            return None
        parent = self.visible(channel_id, str(thread_ts))
        if parent is None:
            raise ApiError("thread_not_found")
        return parent.thread_ts or parent.ts

    def post(
        self,
        channel: str,
        content: Mapping[str, Any],
        *,
        via: str,
        thread_ts: str | None = None,
        visible_to: str | None = None,
        files: list[str] | None = None,
    ) -> Message:
        """A new message; an ephemeral one when `visible_to` names who alone sees it."""
        self._ts += _TS_STEP
        ts = f"{self._ts // 1_000_000}.{self._ts % 1_000_000:06d}"
        blocks = fill_ids(content.get("blocks") or [], f"{channel}/{ts}")
        message = Message(
            channel=channel,
            ts=ts,
            user=self.bot_user_id,
            text=content.get("text", ""),
            blocks=blocks,
            thread_ts=thread_ts,
            ephemeral=visible_to is not None,
            visible_to=visible_to,
            files=list(files or []),
            via=via,
        )
        self.posted[(channel, ts)] = message
        public = visible_to is None
        parent = self.posted.get((channel, thread_ts)) if thread_ts and public else None
        if parent is not None and parent.thread_ts is None:
            parent.thread_ts = parent.ts  # a message with replies is a thread root
        return message

    def edit(self, message: Message, content: Mapping[str, Any], via: str) -> None:
        """Replace text and/or blocks (those in `content`), keeping the old version."""
        old = MessageEdit(message.text, copy.deepcopy(message.blocks), time.time(), via)
        message.edits.append(old)
        if via == "delete":
            message.deleted = True
            return
        message.text = content.get("text", message.text)
        if "blocks" in content:
            seed = f"{message.channel}/{message.ts}/{len(message.edits)}"
            message.blocks = fill_ids(content["blocks"], seed)

    def message_json(self, message: Message) -> dict[str, Any]:
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
        if message.thread_ts is not None:
            out["thread_ts"] = message.thread_ts
        if message.edits:
            out["edited"] = {"user": message.user, "ts": f"{message.edits[-1].at:.6f}"}
        if message.files:
            uploads = [self.uploads[file_id] for file_id in message.files]
            out["files"] = [
                {"id": u.file_id, "name": u.filename, "title": u.title} for u in uploads
            ]
        return out
