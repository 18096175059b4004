"""Slack's Web API over the double's state, and what a response_url or an upload URL does with a
post. Each Web API method takes the call's arguments and returns the fields of `{"ok": true, ...}`,
or raises `ApiError`. Block Kit is checked by slack_sdk's own models, which carry Slack's limits.

Where Slack's documentation is silent the double chooses, and says so here:
- a `response_url` answers `{"ok": true}` (HTTP 200); past its 5 posts HTTP 404 `used_url`, after
  30 minutes 404 `expired_url`, an unknown URL 404 `no_service`, a body that is not a JSON object
  400 `invalid_payload`, no text nor blocks 400 `no_text`, bad blocks 400 `invalid_blocks`. Only
  successful posts count towards the 5.
- `thread_ts` must name a visible (not ephemeral, not deleted) message of the same channel, else
  `thread_not_found`: Slack is laxer, but a reply to an ephemeral message is always a bug.
- a `trigger_id` is valid only if minted by `new_trigger_id()` (the sender does it), once, for 3 s:
  unknown → `invalid_arguments`, reused → `exchanged_trigger_id`, late → `expired_trigger_id`.
- an app-level token anywhere but apps.connections.open, or a bot token there, is
  `not_allowed_token_type`; with no Socket Mode endpoint attached it answers
  `socket_mode_not_enabled`.
- Slack fills in missing `block_id`s and `action_id`s of stored blocks; so does the double (the
  recorded call keeps the blocks exactly as sent, `Message.blocks` holds the stored version).
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.basic_objects import JsonObject
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from bot.sandbox.slack.state import (
    ApiError,
    Channel,
    OpenView,
    RecordedCall,
    RecordedResponse,
    SlackState,
    UploadedFile,
    fill_ids,
    invalid_arguments,
    short_id,
)

MAX_TEXT = 40_000
_JSON_ARGS = ("blocks", "view", "files")
_CHECKED = (SlackObjectFormationError, TypeError, ValueError, AttributeError, KeyError)


def decode_json_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """Form posts carry blocks/view/files as JSON strings, JSON posts as objects: unify."""
    out = dict(args)
    for name in _JSON_ARGS:
        value = out.get(name)
        if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
            with contextlib.suppress(ValueError):
                out[name] = json.loads(value)
    return out


def block_errors(blocks: Any, limit: int, pointer: str = "/blocks") -> list[str]:
    """Slack-style `[ERROR] … [json-pointer:…]` lines; empty when the blocks are valid."""
    if not isinstance(blocks, list):
        return [_error("must be an array", pointer)]
    errors = [_error(f"no more than {limit} items allowed", pointer)] if len(blocks) > limit else []
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        problem = _problem(partial(Block.parse, block))
        block_id = block.get("block_id") if isinstance(block, dict) else None
        if problem is None and isinstance(block_id, str):
            problem = f"duplicate block_id: {block_id}" if block_id in block_ids else None
            block_ids.add(block_id)
        errors += [_error(problem, f"{pointer}/{i}")] if problem else []
    return errors


def _problem(build: Callable[[], JsonObject | None]) -> str | None:
    """What slack_sdk's model finds wrong with a Block Kit object; None when nothing."""
    try:
        model = build()
        if model is None:
            return "unsupported type"
        model.to_dict()  # validates the object and everything inside it
    except _CHECKED as error:
        return str(error)
    elements = getattr(model, "elements", None)
    return "unsupported element type" if isinstance(elements, list) and None in elements else None


def _error(message: str, pointer: str) -> str:
    return f"[ERROR] {message} [json-pointer:{pointer}]"


def _content(args: Mapping[str, Any], status: int = 200) -> dict[str, Any]:
    """The text and blocks of a message, checked; keys absent from args stay absent."""
    content: dict[str, Any] = {}
    if args.get("text") is not None:
        content["text"] = str(args["text"])
    if args.get("blocks") not in (None, ""):
        errors = block_errors(args["blocks"], 50)
        if errors:
            metadata = {"messages": errors}
            raise ApiError("invalid_blocks", status, errors=errors, response_metadata=metadata)
        content["blocks"] = args["blocks"]
    if not (content.get("text") or content.get("blocks")):
        raise ApiError("no_text", status)
    if len(content.get("text", "")) > MAX_TEXT:
        raise ApiError("msg_too_long", status)
    return content


def _parse_view(args: Mapping[str, Any], kind: str | None = None) -> dict[str, Any]:
    view = args.get("view")
    if not isinstance(view, dict):
        raise invalid_arguments("invalid `view`")
    errors = block_errors(view.get("blocks"), 100, "/view/blocks")
    problem = None if errors else _problem(lambda: View(**view))
    errors += [_error(problem, "/view")] if problem else []
    if kind is not None and view.get("type") != kind:
        errors.append(_error(f"must be {kind}", "/view/type"))
    if errors:
        raise invalid_arguments(*errors)
    return view


def _postable(channel: Channel) -> Channel:
    if channel.archived:
        raise ApiError("is_archived")
    if not channel.is_im and not channel.member:
        raise ApiError("not_in_channel")
    return channel


class SlackWebApi(SlackState):
    """The double's state with the Web API, response_urls and upload URLs answered over it."""

    def call(
        self, method: str, args: dict[str, Any], token: str | None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Answer one Web API call and record it: (HTTP status, JSON body, extra headers)."""
        args = decode_json_args(args)
        status, headers = 200, {}
        with self.lock:
            try:
                handler = METHODS.get(method)
                if handler is None:
                    raise ApiError("unknown_method")
                self._check_token(method, token)
                fault = self.take_fault(method)
                if fault is not None:
                    if fault.retry_after is not None:
                        headers["Retry-After"] = str(fault.retry_after)
                    raise ApiError(fault.error, fault.status)
                payload = {"ok": True, **handler(self, args)}
            except ApiError as error:
                status, payload = error.status, {"ok": False, "error": error.error, **error.extra}
        self.record(RecordedCall(method, args, time.time(), status, payload))
        return status, payload, headers

    def _check_token(self, method: str, token: str | None) -> None:
        """The bot token for the Web API, the app-level token for apps.connections.open."""
        if not token:
            raise ApiError("not_authed")
        is_bot, is_app = token == self.bot_token, token == self.app_token
        wanted, other = (is_app, is_bot) if method == "apps.connections.open" else (is_bot, is_app)
        if not wanted:
            raise ApiError("not_allowed_token_type" if other else "invalid_auth")

    # -- auth, chat, conversations, users -------------------------------------------------------

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_name,
            "user": self.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.socket_mode_url is None:
            raise ApiError("socket_mode_not_enabled")
        return {"url": self.socket_mode_url()}

    def _chat_post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _postable(self.resolve_channel(args.get("channel")))
        content = _content(args)
        thread_ts = self.thread_root(channel.id, args.get("thread_ts"))
        message = self.post(channel.id, content, via="chat.postMessage", thread_ts=thread_ts)
        return {"channel": channel.id, "ts": message.ts, "message": self.message_json(message)}

    def _chat_post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self.resolve_channel(args.get("channel"))
        user_id = args.get("user")
        if user_id not in self.users:
            raise ApiError("user_not_found")
        if _postable(channel).im_user not in (None, user_id):
            raise ApiError("user_not_in_channel")
        content, thread_ts = _content(args), str(args.get("thread_ts") or "") or None
        message = self.post(
            channel.id, content, via="chat.postEphemeral", thread_ts=thread_ts, visible_to=user_id
        )
        return {"message_ts": message.ts}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self.resolve_channel(args.get("channel"))
        message = self.visible(channel.id, args.get("ts"))
        if message is None:
            raise ApiError("message_not_found")
        self.edit(message, _content(args), "chat.update")
        answer = {"channel": channel.id, "ts": message.ts, "text": message.text}
        return {**answer, "message": self.message_json(message)}

    def _chat_get_permalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self.resolve_channel(args.get("channel"))
        message = self.visible(channel.id, args.get("message_ts"))
        if message is None:
            raise ApiError("message_not_found")
        archive = f"https://{self.team_domain}.slack.com/archives/{channel.id}"
        return {"channel": channel.id, "permalink": f"{archive}/p{message.ts.replace('.', '')}"}

    def _conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        """A DM with one person (group DMs are not modelled: `not_supported`)."""
        users = [u.strip() for u in str(args.get("users") or "").split(",") if u.strip()]
        if len(users) != 1:
            raise ApiError("not_supported" if users else "users_list_not_supplied")
        if users[0] not in self.users:
            raise ApiError("user_not_found")
        channel = self.dm(users[0])
        already = channel.id in self.opened_dms
        self.opened_dms.add(channel.id)
        answer: dict[str, Any] = {"no_op": True, "already_open": True} if already else {}
        return {**answer, "channel": {"id": channel.id}}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(args.get("user") or ""))
        if user is None:
            raise ApiError("user_not_found")
        profile = {"real_name": user.real_name, "display_name": user.name, "team": user.team_id}
        person = {"id": user.id, "team_id": user.team_id, "name": user.name, "tz": user.tz}
        extra = {"real_name": user.real_name, "is_bot": user.is_bot, "profile": profile}
        return {"user": person | extra}

    def _usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        members = self.usergroups.get(str(args.get("usergroup") or ""))
        if members is None:
            raise ApiError("no_such_subteam")
        return {"users": list(members)}

    # -- views ------------------------------------------------------------------------------------

    def _view_json(
        self, view: Mapping[str, Any], view_id: str, previous: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """The view as views.* answer it: what the app sent, with Slack's ids, hash and state."""
        return {
            "callback_id": "",
            "private_metadata": "",
            **copy.deepcopy(dict(view)),
            "id": view_id,
            "team_id": self.team_id,
            "app_id": self.app_id,
            "blocks": fill_ids(list(view["blocks"]), f"view/{view_id}"),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{short_id(self.next_id('hash'), 8)}",
            "previous_view_id": previous.get("previous_view_id") if previous else None,
            "root_view_id": previous.get("root_view_id", view_id) if previous else view_id,
        }

    def _use_trigger(self, trigger_id: Any) -> str | None:
        """The user whose trigger_id this is, once it is spent."""
        trigger = self.triggers.get(trigger_id) if isinstance(trigger_id, str) else None
        if trigger is None:
            raise invalid_arguments("invalid `trigger_id`")
        if trigger.used:
            raise ApiError("exchanged_trigger_id")
        if self.now() - trigger.created > self.trigger_ttl:
            raise ApiError("expired_trigger_id")
        trigger.used = True
        return trigger.user_id

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = self._use_trigger(args.get("trigger_id"))
        view_id = self.next_id("V")
        opened = self._view_json(_parse_view(args, "modal"), view_id, None)
        self.view_records[view_id] = OpenView(opened, user_id)
        return {"view": copy.deepcopy(opened)}

    def _views_update(self, args: dict[str, Any]) -> dict[str, Any]:
        record = self.view_records.get(str(args.get("view_id")))
        if record is None:
            raise ApiError("not_found")
        if args.get("hash") and args["hash"] != record.view["hash"]:
            raise ApiError("hash_conflict")
        record.view = self._view_json(_parse_view(args), record.view["id"], record.view)
        return {"view": copy.deepcopy(record.view)}

    def _views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = str(args.get("user_id") or "")
        if user_id not in self.users:
            raise invalid_arguments("invalid user")
        view = _parse_view(args, "home")
        view_id = self.homes.get(user_id) or self.next_id("V")
        previous = self.view_records.get(view_id)
        if previous is not None and args.get("hash") and args["hash"] != previous.view["hash"]:
            raise ApiError("hash_conflict")
        published = self._view_json(view, view_id, None)
        self.view_records[view_id] = OpenView(published, user_id)
        self.homes[user_id] = view_id
        return {"view": copy.deepcopy(published)}

    def view_submitted(self, view_id: str, answer: Mapping[str, Any]) -> None:
        """What Slack does with the app's answer to a view_submission: keep the modal open
        (errors), update the view, close the whole stack (clear) or, by default, this one."""
        kind = answer.get("response_action")
        with self.lock:
            record = self.view_records.get(view_id)
            if record is None or kind == "errors":
                return
            if kind == "update":
                record.view = self._view_json(_parse_view(answer), view_id, record.view)
            else:
                root = record.view["root_view_id"] if kind == "clear" else None
                for other in self.view_records.values():
                    if other is record or (root and other.view["root_view_id"] == root):
                        other.closed = True

    # -- files (the v2 upload: get a URL, post the bytes there, complete) -------------------------

    def _files_get_upload_url_external(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("filename") or not str(args.get("length", "")).isdigit():
            raise invalid_arguments("`filename` and `length` are required")
        file_id = self.next_id("F")
        self.uploads[file_id] = UploadedFile(file_id, str(args["filename"]), int(args["length"]))
        return {"upload_url": f"{self.base_url}/upload/v1/{file_id}", "file_id": file_id}

    def upload(self, file_id: str, content: bytes) -> tuple[int, str]:
        """The bytes posted to an upload URL: (HTTP status, plain-text answer)."""
        with self.lock:
            found = self.uploads.get(file_id)
            if found is None or found.completed:
                return 404, "file_not_found"
            found.content = content
        return 200, f"OK - {len(content)}"

    def _files_complete_upload_external(self, args: dict[str, Any]) -> dict[str, Any]:
        items = args.get("files")
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            raise invalid_arguments("invalid `files`")
        found = [self.uploads.get(str(item.get("id"))) for item in items]
        done = [u for u in found if u is not None and u.content is not None and not u.completed]
        if len(done) != len(items):
            raise ApiError("file_not_found")
        target = args.get("channel_id")
        channel = _postable(self.resolve_channel(target, "invalid_channel")) if target else None
        thread_ts = self.thread_root(channel.id, args.get("thread_ts")) if channel else None
        comment = args.get("initial_comment") or None
        message_ts = None
        if channel is not None:
            content, files = {"text": comment or ""}, [u.file_id for u in done]
            via = "files.completeUploadExternal"
            message_ts = self.post(
                channel.id, content, via=via, thread_ts=thread_ts, files=files
            ).ts
        for item, upload in zip(items, done, strict=True):
            upload.title = item.get("title") or upload.filename
            upload.completed, upload.initial_comment = True, comment
            upload.channel = channel.id if channel is not None else None
            upload.thread_ts, upload.message_ts = thread_ts, message_ts
        return {"files": [{"id": u.file_id, "title": u.title} for u in done]}

    # -- response_urls ----------------------------------------------------------------------------

    def respond(self, url_id: str, body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        """A post to a minted response_url (`body` None: it was not a JSON object); recorded."""
        status, error = 200, None
        with self.lock:
            try:
                if body is None:
                    raise ApiError("invalid_payload", 400)
                self._apply_response(url_id, decode_json_args(body))
            except ApiError as failure:
                status, error = failure.status, failure.error
        self.record(RecordedResponse(url_id, body or {}, time.time(), status, error))
        return status, {"ok": True} if error is None else {"ok": False, "error": error}

    def _apply_response(self, url_id: str, body: dict[str, Any]) -> None:
        entry = self.response_urls.get(url_id)
        if entry is None:
            raise ApiError("no_service", 404)
        if self.now() - entry.created > self.response_url_ttl:
            raise ApiError("expired_url", 404)
        if entry.posts >= self.response_url_max_posts:
            raise ApiError("used_url", 404)
        original = self.posted.get((entry.channel_id or "", entry.original_ts or ""))
        original = None if original is None or original.deleted else original
        if body.get("delete_original") in (True, "true"):
            if original is None:
                raise ApiError("message_not_found", 404)
            self.edit(original, {}, "delete")
        elif body.get("replace_original") in (True, "true") and original is not None:
            self.edit(original, _content(body, 400), "response_url")
        elif entry.channel_id is not None:
            content = _content(body, 400)
            in_channel = body.get("response_type") == "in_channel"
            message = self.post(
                entry.channel_id,
                content,
                via="response_url",
                thread_ts=str(body.get("thread_ts") or "") or None,
                visible_to=None if in_channel else entry.user_id or "",
            )
            entry.original_ts = entry.original_ts or message.ts
        else:
            _content(body, 400)
        entry.posts += 1


METHODS: dict[str, Callable[[SlackWebApi, dict[str, Any]], dict[str, Any]]] = {
    "apps.connections.open": SlackWebApi._apps_connections_open,
    "auth.test": SlackWebApi._auth_test,
    "chat.postMessage": SlackWebApi._chat_post_message,
    "chat.postEphemeral": SlackWebApi._chat_post_ephemeral,
    "chat.update": SlackWebApi._chat_update,
    "chat.getPermalink": SlackWebApi._chat_get_permalink,
    "conversations.open": SlackWebApi._conversations_open,
    "users.info": SlackWebApi._users_info,
    "usergroups.users.list": SlackWebApi._usergroups_users_list,
    "views.open": SlackWebApi._views_open,
    "views.update": SlackWebApi._views_update,
    "views.publish": SlackWebApi._views_publish,
    "files.getUploadURLExternal": SlackWebApi._files_get_upload_url_external,
    "files.completeUploadExternal": SlackWebApi._files_complete_upload_external,
}
