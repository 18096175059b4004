"""Who may do what, and where: roles from Slack user ids and user groups, and the channel list.

Roles come from the environment (`BACKUP_VIEWERS=*`, `BACKUP_OPERATORS=U123,S456`, …). A principal
is a user id (`U…`/`W…`), a user-group id (`S…`) whose members hold the role, or `*` for everyone.
Admins hold every role. Defaults are safe: everyone may list; nobody else may do anything until
named. Group membership is looked up through a `GroupDirectory` (Slack's `usergroups.users.list`)
and cached briefly, so a person removed from a group loses the role within a minute.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

EVERYONE = "*"


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    AUDITOR = "auditor"
    ADMIN = "admin"


class Action(enum.StrEnum):
    LIST = "list"
    CREATE = "create"
    DELETE = "delete"
    RESTORE = "restore"
    APPROVE = "approve"
    REJECT = "reject"
    AUDIT = "audit"
    STATUS = "status"  # backup health per server (`/backup status`)
    # What the bot does on its own, recorded under these names (no role: nobody asks for them).
    ALERT = "alert"  # a health alert, or its recovery reply (`alert.recovered`)
    DIGEST = "digest"  # the daily digest


# The one role each action needs (admins may do everything).
REQUIRED_ROLE: Mapping[Action, Role] = {
    Action.LIST: Role.VIEWER,
    Action.CREATE: Role.OPERATOR,
    Action.DELETE: Role.OPERATOR,
    Action.RESTORE: Role.OPERATOR,
    Action.APPROVE: Role.APPROVER,
    Action.REJECT: Role.APPROVER,
    Action.AUDIT: Role.AUDITOR,
    Action.STATUS: Role.VIEWER,
}

ROLE_VARIABLE: Mapping[Role, str] = {
    Role.VIEWER: "BACKUP_VIEWERS",
    Role.OPERATOR: "BACKUP_OPERATORS",
    Role.APPROVER: "BACKUP_APPROVERS",
    Role.AUDITOR: "BACKUP_AUDITORS",
    Role.ADMIN: "BACKUP_ADMINS",
}


class GroupDirectory(Protocol):
    """Members of a user group; raises `LookupError` when the group cannot be read."""

    def group_members(self, group_id: str) -> frozenset[str]: ...


@dataclass(frozen=True)
class Decision:
    """May this person do this here? When not, why: the channel is closed, or a role is missing."""

    allowed: bool
    action: Action
    required_role: Role | None = None
    channel_closed: bool = False

    @property
    def role_variable(self) -> str | None:
        """The setting an admin would change to grant the missing role."""
        return ROLE_VARIABLE[self.required_role] if self.required_role else None

    @property
    def reason(self) -> str:
        """One plain line for the audit table."""
        if self.allowed:
            return "allowed"
        if self.channel_closed:
            return "channel not in BACKUP_CHANNELS"
        return f"{self.action.value} needs the {self.required_role} role ({self.role_variable})"


class Policy:
    """Answers "may this user do this here?". Thread-safe."""

    def __init__(
        self,
        roles: Mapping[str, frozenset[str]],
        *,
        channels: frozenset[str] | None = None,
        groups: GroupDirectory | None = None,
        cache_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._principals = {role: frozenset(roles.get(role.value, frozenset())) for role in Role}
        if Role.VIEWER.value not in roles:
            self._principals[Role.VIEWER] = frozenset({EVERYONE})
        self._channels = channels
        self._groups = groups
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def roles_of(self, user_id: str) -> frozenset[Role]:
        held = {role for role in Role if self._holds(role, user_id)}
        if Role.ADMIN in held:
            return frozenset(Role)
        return frozenset(held)

    def check(
        self, user_id: str, action: Action, channel_id: str | None = None, *, direct: bool = False
    ) -> Decision:
        """`direct`: the conversation is the person's DM with the bot (the edge knows which)."""
        needed = REQUIRED_ROLE[action]
        # Auditors may read the log in their DM, away from the channel's eyes.
        closed = self._channels is not None and channel_id not in self._channels
        if channel_id is not None and closed and not (direct and action is Action.AUDIT):
            return Decision(False, action, None, channel_closed=True)
        # Only the role needed and admin: each user group costs a Web API call (cached).
        if self._holds(needed, user_id) or self._holds(Role.ADMIN, user_id):
            return Decision(True, action, needed)
        return Decision(False, action, needed)

    def _holds(self, role: Role, user_id: str) -> bool:
        principals = self._principals[role]
        if EVERYONE in principals or user_id in principals:
            return True
        return any(user_id in self._members(group) for group in principals if group.startswith("S"))

    def _members(self, group_id: str) -> frozenset[str]:
        if self._groups is None:
            return frozenset()
        now = self._clock()
        with self._lock:
            cached = self._cache.get(group_id)
            if cached is not None and cached[0] > now:
                return cached[1]
        try:
            members = self._groups.group_members(group_id)
        except LookupError as exc:
            # Fail closed: a group we cannot read grants nothing. Remember that briefly, so a
            # missing scope or a rate limit does not cost every command another slow call.
            log.warning("cannot read members of user group %s: %s", group_id, exc)
            with self._lock:
                self._cache[group_id] = (now + min(10.0, self._cache_seconds), frozenset())
            return frozenset()
        with self._lock:
            self._cache[group_id] = (now + self._cache_seconds, members)
        return members
