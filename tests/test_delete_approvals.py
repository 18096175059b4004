"""Deletes behind approvals (`DELETE_REQUIRES_APPROVAL=true`), end to end: signed requests to the
running app, the Slack double for the card, the modal and the thread, the simulator as the
provider (counting DELETE calls). Same machinery as restores (tests/test_approvals.py), no safety
backup; with the setting off (the default) a delete is the confirm card it always was."""

from __future__ import annotations

import argparse
import dataclasses
import io
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError

from bot import db
from bot.approvals import ApprovalRunner
from bot.audit import Actor
from bot.config import ConfigError, load_settings
from bot.console import add_arguments, from_args
from bot.console.chat import Console
from bot.db import Approval
from bot.sandbox.slack import Message, SlackDouble
from bot.sandbox.vps import Simulator
from bot.sandbox.workspace import Workspace
from bot.service import ApprovalRequired
from bot.slack import approval_blocks, blocks
from tests.test_approvals import CONFIRM, WEB, ApprovalRig
from tests.test_console import FAST, backups, play, sim
from tests.test_slack_app import AppRig, rigs_of, text_of

ON = {"DELETE_REQUIRES_APPROVAL": "true"}


class DeleteRig(ApprovalRig):
    def ask(self, backup_id: int, user_id: str = "U_ALICE") -> Any:
        body = self.run(f"delete {backup_id}", user_id=user_id)
        assert "Asked for approval to delete" in text_of(body), text_of(body)
        return self.card()

    def card(self, channel: str = "C_OPS") -> Message:
        """The newest delete approval card, as it is now (with or without its buttons)."""
        cards = [
            m
            for m in self.slack.messages_in(channel)
            if not m.ephemeral and m.text.startswith("Delete backup")
        ]
        assert cards, "no approval card was posted"
        return self.slack.message(channel, cards[-1].ts) or cards[-1]

    def next_runner(self) -> ApprovalRunner:
        """The bot's runner stopped (as a process dies) and another one, as after a restart."""
        base = self.bot.runner
        base.stop()
        return ApprovalRunner(
            self.bot.sessions, base._client, base._audit, base._board, base._watcher,
            base._decisions,
        )  # fmt: skip

    def deletes(self) -> list[Any]:
        return self.simulator.api_calls("DELETE")

    def card_text(self) -> str:
        return text_of({"blocks": self.card().blocks})


@pytest.fixture
def make_rig(
    slack: SlackDouble, simulator: Simulator, database_url: str
) -> Iterator[Callable[..., DeleteRig]]:
    slack.add_user("U_DAVE", "dave", real_name="Dave Diaz")
    yield from rigs_of(DeleteRig, slack, simulator, database_url)


@pytest.fixture
def rig(make_rig: Callable[..., DeleteRig]) -> DeleteRig:
    return make_rig(**ON)


# -- the happy path ------------------------------------------------------------------------------


def test_a_delete_asks_for_approval_and_deletes_once_approved(rig: DeleteRig) -> None:
    backup_id = rig.backup(status="failed")  # a failed backup may be deleted, not restored
    card = rig.ask(backup_id)
    facts = text_of({"blocks": card.blocks})
    assert f"Delete backup {backup_id} of web-server-01?" in facts
    assert "permanently deleted" in facts and "<@U_ALICE>" in facts and "failed" in facts
    assert "will be lost" not in facts and "Safety" not in facts and "Restore" not in facts
    time.sleep(0.2)
    assert rig.deletes() == [] and rig.simulator.backup(backup_id) is not None
    row = rig.approval()
    assert (row.kind, row.state, row.safety_backup) == ("delete", "pending", False)

    view = rig.open_form(card)
    assert view["title"]["text"] == "Approve delete"
    assert "permanently deletes" in text_of(view) and "overwrites" not in text_of(view)
    answer = rig.sender.view_submission(view, user_id="U_BOB", values=CONFIRM)
    assert answer.status == 200
    row = rig.wait_state("done")
    [delete] = rig.deletes()
    assert delete.path == f"/api/v1/backups/{backup_id}/"
    assert rig.simulator.backup(backup_id) is None
    assert rig.simulator.api_calls("POST") == []  # no safety backup, no restore

    thread = rig.thread(card, "gone for good")
    assert "<@U_BOB> approved" in thread and "<@U_ALICE>, backup" in thread
    final = rig.card_text()
    assert "Deleted" in final and "the provider deleted it" in final
    assert approval_blocks.APPROVE not in str(rig.card().blocks)  # no buttons left
    story = [(e.action, e.outcome, e.actor_user_id) for e in rig.audit_of(row.id)]
    assert story == [
        ("delete.request", "ok", "U_ALICE"),
        ("approve", "ok", "U_BOB"),
        ("delete", "ok", "U_ALICE"),  # carried out on the requester's behalf
    ]
    [deleted] = [e for e in rig.audit_of(row.id) if e.action == "delete"]
    assert deleted.provider_status == 204 and deleted.backup_id == backup_id


def test_the_menu_and_an_old_confirm_card_ask_for_approval_too(rig: DeleteRig) -> None:
    backup_id = rig.backup()
    listing = rig.run("list web-server-01")
    menu = rig.sender.action_for(listing["blocks"], blocks.BACKUP_MENU, f"delete:{backup_id}")
    before = len(rig.slack.responses)
    rig.sender.block_actions(menu, user_id="U_ALICE", channel_id="C_OPS")
    assert "Asked for approval to delete" in text_of(rig.next_response(before).body)
    assert rig.approval().state == "pending" and f"Delete backup {backup_id}" in rig.card_text()

    # A confirm card shown before the setting was turned on: its Delete asks, it does not delete.
    other = rig.backup()
    old_card = blocks.delete_card(rig.bot.vps.find_backup(other))
    answer = AppRig.click(rig, old_card, blocks.DELETE_CONFIRM, user_id="U_ALICE")
    assert "Asked for approval to delete" in text_of(answer)
    assert rig.approval().backup_id == other and rig.approval().kind == "delete"
    time.sleep(0.2)
    assert rig.deletes() == []


def test_the_service_never_deletes_directly_when_deletes_need_approval(rig: DeleteRig) -> None:
    backup_id = rig.backup()
    alice = Actor("U_ALICE", "alice", "T111", "C_OPS")
    with pytest.raises(ApprovalRequired):
        rig.bot.service.delete_backup(alice, backup_id, WEB)
    assert rig.deletes() == [] and rig.simulator.backup(backup_id) is not None


def test_with_the_setting_off_a_delete_is_the_confirm_card_as_before(
    make_rig: Callable[..., DeleteRig],
) -> None:
    rig = make_rig()  # DELETE_REQUIRES_APPROVAL unset: false
    backup_id = rig.backup()
    card = rig.run(f"delete {backup_id}")
    assert f"Delete backup {backup_id}?" in text_of(card)
    done = AppRig.click(rig, card, blocks.DELETE_CONFIRM, user_id="U_ALICE")
    assert "deleted by <@U_ALICE>" in text_of(done)
    assert len(rig.deletes()) == 1 and rig.simulator.backup(backup_id) is None
    with rig.bot.sessions() as session:
        assert session.scalars(select(Approval)).all() == []


# -- who may decide ------------------------------------------------------------------------------


@pytest.mark.parametrize("requester", ["U_ALICE", "U_DAVE"])
def test_nobody_approves_their_own_delete_not_even_an_admin(
    make_rig: Callable[..., DeleteRig], requester: str
) -> None:
    rig = make_rig(BACKUP_APPROVERS="U_ALICE,U_BOB", **ON)
    card = rig.ask(rig.backup(), user_id=requester)
    before = len(rig.slack.responses)
    rig.click(card, approval_blocks.APPROVE, user_id=requester)
    refusal = text_of(rig.next_response(before).body)
    assert "You asked for this delete" in refusal and "four eyes" in refusal
    assert rig.slack.calls_to("views.open") == []
    [denied] = [e for e in rig.audit_of(rig.approval().id) if e.outcome == "denied"]
    assert denied.actor_user_id == requester and denied.action == "approve"
    assert rig.approval().state == "pending" and rig.deletes() == []


def test_a_non_approver_is_told_in_the_words_of_a_delete(rig: DeleteRig) -> None:
    card = rig.ask(rig.backup())
    rig.slack.add_user("U_ERIN", "erin")
    before = len(rig.slack.responses)
    rig.click(card, approval_blocks.APPROVE, user_id="U_ERIN")
    refusal = text_of(rig.next_response(before).body)
    assert "Approving a delete needs the *approver* role" in refusal
    assert rig.approval().state == "pending" and rig.deletes() == []


def test_reject(rig: DeleteRig) -> None:
    backup_id = rig.backup()
    card = rig.ask(backup_id)
    rig.click(card, approval_blocks.REJECT, user_id="U_CAROL")
    row = rig.wait_state("rejected")
    assert row.decided_by == "U_CAROL"
    thread = rig.thread(card, "rejected")
    assert f"<@U_CAROL> rejected the delete of backup {backup_id}" in thread.replace("*", "")
    time.sleep(0.2)
    assert rig.deletes() == [] and rig.simulator.backup(backup_id) is not None


def test_cancel_by_the_requester(rig: DeleteRig) -> None:
    card = rig.ask(rig.backup())
    rig.click(card, approval_blocks.CANCEL, user_id="U_ALICE")
    row = rig.wait_state("cancelled")
    assert "cancelled the delete" in rig.thread(card, "cancelled")
    assert [e.action for e in rig.audit_of(row.id)][-1] == "delete.cancel"
    assert rig.deletes() == []


def test_an_expired_delete_refuses_the_form_and_is_marked(rig: DeleteRig) -> None:
    backup_id = rig.backup()
    card = rig.ask(backup_id)
    view = rig.open_form(card)
    with rig.bot.sessions.begin() as session:  # the clock moves on past the card's life
        row = session.scalars(select(Approval)).one()
        row.expires_at = row.created_at - timedelta(seconds=1)
    assert rig.sender.view_submission(view, user_id="U_BOB", values=CONFIRM).status == 200
    row = rig.wait_state("expired")
    assert row.approvers == []
    assert "nobody approved the delete" in rig.thread(card, "expired")
    assert "delete.expire" in [e.action for e in rig.audit_of(row.id)]
    assert rig.deletes() == [] and rig.simulator.backup(backup_id) is not None


# -- exactly once, and still true at the moment ----------------------------------------------------


def test_twenty_approvals_at_once_make_one_delete(rig: DeleteRig) -> None:
    backup_id = rig.backup()
    view = rig.open_form(rig.ask(backup_id))
    assert rig.submit_at_once(view) == [200] * 20
    rig.wait_state("done")
    time.sleep(0.3)
    assert len(rig.deletes()) == 1 and rig.simulator.backup(backup_id) is None
    approvals = [e for e in rig.audit_of(rig.approval().id) if e.action == "approve"]
    assert [e.outcome for e in approvals].count("ok") == 1


def test_a_backup_deleted_before_execution_gets_no_delete(rig: DeleteRig) -> None:
    backup_id = rig.backup()
    card = rig.ask(backup_id)
    runner = rig.next_runner()  # approved, not carried out yet
    rig.approve(card)
    rig.wait_state("approved")
    rig.bot.vps.delete_backup(backup_id)  # someone deleted it meanwhile (through the provider)
    assert len(rig.deletes()) == 1
    assert runner.run_once() == 1
    row = rig.wait_state("failed")
    assert "no longer exists" in row.detail and "no delete was sent" in row.detail
    assert len(rig.deletes()) == 1  # only the other one
    assert "<@U_ALICE>" in rig.thread(card, "no longer exists")  # told after the card is redrawn
    assert "no longer exists" in rig.card_text() and "nothing was deleted" in rig.card_text()


def test_a_404_from_the_delete_is_already_deleted(rig: DeleteRig) -> None:
    """Gone between the re-check and the DELETE: the provider deletes it and answers 404 (as if
    another request had been quicker)."""
    backup_id = rig.backup()
    rig.simulator.inject(method="DELETE", path="/backups/", status=404, after_processing=True)
    card = rig.ask(backup_id)
    rig.approve(card)
    row = rig.wait_state("done")
    assert "already gone" in row.detail and row.provider_status == 404
    assert len(rig.deletes()) == 1 and rig.simulator.backup(backup_id) is None
    assert "already gone" in rig.thread(card, "gone for good")


def test_a_backup_in_progress_or_missing_is_refused_without_a_card(rig: DeleteRig) -> None:
    running = rig.backup(status="in_progress")
    assert "can be deleted once it has finished" in text_of(rig.run(f"delete {running}"))
    assert "There is no backup" in text_of(rig.run("delete 999999"))
    assert not any("Delete backup" in m.text for m in rig.slack.messages_in("C_OPS"))
    with rig.bot.sessions() as session:
        assert session.scalars(select(Approval)).all() == []


def test_the_providers_refusal_is_on_the_card(rig: DeleteRig) -> None:
    backup_id = rig.backup()
    rig.simulator.inject(
        method="DELETE", path="/backups/", status=403, body={"detail": "Backup is locked"}
    )
    card = rig.ask(backup_id)
    rig.approve(card)
    row = rig.wait_state("failed")
    assert "Backup is locked" in row.detail and row.provider_status == 403
    assert len(rig.deletes()) == 1  # never sent twice
    rig.thread(card, "Backup is locked")  # told after the card is redrawn
    assert "Backup is locked" in rig.card_text()
    [failed] = [e for e in rig.audit_of(row.id) if e.action == "delete"]
    assert failed.outcome == "error" and failed.provider_status == 403


@pytest.mark.parametrize("gone", [False, True])
def test_a_restart_while_deleting_never_sends_the_delete_again(rig: DeleteRig, gone: bool) -> None:
    """The bot died with the row in `deleting` (the DELETE perhaps sent): the next runner lists
    the backups to learn which it was, and sends nothing."""
    backup_id = rig.backup()
    card = rig.ask(backup_id)
    runner = rig.next_runner()
    rig.approve(card)
    row = rig.wait_state("approved")
    with rig.bot.sessions.begin() as session:  # as a runner leaves it when killed mid-call
        session.execute(
            update(Approval)
            .where(Approval.id == row.id)
            .values(state="deleting", version=row.version + 1, restore_requested_at=db.utcnow())
        )
    if gone:
        rig.simulator.delete_backup(backup_id)  # its DELETE had gone through
    assert runner.run_once() == 1
    row = rig.wait_state("done" if gone else "failed")
    assert rig.deletes() == []
    assert ("gone when checked" if gone else "nothing was deleted") in row.detail


def test_app_home_shows_an_approver_the_delete_waiting(rig: DeleteRig) -> None:
    backup_id = rig.backup()
    rig.ask(backup_id)
    home = rig.home_of("U_BOB")
    assert f"Delete backup {backup_id}" in text_of(home)
    assert rig.sender.action_for(home["blocks"], approval_blocks.APPROVE)["value"] == str(
        rig.approval().id
    )


# -- the setting, and the schema ----------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("FALSE", False), (None, False)])
def test_the_setting_is_read(value: str | None, expected: bool) -> None:
    env = {} if value is None else {"DELETE_REQUIRES_APPROVAL": value}
    assert load_settings(env, env_file=None).delete_requires_approval is expected


def test_a_malformed_setting_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="DELETE_REQUIRES_APPROVAL must be true or false"):
        load_settings({"DELETE_REQUIRES_APPROVAL": "sometimes"}, env_file=None)


def test_migration_0012_checks_kinds_and_states_and_downgrades(database_url: str) -> None:
    db.upgrade(database_url)
    engine = db.make_engine(database_url)
    sessions = db.make_session_factory(engine)
    now = db.utcnow()

    def approval(**values: Any) -> Approval:
        return Approval(
            server_id=WEB, backup_id=1, backup_created_at=now, requester_id="U1",
            expires_at=now, approvers=[], **values,
        )  # fmt: skip

    try:
        with sessions.begin() as session:
            session.add_all([approval(), approval(kind="delete", state="deleting")])
        for wrong in ({"kind": "reboot"}, {"state": "exploding"}):
            with pytest.raises(IntegrityError), sessions.begin() as session:
                session.add(approval(**wrong))
        command.downgrade(db.alembic_config(database_url), "0011_watch_request_id")
        with engine.connect() as connection:  # a delete left behind would run as a restore
            rows = connection.execute(text("SELECT kind, state FROM approvals")).all()
        assert [tuple(r) for r in rows] == [("restore", "pending")]
        db.upgrade(database_url)
        with sessions() as session:
            assert session.scalars(select(Approval.backup_status)).all() == ["completed"]
    finally:
        engine.dispose()


# -- the console plays it ------------------------------------------------------------------------


def test_the_console_plays_a_delete_behind_an_approval() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    chosen = from_args(parser.parse_args(["--delete-approval"])).workspace.extra_env
    assert chosen == ON  # `backupbot demo --delete-approval`
    world = Workspace(dataclasses.replace(FAST, extra_env=chosen)).start()
    console = Console(world, io.StringIO(), quiet_seconds=0.15, answer_timeout=10)
    try:
        backup_id = int(sim(world).add_backup(12346, description="old one")["id"])
        asked = play(console, f"/backup delete {backup_id}")
        assert "Asked for approval to delete" in asked and "permanently deleted" in asked
        form = play(console, "/as bob\n/click Approve")
        assert "Form “Approve delete” opened" in form and "Type db-server-01" in form
        play(console, "db-server-01")
        done = play(console, "/wait 20 gone for good")
        assert console.failures == [], done
        assert sim(world).backup(backup_id) is None
        assert backup_id not in [b["id"] for b in backups(world, 12346)]
    finally:
        console.close()
        world.close()
