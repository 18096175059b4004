"""Issue 13's fault matrix, in-process half: the real app over HTTP (waitress + Bolt), the Slack
double recording what the person sees, the simulator (behind a link that can be cut) as the
provider, and the audit table. Each case asserts what the person is told, what the audit table
holds, and that nothing is lost (the work happens once the fault is gone, and only once).

The database going down, SIGKILL and SIGTERM are in tests/test_faults_processes.py; arbitrary
input is in tests/test_properties.py. Where an earlier test already holds a cell of the matrix it
is named here instead of repeated.

| fault | list | create | delete | restore | watcher |
|---|---|---|---|---|---|
| provider 500 | `test_list_…[500]` | hardening `test_an_unclear_create_…[500]` | `test_delete_…[500]` | approvals `test_the_providers_refusal_…[500]` | `test_the_watcher_…[500]` |
| provider 503 + Retry-After | `test_list_…[503-retry-after]` | hardening `test_a_failure_while_looking_up_the_name_…[create]`, `…unclear_create…[503]` | `test_delete_…[503-retry-after]` | `test_restore_…[503-retry-after]` | `test_the_watcher_…[503-retry-after]`; watch `test_provider_outage_then_recovery_still_replies_once` |
| provider 429 + Retry-After | `test_list_…[429-retry-after]` | hardening `test_a_429_asking_for_20_s_…`, `test_a_rate_limited_create_may_be_sent_again_…` | `test_delete_…[429-retry-after]` | `test_restore_…[429-retry-after]` | `test_the_watcher_…[429-retry-after]` |
| connect refused | `test_list_…[connect-refused]` | `test_create_…[connect-refused]` | `test_delete_…[connect-refused]` | `test_restore_…[connect-refused]` | `test_the_watcher_…[connect-refused]` |
| connect timeout | `test_list_…[connect-timeout]` | `test_create_…[connect-timeout]` | `test_delete_…[connect-timeout]` | `test_restore_…[connect-timeout]` | `test_the_watcher_…[connect-timeout]` |
| read timeout | `test_list_…[read-timeout]`; hardening `test_a_hanging_provider_gets_a_waiting_notice_…` | hardening `test_an_unclear_create_…[read-timeout]`, `test_a_create_the_provider_carried_out_…[timeout-after-creating]` | `test_delete_…[read-timeout]` | `test_restore_…[read-timeout]` | `test_the_watcher_…[read-timeout]` |
| body not JSON | `test_list_…[not-json]` | hardening `test_an_unclear_create_…[2xx-not-json]` | n/a (a DELETE's body is not read) | `test_restore_…[not-json]` | `test_the_watcher_…[not-json]` |
| JSON of the wrong shape | `test_list_…[wrong-shape]`; hardening `test_one_odd_row_leaves_list_…` | hardening `test_an_unclear_create_…[2xx-not-a-backup]` | n/a | `test_restore_…[wrong-shape]` | `test_the_watcher_…[wrong-shape]`; hardening `test_one_odd_row_does_not_stop_the_watcher_…` |
| audit chain's lock held past its wait | `test_an_audit_lock_held_too_long_…` | create and delete record their own outcome whatever the row did (hardening) | | | |
| 401 mid-run (token revoked) | `test_list_…[401]`; slack_app `test_provider_errors_reach_the_person_…` | `test_create_…[401]` | `test_delete_…[401]` | `test_restore_…[401]` | `test_the_watcher_…[401]` |

| Slack Web API fault | "started" message (create) | thread reply (watcher) | approval card |
|---|---|---|---|
| `ratelimited` (429) | `test_a_started_message_…[ratelimited]` | `test_a_thread_reply_…[ratelimited]` | `test_an_approval_card_…[ratelimited]` |
| 5xx | `test_a_started_message_…[5xx]` | `test_a_thread_reply_…[5xx]`; watch `test_slack_failures_are_retried_later` | `test_an_approval_card_…[5xx]` |
| `not_in_channel` | `test_a_started_message_…[not_in_channel]`; slack_app `test_create_where_the_bot_is_not_a_member_…` | watch `test_not_in_channel_falls_back_…` | approvals `test_a_card_that_cannot_be_posted_requests_nothing` |
| `channel_not_found` | `test_a_started_message_…[channel_not_found]` | `test_a_thread_reply_…[channel_not_found]` | `test_an_approval_card_…[channel_not_found]` |
| `is_archived` | `test_a_started_message_…[is_archived]` | `test_a_thread_reply_…[is_archived]` | `test_an_approval_card_…[is_archived]` |
| `invalid_auth` | `test_a_started_message_…[invalid_auth]` | `test_a_thread_reply_…[invalid_auth]` | `test_an_approval_card_…[invalid_auth]` |
| expired `response_url` | `test_an_answer_after_its_response_url_expired_…` | — | — |
| `views.publish` rate limited | hardening `test_rate_limited_home_tabs_do_not_delay_…` | | |

| process fault | test (tests/test_faults_processes.py) |
|---|---|
| database down during a command (PostgreSQL stopped, then started) | `test_the_database_going_away_is_said_plainly_and_work_resumes_when_it_is_back` |
| SIGKILL: backups in flight, a restore approved, one pending | `test_a_sigkill_with_backups_in_flight_and_approvals_open_…`; approvals_processes `test_a_sigkill_at_each_step_still_restores_exactly_once`, `test_a_pending_approval_survives_a_restart_…` |
| SIGTERM: stop taking work, finish what is in flight, exit within 10 s | `test_sigterm_stops_taking_work_finishes_what_is_in_flight_and_exits_within_10_s` |

| request | test |
|---|---|
| forged signature, wrong secret, non-ASCII signature | slack_app `test_forged_and_stale_signatures_are_refused`, `test_forged_button_clicks_are_refused`; `test_a_forged_or_stale_approval_restores_nothing[forged]` |
| stale (older than 5 minutes) | slack_app `test_forged_and_stale_signatures_are_refused`; `test_a_forged_or_stale_approval_restores_nothing[stale]` |
| replayed | hardening `test_a_replayed_create_acts_once_across_two_instances`, `test_an_event_retried_by_slack_is_not_acted_on_twice` |
| oversized | hardening `test_a_300_mb_body_is_refused_with_413_…`; `test_an_oversized_chunked_body_is_refused` |
| 150 idle connections held open | `test_idle_connections_past_waitress_default_limit_do_not_hold_the_acks` |
| malformed | hardening `test_a_malformed_signed_payload_is_400_…`, `test_values_the_app_never_emits_…`; `test_more_malformed_signed_bodies_…`; properties `test_any_signed_body_…` |
"""  # noqa: E501 - the index is a table, one row a fault

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from bot.audit import _ADVISORY_LOCK
from bot.db import AuditEvent, WatchJob
from bot.sandbox.slack import Message, RecordedCall, SlackDouble
from bot.sandbox.vps import Simulator
from bot.slack import approval_blocks, blocks
from tests.conftest import SIM_TOKEN
from tests.fault_rig import ProviderLink, wait_until
from tests.test_approvals import ApprovalRig
from tests.test_hardening import ACK_LIMIT, Rig
from tests.test_slack_app import SECRET, rigs_of, text_of

# -- the provider's faults ----------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderFault:
    """One way the provider fails, and what a person must be told of it."""

    words: tuple[str, ...]  # what the answer says (all of them)
    status: int | None  # the provider's status the audit row keeps (None: no answer came)
    inject: dict[str, Any] = field(default_factory=dict)  # Simulator.inject(...)
    link: str | None = None  # "refuse" or "black_hole" the link to the provider
    revoke_token: bool = False  # the provider stops accepting our token mid-run


HTML = "<html><body>Service temporarily down for maintenance</body></html>"
WAIT_20 = {"Retry-After": "20"}
PROVIDER_FAULTS: dict[str, ProviderFault] = {
    "500": ProviderFault(("HTTP 500",), 500, {"status": 500}),
    "503-retry-after": ProviderFault(
        ("HTTP 503", "wait 20 s"), 503, {"status": 503, "headers": WAIT_20}
    ),
    "429-retry-after": ProviderFault(
        ("rate limiting", "wait 20 s"), 429, {"status": 429, "headers": WAIT_20}
    ),
    "connect-refused": ProviderFault(("could not be reached",), None, link="refuse"),
    "connect-timeout": ProviderFault(
        ("could not be reached", "timed out"), None, link="black_hole"
    ),
    "read-timeout": ProviderFault(("could not be reached", "timed out"), None, {"hang": 1.6}),
    "not-json": ProviderFault(("not JSON",), 200, {"status": 200, "body": HTML}),
    "wrong-shape": ProviderFault(
        ("no 'results' array",), 200, {"status": 200, "body": {"backups": [{"id": 1}]}}
    ),
    "401": ProviderFault(("VPS_API_TOKEN",), 401, revoke_token=True),
}


class FaultRig(Rig):
    """The hardening rig, talking to the provider through a `ProviderLink`."""

    link: ProviderLink

    def fault(self, name: str, method: str, path: str) -> ProviderFault:
        """Start the fault `name` on `method path` (or on the whole link); `heal()` ends it."""
        fault = PROVIDER_FAULTS[name]
        if fault.inject:
            self.simulator.inject(method=method, path=path, count=1000, **fault.inject)
        if fault.link == "refuse":
            self.link.refuse()
        elif fault.link == "black_hole":
            self.link.black_hole()
        if fault.revoke_token:
            self.simulator.token = "a-rotated-token"  # type: ignore[misc]
        return fault

    def heal(self) -> None:
        sim = self.simulator
        with sim._lock:  # type: ignore[attr-defined]
            sim._scripted.clear()  # type: ignore[attr-defined]
        sim.token = SIM_TOKEN  # type: ignore[misc]
        self.link.restore()

    def said(self, body: dict[str, Any], *words: str) -> str:
        facts = text_of(body)
        for word in words:
            assert word in facts, f"{word!r} not in {facts}"
        assert "Traceback" not in facts and SIM_TOKEN not in facts
        assert "Something went wrong on our side" not in facts, facts
        return facts

    def row(self, action: str, outcome: str) -> AuditEvent:
        rows = self.audit(action, outcome)
        assert len(rows) == 1, [(r.action, r.outcome, r.detail) for r in rows]
        return rows[0]


@pytest.fixture
def link(simulator: Simulator) -> Iterator[ProviderLink]:
    link = ProviderLink(simulator.base_url)
    try:
        yield link
    finally:
        link.close()


@pytest.fixture
def approval_rig(
    slack: SlackDouble, simulator: Simulator, database_url: str
) -> Iterator[ApprovalRig]:
    """An approvals rig (dave is an admin) without the safety backup: the card is the point."""
    slack.add_user("U_DAVE", "dave", real_name="Dave Diaz")
    factory = rigs_of(ApprovalRig, slack, simulator, database_url)
    yield next(factory)(RESTORE_SAFETY_BACKUP="false")
    next(factory, None)


@pytest.fixture
def make_rig(
    slack: SlackDouble, simulator: Simulator, database_url: str, link: ProviderLink
) -> Iterator[Callable[..., FaultRig]]:
    factory = rigs_of(FaultRig, slack, simulator, database_url)
    make = next(factory)

    def made(**env: str) -> FaultRig:
        env = {"VPS_TIMEOUT_SECONDS": "1", "VPS_API_URL": link.url, **env}
        rig = make(**env)
        rig.link = link
        rig.bot.service.answer_within = 3.0  # a read timeout is said in seconds, not 15
        rig.bot.vps.backoff_base, rig.bot.vps.backoff_cap = 0.05, 0.2  # retries, not waits
        return rig

    try:
        yield made
    finally:
        link.restore()  # a black hole would hold the app's closing connections
        next(factory, None)


@pytest.fixture
def rig(make_rig: Callable[..., FaultRig]) -> FaultRig:
    return make_rig()


# -- list -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PROVIDER_FAULTS))
def test_list_through_a_provider_fault_says_why_then_works_again(rig: FaultRig, name: str) -> None:
    fault = rig.fault(name, "GET", "/backups/")
    rig.said(rig.run("list 12345"), "Could not list the backups of server 12345", *fault.words)
    row = rig.row("list", "error")
    assert row.server_id == 12345 and row.actor_user_id == "U_ALICE"
    assert row.provider_status == fault.status, row.detail
    assert SIM_TOKEN not in row.detail
    assert not rig.audit("list", "ok", timeout=0)

    rig.heal()
    assert "Backups of web-server-01" in rig.said(rig.run("list 12345"))
    assert rig.row("list", "ok").server_id == 12345


@contextlib.contextmanager
def audit_chain_held(database_url: str) -> Iterator[None]:
    """Another writer holding the audit chain's lock (PostgreSQL's advisory lock; SQLite's one
    write lock)."""
    if database_url.startswith("postgresql"):
        holder = create_engine(database_url)
        with holder.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _ADVISORY_LOCK})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock_all()"))
        holder.dispose()
        return
    raw = sqlite3.connect(make_url(database_url).database or "")
    raw.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        raw.rollback()
        raw.close()


def test_an_audit_lock_held_too_long_is_said_plainly_then_works_again(
    rig: FaultRig, database_url: str
) -> None:
    rig.bot.service.audit._lock_timeout = 0.5  # the default 5 s, shortened for the test
    with audit_chain_held(database_url):
        answer = rig.said(rig.run("list 12345"), "My audit log is busy right now")
    assert "Backups of" not in answer
    assert not rig.audit("list", "ok", timeout=0)  # nothing was recorded, nothing was shown
    assert "Backups of web-server-01" in rig.said(rig.run("list 12345"))
    assert rig.row("list", "ok").server_id == 12345


# -- create ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["connect-refused", "connect-timeout", "401"])
def test_create_through_a_provider_fault_sends_nothing_then_makes_one(
    rig: FaultRig, name: str
) -> None:
    sim = rig.simulator
    fault = rig.fault(name, "GET", "/backups/")
    rig.said(rig.run('create web-server-01 "through a fault"'), "Could not create", *fault.words)
    assert sim.api_calls("POST") == [] and rig.backups_described("through a fault") == []
    assert rig.slack.calls_to("chat.postMessage") == []  # no "started" for what did not start
    assert rig.row("create", "error").provider_status == fault.status

    rig.heal()
    rig.command('create web-server-01 "through a fault"')
    rig.started("through a fault")
    assert len(rig.backups_described("through a fault")) == 1
    assert len(sim.api_calls("POST", "/backups/")) == 1
    assert rig.row("create", "ok").backup_id is not None


# -- delete ---------------------------------------------------------------------------------------

DELETE_FAULTS = [name for name in PROVIDER_FAULTS if name not in ("not-json", "wrong-shape")]


@pytest.mark.parametrize("name", DELETE_FAULTS)
def test_delete_through_a_provider_fault_says_what_happened_and_deletes_once(
    rig: FaultRig, name: str
) -> None:
    sim = rig.simulator
    backup_id = int(sim.add_backup(12346, size_mb=100, description="to delete")["id"])
    card = rig.run(f"delete {backup_id}")
    fault = rig.fault(name, "DELETE", "/backups/")
    answer = rig.click(card, blocks.DELETE_CONFIRM)
    facts = rig.said(
        answer,
        f"delete of backup {backup_id}"
        if name in ("503-retry-after", "read-timeout")
        else f"Could not delete backup {backup_id}",
        *fault.words,
    )
    # A 5xx or a timeout may hide a delete that happened (a gateway passes requests on): the
    # person is told so. Anything else: told it failed, and it did.
    unclear = "may have gone through" in facts
    assert unclear == (name in ("503-retry-after", "read-timeout")), facts
    time.sleep(1.8 if name == "read-timeout" else 0)  # the hung requests are carried out late
    if not unclear:
        assert sim.backup(backup_id) is not None, "deleted, yet the person was told it was not"
    row = rig.row("delete", "error")
    assert row.backup_id == backup_id and row.provider_status == fault.status

    rig.heal()
    again = rig.said(rig.click(card, blocks.DELETE_CONFIRM), "deleted")
    assert sim.backup(backup_id) is None, again
    assert rig.row("delete", "ok").backup_id == backup_id
    if not unclear:
        assert sum(1 for c in sim.api_calls("DELETE") if c.status == 204) == 1


# -- restore --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreCase:
    inject: dict[str, Any] = field(default_factory=dict)  # on POST /servers/…/restore/ alone
    fault: str | None = None  # a PROVIDER_FAULTS entry for the whole link or the token
    state: str = "done"  # where the approval ends
    words: str = ""  # in the approval's detail (and so on the card)
    restores: int = 1  # restores the provider carried out


RESTORE_CASES: dict[str, RestoreCase] = {
    "503-retry-after": RestoreCase(
        {"status": 503, "headers": WAIT_20}, state="failed", words="may have started", restores=0
    ),
    "429-retry-after": RestoreCase({"status": 429, "headers": {"Retry-After": "1"}}),
    "read-timeout": RestoreCase({"hang": 2.0}, state="failed", words="may have started"),
    "not-json": RestoreCase({"status": 202, "body": HTML, "after_processing": True}),
    "wrong-shape": RestoreCase({"status": 202, "body": [1, 2], "after_processing": True}),
    "401": RestoreCase(fault="401"),
    "connect-refused": RestoreCase(fault="connect-refused"),
    "connect-timeout": RestoreCase(fault="connect-timeout"),
}


class LinkedApprovalRig(ApprovalRig):
    link: ProviderLink


@pytest.mark.parametrize("name", list(RESTORE_CASES))
def test_restore_through_a_provider_fault_is_sent_at_most_once_and_told(
    slack: SlackDouble, simulator: Simulator, database_url: str, link: ProviderLink, name: str
) -> None:
    case = RESTORE_CASES[name]
    slack.add_user("U_DAVE", "dave", real_name="Dave Diaz")
    factory = rigs_of(LinkedApprovalRig, slack, simulator, database_url)
    env = {"RESTORE_SAFETY_BACKUP": "false", "VPS_TIMEOUT_SECONDS": "1", "VPS_API_URL": link.url}
    rig = next(factory)(**env)
    rig.bot.vps._timeout = httpx.Timeout(1.0)  # type: ignore[attr-defined] # connects: 1 s, not 5
    rig.bot.vps.backoff_base, rig.bot.vps.backoff_cap = 0.05, 0.2
    try:
        card = rig.request(rig.backup())
        if case.inject:
            simulator.inject(method="POST", path="/servers/", **case.inject)
        if case.fault is not None:
            rig.link = link
            FaultRig.fault(rig, case.fault, "POST", "/servers/")  # type: ignore[arg-type]
        rig.approve(card)
        if case.fault is not None:
            # The runner cannot even re-check the backup: it waits (nothing is sent), and goes
            # on once the provider answers again (a token put right, a network back).
            assert wait_until(lambda: "re-check failed" in (rig.approval().detail or ""), 15)
            assert rig.approval().state == "ready" and simulator.api_calls("POST") == []
            FaultRig.heal(rig)  # type: ignore[arg-type]
        row = rig.wait_state(case.state, timeout=20)
        assert case.words in (row.detail or ""), row.detail
        time.sleep(2.2 if name == "read-timeout" else 0.3)  # a hung request lands late
        assert len(simulator.restores) == case.restores
        sent = [c for c in simulator.api_calls("POST", "/servers/") if c.status != 429]
        assert len(sent) == 1, "a restore request was sent twice"
        said = rig.thread(card, "accepted" if case.state == "done" else "stopped", timeout=5)
        assert SIM_TOKEN not in said and "Traceback" not in said
        outcomes = [(e.action, e.outcome) for e in rig.audit_of(row.id) if e.action == "restore"]
        assert outcomes == [("restore", "ok" if case.state == "done" else "error")]
    finally:
        link.restore()
        simulator.token = SIM_TOKEN  # type: ignore[misc]
        next(factory, None)


# -- the watcher ----------------------------------------------------------------------------------

WATCHER_FAULTS = {
    **PROVIDER_FAULTS,
    # A watcher has no one waiting: it honours Retry-After, so a short one keeps the test short.
    "503-retry-after": ProviderFault((), 503, {"status": 503, "headers": {"Retry-After": "1"}}),
    "429-retry-after": ProviderFault((), 429, {"status": 429, "headers": {"Retry-After": "1"}}),
}


def _job(rig: FaultRig) -> WatchJob:
    with rig.bot.sessions() as session:
        job = session.scalars(select(WatchJob)).one()
        session.expunge(job)
        return job


@pytest.mark.parametrize("name", list(WATCHER_FAULTS))
def test_the_watcher_through_a_provider_fault_keeps_the_job_and_replies_once(
    rig: FaultRig, name: str
) -> None:
    sim = rig.simulator
    rig.bot.vps._timeout = httpx.Timeout(1.0)  # type: ignore[attr-defined] # connect too
    rig.bot.start_workers()
    rig.command('create web-server-01 "watched through a fault"')
    started = rig.started("watched through a fault")
    [backup] = rig.backups_described("watched through a fault")
    assert wait_until(lambda: _job(rig).thread_ts is not None)
    fault = WATCHER_FAULTS[name]
    if fault.inject:
        sim.inject(method="GET", path="/backups/", count=1000, **fault.inject)
    else:
        FaultRig.fault(rig, name, "GET", "/backups/")
    sim.finish(backup.id)
    assert wait_until(lambda: _job(rig).last_error, timeout=20), "no round met the fault"
    job = _job(rig)
    assert job.notified_at is None and job.state == "watching", (job.state, job.last_error)
    assert SIM_TOKEN not in job.last_error
    assert [c for c in rig.slack.calls_to("chat.postMessage") if c.args.get("thread_ts")] == []

    rig.heal()
    reply = rig.thread_reply(started.response["ts"], timeout=20)
    assert "completed" in reply.args["text"]
    time.sleep(0.5)  # a second reply, if one were coming
    replies = [
        c
        for c in rig.slack.calls_to("chat.postMessage")
        if c.args.get("thread_ts") == started.response["ts"]
    ]
    assert len(replies) == 1
    assert rig.row("backup.completed", "ok").backup_id == backup.id


# -- Slack's faults -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlackFault:
    error: str
    status: int = 200
    retry_after: int | None = None
    count: int = 1  # calls that fail (invalid_auth: the token is revoked for a while)


SLACK_FAULTS: dict[str, SlackFault] = {
    "ratelimited": SlackFault("ratelimited", 429, retry_after=1),
    "5xx": SlackFault("internal_error", 500),
    "not_in_channel": SlackFault("not_in_channel"),
    "channel_not_found": SlackFault("channel_not_found"),
    "is_archived": SlackFault("is_archived"),
    "invalid_auth": SlackFault("invalid_auth", count=2),
}


def _inject_slack(slack: SlackDouble, method: str, fault: SlackFault) -> None:
    slack.fail(method, fault.error, fault.count, fault.status, fault.retry_after)


def _seen_by_alice(slack: SlackDouble, words: str) -> list[str]:
    """Where alice can read `words`: channel or DM messages, ephemeral ones, response_url posts."""
    places = [
        f"{m.channel}:{'thread' if m.thread_ts and m.thread_ts != m.ts else 'top'}"
        for m in slack.messages
        if not m.deleted
        and words in json.dumps({"t": m.text, "b": m.blocks}, ensure_ascii=False)
        and m.visible_to in (None, "U_ALICE")
        and m.channel in ("C_OPS", slack.dm_channel_id("U_ALICE"))
    ]
    return places


@pytest.mark.parametrize("name", list(SLACK_FAULTS))
def test_a_started_message_slack_refuses_still_reaches_the_person_once(
    rig: FaultRig, name: str
) -> None:
    fault = SLACK_FAULTS[name]
    rig.bot.start_workers()
    _inject_slack(rig.slack, "chat.postMessage", fault)
    ack, elapsed, _ = rig.send('create web-server-01 "announced through a fault"')
    assert ack.status == 200 and elapsed < ACK_LIMIT
    assert wait_until(lambda: rig.backups_described("announced through a fault"), 10)
    [backup] = rig.backups_described("announced through a fault")
    assert wait_until(lambda: rig.audit("create", "ok", timeout=0), 10)
    if name == "invalid_auth":  # neither the channel nor the DM took it: her answer says so
        note = f"Backup {backup.id} of web-server-01 started"
        assert wait_until(lambda: _seen_by_alice(rig.slack, note), 10)
        assert _seen_by_alice(rig.slack, "keep this message") == ["C_OPS:top"]
        assert _seen_by_alice(rig.slack, "started by") == []
    else:
        assert wait_until(lambda: _seen_by_alice(rig.slack, "started by"), 10), name
        [where] = _seen_by_alice(rig.slack, "started by")  # once, in the channel or her DM
        assert where == ("C_OPS:top" if name == "ratelimited" else "D_ALICE:top")
    if name != "ratelimited":  # Slack's rate limit is waited out; the rest are on the record
        notice = rig.row("create.notice", "error")
        assert SLACK_FAULTS[name].error in notice.detail and notice.backup_id == backup.id
    rig.simulator.finish(backup.id)
    assert wait_until(lambda: rig.audit("backup.completed", timeout=0), 15)
    time.sleep(0.3)
    done = _seen_by_alice(rig.slack, "(12345) completed")
    assert len(done) == 1, done  # one reply, in the thread or by DM
    assert rig.row("create", "ok").backup_id == backup.id


@pytest.mark.parametrize("name", [n for n in SLACK_FAULTS if n != "not_in_channel"])
def test_a_thread_reply_slack_refuses_is_delivered_once(rig: FaultRig, name: str) -> None:
    fault = SLACK_FAULTS[name]
    rig.command('create web-server-01 "replied through a fault"')
    started = rig.started("replied through a fault")
    [backup] = rig.backups_described("replied through a fault")
    assert wait_until(lambda: _job(rig).thread_ts is not None)
    _inject_slack(rig.slack, "chat.postMessage", SlackFault(**{**fault.__dict__, "count": 3}))
    rig.simulator.finish(backup.id)
    rig.bot.start_workers()
    assert wait_until(lambda: _job(rig).notified_at is not None, 20), _job(rig).last_error
    time.sleep(0.5)
    replies = _seen_by_alice(rig.slack, "(12345) completed")
    assert len(replies) == 1, replies
    in_thread = [
        c
        for c in rig.slack.calls_to("chat.postMessage")
        if c.ok and c.args.get("thread_ts") == started.response["ts"]
    ]
    if name in ("channel_not_found", "is_archived"):
        assert replies[0].startswith("D"), replies  # that channel will not take it: her DM
    else:
        assert len(in_thread) == 1, replies  # a passing failure: retried, in the thread
    [row] = rig.audit("backup.completed")
    assert row.outcome == "ok" and row.backup_id == backup.id


APPROVAL_CARD_FAULTS = {
    "ratelimited": "Asked for approval",
    "5xx": "could not post the approval card",
    "channel_not_found": "could not post the approval card",
    "is_archived": "could not post the approval card",
    "invalid_auth": "could not post the approval card",
}


@pytest.mark.parametrize("name", list(APPROVAL_CARD_FAULTS))
def test_an_approval_card_slack_refuses_requests_nothing_or_is_posted_once(
    approval_rig: ApprovalRig, slack: SlackDouble, simulator: Simulator, name: str
) -> None:
    rig = approval_rig
    backup_id = rig.backup()
    _inject_slack(slack, "chat.postMessage", SLACK_FAULTS[name])
    facts = text_of(rig.run(f"restore {backup_id}"))
    assert APPROVAL_CARD_FAULTS[name] in facts, facts
    assert "Traceback" not in facts and slack.bot_token not in facts
    row = rig.approval()
    cards = [m for m in slack.messages_in("C_OPS") if m.text.startswith("Restore ")]
    if name == "ratelimited":
        assert row.state == "pending" and len(cards) == 1
        rig.approve(rig.card())
        assert rig.wait_state("done").state == "done"
        assert len(simulator.restores) == 1
    else:
        assert row.state == "failed" and cards == []
        [request] = [e for e in rig.audit_of(row.id) if e.action == "restore.request"]
        assert request.outcome == "error"
        time.sleep(0.2)
        assert simulator.restores == [] and simulator.api_calls("POST") == []


def test_an_answer_after_its_response_url_expired_still_reaches_the_person(rig: FaultRig) -> None:
    rig.simulator.inject(method="GET", path="/backups/", hang=1.0)
    ack, _, url_id = rig.send("list 12345")
    assert ack.status == 200
    rig.slack.advance(31 * 60)  # the answer comes after the response_url's 30 minutes
    ephemeral = rig.slack.wait_for(
        lambda e: isinstance(e, RecordedCall) and e.method == "chat.postEphemeral", timeout=10
    )
    assert isinstance(ephemeral, RecordedCall) and ephemeral.ok
    assert ephemeral.args["user"] == "U_ALICE" and "Backups of web-server-01" in text_of(
        ephemeral.args
    )
    refused = [r for r in rig.slack.responses if r.url_id == url_id]
    assert [r.error for r in refused] == ["expired_url"]  # tried once, then the fallback
    shown = [m for m in rig.slack.messages_in("C_OPS") if "Backups of" in m.text]
    assert len(shown) == 1 and shown[0].visible_to == "U_ALICE"
    assert rig.row("list", "ok").server_id == 12345


# -- requests -------------------------------------------------------------------------------------


def _no_side_effect(rig: FaultRig, before_calls: int) -> None:
    time.sleep(0.3)
    assert rig.simulator.api_calls() == []
    assert len(rig.slack.calls) == before_calls
    with rig.bot.sessions() as session:
        assert list(session.scalars(select(AuditEvent))) == []


def _approval_submission(rig: ApprovalRig, card: Message) -> str:
    view = rig.open_form(card)
    values = {approval_blocks.CONFIRM_BLOCK: {approval_blocks.CONFIRM_INPUT: "web-server-01"}}
    state = rig.sender._state_values(view, values)  # type: ignore[attr-defined]
    payload = {
        "type": "view_submission",
        "team": {"id": "T111", "domain": "test-domain"},
        "user": {"id": "U_BOB", "username": "bob", "name": "bob", "team_id": "T111"},
        "api_app_id": "A111",
        "token": "verification_token",
        "trigger_id": rig.slack.new_trigger_id("U_BOB"),
        "view": {**view, "state": {"values": state}},
        "response_urls": [],
    }
    return urlencode({"payload": json.dumps(payload)})


@pytest.mark.parametrize("how", ["forged", "stale"])
def test_a_forged_or_stale_approval_restores_nothing(
    approval_rig: ApprovalRig, simulator: Simulator, how: str
) -> None:
    rig = approval_rig
    card = rig.request(rig.backup())
    body = _approval_submission(rig, card)
    if how == "forged":
        answer = rig.sender.post(body, signature="v0=" + "1" * 64)
    else:
        answer = rig.sender.post(body, timestamp=int(time.time()) - 6 * 60)
    assert answer.status == 401
    time.sleep(0.5)
    row = rig.approval()
    assert row.state == "pending" and row.approvers in ([], None)
    assert simulator.restores == [] and simulator.api_calls("POST") == []
    assert [e.action for e in rig.audit_of(row.id)] == ["restore.request"]


def test_an_oversized_chunked_body_is_refused(rig: FaultRig) -> None:
    before = len(rig.slack.calls)

    def chunks() -> Iterator[bytes]:
        yield b"command=%2Fbackup&text=list&user_id=U_ALICE&x="
        for _ in range(3 * 1024):
            yield b"a" * 1024

    answer = httpx.post(
        rig.sender.app_url,
        content=chunks(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": str(int(time.time())),
            "X-Slack-Signature": "v0=" + "0" * 64,
        },
        timeout=10,
    )
    assert answer.status_code == 413
    _no_side_effect(rig, before)


def test_idle_connections_past_waitress_default_limit_do_not_hold_the_acks(rig: FaultRig) -> None:
    """150 open connections that send nothing (a proxy's idle pool, or anyone's): waitress's
    default stops accepting at 100, and the next command would wait for one of them to close."""
    parts = urlsplit(rig.server.url)
    assert parts.hostname and parts.port
    idle = [socket.create_connection((parts.hostname, parts.port)) for _ in range(150)]
    try:
        time.sleep(0.3)  # accepted (or not) by the server's loop
        started = time.monotonic()
        answer = rig.run("list 12345")  # asserts the ack came within 3 s
        assert time.monotonic() - started < ACK_LIMIT + 2
        assert "Backups of web-server-01" in rig.said(answer)
    finally:
        for connection in idle:
            connection.close()


MORE_MALFORMED: dict[str, tuple[bytes, str]] = {
    "not-utf8": (
        b"command=%2Fbackup&text=\xff\xfe&user_id=U_ALICE",
        "application/x-www-form-urlencoded",
    ),
    "event-without-type": (b'{"event": {"type": "app_home_opened"}}', "application/json"),
    "json-array": (b"[1, 2, 3]", "application/json"),
    "neither-command-nor-payload": (b"hello=world", "application/x-www-form-urlencoded"),
    "payload-without-user": (
        urlencode({"payload": json.dumps({"type": "block_actions", "actions": []})}).encode(),
        "application/x-www-form-urlencoded",
    ),
    "empty": (b"", "application/x-www-form-urlencoded"),
}


@pytest.mark.parametrize("case", list(MORE_MALFORMED))
def test_more_malformed_signed_bodies_are_400_with_no_side_effect(
    rig: FaultRig, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    caplog.set_level(logging.INFO)
    before = len(rig.slack.calls)
    body, content_type = MORE_MALFORMED[case]
    stamp = str(int(time.time()))
    mac = hmac.new(SECRET.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    answer = rig.sender.post(body, content_type, stamp, f"v0={mac.hexdigest()}")
    # slack_sdk cannot even check the signature of a body that is not UTF-8: 401 then.
    assert answer.status == (401 if case == "not-utf8" else 400), (answer.status, answer.text)
    _no_side_effect(rig, before)
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
