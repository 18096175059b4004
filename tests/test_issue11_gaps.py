"""Issue 11 (restore with approvals): the cases the acceptance review found no test for, through the
same rig as tests/test_approvals.py (signed requests to the running app, the Slack double, the
simulator counting restore calls), on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.db import Approval, AuditEvent
from bot.sandbox.slack import RecordedCall, SlackDouble
from bot.sandbox.vps import Simulator
from bot.slack import approval_blocks, blocks
from tests.test_approvals import CONFIRM, WEB, ApprovalRig
from tests.test_hardening import wait_until
from tests.test_slack_app import rigs_of, text_of

ACK_LIMIT = 3.0


@pytest.fixture
def make_rig(
    slack: SlackDouble, simulator: Simulator, database_url: str
) -> Iterator[Callable[..., ApprovalRig]]:
    slack.add_user("U_DAVE", "dave", real_name="Dave Diaz")
    yield from rigs_of(ApprovalRig, slack, simulator, database_url)


@pytest.fixture
def rig(make_rig: Callable[..., ApprovalRig]) -> ApprovalRig:
    return make_rig()


def _card_text(rig: ApprovalRig, channel: str = "C_OPS") -> str:
    return text_of({"blocks": rig.card(channel).blocks})


def _epoch(moment: datetime) -> int:
    """Seconds since the epoch of a database time (SQLite gives naive UTC, PostgreSQL aware)."""
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())


def _may_line(home: dict[str, Any]) -> str:
    """The "You may:" line of an App Home (the usage text below it names every command)."""
    [line] = [t for t in re.findall(r"\*You may:\*[^\n\"]*", text_of(home))]
    return line


# -- 1. who may ask -------------------------------------------------------------------------------


def test_a_viewers_restore_is_denied_audited_and_posts_no_card(rig: ApprovalRig) -> None:
    rig.slack.add_user("U_ERIN", "erin")
    backup_id = rig.backup()
    said = text_of(rig.run(f"restore {backup_id} please", user_id="U_ERIN"))
    assert "operator" in said and "Asked for approval" not in said
    menu = {
        "action_id": blocks.BACKUP_MENU,
        "block_id": f"backup_{backup_id}",
        "type": "overflow",
        "selected_option": {
            "text": {"type": "plain_text", "text": "Restore…"},
            "value": f"restore:{backup_id}",
        },
        "action_ts": "1.2",
    }
    before = len(rig.slack.responses)
    answer = rig.sender.block_actions(menu, user_id="U_ERIN", channel_id="C_OPS")
    assert answer.status == 200
    assert "operator" in text_of(rig.next_response(before).body)
    time.sleep(0.2)
    assert not any(m.text.startswith("Restore ") for m in rig.slack.messages_in("C_OPS"))
    with rig.bot.sessions() as session:
        assert session.scalars(select(Approval)).first() is None
        denied = list(
            session.scalars(
                select(AuditEvent).where(
                    AuditEvent.actor_user_id == "U_ERIN", AuditEvent.outcome == "denied"
                )
            )
        )
    assert [(e.action, e.backup_id) for e in denied] == [("restore", backup_id)] * 2
    assert rig.simulator.api_calls("POST") == []


def test_app_home_names_restore_only_for_whom_may_ask(rig: ApprovalRig) -> None:
    rig.slack.add_user("U_ERIN", "erin")
    assert "`restore`" in _may_line(rig.home_of("U_ALICE"))  # an operator
    assert "`restore`" not in _may_line(rig.home_of("U_ERIN"))  # a viewer
    assert "`restore`" not in _may_line(rig.home_of("U_BOB"))  # approves, does not ask


# -- 1. the card ----------------------------------------------------------------------------------


def test_the_card_states_every_fact_an_approver_decides_on(rig: ApprovalRig) -> None:
    taken = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3, hours=4, minutes=10)
    backup_id = rig.backup(created_at=taken, size_mb=2048, backup_type="automatic")
    card = rig.request(backup_id, reason="bad deploy")
    facts = text_of({"blocks": card.blocks})
    assert f"(`{WEB}`)" in facts  # the server's id, beside its name
    assert "automatic" in facts and "2.0 GB" in facts
    assert f"<!date^{int(taken.timestamp())}^" in facts  # created, as a Slack date
    assert re.search(r"— 3 days 4 hours — will be lost", facts), facts
    row = rig.approval()
    assert f"Expires <!date^{_epoch(row.expires_at)}^" in facts
    buttons = {e["action_id"] for b in card.blocks if b["type"] == "actions" for e in b["elements"]}
    assert buttons == {approval_blocks.APPROVE, approval_blocks.REJECT, approval_blocks.CANCEL}


def test_the_note_in_the_requesting_channel_links_to_the_card(
    make_rig: Callable[..., ApprovalRig], slack: SlackDouble
) -> None:
    slack.add_channel("C_APPROVALS", "approvals")
    rig = make_rig(APPROVALS_CHANNEL="C_APPROVALS")
    rig.run(f"restore {rig.backup()}")
    card = rig.card("C_APPROVALS")
    [note] = [m for m in slack.messages_in("C_OPS") if not m.ephemeral]
    [permalink] = [
        c.response["permalink"]
        for c in slack.calls_to("chat.getPermalink")
        if c.ok and c.args.get("message_ts") == card.ts
    ]
    assert f"<{permalink}|" in text_of({"text": note.text, "blocks": note.blocks})


# -- 2. who decides -------------------------------------------------------------------------------


def test_the_card_shows_who_has_approved_so_far(make_rig: Callable[..., ApprovalRig]) -> None:
    rig = make_rig(RESTORE_APPROVALS_REQUIRED="2", RESTORE_SAFETY_BACKUP="false")
    card = rig.request(rig.backup())
    rig.approve(card, user_id="U_BOB")
    assert wait_until(lambda: "1 of 2" in _card_text(rig), timeout=10)
    assert re.search(r"Approvals: 1 of 2 \(<@U_BOB> ", _card_text(rig)), _card_text(rig)
    assert rig.approval().state == "pending" and rig.restore_calls() == []


# -- 3. typed confirmation: acks ------------------------------------------------------------------


def test_the_approve_click_and_the_submission_are_acked_within_3_s(
    make_rig: Callable[..., ApprovalRig],
) -> None:
    rig = make_rig(RESTORE_SAFETY_BACKUP="false")
    rig.simulator.faults.latency = 2.0  # the provider is slow: none of it may be before the ack
    card = rig.request(rig.backup())
    start = time.monotonic()
    view = rig.open_form(card)
    assert time.monotonic() - start < ACK_LIMIT + 1  # the click's ack, then the form opened
    opened = rig.slack.calls_to("views.open")[-1]
    assert opened.ok  # with the click's trigger_id, before it expired
    start = time.monotonic()
    answer = rig.sender.view_submission(view, user_id="U_BOB", values=CONFIRM)
    assert answer.status == 200 and time.monotonic() - start < ACK_LIMIT
    rig.wait_state("done", timeout=20)
    assert len(rig.restore_calls()) == 1


# -- 4. two approvers at once ---------------------------------------------------------------------


def test_two_approvers_at_once_make_one_restore(make_rig: Callable[..., ApprovalRig]) -> None:
    rig = make_rig(RESTORE_SAFETY_BACKUP="false")
    card = rig.request(rig.backup())
    forms = {user: rig.open_form(card, user) for user in ("U_BOB", "U_CAROL")}
    statuses: list[int] = []

    def submit(user: str) -> None:
        answer = rig.sender.view_submission(forms[user], user_id=user, values=CONFIRM)
        statuses.append(answer.status)

    threads = [threading.Thread(target=submit, args=(user,)) for user in forms for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert statuses == [200] * 10
    row = rig.wait_state("done")
    time.sleep(0.3)
    assert len(rig.restore_calls()) == 1
    assert len(row.approvers) == 1
    oks = [e for e in rig.audit_of(row.id) if e.action == "approve" and e.outcome == "ok"]
    assert len(oks) == 1 and oks[0].actor_user_id == row.approvers[0]["user_id"]


# -- 5. re-checked at execution -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"status": "failed"}, "is failed"),
        ({"server": {"id": 12346, "name": "db-server-01"}}, "now belongs to server 12346"),
    ],
    ids=["no-longer-completed", "another-server"],
)
def test_a_backup_changed_since_approval_is_not_restored(
    make_rig: Callable[..., ApprovalRig], change: dict[str, Any], words: str
) -> None:
    rig = make_rig(RESTORE_SAFETY_BACKUP="false")
    backup_id = rig.backup()
    card = rig.request(backup_id)
    row = {**rig.simulator.backup(backup_id), **change}  # type: ignore[dict-item]
    listing = {"count": 1, "next": None, "previous": None, "results": [row]}
    rig.simulator.inject(method="GET", path="/backups/", status=200, body=listing, count=50)
    rig.approve(card)
    failed = rig.wait_state("failed")
    assert words in failed.detail and "refused" in failed.detail
    assert rig.restore_calls() == []
    assert "<@U_ALICE>" in rig.thread(card, "stopped")  # told after the card is redrawn
    assert words in _card_text(rig)


# -- 6. the safety backup fails or vanishes ------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "words"), [("failed", "failed"), ("vanish", "disappeared before it finished")]
)
def test_a_safety_backup_that_fails_or_vanishes_restores_nothing(
    rig: ApprovalRig, outcome: str, words: str
) -> None:
    card = rig.request(rig.backup())
    rig.approve(card)
    safety = rig.safety_backup()
    rig.simulator.finish(safety, outcome)
    row = rig.wait_state("failed")
    assert f"safety backup {safety} {words}" in row.detail and "nothing was restored" in row.detail
    time.sleep(0.3)
    assert rig.restore_calls() == []
    assert "stopped" in rig.thread(card, "nothing was restored")  # after the card is redrawn
    assert words in _card_text(rig)
    steps = [(e.action, e.outcome) for e in rig.audit_of(row.id) if e.action.startswith("restore")]
    assert ("restore.safety_backup", "error") in steps and ("restore", "ok") not in steps
    failed = [
        e.backup_id
        for e in rig.audit_of(row.id)
        if (e.action, e.outcome) == ("restore.safety_backup", "error")
    ]
    assert failed == [safety]  # the row names the safety backup, not the one to restore


# -- 8. expiry: on a click, and by the sweeper, separately ----------------------------------------


def test_a_click_after_expiry_is_refused_then_the_sweeper_closes_the_card(
    rig: ApprovalRig,
) -> None:
    rig.bot.runner.stop()  # no sweeper for now: the click itself must refuse
    card = rig.request(rig.backup())
    with rig.bot.sessions.begin() as session:
        row = session.scalars(select(Approval)).one()
        row.expires_at = row.created_at - timedelta(seconds=1)
    before = len(rig.slack.responses)
    rig.click(card, approval_blocks.APPROVE, user_id="U_BOB")
    assert "expired" in text_of(rig.next_response(before).body)
    time.sleep(0.2)
    assert rig.slack.calls_to("views.open") == []
    approval = rig.approval()
    assert approval.state == "pending"  # the sweeper has not run yet
    [denied] = [e for e in rig.audit_of(approval.id) if e.outcome == "denied"]
    assert (denied.action, denied.actor_user_id) == ("approve", "U_BOB")

    assert rig.bot.runner.run_once() == 0  # the sweep (it expires; nothing is due to run)
    assert rig.approval().state == "expired"
    assert approval_blocks.APPROVE not in _card_text(rig)
    assert "Expired" in _card_text(rig)
    rig.thread(card, "expired")
    expiry = [(e.action, e.outcome) for e in rig.audit_of(approval.id)]
    assert ("restore.expire", "ok") in expiry
    assert rig.simulator.api_calls("POST") == []


# -- 9. the provider's message on the card --------------------------------------------------------


def test_the_providers_message_is_shown_on_the_card(make_rig: Callable[..., ApprovalRig]) -> None:
    rig = make_rig(RESTORE_SAFETY_BACKUP="false")
    rig.simulator.inject(
        method="POST", path="/servers/", status=400, body={"detail": "Server is locked by support"}
    )
    card = rig.request(rig.backup())
    rig.approve(card)
    rig.wait_state("failed")
    rig.thread(card, "stopped")  # told after the card is redrawn
    assert "Server is locked by support" in _card_text(rig)
    assert approval_blocks.APPROVE not in _card_text(rig)


# -- 10. every decision is a row with the approval's id -------------------------------------------


def test_reject_cancel_and_expiry_are_audited_with_the_approval(rig: ApprovalRig) -> None:
    stories: dict[str, list[tuple[str, str, str]]] = {}
    for ending in ("reject", "cancel", "expire"):
        card = rig.request(rig.backup())
        approval_id = rig.approval().id
        if ending == "reject":
            rig.click(card, approval_blocks.REJECT, user_id="U_CAROL")
            rig.wait_state("rejected")
        elif ending == "cancel":
            rig.click(card, approval_blocks.CANCEL, user_id="U_ALICE")
            rig.wait_state("cancelled")
        else:
            with rig.bot.sessions.begin() as session:
                row = session.get(Approval, approval_id)
                assert row is not None
                row.expires_at = row.created_at - timedelta(seconds=1)
            rig.wait_state("expired")
        rig.thread(card, {"reject": "rejected", "cancel": "cancelled", "expire": "expired"}[ending])
        stories[ending] = [
            (e.action, e.outcome, e.actor_user_id) for e in rig.audit_of(approval_id)
        ]
    assert stories["reject"][-1] == ("reject", "ok", "U_CAROL")
    assert stories["cancel"][-1] == ("restore.cancel", "ok", "U_ALICE")
    assert stories["expire"][-1] == ("restore.expire", "ok", "U_ALICE")
    for story in stories.values():
        assert story[0][:2] == ("restore.request", "ok")


# -- 11. App Home: the same buttons ---------------------------------------------------------------


def test_a_rejection_from_app_home_works_like_the_cards(rig: ApprovalRig) -> None:
    card = rig.request(rig.backup())
    home = rig.home_of("U_CAROL")
    action = rig.sender.action_for(home["blocks"], approval_blocks.REJECT)
    assert action["value"] == str(rig.approval().id)
    answer = rig.sender.block_actions(
        action, user_id="U_CAROL", container={"type": "view", "view_id": "V_HOME"}
    )
    assert answer.status == 200
    assert rig.wait_state("rejected").decided_by == "U_CAROL"
    assert "<@U_CAROL> rejected" in rig.thread(card, "rejected")
    updates = [c for c in rig.slack.calls_to("chat.update") if c.args.get("ts") == card.ts]
    assert updates and isinstance(updates[-1], RecordedCall)


# -- 8. APPROVAL_TTL_MINUTES is the card's lifetime -----------------------------------------------


def test_approval_ttl_minutes_sets_when_the_card_expires(
    make_rig: Callable[..., ApprovalRig],
) -> None:
    rig = make_rig(APPROVAL_TTL_MINUTES="7")
    rig.request(rig.backup())
    row = rig.approval()
    assert row.expires_at - row.created_at == timedelta(minutes=7)
    expires = _epoch(row.expires_at)
    assert f"Expires <!date^{expires}^" in _card_text(rig)
