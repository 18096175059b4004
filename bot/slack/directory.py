"""People and user groups as Slack knows them, through the Web API, cached briefly."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

log = logging.getLogger(__name__)


class SlackDirectory:
    """Display names (`users.info`) and group members (`usergroups.users.list`).

    Implements `bot.policy.GroupDirectory`. Thread-safe.
    """

    def __init__(
        self,
        client: WebClient,
        *,
        cache_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._names: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def display_name(self, user_id: str, fallback: str = "") -> str:
        now = self._clock()
        with self._lock:
            cached = self._names.get(user_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            user = self._client.users_info(user=user_id)["user"]
        except (SlackApiError, SlackClientError, KeyError, TypeError) as exc:
            log.warning("users.info %s failed: %s", user_id, _slack_error(exc))
            return fallback or user_id
        profile = user.get("profile") or {}
        name = (
            profile.get("display_name")
            or profile.get("real_name")
            or user.get("real_name")
            or user.get("name")
            or fallback
            or user_id
        )
        with self._lock:
            self._names[user_id] = (now + self._cache_seconds, name)
        return str(name)

    def group_members(self, group_id: str) -> frozenset[str]:
        try:
            response = self._client.usergroups_users_list(usergroup=group_id)
        except (SlackApiError, SlackClientError) as exc:
            raise LookupError(_slack_error(exc)) from None
        return frozenset(response.get("users") or ())


def _slack_error(exc: Exception) -> str:
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error", "error"))
    return type(exc).__name__
