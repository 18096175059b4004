"""Slack's side of Socket Mode for the tests: the Slack double plus a WebSocket endpoint served by
`websockets`' sync server.

waitress, which serves the double, cannot upgrade a request to a WebSocket, and only the tests run
the app in Socket Mode, so the endpoint lives here. `SocketModeDouble` is a `SlackDouble` whose
apps.connections.open hands out `ws://` URLs to it; there it says `hello`, carries envelopes
(payloads built exactly as `SlackSender` builds them) and records the app's acks. Where Slack's
documentation is silent it chooses:
- a URL serves one connection; an unknown or used one gets HTTP 401 `invalid_ticket`.
- `accepts_response_payload` is true for slash commands, view_submission and block_suggestion.
- `stop()` closes every connection with 1001 (going away).
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request
from websockets.http11 import Response as HttpResponse
from websockets.sync.server import Server, ServerConnection, serve

from bot.sandbox.slack import Message, Response, SlackDouble, SlackSender

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SocketEnvelope:
    """One envelope the double sent to the app over Socket Mode."""

    envelope_id: str
    type: str  # "slash_commands", "interactive", "events_api"
    payload: dict[str, Any]
    accepts_response_payload: bool

    @property
    def response_url_id(self) -> str | None:
        """The `url_id` that `RecordedResponse`s to this envelope's response_url carry."""
        url = self.payload.get("response_url")
        return url.rstrip("/").rsplit("/", 1)[-1] if isinstance(url, str) else None


class _EnvelopeSender(SlackSender):
    """`SlackSender`'s payloads, sent as envelopes (unsigned: Socket Mode signs nothing)."""

    def __init__(self, double: SocketModeDouble) -> None:
        super().__init__(double.base_url, "unused", double)
        self.socket = double
        self.envelope: SocketEnvelope | None = None

    def deliver(self, kind: str, payload: Mapping[str, Any]) -> Response:
        self.last_payload = dict(payload)
        self.envelope = self.socket.socket_envelope(kind, payload)
        return Response(200, {}, "")


class SocketModeDouble(SlackDouble):
    """The Slack double with Slack's Socket Mode endpoint attached while it runs."""

    _ws: Server | None = None

    def start(self, host: str = "127.0.0.1", port: int = 0) -> SocketModeDouble:
        super().start(host, port)
        self._tickets: set[str] = set()
        self._connections: list[ServerConnection] = []
        self._acks: dict[str, dict[str, Any]] = {}
        self.socket_opened = 0  # connections ever opened
        # Slack pings idle connections. slack_sdk's client holds its receive lock while it waits
        # in recv(), so against a quiet server its close() waits out a read timeout (~3 s).
        self._ws = serve(
            self._serve, host, 0, process_request=self._check_ticket, ping_interval=0.5
        )
        ws_url = f"ws://{host}:{self._ws.socket.getsockname()[1]}"
        threading.Thread(target=self._ws.serve_forever, name="socket-double", daemon=True).start()
        self.attach_socket_mode(lambda: f"{ws_url}/link/?ticket={self._new_ticket()}")
        return self

    def stop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            self.attach_socket_mode(None)
            ws.shutdown()  # closes the connections with 1001
            self.socket_disconnected(timeout=5)
        super().stop()

    # -- what the tests do -------------------------------------------------------------------

    @property
    def socket_connections(self) -> int:
        """How many Socket Mode connections are open."""
        with self.lock:
            return len(self._connections)

    def socket_connected(self, timeout: float = 0.0) -> bool:
        """Whether an app is connected, waiting up to `timeout` s for one."""
        return self._wait(lambda: bool(self._connections), timeout)

    def socket_disconnected(self, timeout: float = 0.0) -> bool:
        """Whether no app is connected, waiting up to `timeout` s for the last to hang up."""
        return self._wait(lambda: not self._connections, timeout)

    def socket_send(
        self, kind: str, payload: Mapping[str, Any], accepts_response_payload: bool | None = None
    ) -> str:
        """Send an envelope (`kind`: "slash_commands", "interactive", "events_api") to the
        newest connection; returns its envelope_id. RuntimeError when no app is connected."""
        return self.socket_envelope(kind, payload, accepts_response_payload).envelope_id

    def socket_ack(self, envelope_id: str, timeout: float = 3.0) -> dict[str, Any]:
        """The payload of the app's ack of an envelope (`{}` for a bare ack), waiting up to
        `timeout` s for it; TimeoutError otherwise."""
        if not self._wait(lambda: envelope_id in self._acks, timeout):
            raise TimeoutError(f"no ack of envelope {envelope_id} in {timeout}s")
        with self.lock:
            return copy.deepcopy(self._acks[envelope_id])

    def socket_slash_command(
        self, text: str, user_id: str = "U_ALICE", channel_id: str = "C_OPS"
    ) -> SocketEnvelope:
        """`SlackSender.slash_command` as a `slash_commands` envelope."""
        sender = _EnvelopeSender(self)
        sender.slash_command(text, user_id, channel_id)
        assert sender.envelope is not None
        return sender.envelope

    def socket_block_actions(
        self,
        action: Mapping[str, Any],
        user_id: str = "U_ALICE",
        channel_id: str | None = None,
        message: Message | None = None,
    ) -> SocketEnvelope:
        """`SlackSender.block_actions` as an `interactive` envelope."""
        sender = _EnvelopeSender(self)
        sender.block_actions(action, user_id, channel_id, message)
        assert sender.envelope is not None
        return sender.envelope

    def socket_disconnect(self, reason: str = "refresh_requested") -> int:
        """Tell every connected app to reconnect (Slack's `disconnect` message); returns how
        many connections were told."""
        message = {"type": "disconnect", "reason": reason, "debug_info": {"host": "slackdouble"}}
        with self.lock:
            connections = list(self._connections)
        for connection in connections:
            connection.send(json.dumps(message))
        return len(connections)

    def socket_envelope(
        self, kind: str, payload: Mapping[str, Any], accepts: bool | None = None
    ) -> SocketEnvelope:
        if accepts is None:
            interaction = payload.get("type") in ("view_submission", "block_suggestion")
            accepts = kind == "slash_commands" or (kind == "interactive" and interaction)
        envelope = SocketEnvelope(str(uuid.uuid4()), kind, copy.deepcopy(dict(payload)), accepts)
        # The app's connect() returns before the hello: give a connection that moment to arrive.
        if not self._wait(lambda: bool(self._connections), timeout=1.0):
            raise RuntimeError("no app is connected over Socket Mode")
        with self.lock:
            connection = self._connections[-1]
        message = {
            "envelope_id": envelope.envelope_id,
            "payload": envelope.payload,
            "type": kind,
            "accepts_response_payload": accepts,
        }
        if kind == "events_api":
            message.update(retry_attempt=0, retry_reason="")
        connection.send(json.dumps(message))
        return envelope

    # -- the endpoint --------------------------------------------------------------------------

    def _new_ticket(self) -> str:
        ticket = uuid.uuid4().hex
        with self.lock:
            self._tickets.add(ticket)
        return ticket

    def _check_ticket(self, connection: ServerConnection, request: Request) -> HttpResponse | None:
        """A URL from apps.connections.open serves one connection."""
        ticket = request.path.rpartition("ticket=")[2]
        with self.lock:
            if ticket in self._tickets:
                self._tickets.discard(ticket)
                return None
        return connection.respond(401, "invalid_ticket\n")

    def _serve(self, connection: ServerConnection) -> None:
        with self.lock:
            count = len(self._connections) + 1
        hello = {
            "type": "hello",
            "num_connections": count,
            "debug_info": {"host": "slackdouble", "approximate_connection_time": 18060},
            "connection_info": {"app_id": self.app_id},
        }
        connection.send(json.dumps(hello))
        with self.changed:
            self._connections.append(connection)
            self.socket_opened += 1
            self.changed.notify_all()
        try:
            for raw in connection:
                self._received(raw)
        except ConnectionClosed:
            pass
        finally:
            with self.changed:
                self._connections.remove(connection)
                self.changed.notify_all()

    def _received(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
            envelope_id, payload = message["envelope_id"], message.get("payload")
        except (ValueError, TypeError, KeyError):
            log.warning("the app sent a Socket Mode message that is no ack: %r", raw)
            return
        with self.changed:
            self._acks.setdefault(str(envelope_id), payload if isinstance(payload, dict) else {})
            self.changed.notify_all()

    def _wait(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not condition():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.changed.wait(remaining)
            return True
