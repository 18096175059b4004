"""The watcher against the simulator and the Slack double over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bot.audit import Actor, AuditLog
from bot.db import AuditEvent, WatchJob
from bot.sandbox.slack import RecordedCall, SlackDouble
from bot.sandbox.vps import FAILED_BACKUP_ERROR, Simulator
from bot.slack.blocks import human_size
from bot.slack.notify import SlackNotifier
from bot.vps.client import BackupsClient
from bot.vps.models import Backup
from bot.watch import FinishedBackup, Watcher, WatchSettings, utcnow
from tests.conftest import SIM_TOKEN

FAST = WatchSettings(
    first_poll=0.05,
    max_poll=0.2,
    tick=0.02,
    thread_grace=timedelta(0),
    lease_seconds=5,
)
ALICE = Actor("U_ALICE", "alice", "T111", "C_OPS")


class Rig:
    """A simulator, a Slack double and a database, and helpers to start watched backups."""

    def __init__(
        self, sessions: sessionmaker[Session], simulator: Simulator, slack: SlackDouble
    ) -> None:
        self.sessions, self.simulator, self.slack = sessions, simulator, slack
        self.vps = BackupsClient(
            simulator.base_url,
            SIM_TOKEN,
            read_timeout=5,
            max_retries=1,
            backoff_base=0.01,
            backoff_cap=0.02,
        )
        self.web = WebClient(
            token=slack.bot_token,
            base_url=slack.api_url,
            retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)],
        )
        self.watchers: list[Watcher] = []

    def watcher(self, clock: Callable[[], datetime] = utcnow, **changes: object) -> Watcher:
        watcher = Watcher(
            self.sessions,
            self.vps,
            SlackNotifier(self.web),
            AuditLog(self.sessions),
            settings=dataclasses.replace(FAST, **changes),  # type: ignore[arg-type]
            clock=clock,
        )
        self.watchers.append(watcher)
        return watcher

    def in_progress(self, server_id: int) -> Backup:
        """One more running backup. Over HTTP the simulator runs one per server at a time."""
        data = self.simulator.add_backup(server_id, status="in_progress")
        return next(b for b in self.vps.list_backups(server_id).backups if b.id == data["id"])

    def start_backup(
        self,
        watcher: Watcher,
        server_id: int = 12345,
        actor: Actor = ALICE,
        *,
        seeded: bool = False,
    ) -> tuple[Backup, str]:
        if seeded:
            backup = self.in_progress(server_id)
        else:
            backup = self.vps.create_backup(server_id, "nightly test")
        job_id = watcher.watch(backup, actor)
        assert actor.channel_id is not None
        ts = str(self.web.chat_postMessage(channel=actor.channel_id, text="started")["ts"])
        watcher.attach_thread(job_id, actor.channel_id, ts)
        return backup, ts

    def replies(self, channel: str, ts: str) -> list[str]:
        return [m.text for m in self.slack.messages_in(channel, thread_ts=ts) if m.ts != ts]

    def wait_reply(self, channel: str, ts: str, timeout: float = 10.0) -> str:
        self.slack.wait_for(
            lambda e: (
                isinstance(e, RecordedCall)
                and e.method == "chat.postMessage"
                and e.args.get("thread_ts") == ts
            ),
            timeout=timeout,
        )
        replies = self.replies(channel, ts)
        assert replies, "a reply call was recorded but no reply is in the thread"
        return replies[0]

    def audit(self, action: str, timeout: float = 5.0) -> list[AuditEvent]:
        """The audit rows of `action`, waiting a little for the first (written after the reply)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.sessions() as session:
                rows = list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))
            if rows or time.monotonic() > deadline:
                return rows
            time.sleep(0.02)

    def close(self) -> None:
        for watcher in self.watchers:
            watcher.stop()
        self.vps.close()


@pytest.fixture
def rig(sessions: sessionmaker[Session], simulator: Simulator, slack: SlackDouble) -> Iterator[Rig]:
    rig = Rig(sessions, simulator, slack)
    try:
        yield rig
    finally:
        rig.close()


def test_completion_is_replied_in_the_thread_with_size_and_expiry(rig: Rig) -> None:
    watcher = rig.watcher().start()
    backup, ts = rig.start_backup(watcher)
    time.sleep(0.2)  # a few rounds see it running
    assert rig.replies("C_OPS", ts) == []
    rig.simulator.finish(backup.id)
    reply = rig.wait_reply("C_OPS", ts)
    size = rig.simulator.backup(backup.id)["size_mb"]  # type: ignore[index]
    assert f"Backup {backup.id}" in reply and "completed" in reply
    assert human_size(size) in reply
    assert "Expires: never" in reply  # manual backups never expire
    rig.slack.wait_for(lambda e: isinstance(e, RecordedCall) and e.method == "chat.update")
    parent = rig.slack.message("C_OPS", ts)
    assert parent is not None and parent.updated == 1 and "completed" in parent.text
    [event] = rig.audit("backup.completed")
    assert event.outcome == "ok" and event.backup_id == backup.id
    assert event.actor_user_id == "U_ALICE"
    time.sleep(0.2)
    assert len(rig.replies("C_OPS", ts)) == 1


def test_failed_backup_mentions_the_requester(rig: Rig) -> None:
    watcher = rig.watcher().start()
    backup, ts = rig.start_backup(watcher)
    rig.simulator.finish(backup.id, "failed")
    reply = rig.wait_reply("C_OPS", ts)
    assert "failed" in reply and "<@U_ALICE>" in reply
    assert FAILED_BACKUP_ERROR in reply  # the provider's reason, not just "failed"
    assert rig.audit("backup.failed")[0].outcome == "error"


def test_vanished_backup_is_said_plainly(rig: Rig) -> None:
    watcher = rig.watcher().start()
    backup, ts = rig.start_backup(watcher)
    rig.simulator.finish(backup.id, "vanish")
    reply = rig.wait_reply("C_OPS", ts)
    assert "disappeared" in reply and str(backup.id) in reply
    assert rig.audit("backup.vanished")


def test_provider_outage_then_recovery_still_replies_once(rig: Rig) -> None:
    watcher = rig.watcher()
    backup, ts = rig.start_backup(watcher)
    rig.simulator.inject(method="GET", path="/backups/", status=503, count=6)
    rig.simulator.finish(backup.id)
    for _ in range(3):  # each round's list call fails (503, retried once, 503 again)
        time.sleep(0.25)  # past the backoff's cap (0.2 s): the job is due
        assert watcher.run_once().notified == 0
    with rig.sessions() as session:
        job = session.scalars(select(WatchJob)).one()
        assert job.attempts >= 3
        assert job.last_error  # what the provider said, kept for the next attempt
    watcher.start()
    reply = rig.wait_reply("C_OPS", ts)
    assert "completed" in reply
    assert len(rig.replies("C_OPS", ts)) == 1


def test_unreachable_past_the_deadline_gives_up_and_says_so(rig: Rig) -> None:
    watcher = rig.watcher(deadline=timedelta(seconds=0.3))
    backup, ts = rig.start_backup(watcher)
    rig.simulator.inject(method="GET", path="/backups/", status=500, count=1000)
    watcher.start()
    reply = rig.wait_reply("C_OPS", ts)
    assert "stopped tracking" in reply and str(backup.id) in reply
    assert rig.audit("backup.gave_up")[0].outcome == "error"


def test_restart_in_the_middle_replies_exactly_once(rig: Rig) -> None:
    first = rig.watcher().start()
    backup, ts = rig.start_backup(first)
    time.sleep(0.2)
    first.stop()
    rig.simulator.finish(backup.id)
    second = rig.watcher().start()
    rig.wait_reply("C_OPS", ts)
    time.sleep(0.3)
    second.stop()
    third = rig.watcher()
    for _ in range(3):
        third.run_once()
    assert len(rig.replies("C_OPS", ts)) == 1
    assert len(rig.audit("backup.completed")) == 1


def test_a_dead_instances_lease_expires_and_another_takes_over(rig: Rig) -> None:
    dead = rig.watcher(lease_seconds=0.5)
    backup, ts = rig.start_backup(dead)
    rig.simulator.finish(backup.id)
    time.sleep(0.06)
    claimed = dead._claim()  # claims and then "crashes": never polls, never releases
    assert [job.backup_id for job in claimed] == [backup.id]
    survivor = rig.watcher()
    assert survivor.run_once().claimed == 0  # the lease still holds
    time.sleep(0.6)
    assert survivor.run_once().notified == 1
    assert len(rig.replies("C_OPS", ts)) == 1


def test_instances_whose_clocks_differ_by_minutes_never_share_a_job(rig: Rig) -> None:
    """Lease times are the database's: a host ten minutes ahead does not see another's live
    lease as run out (with host clocks it did, and both replied)."""
    behind = rig.watcher()
    ahead = rig.watcher(clock=lambda: utcnow() + timedelta(minutes=10))
    started = [rig.start_backup(behind, server_id=server) for server in (12345, 12346)]
    for backup, _ts in started:
        rig.simulator.finish(backup.id)
    time.sleep(0.06)
    claimed = behind._claim()  # mid-round on the instance whose clock is right
    assert len(claimed) == 2
    assert ahead.run_once().claimed == 0
    behind._leases.release(claimed)
    assert ahead.run_once().notified == 2  # free again: the skewed one may do the work
    assert behind.run_once().claimed == 0
    for _backup, ts in started:
        assert len(rig.replies("C_OPS", ts)) == 1
    assert len(rig.audit("backup.completed")) == 2


def test_a_round_longer_than_its_lease_still_replies_once(rig: Rig) -> None:
    """Six servers at 0.3 s a list is a round of about 2 s against a 0.5 s lease, with another
    instance waiting to take over whatever lease runs out: every reply exactly once."""
    servers = range(61001, 61007)
    for server_id in servers:
        rig.simulator.add_server(server_id, f"db-{server_id}")
    registrar = rig.watcher()
    threads = {}
    for server_id in servers:
        backup, ts = rig.start_backup(registrar, server_id=server_id, seeded=True)
        rig.simulator.finish(backup.id)
        threads[ts] = backup.id
    rig.simulator.faults.latency = 0.3
    first, second = rig.watcher(lease_seconds=0.5), rig.watcher(lease_seconds=0.5)
    first.start()
    time.sleep(0.1)  # the first has claimed the whole round
    second.start()
    deadline = time.monotonic() + 30
    while len(rig.audit("backup.completed")) < len(threads) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # anything late or doubled would land now
    first.stop()
    second.stop()
    counts = _count_replies(rig.slack, "C_OPS")
    assert {ts: counts.get(ts, 0) for ts in threads} == dict.fromkeys(threads, 1)
    assert len(rig.audit("backup.completed")) == len(threads)


def test_not_in_channel_falls_back_to_the_requesters_dm(rig: Rig) -> None:
    watcher = rig.watcher()
    backup, _ts = rig.start_backup(watcher)
    rig.slack.add_channel("C_OPS", "ops", member=False)  # the bot was removed meanwhile
    rig.simulator.finish(backup.id)
    time.sleep(0.06)
    assert watcher.run_once().notified == 1
    [dm] = rig.slack.messages_in(rig.slack.dm_channel_id("U_ALICE"))
    assert "completed" in dm.text and "could not post" in dm.text
    assert "not_in_channel" in rig.audit("backup.completed")[0].detail


def test_slack_failures_are_retried_later(rig: Rig) -> None:
    watcher = rig.watcher()
    backup, ts = rig.start_backup(watcher)
    rig.simulator.finish(backup.id)
    rig.slack.fail("chat.postMessage", "internal_error", count=1)
    time.sleep(0.06)
    assert watcher.run_once().notified == 0
    with rig.sessions() as session:
        job = session.scalars(select(WatchJob)).one()
        assert job.notified_at is None and "internal_error" in job.last_error
    time.sleep(0.3)
    assert watcher.run_once().notified == 1
    assert len(rig.replies("C_OPS", ts)) == 1


def test_a_reply_waits_for_its_thread_then_goes_into_it(rig: Rig) -> None:
    watcher = rig.watcher(thread_grace=timedelta(seconds=30))
    backup = rig.vps.create_backup(12345)
    job_id = watcher.watch(backup, ALICE)  # the "started" message is not posted yet
    rig.simulator.finish(backup.id)
    time.sleep(0.06)
    assert watcher.run_once().notified == 0  # outcome known, but no thread to answer in yet
    assert rig.slack.calls_to("chat.postMessage") == []
    ts = str(rig.web.chat_postMessage(channel="C_OPS", text="started")["ts"])
    watcher.attach_thread(job_id, "C_OPS", ts)
    time.sleep(0.06)
    assert watcher.run_once().notified == 1
    assert len(rig.replies("C_OPS", ts)) == 1


def test_a_reply_slack_keeps_refusing_gets_a_last_try_by_dm(rig: Rig) -> None:
    watcher = rig.watcher(deadline=timedelta(seconds=0.6))
    backup, ts = rig.start_backup(watcher)
    rig.simulator.finish(backup.id)
    rig.slack.fail("chat.postMessage", "internal_error", count=1000)
    until = time.monotonic() + 0.3  # well inside the deadline: retried, not given up
    while time.monotonic() < until:
        watcher.run_once()
        time.sleep(0.05)
    with rig.sessions() as session:
        job = session.scalars(select(WatchJob)).one()
        assert job.notified_at is None and job.notify_attempts >= 2
    time.sleep(0.5)  # past the deadline
    rig.slack.reset()  # Slack takes messages again, as the last try comes
    assert watcher.run_once().notified == 1
    [dm] = rig.slack.messages_in(rig.slack.dm_channel_id("U_ALICE"))
    assert "completed" in dm.text
    assert rig.replies("C_OPS", ts) == []
    assert "last try, by DM" in rig.audit("backup.completed")[0].detail


def test_a_reply_refused_past_the_deadline_is_closed_and_audited(rig: Rig) -> None:
    watcher = rig.watcher(deadline=timedelta(seconds=0.3))
    backup, _ts = rig.start_backup(watcher)
    rig.simulator.finish(backup.id)
    rig.slack.fail("chat.postMessage", "internal_error", count=1000)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        watcher.run_once()
        with rig.sessions() as session:
            if session.scalars(select(WatchJob)).one().notified_at is not None:
                break
        time.sleep(0.05)
    [row] = rig.audit("backup.completed")
    assert row.outcome == "error" and "could not be delivered" in row.detail


class FlakyNotifier:
    """Raises something that is not a Slack error for one backup, then behaves."""

    def __init__(self, inner: SlackNotifier, backup_id: int) -> None:
        self.inner, self.backup_id, self.raised = inner, backup_id, 0

    def notify(self, job: FinishedBackup, *, direct: bool = False) -> Any:
        if job.backup_id == self.backup_id and not self.raised:
            self.raised += 1
            raise TimeoutError("read timed out")
        return self.inner.notify(job, direct=direct)


def test_an_unexpected_error_for_one_job_does_not_starve_the_others(rig: Rig) -> None:
    first, first_ts = rig.start_backup(rig.watcher(), 12345)
    second, second_ts = rig.start_backup(rig.watcher(), 12346)
    flaky = FlakyNotifier(SlackNotifier(rig.web), first.id)
    watcher = Watcher(rig.sessions, rig.vps, flaky, AuditLog(rig.sessions), settings=FAST)
    rig.simulator.finish(first.id)
    rig.simulator.finish(second.id)
    time.sleep(0.06)
    assert watcher.run_once().notified == 1  # the second, despite the first's error
    assert len(rig.replies("C_OPS", second_ts)) == 1
    time.sleep(0.25)
    assert watcher.run_once().notified == 1  # the first, on the next try: not lost
    assert len(rig.replies("C_OPS", first_ts)) == 1 and flaky.raised == 1


def test_one_list_call_per_server_per_round(rig: Rig) -> None:
    for server_id in range(50001, 50021):
        rig.simulator.add_server(server_id, f"node-{server_id}")
    watcher = rig.watcher()
    for index in range(200):
        watcher.watch(rig.in_progress(50001 + index % 20), ALICE)
    time.sleep(0.06)
    before = len(rig.simulator.api_calls("GET", "/backups/"))
    stats = watcher.run_once()
    calls = len(rig.simulator.api_calls("GET", "/backups/")) - before
    assert stats.claimed == 200
    assert calls == stats.list_calls == 20


def _count_replies(slack: SlackDouble, channel: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for message in slack.messages_in(channel):
        if message.thread_ts and message.thread_ts != message.ts:
            counts[message.thread_ts] = counts.get(message.thread_ts, 0) + 1
    return counts


@pytest.mark.postgres
def test_two_watcher_processes_answer_every_job_exactly_once(rig: Rig, database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("several processes share one database only on PostgreSQL")
    for server_id in range(60001, 60011):
        rig.simulator.add_server(server_id, f"app-{server_id}")
    registrar = rig.watcher()
    threads = {}
    for index in range(60):
        backup, ts = rig.start_backup(registrar, server_id=60001 + index % 10, seeded=True)
        threads[ts] = backup.id
    worker = Path(__file__).with_name("watch_worker.py")
    env = {
        **os.environ,
        "WORKER_DATABASE_URL": database_url,
        "WORKER_VPS_URL": rig.simulator.base_url,
        "WORKER_VPS_TOKEN": SIM_TOKEN,
        "WORKER_SLACK_URL": rig.slack.api_url,
        "WORKER_SLACK_TOKEN": rig.slack.bot_token,
        "WORKER_SECONDS": "6",
    }
    processes = [
        subprocess.Popen(
            [sys.executable, str(worker)],
            env=env,
            cwd=Path(__file__).parent.parent,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    time.sleep(1.0)  # both running and polling
    for backup_id in threads.values():
        rig.simulator.finish(backup_id)
    reported = []
    for process in processes:
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        reported.append(int(out.split()[-1]))
    assert sum(reported) == 60, reported
    counts = _count_replies(rig.slack, "C_OPS")
    assert {ts: counts.get(ts, 0) for ts in threads} == dict.fromkeys(threads, 1)
    with rig.sessions() as session:
        notified = session.scalar(
            select(func.count()).select_from(WatchJob).where(WatchJob.notified_at.is_not(None))
        )
    assert notified == 60
    assert len(rig.audit("backup.completed")) == 60
