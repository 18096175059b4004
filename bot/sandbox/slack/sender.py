"""What Slack sends to an app: slash commands, `block_actions` and `view_submission`, form-encoded
and signed (by slack_sdk's `SignatureVerifier`) exactly as SLACK-WIRE.md describes.

The response_urls and trigger_ids in the payloads are minted by the double, names come from its
workspace, and the app's answer to a view_submission is applied to its views.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from slack_sdk.signature import SignatureVerifier

from bot.sandbox.slack.state import Message, elements_of
from bot.sandbox.slack.webapi import SlackWebApi


@dataclass(frozen=True)
class Response:
    """The app's answer to a request the sender made."""

    status: int
    headers: dict[str, str]  # names lower-cased
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


class SlackSender:
    """Posts signed Slack requests (slash commands, interactions) to an app's endpoint.

    `app_url` is the endpoint, e.g. `http://127.0.0.1:3000/slack/events` (`/slack/events` is added
    when the URL has no path). `deliver()` is where a payload leaves: override it to carry the same
    payloads another way (tests/socket_double.py sends them as Socket Mode envelopes).
    """

    def __init__(
        self,
        app_url: str,
        signing_secret: str,
        double: SlackWebApi,
        *,
        verification_token: str = "verification_token",  # noqa: S107 - Slack's fixture value
        timeout: float = 10.0,
        http: httpx.Client | None = None,
    ) -> None:
        parts = urlsplit(app_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {app_url!r}")
        self.app_url = (
            app_url if parts.path not in ("", "/") else f"{app_url.rstrip('/')}/slack/events"
        )
        self.double = double
        self.team_id, self.api_app_id = double.team_id, double.app_id
        self.verification_token = verification_token
        self.timeout = timeout
        # A pooled client of the caller's (a benchmark sending thousands), else one per request.
        self._http = http
        self._verifier = SignatureVerifier(signing_secret)
        self.last_payload: dict[str, Any] | None = None
        self.last_response_url: str | None = None

    # -- the wire ------------------------------------------------------------------------------

    def post(
        self,
        body: bytes | str,
        content_type: str = "application/x-www-form-urlencoded",
        timestamp: int | str | None = None,
        signature: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """POST `body` signed with the secret (or with the `signature`/`timestamp` given);
        `headers` adds Slack's others, such as `X-Slack-Retry-Num` on a retried event."""
        raw = body.encode() if isinstance(body, str) else body
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        sent = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": signature
            or self._verifier.generate_signature(timestamp=stamp, body=raw),
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            **(headers or {}),
        }
        if self._http is not None:
            answer = self._http.post(self.app_url, content=raw, headers=sent)
        else:
            answer = httpx.post(
                self.app_url, content=raw, headers=sent, timeout=self.timeout, trust_env=False
            )
        return Response(answer.status_code, dict(answer.headers), answer.text)

    def deliver(self, kind: str, payload: Mapping[str, Any]) -> Response:
        """Send a payload as Slack does over HTTP. `kind` is the Socket Mode envelope type:
        "slash_commands" go as the form itself, "interactive" ones as its `payload` field."""
        self.last_payload = dict(payload)
        form = payload if kind == "slash_commands" else {"payload": json.dumps(payload)}
        return self.post(urlencode(form))

    # -- what Slack sends ----------------------------------------------------------------------

    def slash_command(
        self,
        text: str,
        user_id: str = "U_ALICE",
        channel_id: str = "C_OPS",
        command: str = "/backup",
    ) -> Response:
        fields = {
            "token": self.verification_token,
            "team_id": self.team_id,
            "team_domain": self.double.team_domain,
            "channel_id": channel_id,
            "channel_name": self._channel_name(channel_id),
            "user_id": user_id,
            "user_name": self._user_json(user_id)["name"],
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": self._response_url(channel_id, user_id, None),
            "trigger_id": self.double.new_trigger_id(user_id),
        }
        return self.deliver("slash_commands", fields)

    def block_actions(
        self,
        action: Mapping[str, Any],
        user_id: str = "U_ALICE",
        channel_id: str | None = None,
        message: Message | None = None,
        response_url: str | None = None,
        container: Mapping[str, Any] | None = None,
    ) -> Response:
        """A button/menu interaction on a double's `message`. An ephemeral one, or none, gives an
        `is_ephemeral: true` container and no `message` field, as Slack does."""
        channel_id = channel_id or (message.channel if message else "C_OPS")
        ephemeral = message is None or message.ephemeral
        mine = [m.ts for m in self.double.messages_in(channel_id) if m.visible_to == user_id]
        message_ts = message.ts if message else (mine or [f"{time.time():.6f}"])[-1]
        container = dict(container or {}) or {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": ephemeral,
        }
        message_ts = str(container.get("message_ts") or message_ts)
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": self._user_json(user_id),
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "container": container,
            "trigger_id": self.double.new_trigger_id(user_id),
            "team": {"id": self.team_id, "domain": self.double.team_domain},
            "channel": {"id": channel_id, "name": self._channel_name(channel_id)},
        }
        if message is not None and not ephemeral:
            payload["message"] = self.double.message_payload(message)
        payload["response_url"] = response_url or self._response_url(
            channel_id, user_id, message_ts
        )
        payload["actions"] = [dict(action)]
        return self.deliver("interactive", payload)

    def click(
        self, message: Message, action_id: str, user_id: str = "U_ALICE", value: str | None = None
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
            for element in elements_of(block):
                if element.get("action_id") != action_id:
                    continue
                action = {"action_id": action_id, "block_id": block.get("block_id", "")}
                if element.get("type") == "button":
                    kept = ("text", "value", "style")
                    action |= {k: copy.deepcopy(element[k]) for k in kept if element.get(k)}
                options = [o for o in element.get("options") or [] if value in (None, o["value"])]
                if element.get("options") and not options:
                    continue  # the same action_id may be in several blocks (list rows)
                if options:
                    action["selected_option"] = copy.deepcopy(options[0])
                return {**action, "type": element["type"], "action_ts": f"{time.time():.6f}"}
        wanted = f" with an option of value {value!r}" if value is not None else ""
        raise ValueError(f"no element with action_id {action_id!r}{wanted} in these blocks")

    def view_submission(
        self,
        view: Mapping[str, Any],
        user_id: str = "U_ALICE",
        values: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Response:
        """Submit a modal (e.g. `double.view(view_id)`). `values` is `{block_id: {action_id:
        value}}`: a plain value is shaped for the input's element type (text or select), a dict
        is sent as is. With a double, the app's answer (close, update, clear, errors) is applied
        to its views."""
        sent_view = {
            "callback_id": "",
            "private_metadata": "",
            **copy.deepcopy(dict(view)),
            "id": view.get("id") or self.double.next_id("V"),
            "team_id": self.team_id,
            "type": view.get("type", "modal"),
            "state": {"values": self._state_values(view, values or {})},
        }
        payload = {
            "type": "view_submission",
            "team": {"id": self.team_id, "domain": self.double.team_domain},
            "user": self._user_json(user_id),
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "trigger_id": self.double.new_trigger_id(user_id),
            "view": sent_view,
            "response_urls": [],
            "is_enterprise_install": False,
        }
        answer = self.deliver("interactive", payload)
        if answer.status == 200:
            action: Any = {}
            with contextlib.suppress(ValueError):
                action = answer.json() if answer.text.strip() else {}
            self.double.view_submitted(sent_view["id"], action if isinstance(action, dict) else {})
        return answer

    # -- names, URLs and ids from the double -----------------------------------------------------

    def _response_url(self, channel_id: str, user_id: str, message_ts: str | None) -> str:
        url = self.double.response_url(
            channel_id=channel_id, user_id=user_id, message_ts=message_ts
        )
        self.last_response_url = url
        return url

    def _user_json(self, user_id: str) -> dict[str, Any]:
        user = self.double.user(user_id)
        name = user.name if user is not None else user_id.lower()
        return {"id": user_id, "username": name, "name": name, "team_id": self.team_id}

    def _channel_name(self, channel_id: str) -> str:
        channel = self.double.channel(channel_id)
        if channel is None or channel.is_im:
            return "directmessage" if channel_id.startswith("D") else channel_id.lower()
        return channel.name

    def _state_values(
        self, view: Mapping[str, Any], values: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        inputs = {
            (str(block.get("block_id")), str(element.get("action_id"))): element
            for block in view.get("blocks") or []
            for element in elements_of(block)
        }
        return {
            block_id: {
                action_id: dict(value)
                if isinstance(value, Mapping)
                else _shape_value(inputs.get((block_id, action_id), {}), value)
                for action_id, value in actions.items()
            }
            for block_id, actions in values.items()
        }


_SHAPES = {  # where Slack puts an input's value, by element type ("value" for text inputs)
    **dict.fromkeys(("static_select", "external_select", "radio_buttons"), "selected_option"),
}


def _shape_value(element: Mapping[str, Any], value: Any) -> dict[str, Any]:
    """The state entry Slack sends for an input element holding `value`."""
    kind = str(element.get("type", "plain_text_input"))
    key = _SHAPES.get(kind, "value")
    options = {o["value"]: o for o in element.get("options") or []}

    def option(wanted: Any) -> dict[str, Any]:
        plain = {"text": {"type": "plain_text", "text": str(wanted)}, "value": str(wanted)}
        return copy.deepcopy(options.get(wanted, plain))

    if key == "selected_option":
        value = option(value) if value is not None else None
    elif key == "value":
        value = None if value is None else str(value)
    return {"type": kind, key: value}
