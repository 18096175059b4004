"""`/backup status`, its ⋯ menus, App Home, alerts across two bot instances and the digest across
a restart, end to end: signed requests to the real app, the Slack double, the simulator."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.db import HealthDigest, HealthIncident
from bot.sandbox.slack import RecordedCall, SlackDouble
from bot.sandbox.vps import Simulator
from bot.slack import health_blocks
from tests.test_slack_app import AppRig, rigs_of, text_of


@pytest.fixture
def make_rig(
    slack: SlackDouble, simulator: Simulator, database_url: str
) -> Iterator[Callable[..., AppRig]]:
    yield from rigs_of(AppRig, slack, simulator, database_url)


@pytest.fixture
def rig(make_rig: Callable[..., AppRig]) -> AppRig:
    return make_rig()


def _fail_newest(simulator: Simulator, server_id: int = 12347) -> int:
    """A failed automatic backup after the server's newest good one."""
    data = simulator.add_backup(
        server_id, backup_type="automatic", status="failed", created_at=datetime.now(UTC)
    )
    return int(data["id"])


def _wait(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# -- /backup status -----------------------------------------------------------------------------


def test_status_shows_every_server_worst_first_with_its_menu(rig: AppRig) -> None:
    failed = _fail_newest(rig.simulator)
    body = rig.run("status", user_id="U_CAROL")  # a viewer may
    text = text_of(body)
    assert "Backup health" in text and "3 servers" in text and "1 needs attention" in text
    sections = [b for b in body["blocks"] if b.get("block_id", "").startswith("health_")]
    assert next(s["block_id"] for s in sections) == "health_12347"  # the unhealthy one first
    first = sections[0]["text"]["text"]
    assert first.startswith("⚠️ *cache-01*") and f"backup {failed} failed" in first
    assert "Disk snapshot failed" in first and "failures in 7 days: 1" in first
    assert all(s["text"]["text"].startswith("✅") for s in sections[1:])
    assert "<!date^" in first  # Slack dates: each reader sees their own time
    options = [o["value"] for o in sections[0]["accessory"]["options"]]
    assert options == ["list:12347", "create:12347:cache-01"]
    [row] = rig.audit("status", "ok")
    assert row.actor_user_id == "U_CAROL" and "1 unhealthy" in row.detail


def test_status_of_one_server_has_its_timeline(rig: AppRig) -> None:
    body = rig.run("status web-server-01")
    text = text_of(body)
    assert "Backup health of web-server-01" in text and "The last 14 days" in text
    assert "✅✅✅✅✅✅✅" in text  # a week of daily automatic backups
    [row] = rig.audit("status", "ok")
    assert row.server_id == 12345


def test_status_needs_the_viewer_role(make_rig: Callable[..., AppRig]) -> None:
    rig = make_rig(BACKUP_VIEWERS="U_ALICE")
    body = rig.run("status", user_id="U_CAROL")
    assert "Seeing backup health needs the *viewer* role" in text_of(body)
    [row] = rig.audit("status", "denied")
    assert row.actor_user_id == "U_CAROL"
    assert rig.simulator.api_calls("GET") == []


def test_the_menu_lists_the_server_and_creates_a_backup_through_a_form(rig: AppRig) -> None:
    body = rig.run("status")
    listing = rig.click(body, health_blocks.SERVER_MENU, "list:12346")
    assert "Backups of db-server-01" in text_of(listing)

    # A viewer is refused before any form opens.
    refused = rig.click(body, health_blocks.SERVER_MENU, "create:12346:db-server-01", "U_CAROL")
    assert "Creating a backup needs the *operator* role" in text_of(refused)
    assert rig.slack.calls_to("views.open") == []

    action = rig.sender.action_for(
        body["blocks"], health_blocks.SERVER_MENU, "create:12346:db-server-01"
    )
    assert rig.sender.block_actions(action, user_id="U_ALICE", channel_id="C_OPS").status == 200
    _wait(lambda: bool(rig.slack.calls_to("views.open")))
    view = rig.slack.calls_to("views.open")[-1].response["view"]  # type: ignore[index]
    view = view if isinstance(view, dict) else json.loads(view)
    assert "db-server-01" in json.dumps(view)
    values = {health_blocks.CREATE_BLOCK: {health_blocks.CREATE_INPUT: "from the status menu"}}
    assert rig.sender.view_submission(view, user_id="U_ALICE", values=values).status == 200
    _wait(lambda: bool(rig.audit("create", "ok", timeout=0)))
    [row] = rig.audit("create", "ok")
    assert row.server_id == 12346 and row.channel_id == "C_OPS"
    [created] = [c for c in rig.simulator.api_calls("POST", "/backups/")]
    assert created.body == {"server_id": 12346, "description": "from the status menu"}
    _wait(lambda: any("started by" in m.text for m in rig.slack.messages_in("C_OPS")))


def test_app_home_shows_the_status_to_who_may_list(make_rig: Callable[..., AppRig]) -> None:
    rig = make_rig(BACKUP_VIEWERS="U_ALICE,U_BOB")
    _fail_newest(rig.simulator)
    home = rig.home_of("U_ALICE")
    text = text_of(home)
    assert "Backup health" in text and "cache-01" in text
    assert any(
        b.get("accessory", {}).get("action_id") == health_blocks.SERVER_MENU for b in home["blocks"]
    )
    assert "Backup health" not in text_of(rig.home_of("U_CAROL"))  # may not list


# -- the sweep across instances -----------------------------------------------------------------


def test_two_bot_instances_sweeping_at_once_alert_once(make_rig: Callable[..., AppRig]) -> None:
    first, second = make_rig(ALERTS_CHANNEL="C_OPS"), make_rig(ALERTS_CHANNEL="C_OPS")
    failed = _fail_newest(first.simulator)
    barrier = threading.Barrier(2)

    def sweep(rig: AppRig) -> None:
        assert rig.bot.health is not None
        for _ in range(3):
            barrier.wait()
            rig.bot.health.sweep(force=True)

    threads = [threading.Thread(target=sweep, args=(r,)) for r in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    alerts = [m for m in first.slack.messages_in("C_OPS") if "failed" in m.text]
    assert len(alerts) == 1 and str(failed) in alerts[0].text
    assert len(first.audit("alert", "ok")) == 1
    with first.bot.sessions() as session:
        [incident] = session.scalars(select(HealthIncident))
    assert incident.kind == "failed" and incident.alert_ts == alerts[0].ts

    # A good backup later: one recovery reply, in the alert's thread.
    first.simulator.add_backup(12347, backup_type="automatic", created_at=datetime.now(UTC))
    assert second.bot.health is not None and first.bot.health is not None
    second.bot.health.sweep(force=True)
    first.bot.health.sweep(force=True)
    replies = [m for m in first.slack.messages_in("C_OPS", thread_ts=alerts[0].ts)]
    assert [m.text[:11] for m in replies if m.ts != alerts[0].ts] == ["✅ Recovered"]


def test_the_background_worker_sweeps_on_its_schedule(make_rig: Callable[..., AppRig]) -> None:
    rig = make_rig(ALERTS_CHANNEL="C_OPS", HEALTH_SWEEP_MINUTES="0.01")  # 0.6 s
    _fail_newest(rig.simulator)
    assert rig.bot.health is not None
    rig.bot.health.settings = dataclasses.replace(rig.bot.health.settings, tick=0.05)
    rig.bot.start_workers()
    _wait(lambda: any("failed" in m.text for m in rig.slack.messages_in("C_OPS")), timeout=15)
    time.sleep(1.5)  # a few more sweeps
    assert len([m for m in rig.slack.messages_in("C_OPS") if "failed" in m.text]) == 1
    assert len(rig.simulator.api_calls("GET", "/backups/")) >= 2


# -- the digest across a restart ----------------------------------------------------------------


def test_the_digest_goes_out_once_across_a_restart(make_rig: Callable[..., AppRig]) -> None:
    now = datetime.now(UTC)
    env = {"DIGEST_CHANNEL": "C_OPS", "DIGEST_TIME": f"{now:%H:%M}"}  # due now
    first = make_rig(**env)
    first.command("create web-server-01 before the digest")
    _wait(lambda: bool(first.audit("create", "ok", timeout=0)))
    assert first.bot.health is not None
    assert first.bot.health.digest_if_due() == "posted"
    first.close()
    second = make_rig(**env)  # the restarted bot, on the same database
    assert second.bot.health is not None
    for _ in range(3):
        assert second.bot.health.digest_if_due() is None
    digests = [m for m in second.slack.messages_in("C_OPS") if m.text.startswith("Backup digest")]
    assert len(digests) == 1
    text = json.dumps(digests[0].blocks)
    assert "*Created:* 1 (by <@U_ALICE>)" in text and "of web-server-01" in text
    [row] = second.audit("digest", "ok")
    assert row.actor_user_id == "backupbot" and "1 created" in row.detail
    with second.bot.sessions() as session:
        [stored] = session.scalars(select(HealthDigest))
    assert stored.ts == digests[0].ts


def test_a_digest_is_only_posted_at_its_time(make_rig: Callable[..., AppRig]) -> None:
    later = datetime.now(UTC) + timedelta(hours=2)
    if later.date() != datetime.now(UTC).date():
        pytest.skip("too close to midnight UTC for a slot later today")
    rig = make_rig(DIGEST_CHANNEL="C_OPS", DIGEST_TIME=f"{later:%H:%M}")
    assert rig.bot.health is not None and rig.bot.health.digest_if_due() is None
    assert not [c for c in rig.slack.calls_to("chat.postMessage") if isinstance(c, RecordedCall)]
