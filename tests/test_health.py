"""Backup health against the simulator and the Slack double over HTTP, on SQLite and PostgreSQL:
classification at its boundaries, one alert per incident, recovery replies, the daily digest."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from slack_sdk import WebClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from bot import db
from bot.audit import Actor, AuditLog
from bot.db import AuditEvent, HealthDigest, HealthIncident, IncidentKind, PostState
from bot.health import HealthMonitor, HealthSettings, NotPosted
from bot.sandbox.slack import SlackDouble
from bot.sandbox.vps import Simulator
from bot.slack.health_post import SlackHealthPoster
from bot.vps.client import BackupsClient
from tests.conftest import SIM_TOKEN

ALERTS = "C_OPS"
STALE = timedelta(hours=36)
# Near the real time: the simulator expires automatic backups a month after they were made.
NOW = datetime.now(UTC).replace(second=0, microsecond=0)


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class HealthRig:
    """A simulator with no seeded servers, the Slack double, a database, and monitors on them
    (several monitors on one database are several instances)."""

    def __init__(
        self, sessions: sessionmaker[Session], simulator: Simulator, slack: SlackDouble
    ) -> None:
        self.sessions, self.simulator, self.slack = sessions, simulator, slack
        self.clock = Clock()
        self.vps = BackupsClient(simulator.base_url, SIM_TOKEN, read_timeout=5, max_retries=0)
        self.web = WebClient(token=slack.bot_token, base_url=slack.api_url)
        self.monitors: list[HealthMonitor] = []

    def monitor(self, **changes: Any) -> HealthMonitor:
        settings = HealthSettings(
            stale_after=STALE, alerts_channel=ALERTS, digest_channel=ALERTS, lease_seconds=30
        )
        settings = dataclasses.replace(settings, **changes)
        monitor = HealthMonitor(
            self.sessions,
            self.vps,
            AuditLog(self.sessions),
            SlackHealthPoster(self.web),
            settings=settings,
            clock=self.clock,
        )
        self.monitors.append(monitor)
        return monitor

    def server(self, server_id: int, name: str) -> None:
        self.simulator.add_server(server_id, name)

    def backup(
        self,
        server_id: int,
        age: timedelta,
        status: str = "completed",
        backup_type: str = "automatic",
    ) -> int:
        data = self.simulator.add_backup(
            server_id, backup_type=backup_type, status=status, created_at=self.clock.now - age
        )
        return int(data["id"])

    def alerts(self) -> list[Any]:
        return [
            m
            for m in self.slack.messages_in(ALERTS)
            if not m.is_reply and ("stale" in m.text or "failed" in m.text or "vanished" in m.text)
        ]

    def replies(self, ts: str) -> list[Any]:
        return [m for m in self.slack.messages_in(ALERTS, thread_ts=ts) if m.ts != ts]

    def rows(self, action: str) -> list[AuditEvent]:
        with self.sessions() as session:
            query = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            return list(session.scalars(query))

    def incidents(self) -> list[HealthIncident]:
        with self.sessions() as session:
            return list(session.scalars(select(HealthIncident).order_by(HealthIncident.id)))

    def close(self) -> None:
        for monitor in self.monitors:
            monitor.stop()
        self.vps.close()


@pytest.fixture
def rig(
    sessions: sessionmaker[Session], make_simulator: Callable[..., Simulator], slack: SlackDouble
) -> Iterator[HealthRig]:
    rig = HealthRig(sessions, make_simulator(seed_data=False), slack)
    try:
        yield rig
    finally:
        rig.close()


# -- classification ---------------------------------------------------------------------------


def test_servers_are_classified_right_at_the_boundaries(rig: HealthRig) -> None:
    minute = timedelta(minutes=1)
    for server_id, name in (
        (1, "just-fresh"),
        (2, "exactly-36h"),
        (3, "just-stale"),
        (4, "failed-last"),
        (5, "failed-then-good"),
        (6, "never-good"),
        (7, "failed-8-days-ago"),
        (8, "brand-new"),
        (9, "never-good-for-long"),
    ):
        rig.server(server_id, name)
    rig.backup(1, STALE - minute)
    rig.backup(2, STALE)
    rig.backup(3, STALE + minute)
    rig.backup(4, timedelta(hours=2))
    failed = rig.backup(4, timedelta(hours=2) - minute, status="failed")
    rig.backup(5, timedelta(hours=2), status="failed")
    rig.backup(5, timedelta(hours=2) - minute)
    rig.backup(6, timedelta(hours=1), status="failed", backup_type="manual")
    rig.backup(7, timedelta(days=8), status="failed")
    rig.backup(7, timedelta(hours=2))
    rig.backup(7, timedelta(hours=1), status="in_progress", backup_type="manual")
    rig.backup(8, timedelta(minutes=10), status="in_progress")  # its very first backup
    rig.backup(9, STALE + minute, status="failed")

    report = rig.monitor().status()
    by_name = {h.server.name: h for h in report.servers}
    problems = {name: [p.value for p in h.problems] for name, h in by_name.items()}
    assert problems == {
        "just-fresh": [],
        "exactly-36h": [],  # exactly as old as allowed is not older
        "just-stale": ["stale"],
        "failed-last": ["failed"],
        "failed-then-good": [],
        "never-good": ["failed"],  # its first backup, an hour ago: not stale yet
        "failed-8-days-ago": [],
        "brand-new": [],  # no completed backup, but none could have finished yet
        "never-good-for-long": ["stale", "failed"],  # without a good one for longer than allowed
    }
    assert [f.id for f in by_name["failed-last"].failed_since_good] == [failed]
    assert len(by_name["failed-then-good"].recent_failures) == 1  # still counted in 7 days
    assert by_name["failed-8-days-ago"].recent_failures == ()  # outside the 7 days
    assert len(by_name["failed-8-days-ago"].in_progress) == 1
    assert by_name["never-good"].newest_completed is None
    # Worst first: most problems, then the oldest good backup, then the healthy ones.
    order = [h.server.name for h in report.servers]
    assert order[0] == "never-good-for-long"
    assert set(order[1:4]) == {"never-good", "just-stale", "failed-last"}
    assert set(order[4:]) == {
        "just-fresh", "exactly-36h", "failed-then-good", "failed-8-days-ago", "brand-new"
    }  # fmt: skip
    assert report.unhealthy == 4


def test_a_backup_vanishing_while_in_progress_is_one_incident_until_a_good_one(
    rig: HealthRig,
) -> None:
    rig.server(1, "web")
    rig.backup(1, timedelta(hours=3))
    running = rig.backup(1, timedelta(minutes=5), status="in_progress", backup_type="manual")
    monitor = rig.monitor()
    first = monitor.sweep(force=True)
    assert first is not None and first.opened == []  # seen running: nothing wrong yet
    rig.simulator.finish(running, "vanish")
    second = monitor.sweep(force=True)
    assert second is not None
    assert [(i.kind, i.backup_id) for i in second.opened] == [(IncidentKind.VANISHED, running)]
    [health] = monitor.status().servers
    assert [p.value for p in health.problems] == ["vanished"]
    [alert] = rig.alerts()
    assert f"Backup *{running}*" in alert.blocks[0]["text"]["text"]
    assert monitor.sweep(force=True).opened == []  # type: ignore[union-attr]
    # A backup that completed after the vanished one started resolves it.
    rig.backup(1, timedelta(0), backup_type="manual")
    assert len(monitor.sweep(force=True).resolved) == 1  # type: ignore[union-attr]
    assert monitor.status().servers[0].healthy


def test_a_backup_that_completes_is_not_taken_for_vanished(rig: HealthRig) -> None:
    rig.server(1, "web")
    rig.backup(1, timedelta(hours=3))
    running = rig.backup(1, timedelta(minutes=5), status="in_progress", backup_type="manual")
    monitor = rig.monitor()
    monitor.sweep(force=True)
    rig.simulator.finish(running, "completed")
    assert monitor.sweep(force=True).opened == []  # type: ignore[union-attr]
    assert rig.alerts() == []


# -- one alert per incident -------------------------------------------------------------------


def _two_unhealthy_servers(rig: HealthRig) -> tuple[int, int]:
    rig.server(1, "stale-one")
    rig.server(2, "failing-one")
    rig.server(3, "fine-one")
    rig.backup(1, timedelta(days=3))
    rig.backup(2, timedelta(hours=5))
    failed = rig.backup(2, timedelta(hours=4), status="failed")
    rig.backup(3, timedelta(hours=1))
    return 1, failed


def test_one_alert_per_incident_across_repeated_sweeps_and_audited(rig: HealthRig) -> None:
    _, failed = _two_unhealthy_servers(rig)
    monitor = rig.monitor()
    for _ in range(4):
        monitor.sweep(force=True)
        rig.clock.now += timedelta(minutes=30)
    alerts = rig.alerts()
    assert len(alerts) == 2
    texts = " ".join(a.text for a in alerts)
    assert "stale-one" in texts and "stale" in texts
    assert "failing-one" in texts and str(failed) in texts and "Disk snapshot failed" in texts
    rows = rig.rows("alert")
    assert len(rows) == 2 and {r.server_id for r in rows} == {1, 2}
    assert all(r.outcome == "ok" and r.actor_user_id == "backupbot" for r in rows)
    assert {i.kind for i in rig.incidents()} == {"stale", "failed"}
    assert all(i.alert_state == PostState.POSTED.value for i in rig.incidents())


def test_one_alert_per_incident_across_two_instances_sweeping_at_once(rig: HealthRig) -> None:
    _two_unhealthy_servers(rig)
    first, second = rig.monitor(), rig.monitor()
    barrier = threading.Barrier(2)

    def sweep(monitor: HealthMonitor) -> None:
        for _ in range(3):
            barrier.wait()
            monitor.sweep(force=True)
            monitor.deliver()

    threads = [threading.Thread(target=sweep, args=(m,)) for m in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(rig.alerts()) == 2
    assert len(rig.rows("alert")) == 2
    assert len(rig.incidents()) == 2


def test_recovery_is_replied_once_in_the_alerts_thread(rig: HealthRig) -> None:
    rig.server(1, "web")
    rig.backup(1, timedelta(days=2))
    monitor = rig.monitor()
    monitor.sweep(force=True)
    [alert] = rig.alerts()
    assert rig.replies(alert.ts) == []
    rig.clock.now += timedelta(hours=1)
    good = rig.backup(1, timedelta(minutes=10))
    report = monitor.sweep(force=True)
    assert report is not None and len(report.resolved) == 1 and report.posted == 1
    [reply] = rig.replies(alert.ts)
    assert "Recovered" in reply.text and "web" in reply.text and str(good) in reply.text
    for _ in range(2):
        monitor.sweep(force=True)
    assert len(rig.replies(alert.ts)) == 1
    assert len(rig.alerts()) == 1
    [row] = rig.rows("alert.recovered")
    assert row.outcome == "ok" and row.server_id == 1
    [incident] = rig.incidents()
    assert incident.open_key is None and incident.reply_state == PostState.POSTED.value
    assert incident.resolved_by_backup_id == good
    # Stale again later: a new incident, a new alert.
    rig.clock.now += timedelta(days=3)
    monitor.sweep(force=True)
    assert len(rig.alerts()) == 2


def test_a_problem_over_before_its_alert_went_out_is_not_announced(rig: HealthRig) -> None:
    rig.server(1, "web")
    rig.backup(1, timedelta(days=2))
    rig.slack.fail("chat.postMessage", "fatal_error")  # Slack refuses the alert, for now
    monitor = rig.monitor()
    monitor.sweep(force=True)
    rig.backup(1, timedelta(0))
    assert len(monitor.sweep(force=True).resolved) == 1  # type: ignore[union-attr]
    rig.clock.now += monitor.settings.retry
    monitor.deliver()
    assert rig.alerts() == []
    [row] = rig.rows("alert")
    assert "resolved before it was alerted" in row.detail


def test_an_alert_slack_refuses_for_good_is_recorded_not_retried(rig: HealthRig) -> None:
    rig.server(1, "web")
    rig.backup(1, timedelta(days=2))
    rig.slack.fail("chat.postMessage", "not_in_channel")
    monitor = rig.monitor()
    monitor.sweep(force=True)
    rig.clock.now += timedelta(hours=1)
    monitor.sweep(force=True)
    assert rig.alerts() == []
    assert len(rig.slack.calls_to("chat.postMessage")) == 1
    [incident] = rig.incidents()
    assert incident.alert_state == PostState.FAILED.value
    [row] = rig.rows("alert")
    assert row.outcome == "error" and "not_in_channel" in row.detail


def test_an_alert_slack_may_have_taken_is_never_sent_again(rig: HealthRig) -> None:
    rig.server(1, "web")
    rig.backup(1, timedelta(days=2))
    rig.slack.fail("chat.postMessage", "internal_error", status=500)
    monitor = rig.monitor()
    monitor.sweep(force=True)
    rig.clock.now += timedelta(hours=1)
    monitor.sweep(force=True)
    assert len(rig.slack.calls_to("chat.postMessage")) == 1
    [incident] = rig.incidents()
    assert incident.alert_state == PostState.UNKNOWN.value
    [row] = rig.rows("alert")
    assert row.outcome == "error" and "may or may not" in row.detail


def test_an_alert_refused_for_now_is_tried_again_later(rig: HealthRig) -> None:
    rig.server(1, "web")
    rig.backup(1, timedelta(days=2))
    rig.slack.fail("chat.postMessage", "fatal_error")
    monitor = rig.monitor()
    monitor.sweep(force=True)
    assert rig.alerts() == [] and rig.rows("alert") == []
    monitor.deliver()
    assert rig.alerts() == []  # not due yet
    rig.clock.now += monitor.settings.retry
    assert monitor.deliver() == 1
    assert len(rig.alerts()) == 1


def test_an_alert_found_mid_post_after_a_crash_is_not_posted_again(rig: HealthRig) -> None:
    rig.server(1, "web")
    rig.backup(1, timedelta(days=2))
    dead = rig.monitor(alerts_channel=None)  # opens the incident, posts nothing
    dead.sweep(force=True)
    with rig.sessions.begin() as session:  # a worker that died right after marking it
        session.execute(
            update(HealthIncident).values(
                alert_state=PostState.POSTING.value,
                lease_owner="dead-worker",
                lease_expires_at=rig.clock.now - timedelta(seconds=1),
                next_attempt_at=rig.clock.now,
            )
        )
    rig.monitor().deliver()
    assert rig.alerts() == []
    [incident] = rig.incidents()
    assert incident.alert_state == PostState.UNKNOWN.value
    assert "not posted again" in rig.rows("alert")[-1].detail


def test_without_an_alerts_channel_incidents_are_recorded_and_audited(rig: HealthRig) -> None:
    rig.server(1, "web")
    rig.backup(1, timedelta(days=2))
    monitor = rig.monitor(alerts_channel=None)
    monitor.sweep(force=True)
    assert rig.slack.calls_to("chat.postMessage") == []
    [row] = rig.rows("alert")
    assert "ALERTS_CHANNEL is not set" in row.detail
    assert [h.server.name for h in monitor.status().servers if not h.healthy] == ["web"]


# -- provider calls ---------------------------------------------------------------------------


def test_a_sweep_lists_all_backups_once_through_its_pages(
    sessions: sessionmaker[Session], make_simulator: Callable[..., Simulator], slack: SlackDouble
) -> None:
    simulator = make_simulator(seed_data=False, page_size=10)
    rig = HealthRig(sessions, simulator, slack)
    try:
        for server in range(1, 9):
            rig.server(server, f"node-{server}")
            for day in range(5):
                rig.backup(server, timedelta(days=day, hours=1))
        rig.backup(3, timedelta(days=4), status="failed")
        monitor = rig.monitor()
        before = len(simulator.api_calls())
        report = monitor.sweep(force=True)
        calls = simulator.api_calls()[before:]
        assert report is not None and report.servers == 8 and report.backups == 41
        assert len(calls) == 5  # 41 backups, 10 a page: the pages of one list, nothing else
        assert all(c.method == "GET" and "server_id" not in c.query for c in calls)
        assert [c.query.get("page") for c in calls] == [None, "2", "3", "4", "5"]
        # A sweep that has nothing new to say makes the same calls, no more.
        before = len(simulator.api_calls())
        monitor.sweep(force=True)
        assert len(simulator.api_calls()) - before == 5
    finally:
        rig.close()


def test_a_sweep_not_due_makes_no_call_and_the_schedule_is_shared(rig: HealthRig) -> None:
    rig.server(1, "web")
    rig.backup(1, timedelta(hours=1))
    first, second = rig.monitor(), rig.monitor()
    assert first.sweep() is None  # the first start: the first sweep is an interval later
    assert rig.simulator.api_calls() == []
    rig.clock.now += timedelta(minutes=30)
    assert first.sweep() is not None
    assert second.sweep() is None  # the other instance swept a moment ago
    assert len(rig.simulator.api_calls()) == 1


def test_a_failed_listing_raises_no_alert(rig: HealthRig) -> None:
    rig.server(1, "web")
    rig.backup(1, timedelta(days=3))
    rig.simulator.inject(method="GET", path="/backups/", status=500, count=5)
    report = rig.monitor().sweep(force=True)
    assert report is not None and report.problem and "500" in report.problem
    assert rig.incidents() == [] and rig.alerts() == []


# -- the digest -------------------------------------------------------------------------------


def _activity(sessions: sessionmaker[Session]) -> None:
    audit = AuditLog(sessions)
    alice = Actor("U_ALICE", "alice", "T111", "C_OPS")
    bob = Actor("U_BOB", "bob", "T111", "C_OPS")
    audit.record(alice, "create", db.Outcome.OK, server_id=1, backup_id=501)
    audit.record(alice, "create", db.Outcome.OK, server_id=1, backup_id=502)
    audit.record(alice, "create", db.Outcome.ERROR, server_id=1, detail="refused")
    audit.record(bob, "delete", db.Outcome.OK, server_id=1, backup_id=400)
    audit.record(bob, "delete.request", db.Outcome.OK, server_id=1, backup_id=401)
    audit.record(alice, "restore", db.Outcome.OK, server_id=1, backup_id=300, approval_id=7)


def _digests(rig: HealthRig) -> list[Any]:
    return [m for m in rig.slack.messages_in(ALERTS) if m.text.startswith("Backup digest")]


def test_the_digest_is_posted_once_at_its_time_across_a_restart(rig: HealthRig) -> None:
    rig.server(1, "web")
    rig.backup(1, timedelta(hours=2))
    _activity(rig.sessions)  # audited now (the real time)
    # DIGEST_TIME is two minutes from now, so the activity above falls in its window.
    slot = (datetime.now(UTC) + timedelta(minutes=2)).replace(second=0, microsecond=0)
    at = slot.time()
    rig.clock.now = slot - timedelta(minutes=1)
    before = rig.monitor(digest_time=at)
    assert before.digest_if_due() is None
    assert _digests(rig) == []
    rig.clock.now += timedelta(minutes=1)  # DIGEST_TIME
    assert before.digest_if_due() == PostState.POSTED.value
    before.stop()
    restarted = rig.monitor(digest_time=at)  # a new process, the same database
    for _ in range(3):
        rig.clock.now += timedelta(minutes=20)
        assert restarted.digest_if_due() is None
        restarted.run_once()
    [digest] = _digests(rig)
    text = " ".join(b["text"]["text"] for b in digest.blocks if "text" in b and "text" in b["text"])
    assert "*Created:* 2 (by <@U_ALICE> (2))" in text
    assert "*Deleted:* 1 (by <@U_BOB>)" in text
    assert "<@U_ALICE> restored web from backup *300*" in text
    assert "✅ Every server is healthy (1 server)" in text
    [row] = rig.rows("digest")
    assert row.outcome == "ok" and "2 created, 1 deleted, 1 restored" in row.detail
    # The next day's digest tells only what came after this one: none of the above.
    rig.clock.now = slot + timedelta(days=1)
    assert restarted.digest_if_due() == PostState.POSTED.value
    assert len(_digests(rig)) == 2
    assert "<@U_BOB>" not in str(_digests(rig)[-1].blocks)
    with rig.sessions() as session:
        first, second = session.scalars(select(HealthDigest).order_by(HealthDigest.day))
    assert second.since == first.posted_at == slot


def test_two_instances_post_one_digest(rig: HealthRig) -> None:
    rig.server(1, "web")
    rig.backup(1, timedelta(hours=2))
    rig.clock.now = datetime.combine(NOW.date(), time(8, 0), UTC) + timedelta(seconds=5)
    monitors = [rig.monitor() for _ in range(3)]
    barrier = threading.Barrier(len(monitors))

    def run(monitor: HealthMonitor) -> None:
        barrier.wait()
        monitor.digest_if_due()

    threads = [threading.Thread(target=run, args=(m,)) for m in monitors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(_digests(rig)) == 1
    with rig.sessions() as session:
        assert len(list(session.scalars(select(HealthDigest)))) == 1


def test_a_digest_found_mid_post_after_a_crash_is_not_posted_twice(rig: HealthRig) -> None:
    rig.server(1, "web")
    rig.backup(1, timedelta(hours=2))
    rig.clock.now = datetime.combine(NOW.date(), time(9, 30), UTC)
    crashed = rig.monitor(digest_channel=None)
    crashed.digest_if_due()  # no channel: nothing
    day = rig.clock.now.date().isoformat()
    with rig.sessions.begin() as session:  # what a worker killed right after marking leaves
        session.add(
            HealthDigest(
                day=day, due_at=rig.clock.now, since=rig.clock.now - timedelta(days=1),
                state=PostState.POSTING.value, attempts=1, next_attempt_at=rig.clock.now,
                detail="", lease_owner="dead", lease_expires_at=rig.clock.now - timedelta(1),
            )
        )  # fmt: skip
    monitor = rig.monitor()
    assert monitor.digest_if_due() == PostState.UNKNOWN.value
    assert monitor.digest_if_due() is None
    assert _digests(rig) == []
    [row] = rig.rows("digest")
    assert row.outcome == "error" and "not posted again" in row.detail


def test_a_digest_slack_keeps_refusing_is_given_up_after_half_a_day(rig: HealthRig) -> None:
    rig.server(1, "web")
    rig.backup(1, timedelta(hours=2))
    rig.slack.fail("chat.postMessage", "fatal_error", count=1000)
    rig.clock.now = datetime.combine(NOW.date(), time(20, 0), UTC)
    monitor = rig.monitor(digest_time=time(20, 0))
    assert monitor.digest_if_due() == PostState.DUE.value  # refused: tried again later
    rig.clock.now += monitor.settings.retry
    assert monitor.digest_if_due() == PostState.DUE.value
    rig.clock.now += timedelta(hours=13)  # the next morning, before its own digest time
    assert monitor.digest_if_due() == PostState.FAILED.value
    assert monitor.digest_if_due() is None
    assert len(rig.slack.calls_to("chat.postMessage")) == 2
    [row] = rig.rows("digest")
    assert row.outcome == "error" and "not posted in time" in row.detail


def test_the_slack_poster_says_which_failures_may_be_retried(slack: SlackDouble) -> None:
    web = WebClient(token=slack.bot_token, base_url=slack.api_url)
    poster = SlackHealthPoster(web)
    unreachable = SlackHealthPoster(WebClient(token="xoxb-1", base_url="http://127.0.0.1:9/api/"))
    from bot.health import Digest

    digest = Digest(NOW.date(), NOW, NOW, None, "no answer", (), (), ())
    assert poster.post_digest(ALERTS, digest).ts
    slack.fail("chat.postMessage", "ratelimited", status=429, retry_after=0)
    assert poster.post_digest(ALERTS, digest).ts  # a 429 is retried: Slack did not act on it
    with pytest.raises(NotPosted) as refused:
        poster.post_digest("C_RANDOM", digest)  # the bot is not in #random
    assert refused.value.final and not refused.value.unclear
    with pytest.raises(NotPosted) as no_connection:
        unreachable.post_digest(ALERTS, digest)
    assert not no_connection.value.unclear  # nothing was sent: safe to try again


# -- the migration ----------------------------------------------------------------------------


def test_the_health_migration_goes_down_and_up_again(database_url: str) -> None:
    from sqlalchemy import inspect

    db.upgrade(database_url)
    engine = db.make_engine(database_url)
    try:
        tables = {"health_incidents", "health_digests", "health_sweeps"}
        assert tables <= set(inspect(engine).get_table_names())
        from alembic import command

        command.downgrade(db.alembic_config(database_url), "0010_backup_health-1")
        engine.dispose()
        assert not tables & set(inspect(engine).get_table_names())
        db.upgrade(database_url)
        engine.dispose()
        assert tables <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
