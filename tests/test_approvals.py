"""Restore with approvals, end to end: signed requests to the running app, the Slack double for the
card, the modal and the thread, the simulator as the provider (counting restore calls)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from bot.approvals import ApprovalRunner, utcnow
from bot.db import Approval, AuditEvent, WatchJob
from bot.sandbox.slack import Message, RecordedCall, SlackDouble
from bot.sandbox.vps import Simulator
from bot.slack import approval_blocks
from tests.test_hardening import wait_until
from tests.test_slack_app import AppRig, rigs_of, text_of

FAST_APPROVALS = {"tick": 0.02, "wait": 0.05}
WEB = 12345
CONFIRM = {approval_blocks.CONFIRM_BLOCK: {approval_blocks.CONFIRM_INPUT: "web-server-01"}}


class ApprovalRig(AppRig):
    """An `AppRig` whose approvers are bob and carol (dave is an admin), workers running."""

    def __init__(self, slack: SlackDouble, simulator: Simulator, database_url: str, **env: str):
        env = {"BACKUP_APPROVERS": "U_BOB,U_CAROL", "BACKUP_ADMINS": "U_DAVE", **env}
        super().__init__(slack, simulator, database_url, approval_tuning=FAST_APPROVALS, **env)
        self.bot.start_workers()

    def backup(self, server_id: int = WEB, **fields: Any) -> int:
        return int(self.simulator.add_backup(server_id, description="known good", **fields)["id"])

    def request(self, backup_id: int, user_id: str = "U_ALICE", reason: str = "") -> Message:
        body = self.run(f"restore {backup_id} {reason}".strip(), user_id=user_id)
        assert "Asked for approval" in text_of(body), text_of(body)
        return self.card()

    def card(self, channel: str = "C_OPS") -> Message:
        cards = [
            m
            for m in self.slack.messages_in(channel)
            if any(b.get("block_id", "").startswith("approval_") for b in m.blocks)
            or "Restore " in m.text
        ]
        assert cards, "no approval card was posted"
        return self.slack.message(channel, cards[-1].ts) or cards[-1]

    def approval(self) -> Approval:
        with self.bot.sessions() as session:
            row = session.scalars(select(Approval).order_by(Approval.id.desc())).first()
            assert row is not None
            return row

    def click(self, message: Message, action_id: str, user_id: str = "U_BOB") -> Any:  # type: ignore[override]
        answer = self.sender.click(message, action_id, user_id=user_id)
        assert answer.status == 200
        return answer

    def open_form(self, card: Message, user_id: str = "U_BOB") -> dict[str, Any]:
        before = len(self.slack.calls_to("views.open"))
        self.click(card, approval_blocks.APPROVE, user_id)
        deadline = time.monotonic() + 5
        while len(self.slack.calls_to("views.open")) == before and time.monotonic() < deadline:
            time.sleep(0.02)
        calls = self.slack.calls_to("views.open")
        assert len(calls) > before, "the confirmation form was not opened"
        assert calls[-1].ok, calls[-1].response
        view = calls[-1].response["view"]
        return view if isinstance(view, dict) else json.loads(view)

    def approve(self, card: Message, user_id: str = "U_BOB", name: str = "web-server-01") -> Any:
        view = self.open_form(card, user_id)
        values = {approval_blocks.CONFIRM_BLOCK: {approval_blocks.CONFIRM_INPUT: name}}
        answer = self.sender.view_submission(view, user_id=user_id, values=values)
        assert answer.status == 200
        return answer

    def submit_at_once(self, view: dict[str, Any], times: int = 20) -> list[int]:
        """The same confirmation submitted `times` times at once (by bob): each HTTP status."""
        answers: list[int] = []

        def submit() -> None:
            answers.append(
                self.sender.view_submission(view, user_id="U_BOB", values=CONFIRM).status
            )

        threads = [threading.Thread(target=submit) for _ in range(times)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        return answers

    def wait_state(self, *states: str, timeout: float = 10.0) -> Approval:
        deadline = time.monotonic() + timeout
        while True:
            row = self.approval()
            if row.state in states or time.monotonic() > deadline:
                assert row.state in states, f"approval is {row.state} ({row.detail})"
                return row
            time.sleep(0.02)

    def safety_backup(self, timeout: float = 10.0) -> int:
        row = self.wait_state("safety_backup", timeout=timeout)
        deadline = time.monotonic() + timeout
        while row.safety_backup_id is None and time.monotonic() < deadline:
            time.sleep(0.02)
            row = self.approval()
        assert row.safety_backup_id is not None
        return row.safety_backup_id

    def restore_calls(self) -> list[Any]:
        return self.simulator.api_calls("POST", "/servers/")

    def thread(self, card: Message, says: str, timeout: float = 5.0) -> str:
        """The card's thread, once a reply in it says `says` (steps are told after they are
        recorded, so a test that saw the state may be a moment early)."""
        deadline = time.monotonic() + timeout
        while True:
            replies = self.slack.messages_in(card.channel, thread_ts=card.ts)
            text = " ".join(m.text for m in replies if m.ts != card.ts)
            if says in text or time.monotonic() > deadline:
                assert says in text, text
                return text

    def audit_of(self, approval_id: int) -> list[AuditEvent]:
        with self.bot.sessions() as session:
            return list(
                session.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.approval_id == approval_id)
                    .order_by(AuditEvent.id)
                )
            )


@pytest.fixture
def make_rig(
    slack: SlackDouble, simulator: Simulator, database_url: str
) -> Iterator[Callable[..., ApprovalRig]]:
    slack.add_user("U_DAVE", "dave", real_name="Dave Diaz")
    yield from rigs_of(ApprovalRig, slack, simulator, database_url)


@pytest.fixture
def rig(make_rig: Callable[..., ApprovalRig]) -> ApprovalRig:
    return make_rig()


# -- the happy paths ------------------------------------------------------------------------------


def test_restore_with_a_safety_backup_first(rig: ApprovalRig) -> None:
    backup_id = rig.backup(created_at=None)
    card = rig.request(backup_id, reason="bad deploy at 14:00")
    facts = text_of({"blocks": card.blocks})
    assert "web-server-01" in facts and str(backup_id) in facts and "<@U_ALICE>" in facts
    assert "will be lost" in facts and "bad deploy at 14:00" in facts and "<!date^" in facts
    assert rig.simulator.api_calls("POST") == []  # nothing happens on a request

    rig.approve(card)
    safety = rig.safety_backup()
    assert rig.restore_calls() == []  # not before the safety backup completed
    rig.simulator.finish(safety)
    row = rig.wait_state("done")
    [restore] = rig.simulator.restores
    assert (restore["server_id"], restore["backup_id"]) == (WEB, backup_id)
    posts = [c.path for c in rig.simulator.api_calls("POST")]
    assert posts == ["/api/v1/backups/", f"/api/v1/servers/{WEB}/restore/"]  # in this order
    assert rig.simulator.backup(safety)["description"].endswith(f"approval #{row.id}")  # type: ignore[index]

    thread = rig.thread(card, "accepted the restore")
    assert "<@U_BOB> approved" in thread and f"Safety backup {safety}" in thread.replace("*", "")
    assert "<@U_ALICE>, the provider accepted" in thread
    # The safety backup's reply lands in the card's thread without rewriting the card.
    updates = [c for c in rig.slack.calls_to("chat.update") if c.args.get("ts") == card.ts]
    assert updates and all(c.args["text"].startswith("Restore ") for c in updates)
    final = text_of({"blocks": rig.card().blocks})
    assert "Restore accepted" in final and approval_blocks.APPROVE not in final  # no buttons
    story = [(e.action, e.outcome, e.actor_user_id) for e in rig.audit_of(row.id)]
    assert story[0] == ("restore.request", "ok", "U_ALICE")
    assert ("approve", "ok", "U_BOB") in story
    assert [s for s in story if s[0] == "restore.safety_backup"] == [
        ("restore.safety_backup", "ok", "U_ALICE"),
        ("restore.safety_backup", "ok", "U_ALICE"),
    ]
    assert story[-1] == ("restore", "ok", "U_ALICE")
    steps = [(e.action, e.backup_id) for e in rig.audit_of(row.id)]
    # The safety backup's rows name the safety backup; the others, the backup restored.
    assert steps.count(("restore.safety_backup", safety)) == 2
    assert steps[-1] == ("restore", backup_id)


def test_a_safety_backup_job_left_without_its_thread_replies_in_the_card_thread(
    rig: ApprovalRig,
) -> None:
    """A restart between writing the safety backup's watch job and attaching the card's thread
    (as if killed there): the runner attaches it, and the reply lands under the card at once
    rather than after the thread grace (minutes), on its own in the channel."""
    card = rig.request(rig.backup())
    rig.approve(card)
    safety = rig.safety_backup()
    assert wait_until(lambda: _job_thread(rig, safety) == card.ts, timeout=10)
    with rig.bot.sessions.begin() as session:
        session.execute(update(WatchJob).where(WatchJob.backup_id == safety).values(thread_ts=None))
    assert wait_until(lambda: _job_thread(rig, safety) == card.ts, timeout=10)  # attached again
    rig.simulator.finish(safety)
    rig.wait_state("done")
    assert f"Backup {safety}" in rig.thread(card, "completed", timeout=10).replace("*", "")


def _job_thread(rig: ApprovalRig, backup_id: int) -> str | None:
    with rig.bot.sessions() as session:
        return session.scalar(select(WatchJob.thread_ts).where(WatchJob.backup_id == backup_id))


def test_restore_without_a_safety_backup(make_rig: Callable[..., ApprovalRig]) -> None:
    rig = make_rig(RESTORE_SAFETY_BACKUP="false")
    backup_id = rig.backup()
    rig.approve(rig.request(backup_id))
    rig.wait_state("done")
    assert [c.path for c in rig.simulator.api_calls("POST")] == [f"/api/v1/servers/{WEB}/restore/"]


def test_the_card_goes_to_the_approvals_channel_with_a_note_where_asked(
    make_rig: Callable[..., ApprovalRig], slack: SlackDouble
) -> None:
    slack.add_channel("C_APPROVALS", "approvals")
    rig = make_rig(APPROVALS_CHANNEL="C_APPROVALS")
    rig.run(f"restore {rig.backup()}")
    card = rig.card("C_APPROVALS")
    assert "web-server-01" in card.text
    [note] = [m for m in slack.messages_in("C_OPS") if not m.ephemeral]
    assert "waiting for approval" in note.text and "<@U_ALICE>" in note.text


# -- who may decide --------------------------------------------------------------------------------


def test_a_wrong_name_keeps_the_form_open_and_changes_nothing(rig: ApprovalRig) -> None:
    card = rig.request(rig.backup())
    view = rig.open_form(card)
    wrong = {approval_blocks.CONFIRM_BLOCK: {approval_blocks.CONFIRM_INPUT: "web-server-02"}}
    answer = rig.sender.view_submission(view, user_id="U_BOB", values=wrong)
    assert answer.status == 200
    errors = answer.json()
    assert errors["response_action"] == "errors"
    assert "web-server-01" in errors["errors"][approval_blocks.CONFIRM_BLOCK]
    time.sleep(0.2)
    assert rig.approval().state == "pending" and rig.approval().approvers == []


@pytest.mark.parametrize("requester", ["U_ALICE", "U_DAVE"])
def test_nobody_approves_their_own_request_not_even_an_admin(
    make_rig: Callable[..., ApprovalRig], requester: str
) -> None:
    rig = make_rig(BACKUP_APPROVERS="U_ALICE,U_BOB")  # alice may approve, but not her own
    card = rig.request(rig.backup(), user_id=requester)
    before = len(rig.slack.responses)
    rig.click(card, approval_blocks.APPROVE, user_id=requester)
    refusal = rig.next_response(before).body
    assert "four eyes" in text_of(refusal)
    assert rig.slack.calls_to("views.open") == []  # no form for them
    assert rig.approval().state == "pending"
    [denied] = [e for e in rig.audit_of(rig.approval().id) if e.outcome == "denied"]
    assert denied.actor_user_id == requester and denied.action == "approve"


def test_a_non_approver_is_told_and_audited_and_the_card_stays(rig: ApprovalRig) -> None:
    card = rig.request(rig.backup())
    before_card = rig.card().blocks
    before = len(rig.slack.responses)
    rig.slack.add_user("U_ERIN", "erin")
    rig.click(card, approval_blocks.APPROVE, user_id="U_ERIN")
    assert "approver" in text_of(rig.next_response(before).body)
    before = len(rig.slack.responses)
    rig.click(card, approval_blocks.REJECT, user_id="U_ERIN")
    assert "approver" in text_of(rig.next_response(before).body)  # told, after the denial row
    assert rig.card().blocks == before_card
    denied = [e for e in rig.audit_of(rig.approval().id) if e.outcome == "denied"]
    assert {e.action for e in denied} == {"approve", "reject"}


def test_reject(rig: ApprovalRig) -> None:
    card = rig.request(rig.backup())
    rig.click(card, approval_blocks.REJECT, user_id="U_CAROL")
    row = rig.wait_state("rejected")
    assert row.decided_by == "U_CAROL"
    assert "<@U_CAROL> rejected" in rig.thread(card, "rejected")
    time.sleep(0.2)
    assert rig.simulator.api_calls("POST") == []


def test_cancel_is_for_the_requester(rig: ApprovalRig) -> None:
    card = rig.request(rig.backup())
    before = len(rig.slack.responses)
    rig.click(card, approval_blocks.CANCEL, user_id="U_BOB")
    assert "can cancel it" in text_of(rig.next_response(before).body)
    rig.click(card, approval_blocks.CANCEL, user_id="U_ALICE")
    rig.wait_state("cancelled")
    before = len(rig.slack.responses)
    rig.click(card, approval_blocks.APPROVE, user_id="U_BOB")  # the old card's button
    assert "no longer open" in text_of(rig.next_response(before).body)
    assert rig.simulator.api_calls("POST") == []


def test_two_of_two_with_the_same_approver_twice(make_rig: Callable[..., ApprovalRig]) -> None:
    rig = make_rig(RESTORE_APPROVALS_REQUIRED="2", RESTORE_SAFETY_BACKUP="false")
    card = rig.request(rig.backup())
    rig.approve(card, user_id="U_BOB")
    # The submission is acked before the approval is recorded: wait for the record itself.
    deadline = time.monotonic() + 10
    while not (row := rig.wait_state("pending")).approvers and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [a["user_id"] for a in row.approvers] == ["U_BOB"]
    before = len(rig.slack.responses)
    rig.click(rig.card(), approval_blocks.APPROVE, user_id="U_BOB")
    assert "already" in text_of(rig.next_response(before).body)
    while "1 of 2" not in text_of({"blocks": rig.card().blocks}) and time.monotonic() < deadline:
        time.sleep(0.02)  # the card is redrawn after the record
    assert "1 of 2" in text_of({"blocks": rig.card().blocks})
    rig.approve(rig.card(), user_id="U_CAROL")
    rig.wait_state("done")
    assert len(rig.restore_calls()) == 1


# -- time ------------------------------------------------------------------------------------------


def test_an_expired_approval_refuses_clicks_and_the_sweeper_marks_it(rig: ApprovalRig) -> None:
    card = rig.request(rig.backup())
    view = rig.open_form(card)
    with rig.bot.sessions.begin() as session:  # the clock moves on: 31 minutes later
        row = session.scalars(select(Approval)).one()
        row.expires_at = row.created_at - timedelta(seconds=1)
    answer = rig.sender.view_submission(view, user_id="U_BOB", values=CONFIRM)
    assert answer.status == 200
    row = rig.wait_state("expired")
    assert row.approvers == []
    rig.thread(card, "expired")
    assert approval_blocks.APPROVE not in text_of({"blocks": rig.card().blocks})
    assert rig.simulator.api_calls("POST") == []


# -- what runs is what was approved, still true at the moment --------------------------------------


def test_a_backup_in_progress_or_missing_is_refused_without_a_card(rig: ApprovalRig) -> None:
    running = rig.backup(status="in_progress")
    assert "only a completed backup" in text_of(rig.run(f"restore {running}"))
    assert "There is no backup" in text_of(rig.run("restore 999999"))
    assert not any("Restore " in m.text for m in rig.slack.messages_in("C_OPS"))


def test_a_backup_deleted_between_approval_and_execution_is_not_restored(
    make_rig: Callable[..., ApprovalRig],
) -> None:
    rig = make_rig()
    backup_id = rig.backup()
    rig.approve(rig.request(backup_id))
    safety = rig.safety_backup()
    rig.bot.vps.delete_backup(backup_id)  # someone deleted it meanwhile (through the provider)
    rig.simulator.finish(safety)
    row = rig.wait_state("failed")
    assert "no longer exists" in row.detail
    assert rig.restore_calls() == []


@pytest.mark.parametrize(("status", "words"), [(400, "not allowed"), (500, "may have started")])
def test_the_providers_refusal_of_the_restore_is_on_the_card(
    make_rig: Callable[..., ApprovalRig], status: int, words: str
) -> None:
    rig = make_rig(RESTORE_SAFETY_BACKUP="false")
    rig.simulator.inject(
        method="POST", path="/servers/", status=status, body={"detail": "Restore not allowed"}
    )
    card = rig.request(rig.backup())
    rig.approve(card)
    row = rig.wait_state("failed")
    assert words in row.detail and row.provider_status == status
    assert len(rig.restore_calls()) == 1  # never sent twice
    assert "<@U_ALICE>" in rig.thread(card, "stopped")


# -- exactly once ---------------------------------------------------------------------------------


def test_twenty_approvals_at_once_make_one_restore(make_rig: Callable[..., ApprovalRig]) -> None:
    rig = make_rig(RESTORE_SAFETY_BACKUP="false")
    card = rig.request(rig.backup())
    view = rig.open_form(card)
    assert rig.submit_at_once(view) == [200] * 20
    rig.wait_state("done")
    time.sleep(0.3)
    assert len(rig.restore_calls()) == 1
    assert len(rig.approval().approvers) == 1
    approvals = [e for e in rig.audit_of(rig.approval().id) if e.action == "approve"]
    assert [e.outcome for e in approvals].count("ok") == 1


def test_runners_whose_clocks_differ_by_minutes_restore_once(
    make_rig: Callable[..., ApprovalRig],
) -> None:
    """Two instances' runners, one ten minutes ahead: the lease one holds is live for the other
    too (the database's clock), so the approved restore is carried by one of them, once."""
    rig = make_rig(RESTORE_SAFETY_BACKUP="false")
    rig.bot.runner.stop()
    base = rig.bot.runner

    def runner(clock: Callable[[], datetime]) -> ApprovalRunner:
        return ApprovalRunner(
            rig.bot.sessions, base._client, base._audit, base._board, base._watcher,
            base._decisions, clock=clock,
        )  # fmt: skip

    right, ahead = runner(utcnow), runner(lambda: utcnow() + timedelta(minutes=10))
    card = rig.request(rig.backup())
    rig.approve(card)
    row = rig.wait_state("approved")
    held = right._leases.claim(
        Approval.id == row.id, lease=timedelta(seconds=30), order_by=Approval.id, limit=1
    )
    assert len(held) == 1  # mid-step on the instance whose clock is right
    assert ahead.run_once() == 0
    right._leases.release(held)
    assert ahead.run_once() == 1
    assert rig.wait_state("done")
    assert right.run_once() == 0
    assert len(rig.restore_calls()) == 1


def test_nothing_else_happens_on_a_request(rig: ApprovalRig) -> None:
    calls_before = len(rig.slack.calls)
    rig.request(rig.backup())
    new = [c.method for c in rig.slack.calls[calls_before:] if isinstance(c, RecordedCall)]
    assert "views.open" not in new and rig.restore_calls() == []


def test_the_audit_log_tells_the_whole_story_of_one_restore(
    make_rig: Callable[..., ApprovalRig],
) -> None:
    rig = make_rig(RESTORE_SAFETY_BACKUP="false", BACKUP_AUDITORS="U_CAROL")
    rig.run("list")  # another story, which the filter leaves out
    card = rig.request(rig.backup(), reason="rollback")
    rig.approve(card)
    approval_id = rig.wait_state("done").id
    story = rig.run(f"audit approval:{approval_id}", user_id="U_CAROL")
    rows = [b["text"]["text"] for b in story["blocks"] if b["type"] == "section"]
    assert rows and all(f"approval #{approval_id} (approved by <@U_BOB>)" in row for row in rows)
    link = f"https://test-domain.slack.com/archives/C_OPS/p{card.ts.replace('.', '')}|thread>"
    assert all(link in row for row in rows)  # each row leads to the card and its thread
    actions = " ".join(rows)
    assert "*restore.request*" in actions and "<@U_ALICE>" in actions
    assert "*approve*" in actions and "<@U_BOB>" in actions
    assert "*restore* " in actions and "*list*" not in actions


def test_app_home_shows_an_approver_what_waits_for_them(rig: ApprovalRig) -> None:
    rig.request(rig.backup())

    bobs = rig.home_of("U_BOB")
    assert "Waiting for your approval" in text_of(bobs)
    action = rig.sender.action_for(bobs["blocks"], approval_blocks.APPROVE)
    assert action["value"] == str(rig.approval().id)
    alices = rig.home_of("U_ALICE")  # the requester: nothing to decide
    assert "Waiting for your approval" not in text_of(alices) and "restore" in text_of(alices)


def test_a_card_that_cannot_be_posted_requests_nothing(rig: ApprovalRig) -> None:
    body = rig.run(f"restore {rig.backup()}", channel_id="C_RANDOM")  # the bot is not there
    assert "could not post the approval card" in text_of(body)
    assert "not a member" in text_of(body) and "/invite" in text_of(body)
    row = rig.approval()
    assert row.state == "failed" and row.card_ts is None
    [request] = [e for e in rig.audit_of(row.id) if e.action == "restore.request"]
    assert request.outcome == "error"
    time.sleep(0.2)
    assert rig.simulator.api_calls("POST") == []


def test_an_unconfirmed_safety_backup_is_looked_for_never_asked_twice(
    make_rig: Callable[..., ApprovalRig],
) -> None:
    rig = make_rig()
    rig.bot.runner.settings = dataclasses.replace(
        rig.bot.runner.settings, safety_timeout=timedelta(seconds=2)
    )
    rig.simulator.inject(method="POST", path="/backups/", status=502)  # and nothing was made
    rig.approve(rig.request(rig.backup()))
    row = rig.wait_state("failed", timeout=15)
    assert "did not finish in time" in row.detail and row.safety_requested_at is not None
    assert len(rig.simulator.api_calls("POST", "/backups/")) == 1  # looked for, not re-sent
    assert rig.restore_calls() == []
