"""Restore with approvals: a request, four eyes, a typed confirmation, a safety backup first, and
exactly one restore call — however many clicks, submissions, instances or restarts. With
DELETE_REQUIRES_APPROVAL a delete goes the same way (`kind` "delete"), without a safety backup.

The life of an `Approval` (each arrow a compare-and-set on `state` and `version`):

    pending ──(RESTORE_APPROVALS_REQUIRED approvers)──▶ approved
    pending ──▶ rejected | cancelled | expired (APPROVAL_TTL_MINUTES)
    approved ──▶ safety_backup ──▶ ready          (without a safety backup: approved ──▶ ready)
    ready ──▶ restoring ──▶ done | failed
    ready ──▶ deleting ──▶ done | failed          (a delete: never a safety backup)
    approved | safety_backup | ready ──▶ failed   (saying why; nothing was restored or deleted)

Decisions (`RestoreApprovals`) are use-cases a person calls. Execution (`ApprovalRunner`) is a
durable job claimed under a lease: each step ends in a state written to the database, so a
restart continues where the last one stopped. The restore call itself is guarded twice: the
step `ready → restoring` is written *before* the request is sent, and a job found in `restoring`
after a restart is never sent again (its outcome is unknown, and the card says so): a restore
overwrites a disk, so "at most once, and said plainly" beats "maybe twice". A delete is guarded
the same way (`deleting`); since the provider deletes at once, a restart finds out by listing
whether the backup is gone, and never sends the DELETE again.

Nothing here knows Slack: cards and thread replies go through the `ApprovalBoard` port.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bot.audit import Actor, AuditLog
from bot.db import (
    OPEN_APPROVAL_STATES,
    Approval,
    ApprovalKind,
    ApprovalState,
    Outcome,
    WatchState,
)
from bot.leases import Leases, database_clock, worker_name
from bot.policy import Action, Decision, Policy, Role
from bot.rounds import Rounds
from bot.service import (
    BackupNotFinished,
    BackupWatch,
    Denied,
    NoSuchBackup,
    ProviderError,
    ServiceError,
)
from bot.vps.client import BackupsClient
from bot.vps.errors import NotFound, OutcomeUnknown, VpsError
from bot.vps.models import Backup, DeleteOutcome, Phase, ServerRef

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ApprovalSettings:
    ttl: timedelta = timedelta(minutes=30)  # APPROVAL_TTL_MINUTES
    required: int = 1  # RESTORE_APPROVALS_REQUIRED
    safety_backup: bool = True  # RESTORE_SAFETY_BACKUP
    approvals_channel: str | None = None  # APPROVALS_CHANNEL
    delete_requires_approval: bool = False  # DELETE_REQUIRES_APPROVAL
    safety_timeout: timedelta = timedelta(hours=6)  # a safety backup running longer fails it
    lease_seconds: float = 120.0
    tick: float = 1.0  # how often the runner looks for work
    wait: float = 5.0  # between looks at a running safety backup


# -- facts ------------------------------------------------------------------------------------


# One approver's yes, and when it was given.
class Approver(NamedTuple):
    user_id: str
    name: str
    at: datetime


@dataclass(frozen=True)
class ApprovalFacts:
    """One approval as a card shows it (a detached copy of the row)."""

    id: int
    kind: ApprovalKind
    state: ApprovalState
    version: int  # compare-and-set token: every write bumps it
    server: ServerRef
    backup_id: int
    backup_type: str
    backup_created_at: datetime
    backup_size_mb: float | None
    backup_description: str
    backup_status: str
    requester_id: str
    requester_name: str
    channel_id: str | None
    reason: str
    card_channel_id: str | None
    card_ts: str | None
    required_approvals: int
    approvers: tuple[Approver, ...]
    created_at: datetime
    expires_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    safety_backup: bool
    safety_backup_id: int | None
    restore_requested: bool  # the restore (delete) was (perhaps) sent: a failure may not be clean
    provider_status: int | None
    detail: str
    finished_at: datetime | None

    @classmethod
    def of(cls, row: Approval) -> ApprovalFacts:
        return cls(
            id=row.id,
            kind=ApprovalKind(row.kind),
            state=ApprovalState(row.state),
            version=row.version,
            server=ServerRef(row.server_id, row.server_name),
            backup_id=row.backup_id,
            backup_type=row.backup_type,
            backup_created_at=row.backup_created_at,
            backup_size_mb=row.backup_size_mb,
            backup_description=row.backup_description,
            backup_status=row.backup_status,
            requester_id=row.requester_id,
            requester_name=row.requester_name,
            channel_id=row.channel_id,
            reason=row.reason,
            card_channel_id=row.card_channel_id,
            card_ts=row.card_ts,
            required_approvals=row.required_approvals,
            approvers=tuple(_approvers(row.approvers)),
            created_at=row.created_at,
            expires_at=row.expires_at,
            decided_by=row.decided_by,
            decided_at=row.decided_at,
            safety_backup=row.safety_backup,
            safety_backup_id=row.safety_backup_id,
            restore_requested=row.restore_requested_at is not None,
            provider_status=row.provider_status,
            detail=row.detail,
            finished_at=row.finished_at,
        )

    @property
    def pending(self) -> bool:
        return self.state is ApprovalState.PENDING

    @property
    def is_delete(self) -> bool:
        return self.kind is ApprovalKind.DELETE

    def loss_window(self, now: datetime) -> timedelta:
        """How much of the server's life a restore throws away: since the backup was taken."""
        return max(timedelta(0), now - self.backup_created_at)


def _approvers(data: Any) -> list[Approver]:
    return [
        Approver(str(a["user_id"]), str(a.get("name", "")), datetime.fromisoformat(a["at"]))
        for a in data or []
    ]


@dataclass(frozen=True)
class Trace:
    """Where an audit row's story can be followed: who approved, and the message's thread."""

    approvers: tuple[str, ...] = ()
    thread: tuple[str, str] | None = None  # (channel id, ts)


class Step(enum.Enum):
    """What a card's thread is told as the approval moves on."""

    APPROVED = "approved"  # one more approver (the last one makes it `approved`)
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    SAFETY_STARTED = "safety started"
    SAFETY_DONE = "safety done"
    RESTORE_ACCEPTED = "restore accepted"
    DELETED = "deleted"  # a delete's outcome: gone (`detail` says whether it was already)
    FAILED = "failed"


# -- errors -------------------------------------------------------------------------------------


class NoSuchApproval(ServiceError):
    def __init__(self, approval_id: int) -> None:
        super().__init__(f"no approval {approval_id}")
        self.approval_id = approval_id


class BackupNotRestorable(ServiceError):
    """Only a completed backup can be restored."""

    def __init__(self, backup: Backup) -> None:
        super().__init__(f"backup {backup.id} is {backup.status}")
        self.backup = backup


class DecisionDenied(Denied):
    """Someone without the role clicked on an approval's card: `approval` says what it is for."""

    def __init__(self, decision: Decision, approval: ApprovalFacts) -> None:
        super().__init__(decision)
        self.approval = approval


class NotDecidable(ServiceError):
    """This person may not decide this approval now; `why` says which rule stops them."""

    REQUESTER = "requester"  # nobody approves or rejects their own request
    NOT_REQUESTER = "not requester"  # only the requester cancels
    ALREADY_APPROVED = "already approved"  # each approver counts once
    CLOSED = "closed"  # decided, cancelled or under way already
    EXPIRED = "expired"

    def __init__(self, approval: ApprovalFacts, why: str) -> None:
        super().__init__(f"approval {approval.id}: {why}")
        self.approval = approval
        self.why = why


class WrongConfirmation(ServiceError):
    """The name typed to confirm is not the server's."""

    def __init__(self, approval: ApprovalFacts, typed: str) -> None:
        super().__init__(f"approval {approval.id}: typed {typed[:80]!r}")
        self.approval = approval
        self.typed = typed


class CardNotPosted(ServiceError):
    """The approval card could not be posted, so nobody could decide: nothing was requested."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"approval card not posted: {problem}")
        self.problem = problem


# -- ports --------------------------------------------------------------------------------------


class ApprovalBoard(Protocol):
    """Where approvals are shown and decided (the Slack side implements it)."""

    def post_card(self, approval: ApprovalFacts, channel_id: str) -> tuple[str, str]:
        """Post the card in `channel_id`; (channel, ts). Raises `CardNotPosted`."""
        ...

    def update_card(self, approval: ApprovalFacts) -> None: ...

    def tell_thread(self, approval: ApprovalFacts, step: Step) -> None: ...


# -- the use-cases --------------------------------------------------------------------------------


class RestoreApprovals:
    """Request, approve, reject and cancel restores (and deletes, with DELETE_REQUIRES_APPROVAL)
    on behalf of people. Thread-safe."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        client: BackupsClient,
        audit: AuditLog,
        policy: Policy,
        board: ApprovalBoard,
        *,
        settings: ApprovalSettings | None = None,
        clock: Callable[[], datetime] | None = None,
        poke: Callable[[], None] = lambda: None,
    ) -> None:
        self._sessions = sessions
        self._client = client
        self._audit = audit
        self._policy = policy
        self._board = board
        self.settings = settings or ApprovalSettings()
        # Expiry times are the database's clock: every instance agrees when a card expires.
        self._clock = clock or database_clock(sessions)
        self.poke = poke  # wakes the runner when an approval becomes due

    # -- asking ------------------------------------------------------------------------------

    @property
    def deletes_need_approval(self) -> bool:
        """DELETE_REQUIRES_APPROVAL: a delete is asked for with `request_delete`, never done."""
        return self.settings.delete_requires_approval

    def request(self, actor: Actor, backup_id: int, reason: str = "") -> ApprovalFacts:
        """Check the backup, record a pending restore approval, post its card; returns it."""
        return self._request(actor, ApprovalKind.RESTORE, backup_id, reason)

    def request_delete(self, actor: Actor, backup_id: int, reason: str = "") -> ApprovalFacts:
        """The same for deleting a backup: nothing is deleted until approvers approve."""
        return self._request(actor, ApprovalKind.DELETE, backup_id, reason)

    def _request(
        self, actor: Actor, kind: ApprovalKind, backup_id: int, reason: str
    ) -> ApprovalFacts:
        action = Action.DELETE if kind is ApprovalKind.DELETE else Action.RESTORE
        asked = f"{kind.value}.request"
        decision = self._policy.check(actor.user_id, action, actor.channel_id, direct=actor.direct)
        if not decision.allowed:
            self._deny(actor, decision, backup_id=backup_id, parameters={"reason": reason})
        try:
            backup = self._client.find_backup(backup_id)
        except NotFound:
            self._record(actor, asked, Outcome.ERROR, None, backup_id, "no such backup")
            raise NoSuchBackup(backup_id) from None
        except VpsError as exc:
            self._record(actor, asked, Outcome.ERROR, None, backup_id, exc.message)
            raise ProviderError(exc, action, backup_id=backup_id) from None
        # A restore needs a completed backup; a delete, one that is not still being made.
        refused: ServiceError | None = None
        if kind is ApprovalKind.RESTORE and backup.phase is not Phase.COMPLETED:
            refused = BackupNotRestorable(backup)
        elif kind is ApprovalKind.DELETE and backup.phase is Phase.RUNNING:
            refused = BackupNotFinished(backup)
        if refused is not None:
            server_id = backup.server.id
            self._record(
                actor, asked, Outcome.ERROR, server_id, backup_id, f"backup {backup.status}"
            )
            raise refused
        now = self._clock()
        row = Approval(
            kind=kind.value,
            state=ApprovalState.PENDING.value,
            version=0,
            server_id=backup.server.id,
            server_name=backup.server.name[:255],
            backup_id=backup.id,
            backup_type=backup.backup_type[:32],
            backup_created_at=backup.created_at,
            backup_size_mb=backup.size_mb,
            backup_description=backup.description,
            backup_status=backup.status[:32],
            requester_id=actor.user_id,
            requester_name=actor.name[:255],
            team_id=actor.team_id,
            channel_id=actor.channel_id,
            reason=reason[:2000],
            required_approvals=self.settings.required,
            approvers=[],
            created_at=now,
            expires_at=now + self.settings.ttl,
            safety_backup=self.settings.safety_backup and kind is ApprovalKind.RESTORE,
            detail="",
        )
        with self._sessions.begin() as session:
            session.add(row)
            session.flush()
            approval_id = row.id
        facts = ApprovalFacts.of(row)
        where = self.settings.approvals_channel or actor.channel_id
        try:
            if where is None:
                raise CardNotPosted("no_channel")
            channel, ts = self._board.post_card(facts, where)
        except CardNotPosted as exc:
            # Nobody can decide without a card: the request ends here, said to the requester.
            self._close(approval_id, ApprovalState.PENDING, ApprovalState.FAILED, exc.problem)
            self._record(
                actor, asked, Outcome.ERROR, backup.server.id, backup_id,
                f"approval card not posted: {exc.problem}", approval_id,
            )  # fmt: skip
            raise
        self._update(approval_id, card_channel_id=channel, card_ts=ts)
        self._record(
            actor, asked, Outcome.OK, backup.server.id, backup_id,
            f"approval card posted; expires {row.expires_at:%Y-%m-%d %H:%M} UTC"
            + (f"; reason: {reason[:500]}" if reason else ""),
            approval_id,
        )  # fmt: skip
        return self.get(approval_id)

    # -- deciding ----------------------------------------------------------------------------

    def check_decider(self, actor: Actor, approval_id: int, action: Action) -> ApprovalFacts:
        """Raise (and audit) unless `actor` may take `action` (approve/reject) on it now."""
        approval = self.get(approval_id)
        # Decided on the card (or App Home), wherever it is: BACKUP_CHANNELS is not asked.
        decision = self._policy.check(actor.user_id, action)
        if not decision.allowed:
            self._deny(actor, decision, approval=approval)
        why = None
        if approval.card_ts is None:  # its card is not posted (yet, or ever): nobody saw it
            why = NotDecidable.CLOSED
        elif actor.user_id == approval.requester_id:
            why = NotDecidable.REQUESTER
        elif not approval.pending:
            why = NotDecidable.CLOSED
        elif self._clock() >= approval.expires_at:
            why = NotDecidable.EXPIRED
        elif action is Action.APPROVE and any(
            a.user_id == actor.user_id for a in approval.approvers
        ):
            why = NotDecidable.ALREADY_APPROVED
        if why is not None:
            self._refuse(actor, action.value, approval, why)
        return approval

    def approve(self, actor: Actor, approval_id: int, typed_name: str) -> ApprovalFacts:
        """One approver's yes, confirmed by typing the server's name. The last needed approval
        makes it `approved` and wakes the runner; a wrong name changes nothing."""
        approval = self.check_decider(actor, approval_id, Action.APPROVE)
        if typed_name.strip() != approval.server.name:
            raise WrongConfirmation(approval, typed_name)
        for _ in range(20):  # compare-and-set; another approver may have written in between
            approval = self.check_decider(actor, approval_id, Action.APPROVE)
            approvers = [*approval.approvers, Approver(actor.user_id, actor.name, self._clock())]
            done = len(approvers) >= approval.required_approvals
            state = ApprovalState.APPROVED if done else ApprovalState.PENDING
            values: dict[str, Any] = {
                "approvers": [
                    {"user_id": a.user_id, "name": a.name, "at": a.at.isoformat()}
                    for a in approvers
                ],
                "state": state.value,
            }
            if done:
                values["next_attempt_at"] = self._clock()
            # Still open at the moment of writing, not only when checked a moment ago.
            still_open = Approval.expires_at > self._clock()
            if self._advance(approval, ApprovalState.PENDING, still_open, **values):
                break
        else:  # pragma: no cover - twenty writers in a row beat us
            raise ServiceError("too many approvals at once; try again")
        count = f"{len(approvers)} of {approval.required_approvals}"
        self._record(
            actor, Action.APPROVE.value, Outcome.OK, approval.server.id, approval.backup_id,
            f"approved ({count})" + (f"; {approval.kind.value} is due" if done else ""),
            approval_id,
        )  # fmt: skip
        facts = self.get(approval_id)
        self._show(facts, Step.APPROVED)
        if done:
            self.poke()
        return facts

    def reject(self, actor: Actor, approval_id: int) -> ApprovalFacts:
        approval = self.check_decider(actor, approval_id, Action.REJECT)
        return self._decide(actor, approval, ApprovalState.REJECTED, Action.REJECT.value)

    def cancel(self, actor: Actor, approval_id: int) -> ApprovalFacts:
        """The requester takes the request back (while it is pending)."""
        approval = self.get(approval_id)
        action = f"{approval.kind.value}.cancel"
        if actor.user_id != approval.requester_id:
            self._refuse(actor, action, approval, NotDecidable.NOT_REQUESTER)
        if not approval.pending:
            self._refuse(actor, action, approval, NotDecidable.CLOSED)
        return self._decide(actor, approval, ApprovalState.CANCELLED, action)

    def _decide(
        self, actor: Actor, approval: ApprovalFacts, state: ApprovalState, action: str
    ) -> ApprovalFacts:
        now = self._clock()
        if not self._advance(
            approval, ApprovalState.PENDING, state=state.value, decided_by=actor.user_id,
            decided_at=now, finished_at=now,
        ):  # fmt: skip
            self._refuse(actor, action, self.get(approval.id), NotDecidable.CLOSED)
        self._record(
            actor, action, Outcome.OK, approval.server.id, approval.backup_id, state.value,
            approval.id,
        )  # fmt: skip
        facts = self.get(approval.id)
        self._show(facts, Step.REJECTED if state is ApprovalState.REJECTED else Step.CANCELLED)
        return facts

    # -- reading -----------------------------------------------------------------------------

    def get(self, approval_id: int) -> ApprovalFacts:
        with self._sessions() as session:
            row = session.get(Approval, approval_id)
            if row is None:
                raise NoSuchApproval(approval_id)
            return ApprovalFacts.of(row)

    def traces_of(self, approval_ids: set[int]) -> dict[int, Trace]:
        """Who approved each of these approvals, and where its card is: for the audit review."""
        columns = (Approval.id, Approval.approvers, Approval.card_channel_id, Approval.card_ts)
        with self._sessions() as session:
            rows = session.execute(select(*columns).where(Approval.id.in_(approval_ids)))
            return {
                row.id: Trace(
                    tuple(a.user_id for a in _approvers(row.approvers)),
                    (row.card_channel_id, row.card_ts) if row.card_ts else None,
                )
                for row in rows
            }

    def pending_for(self, user_id: str, limit: int = 10) -> list[ApprovalFacts]:
        """Pending approvals this person may decide (an approver, not the requester)."""
        if Role.APPROVER not in self._policy.roles_of(user_id):
            return []
        with self._sessions() as session:
            rows = session.scalars(
                select(Approval)
                .where(
                    Approval.state == ApprovalState.PENDING.value,
                    Approval.requester_id != user_id,
                    Approval.expires_at > self._clock(),
                    Approval.card_ts.is_not(None),
                )
                .order_by(Approval.created_at)
                .limit(limit)
            )
            return [ApprovalFacts.of(row) for row in rows]

    # -- expiry ------------------------------------------------------------------------------

    def expire_due(self) -> int:
        """Mark pending approvals past their time expired; update their cards. Returns how many."""
        now = self._clock()
        with self._sessions() as session:
            rows = list(
                session.scalars(
                    select(Approval).where(
                        Approval.state == ApprovalState.PENDING.value, Approval.expires_at <= now
                    )
                )
            )
        expired = 0
        for row in rows:
            approval = ApprovalFacts.of(row)
            if not self._advance(
                approval, ApprovalState.PENDING, state=ApprovalState.EXPIRED.value,
                decided_at=now, finished_at=now,
            ):  # fmt: skip
                continue  # decided (or expired by another instance) in the meantime
            expired += 1
            self._record(
                _requester(approval), f"{approval.kind.value}.expire", Outcome.OK,
                approval.server.id, approval.backup_id, "nobody decided in time", approval.id,
            )  # fmt: skip
            self._show(self.get(approval.id), Step.EXPIRED)
        return expired

    # -- plumbing ----------------------------------------------------------------------------

    def _show(self, approval: ApprovalFacts, step: Step) -> None:
        show(self._board, approval, step)

    def _advance(
        self, approval: ApprovalFacts, expected: ApprovalState, *conditions: Any, **values: Any
    ) -> bool:
        """Compare-and-set: write `values` only if the row is still as `approval` read it."""
        return advance(self._sessions, approval, expected, *conditions, **values)

    def _update(self, approval_id: int, **values: Any) -> None:
        with self._sessions.begin() as session:
            session.execute(update(Approval).where(Approval.id == approval_id).values(**values))

    def _close(
        self, approval_id: int, expected: ApprovalState, state: ApprovalState, detail: str
    ) -> None:
        with self._sessions.begin() as session:
            session.execute(
                update(Approval)
                .where(Approval.id == approval_id, Approval.state == expected.value)
                .values(state=state.value, detail=detail[:2000], finished_at=self._clock())
            )

    def _deny(
        self,
        actor: Actor,
        decision: Decision,
        *,
        approval: ApprovalFacts | None = None,
        backup_id: int | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        self._audit.record(
            actor,
            decision.action.value,
            Outcome.DENIED,
            server_id=approval.server.id if approval else None,
            backup_id=approval.backup_id if approval else backup_id,
            parameters=parameters,
            detail=decision.reason,
            approval_id=approval.id if approval else None,
        )
        raise Denied(decision) if approval is None else DecisionDenied(decision, approval)

    def _refuse(self, actor: Actor, action: str, approval: ApprovalFacts, why: str) -> None:
        server_id, backup_id = approval.server.id, approval.backup_id
        self._record(actor, action, Outcome.DENIED, server_id, backup_id, why, approval.id)
        raise NotDecidable(approval, why)

    def _record(
        self,
        actor: Actor,
        action: str,
        outcome: Outcome,
        server_id: int | None,
        backup_id: int | None,
        detail: str,
        approval_id: int | None = None,
    ) -> None:
        self._audit.record(
            actor,
            action,
            outcome,
            server_id=server_id,
            backup_id=backup_id,
            detail=detail,
            approval_id=approval_id,
        )


def advance(
    sessions: sessionmaker[Session],
    approval: ApprovalFacts,
    expected: ApprovalState,
    *conditions: Any,
    **values: Any,
) -> bool:
    """Compare-and-set on (state, version): however many writers race, one wins."""
    with sessions.begin() as session:
        result = session.execute(
            update(Approval)
            .where(
                Approval.id == approval.id,
                Approval.state == expected.value,
                Approval.version == approval.version,
                *conditions,
            )
            .values(version=Approval.version + 1, **values)
            .execution_options(synchronize_session=False)
        )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def _requester(approval: ApprovalFacts) -> Actor:
    """Rows of steps nobody clicked (expiry, execution) are on the requester's behalf."""
    return Actor(approval.requester_id, approval.requester_name, None, approval.channel_id)


# -- execution ----------------------------------------------------------------------------------


class SafetyWatch(BackupWatch, Protocol):
    """The durable watcher, as the runner uses it: it follows the safety backup (and replies in
    the card's thread when it finishes); the runner reads the outcome it recorded."""

    def state_of(self, backup_id: int) -> WatchState | None: ...

    def thread_if_missing(
        self, backup_id: int, channel_id: str | None, thread_ts: str | None
    ) -> None: ...


class ApprovalRunner(Rounds):
    """Carries approved restores (and deletes) through their steps, on a background thread
    (`start`/`stop`) or one round at a time (`run_once`); expires pending approvals on the way."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        client: BackupsClient,
        audit: AuditLog,
        board: ApprovalBoard,
        watcher: SafetyWatch,
        decisions: RestoreApprovals,
        *,
        owner: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._client = client
        self._audit = audit
        self._board = board
        self._watcher = watcher
        self._decisions = decisions
        self.settings = decisions.settings
        # How long since approval, how long a safety backup has taken: the database's clock,
        # like the expiry times they are measured against.
        self._clock = clock or database_clock(sessions)
        self.owner = owner or worker_name()
        self._leases = Leases(sessions, Approval, self.owner)
        super().__init__("backupbot-approvals", lambda: self.settings.tick)

    def run_once(self) -> int:
        """Expire what is due, then move every due approval as far as it can go now."""
        self._decisions.expire_due()
        now = self._clock()
        due = and_(
            Approval.state.in_([state.value for state in OPEN_APPROVAL_STATES]),
            or_(Approval.next_attempt_at.is_(None), Approval.next_attempt_at <= now),
        )
        rows = self._leases.claim(
            due,
            lease=timedelta(seconds=self.settings.lease_seconds),
            order_by=Approval.id,
            limit=20,
        )
        try:
            for row in rows:
                if self.stopping():
                    break
                try:
                    self._carry(row)
                except Exception:
                    log.exception("approval %s: step failed; trying again shortly", row.id)
        finally:
            self._leases.release(rows)
        return len(rows)

    def _carry(self, row: Approval) -> None:
        steps = {
            ApprovalState.APPROVED: self._approved,
            ApprovalState.SAFETY_BACKUP: self._safety_backup,
            ApprovalState.READY: self._ready,
            ApprovalState.RESTORING: self._restoring_after_restart,
            ApprovalState.DELETING: self._deleting_after_restart,
        }
        while (step := steps.get(ApprovalState(row.state))) is not None:
            # Each step may wait on the provider: it starts with a fresh lease, and every write
            # it makes needs that lease still live, so no other instance can act on the row
            # meanwhile (and if one took it over, this one's writes fail instead).
            if not self._renew(row) or not step(row):
                return  # True from a step: it moved on, and the next may follow at once

    # -- steps ------------------------------------------------------------------------------

    def _approved(self, row: Approval) -> bool:
        approved_at = max((a.at for a in _approvers(row.approvers)), default=row.created_at)
        if self._clock() - approved_at > self.settings.ttl:
            # Approved, then nothing could start for longer than a card lives (an outage):
            # what the approver saw, the data-loss window above all, is no longer true.
            return self._fail(row, "approved too long ago to start now; ask again")
        if not row.safety_backup:
            return self._to(row, ApprovalState.READY)
        return self._to(row, ApprovalState.SAFETY_BACKUP, safety_started_at=self._clock())

    def _safety_backup(self, row: Approval) -> bool:
        started = row.safety_started_at or row.created_at
        if self._clock() - started > self.settings.safety_timeout:
            return self._fail(
                row,
                "the safety backup did not finish in time: nothing was restored",
                action="restore.safety_backup",
                backup_id=row.safety_backup_id,
            )
        if row.safety_backup_id is None:
            return self._start_safety_backup(row)
        state = self._watcher.state_of(row.safety_backup_id)
        if state is None:  # its watch job was never written: write it now
            try:
                backup = self._client.find_backup(row.safety_backup_id, row.server_id)
            except VpsError as exc:
                return self._wait(row, f"safety backup not found yet: {exc.message}")
            self._follow(row, backup)
            return self._wait(row)
        # A restart between writing its job and attaching the card's thread: attach it now,
        # or the reply would wait out the thread grace and go to the channel on its own.
        self._watcher.thread_if_missing(row.safety_backup_id, row.card_channel_id, row.card_ts)
        if state is WatchState.COMPLETED:
            self._step_row(
                row, "restore.safety_backup", Outcome.OK, "safety backup completed",
                backup_id=row.safety_backup_id,
            )  # fmt: skip
            moved = self._to(row, ApprovalState.READY)
            if moved:
                self._tell(row, Step.SAFETY_DONE)
            return moved
        if state is not WatchState.WATCHING:
            words = {
                WatchState.FAILED: "failed",
                WatchState.VANISHED: "disappeared before it finished",
                WatchState.GAVE_UP: "never finished",
            }
            return self._fail(
                row,
                f"the safety backup {row.safety_backup_id} {words.get(state, state.value)}: "
                "nothing was restored",
                action="restore.safety_backup",
                backup_id=row.safety_backup_id,
            )
        return self._wait(row)

    def _start_safety_backup(self, row: Approval) -> bool:
        description = safety_description(row.backup_id, row.id)
        # Made since this step began (a minute's grace for clocks): never an older backup that
        # happens to carry the same words.
        since = (row.safety_started_at or row.created_at) - timedelta(minutes=1)
        try:
            # A restart between sending the create and recording it finds it here instead of
            # making a second one; so does the next look after an unconfirmed create.
            found = [
                b
                for b in self._client.list_backups(server_id=row.server_id).backups
                if b.description == description and b.is_manual and b.created_at >= since
            ]
            if found:
                backup = found[0]
            elif row.safety_requested_at is not None:
                # Asked for before (then a restart, or an unclear answer): look, never ask twice.
                return self._wait(row, "safety backup asked for, not seen yet")
            elif not self._leases.save(row, safety_requested_at=self._clock()):
                return False
            else:
                backup = self._client.create_backup(row.server_id, description)
        except OutcomeUnknown as exc:
            # It may exist: look for it again (and never create another) until the timeout.
            return self._wait(row, f"safety backup not confirmed yet: {exc.message}")
        except VpsError as exc:
            return self._fail(
                row,
                f"the safety backup could not be started ({exc.message}): nothing was restored",
                action="restore.safety_backup",
                status=exc.status_code,
            )
        if not self._leases.save(
            row, Approval.version == row.version, safety_backup_id=backup.id,
            version=row.version + 1,
        ):  # fmt: skip
            return False
        self._step_row(
            row, "restore.safety_backup", Outcome.OK, f"safety backup {backup.id} started",
            backup_id=backup.id,
        )  # fmt: skip
        self._follow(row, backup)
        self._tell(row, Step.SAFETY_STARTED)
        return self._wait(row)

    def _follow(self, row: Approval, backup: Backup) -> None:
        """The watcher follows the safety backup and replies in the card's thread."""
        actor = Actor(row.requester_id, row.requester_name, row.team_id, row.card_channel_id)
        try:
            job_id = self._watcher.watch(backup, actor)
        except IntegrityError:
            log.info("approval %s: safety backup %s is already watched", row.id, backup.id)
            return
        self._watcher.attach_thread(job_id, row.card_channel_id, row.card_ts, update_parent=False)

    def _ready(self, row: Approval) -> bool:
        """Re-check the backup, then send the restore (or delete) request, once."""
        if row.kind == ApprovalKind.DELETE.value:
            return self._ready_to_delete(row)
        try:
            listing = self._client.list_backups(server_id=row.server_id)
        except VpsError as exc:
            if self._too_late(row):
                return self._fail(row, f"the backup could not be checked in time ({exc.message})")
            return self._wait(row, f"re-check failed, will try again: {exc.message}")
        backup = next((b for b in listing.backups if b.id == row.backup_id), None)
        problem = None
        if backup is None:
            problem = f"backup {row.backup_id} no longer exists"
        elif backup.server.id != row.server_id:
            problem = f"backup {row.backup_id} now belongs to server {backup.server.id}"
        elif backup.phase is not Phase.COMPLETED:
            problem = f"backup {row.backup_id} is {backup.status}"
        if problem is not None:
            return self._fail(row, f"{problem}: the restore was refused")
        # The re-check may have been slow: a fresh lease for the call, then the point of no
        # return (a row found in `restoring` is never sent again).
        if not self._renew(row):
            return False
        if not self._to(row, ApprovalState.RESTORING, restore_requested_at=self._clock()):
            return False
        try:
            accepted = self._client.restore_server(row.server_id, row.backup_id)
        except VpsError as exc:
            unclear = " (it may have started: check the server)" * isinstance(exc, OutcomeUnknown)
            return self._fail(
                row, f"the provider answered: {exc.message}{unclear}", status=exc.status_code
            )
        detail = accepted.detail or "restore accepted"
        # Recorded whatever happens to the row next: the provider took the restore.
        self._step_row(row, Action.RESTORE.value, Outcome.OK, detail, status=accepted.status_code)
        if self._to(
            row, ApprovalState.DONE, provider_status=accepted.status_code, detail=detail[:2000],
            finished_at=self._clock(),
        ):  # fmt: skip
            self._tell(row, Step.RESTORE_ACCEPTED)
        return False

    def _ready_to_delete(self, row: Approval) -> bool:
        """Re-check that the backup is there, finished and the stored server's; then one DELETE.
        A 404 from it means someone (or its expiry) was quicker: gone, as was approved."""
        backup = self._recheck(row)
        if backup is None:
            return False
        problem = None
        if backup.server.id != row.server_id:
            problem = f"backup {row.backup_id} now belongs to server {backup.server.id}"
        elif backup.phase is Phase.RUNNING:
            problem = f"backup {row.backup_id} is {backup.status}: it can be deleted once finished"
        if problem is not None:
            return self._fail(row, f"{problem}: nothing was deleted")
        if not self._renew(row):
            return False
        if not self._to(row, ApprovalState.DELETING, restore_requested_at=self._clock()):
            return False
        try:
            outcome = self._client.delete_backup(row.backup_id)
        except NotFound as exc:
            gone = "it was already gone when the delete was sent (the provider answered 404)"
            return self._deleted(row, gone, exc.status_code)
        except VpsError as exc:
            unclear = " (it may be deleted: check the list)" * isinstance(exc, OutcomeUnknown)
            detail = f"the provider answered: {exc.message}{unclear}"
            return self._fail(row, detail, status=exc.status_code)
        if outcome is DeleteOutcome.ALREADY_DELETED:
            retried = "the provider deleted it (a retried request found it gone)"
            return self._deleted(row, retried, 404)
        return self._deleted(row, "the provider deleted it", 204)

    def _recheck(self, row: Approval) -> Backup | None:
        """The backup as the provider lists it now; None when the step ended (waits, or failed
        because it is gone)."""
        try:
            listing = self._client.list_backups(server_id=row.server_id)
        except VpsError as exc:
            if self._too_late(row):
                self._fail(row, f"the backup could not be checked in time ({exc.message})")
            else:
                self._wait(row, f"re-check failed, will try again: {exc.message}")
            return None
        backup = next((b for b in listing.backups if b.id == row.backup_id), None)
        if backup is None:
            self._fail(
                row,
                f"backup {row.backup_id} no longer exists (deleted or expired meanwhile): "
                "no delete was sent",
            )
        return backup

    def _deleted(self, row: Approval, detail: str, status: int | None) -> bool:
        # Recorded whatever happens to the row next: the backup is gone.
        self._step_row(row, Action.DELETE.value, Outcome.OK, detail, status=status)
        if self._to(
            row, ApprovalState.DONE, provider_status=status, detail=detail[:2000],
            finished_at=self._clock(),
        ):  # fmt: skip
            self._tell(row, Step.DELETED)
        return False

    def _deleting_after_restart(self, row: Approval) -> bool:
        """The DELETE may or may not have gone out before a restart: never send it again. The
        provider deletes at once, so a list says which it was."""
        try:
            listing = self._client.list_backups(server_id=row.server_id)
        except VpsError as exc:
            if self._too_late(row):
                return self._fail(
                    row,
                    "the delete request may have been sent just before the bot restarted, and "
                    f"the backup could not be checked ({exc.message}): check the list",
                )
            return self._wait(row, f"checking whether the delete went through: {exc.message}")
        if any(b.id == row.backup_id for b in listing.backups):
            return self._fail(
                row,
                "the bot restarted as the delete request was being sent and the backup is still "
                "there: nothing was deleted; ask again if it should go",
            )
        return self._deleted(row, "it was gone when checked after the bot restarted", None)

    def _restoring_after_restart(self, row: Approval) -> bool:
        return self._fail(
            row,
            "the restore request may have been sent just before the bot restarted; it is not "
            "sent again: check the server",
        )

    # -- plumbing ---------------------------------------------------------------------------

    def _to(self, row: Approval, state: ApprovalState, **values: Any) -> bool:
        """Compare-and-set on (state, version) while holding the lease; mirrors onto `row`."""
        return self._leases.save(
            row,
            Approval.state == row.state,
            Approval.version == row.version,
            state=state.value,
            version=row.version + 1,
            next_attempt_at=self._clock(),
            **values,
        )

    def _renew(self, row: Approval) -> bool:
        return bool(self._leases.renew([row], timedelta(seconds=self.settings.lease_seconds)))

    def _wait(self, row: Approval, detail: str | None = None) -> bool:
        values: dict[str, Any] = {
            "next_attempt_at": self._clock() + timedelta(seconds=self.settings.wait)
        }
        if detail is not None:
            values["detail"] = detail[:2000]
        self._leases.save(row, **values)
        return False

    def _fail(
        self,
        row: Approval,
        detail: str,
        *,
        action: str | None = None,  # the audit row's; by default what was approved
        status: int | None = None,
        backup_id: int | None = None,  # the audit row's; by default the approved backup
    ) -> bool:
        action = action or row.kind
        if self._to(
            row, ApprovalState.FAILED, detail=detail[:2000], provider_status=status,
            finished_at=self._clock(),
        ):  # fmt: skip
            self._step_row(row, action, Outcome.ERROR, detail, status=status, backup_id=backup_id)
            self._tell(row, Step.FAILED)
        return False

    def _too_late(self, row: Approval) -> bool:
        since = row.safety_started_at or row.created_at
        return self._clock() - since > self.settings.ttl + self.settings.safety_timeout

    def _step_row(
        self,
        row: Approval,
        action: str,
        outcome: Outcome,
        detail: str,
        *,
        status: int | None = None,
        backup_id: int | None = None,
    ) -> None:
        self._audit.record(
            _requester(ApprovalFacts.of(row)),
            action,
            outcome,
            server_id=row.server_id,
            backup_id=backup_id if backup_id is not None else row.backup_id,
            provider_status=status,
            detail=detail,
            approval_id=row.id,
        )

    def _tell(self, row: Approval, step: Step) -> None:
        show(self._board, ApprovalFacts.of(row), step)


def show(board: ApprovalBoard, approval: ApprovalFacts, step: Step) -> None:
    """The card redrawn and its thread told. The step is done and recorded already: a card
    that lags behind is logged, not worth failing the step or a retry loop."""
    try:
        board.update_card(approval)
        board.tell_thread(approval, step)
    except Exception:
        log.exception("approval %s: could not show %s on its card", approval.id, step.value)


def safety_description(backup_id: int, approval_id: int) -> str:
    return f"Safety backup before restoring {backup_id}, approval #{approval_id}"


__all__: Sequence[str] = (
    "ApprovalBoard",
    "ApprovalFacts",
    "ApprovalRunner",
    "ApprovalSettings",
    "RestoreApprovals",
    "Step",
)
