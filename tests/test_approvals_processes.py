"""Restores survive what processes go through: SIGKILL at each step, and two instances on one
database. The bot runs as `python -m bot run`, exactly as deployed; Slack and the provider are the
doubles, and the provider counts every restore call."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from bot.db import Approval, make_engine, make_session_factory
from bot.sandbox.slack import Message, SlackDouble
from bot.sandbox.vps import Simulator
from bot.slack import approval_blocks
from tests.fault_rig import BotProcess

CONFIRM = {approval_blocks.CONFIRM_BLOCK: {approval_blocks.CONFIRM_INPUT: "web-server-01"}}


def _approval(database_url: str) -> Approval:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            row = session.scalars(select(Approval).order_by(Approval.id.desc())).first()
            assert row is not None
            return row
    finally:
        engine.dispose()


def _wait(database_url: str, check: Callable[[Approval], bool], timeout: float = 30) -> Approval:
    deadline = time.monotonic() + timeout
    while True:
        row = _approval(database_url)
        if check(row) or time.monotonic() > deadline:
            assert check(row), f"approval is {row.state}: {row.detail}"
            return row
        time.sleep(0.1)


def _card(slack: SlackDouble) -> Message:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        cards = [m for m in slack.messages_in("C_OPS") if m.text.startswith("Restore ")]
        if cards:
            return cards[-1]
        time.sleep(0.05)
    raise AssertionError("no approval card")


def _request_and_open_form(bot: BotProcess, slack: SlackDouble, backup_id: int) -> dict[str, Any]:
    assert bot.sender.slash_command(f"restore {backup_id}", user_id="U_ALICE").status == 200
    return _open_form(bot, slack, _card(slack))


def _open_form(bot: BotProcess, slack: SlackDouble, card: Message) -> dict[str, Any]:
    """Bob clicks Approve… on the card (through `bot`); the form the bot opened."""
    before = len(slack.calls_to("views.open"))
    assert bot.sender.click(card, approval_blocks.APPROVE, user_id="U_BOB").status == 200
    deadline = time.monotonic() + 10
    while len(slack.calls_to("views.open")) == before:
        assert time.monotonic() < deadline, "the confirmation form was not opened"
        time.sleep(0.05)
    view = slack.calls_to("views.open")[-1].response["view"]
    return view if isinstance(view, dict) else json.loads(view)


def _gets(sim: Simulator) -> int:
    return len(sim.api_calls("GET", "/backups/"))


def _wait_for_get(sim: Simulator, after: int) -> None:
    deadline = time.monotonic() + 20
    while _gets(sim) <= after and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gets(sim) > after, "the runner never asked the provider"


@pytest.mark.parametrize("step", ["after approval", "during the safety backup", "before restore"])
def test_a_sigkill_at_each_step_still_restores_exactly_once(
    world: Callable[..., BotProcess],
    slack: SlackDouble,
    simulator: Simulator,
    database_url: str,
    step: str,
) -> None:
    safety = "false" if step == "before restore" else "true"
    first = world(RESTORE_SAFETY_BACKUP=safety)
    backup_id = int(simulator.add_backup(12345, description="known good")["id"])
    view = _request_and_open_form(first, slack, backup_id)
    gets = _gets(simulator)
    if step != "during the safety backup":
        # The runner's next look at the provider never comes back: it is killed there.
        simulator.inject(method="GET", path="/backups/", hang=60)
    answer = first.sender.view_submission(view, user_id="U_BOB", values=CONFIRM)
    assert answer.status == 200
    if step == "during the safety backup":
        _wait(database_url, lambda a: a.safety_backup_id is not None)
    else:
        _wait_for_get(simulator, gets)
    first.kill()
    assert simulator.restores == []

    world(RESTORE_SAFETY_BACKUP=safety)  # a new process on the same database
    if safety == "true":
        row = _wait(database_url, lambda a: a.safety_backup_id is not None)
        _wait_until_running(simulator, row.safety_backup_id)
        simulator.finish(row.safety_backup_id)  # type: ignore[arg-type]
    row = _wait(database_url, lambda a: a.state in ("done", "failed"))
    assert row.state == "done", row.detail
    time.sleep(1.5)  # long enough for a second restore, if one were coming
    assert len(simulator.api_calls("POST", "/servers/")) == 1
    assert [r["backup_id"] for r in simulator.restores] == [backup_id]
    safety_posts = len(simulator.api_calls("POST", "/backups/"))
    assert safety_posts == (1 if safety == "true" else 0)


def _wait_until_running(simulator: Simulator, backup_id: int | None) -> None:
    assert backup_id is not None
    deadline = time.monotonic() + 10
    while simulator.backup(backup_id) is None and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.postgres
def test_twenty_approvals_across_two_instances_make_one_restore(
    world: Callable[..., BotProcess],
    slack: SlackDouble,
    simulator: Simulator,
    database_url: str,
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("two instances share one database only on PostgreSQL")
    one, two = world(RESTORE_SAFETY_BACKUP="false"), world(RESTORE_SAFETY_BACKUP="false")
    backup_id = int(simulator.add_backup(12345, description="known good")["id"])
    view = _request_and_open_form(one, slack, backup_id)
    statuses: list[int] = []

    def submit(bot: BotProcess) -> None:
        statuses.append(bot.sender.view_submission(view, user_id="U_BOB", values=CONFIRM).status)

    threads = [threading.Thread(target=submit, args=((one, two)[i % 2],)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert statuses == [200] * 20
    row = _wait(database_url, lambda a: a.state == "done")
    time.sleep(1.5)
    assert len(simulator.api_calls("POST", "/servers/")) == 1
    assert len(row.approvers) == 1


def test_a_pending_approval_survives_a_restart_and_its_buttons_still_work(
    world: Callable[..., BotProcess],
    slack: SlackDouble,
    simulator: Simulator,
    database_url: str,
) -> None:
    first = world(RESTORE_SAFETY_BACKUP="false")
    backup_id = int(simulator.add_backup(12345, description="known good")["id"])
    assert first.sender.slash_command(f"restore {backup_id}", user_id="U_ALICE").status == 200
    card = _card(slack)
    first.kill()
    second = world(RESTORE_SAFETY_BACKUP="false")
    view = _open_form(second, slack, card)
    answer = second.sender.view_submission(view, user_id="U_BOB", values=CONFIRM)
    assert answer.status == 200
    assert _wait(database_url, lambda a: a.state == "done").approvers[0]["user_id"] == "U_BOB"
    assert len(simulator.api_calls("POST", "/servers/")) == 1
