"""Issue 10 (hardening): the cases the acceptance review found no test for, through the same rigs as
tests/test_hardening.py and tests/test_faults.py (signed requests to the running app, the Slack
double, the simulator behind a link that can be cut), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from bot.db import WatchJob
from bot.sandbox.slack import SlackDouble, SlackSender
from bot.sandbox.vps import Simulator
from bot.slack import blocks
from tests.fault_rig import ProviderLink
from tests.test_approvals import ApprovalRig
from tests.test_faults import FaultRig
from tests.test_hardening import ACK_LIMIT, wait_until
from tests.test_slack_app import rigs_of, text_of


@pytest.fixture
def rig(slack: SlackDouble, simulator: Simulator, database_url: str) -> Iterator[FaultRig]:
    """The hardening rig talking to the provider through a link that can be cut; reads wait up
    to 10 s, so only the cut ends a request."""
    link = ProviderLink(simulator.base_url)
    factory = rigs_of(FaultRig, slack, simulator, database_url)
    try:
        made = next(factory)(VPS_API_URL=link.url, VPS_TIMEOUT_SECONDS="10")
        made.link = link
        yield made
    finally:
        link.restore()
        next(factory, None)
        link.close()


@pytest.fixture
def approval_rig(
    slack: SlackDouble, simulator: Simulator, database_url: str
) -> Iterator[Callable[..., ApprovalRig]]:
    slack.add_user("U_DAVE", "dave", real_name="Dave Diaz")
    yield from rigs_of(ApprovalRig, slack, simulator, database_url)


def _job(rig: FaultRig, backup_id: int) -> WatchJob | None:
    with rig.bot.sessions() as session:
        return session.scalars(select(WatchJob).where(WatchJob.backup_id == backup_id)).first()


# -- 1. a connection reset after the POST: never sent again ---------------------------------------


def test_a_create_cut_off_after_the_provider_made_it_is_found_and_tracked(rig: FaultRig) -> None:
    sim = rig.simulator
    sim.inject(method="POST", path="/backups/", hang=30, after_processing=True)
    ack, elapsed, _ = rig.send('create web-server-01 "cut off"')
    assert ack.status == 200 and elapsed < ACK_LIMIT
    assert wait_until(lambda: bool(rig.backups_described("cut off")), timeout=5)
    rig.link.restore()  # every relayed connection is closed: the answer never comes
    started = rig.started("cut off", timeout=15)
    [created] = rig.backups_described("cut off")
    assert f"*{created.id}*" in text_of(started.args)
    assert len(sim.api_calls("POST", "/backups/")) == 1
    [row] = rig.audit("create", "ok")
    assert row.backup_id == created.id
    # Tracked like any other: a watch job, and the reply in its thread when it finishes.
    assert wait_until(lambda: (job := _job(rig, created.id)) is not None and job.thread_ts)
    rig.bot.start_workers()
    sim.finish(created.id)
    reply = rig.thread_reply(started.response["ts"])
    assert "completed" in reply.args["text"]


def test_a_create_cut_off_before_the_provider_acted_is_reported_unconfirmed(
    rig: FaultRig,
) -> None:
    sim = rig.simulator
    sim.inject(method="POST", path="/backups/", hang=30)  # it would act only after 30 s
    ack, elapsed, response_url = rig.send('create web-server-01 "cut early"')
    assert ack.status == 200 and elapsed < ACK_LIMIT
    assert wait_until(lambda: bool(sim.api_calls("POST", "/backups/")), timeout=5)
    rig.link.restore()
    answer = text_of(rig.answer(response_url, timeout=15).body)
    assert "did not confirm" in answer and "before trying again" in answer
    assert len(sim.api_calls("POST", "/backups/")) == 1
    assert rig.backups_described("cut early") == []
    assert rig.slack.calls_to("chat.postMessage") == []
    [row] = rig.audit("create", "error")
    assert row.server_id == 12345


# -- 1. the safety backup of a restore ------------------------------------------------------------


def test_a_safety_backup_the_provider_made_despite_a_502_is_used_not_made_twice(
    approval_rig: Callable[..., ApprovalRig],
) -> None:
    rig = approval_rig()
    rig.simulator.inject(method="POST", path="/backups/", status=502, after_processing=True)
    card = rig.request(rig.backup())
    rig.approve(card)
    safety = rig.safety_backup()
    rig.simulator.finish(safety)
    rig.wait_state("done")
    time.sleep(0.3)
    assert len(rig.simulator.api_calls("POST", "/backups/")) == 1
    assert len(rig.restore_calls()) == 1
    assert rig.simulator.backup(safety)["description"].startswith("Safety backup before")  # type: ignore[index]


# -- 5. a replayed click --------------------------------------------------------------------------


def test_a_replayed_delete_click_deletes_once(rig: FaultRig) -> None:
    backup_id = int(rig.simulator.add_backup(12346, size_mb=100, description="x")["id"])
    card = rig.run(f"delete {backup_id}")
    action = SlackSender.action_for(card["blocks"], blocks.DELETE_CONFIRM)
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": "U_ALICE", "username": "alice", "name": "alice", "team_id": "T111"},
        "api_app_id": "A111",
        "token": "verification_token",
        "container": {
            "type": "message",
            "message_ts": "111.222",
            "channel_id": "C_OPS",
            "is_ephemeral": True,
        },
        "trigger_id": rig.slack.new_trigger_id("U_ALICE"),
        "team": {"id": "T111", "domain": "test-domain"},
        "channel": {"id": "C_OPS", "name": "ops"},
        "response_url": rig.slack.response_url(channel_id="C_OPS", user_id="U_ALICE"),
        "actions": [action],
    }
    body = urlencode({"payload": json.dumps(payload)})
    stamp = int(time.time())
    assert rig.sender.post(body, timestamp=stamp).status == 200
    assert wait_until(lambda: bool(rig.audit("delete", "ok")), timeout=5)
    again = [rig.sender.post(body, timestamp=stamp) for _ in range(2)]
    assert [a.status for a in again] == [200, 200]
    time.sleep(0.5)
    assert len(rig.simulator.api_calls("DELETE")) == 1
    assert len(rig.audit("delete", "ok")) == 1
    assert not rig.audit("delete", "error")
