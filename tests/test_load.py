"""Load: single-flight provider reads, the bounded work pool and its "busy" answer, and the
provider metrics — through the real doubles (the simulator counts the provider calls; the Slack
double records every answer)."""

from __future__ import annotations

import contextvars
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from bot.db import AuditEvent
from bot.sandbox.vps import Simulator
from bot.slack.edge import BUSY, WorkPool, WorkQueueFull
from bot.vps.client import BackupsClient
from bot.vps.errors import AuthenticationFailed, ProviderUnavailable
from bot.vps.models import BackupList
from tests.conftest import SIM_TOKEN
from tests.test_slack_app import AppRig, rigs_of

WAIT = 15.0  # generous upper bound for anything to happen


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def lists_of(simulator: Simulator, server_id: int | None = None) -> int:
    """GET /backups/ the simulator received (for one server, or unfiltered)."""
    return sum(
        1
        for r in simulator.api_calls("GET", "/backups/")
        if r.query.get("server_id") == (None if server_id is None else str(server_id))
    )


def wait_until(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


@pytest.fixture
def client(simulator: Simulator) -> Iterator[BackupsClient]:
    with BackupsClient(simulator.base_url, SIM_TOKEN, read_timeout=10) as made:
        yield made


def in_threads(calls: list[Callable[[], object]]) -> list[Future[object]]:
    pool = ThreadPoolExecutor(len(calls))
    try:
        return [pool.submit(call) for call in calls]
    finally:
        pool.shutdown(wait=False)


# -- single-flight reads at the client -------------------------------------------------------


def test_identical_lists_in_flight_share_one_provider_call(
    simulator: Simulator, client: BackupsClient
) -> None:
    shared = sample("backupbot_provider_shared_reads_total")
    simulator.inject(method="GET", path="/backups/", hang=1.5)
    first = in_threads([lambda: client.list_backups(server_id=12345)])[0]
    wait_until(lambda: lists_of(simulator, 12345) == 1)  # the first is at the provider
    rest = in_threads([lambda: client.list_backups(server_id=12345) for _ in range(9)])
    answers = [first.result(WAIT)] + [f.result(WAIT) for f in rest]
    assert lists_of(simulator, 12345) == 1
    assert sample("backupbot_provider_shared_reads_total") - shared == 9
    assert all(isinstance(a, BackupList) and a == answers[0] for a in answers)
    assert {b.server.id for b in answers[0].backups} == {12345}


def test_a_list_after_the_shared_one_finished_makes_its_own_call(
    simulator: Simulator, client: BackupsClient
) -> None:
    client.list_backups(server_id=12345)
    client.list_backups(server_id=12345)
    assert lists_of(simulator, 12345) == 2


def test_a_list_after_a_write_does_not_join_a_read_from_before_it(
    simulator: Simulator, client: BackupsClient
) -> None:
    victim = client.list_backups(server_id=12345).backups[0]
    # The list is made at once and answered late: it is from before the delete.
    simulator.inject(method="GET", path="/backups/", hang=1.5, after_processing=True)
    before = in_threads([lambda: client.list_backups(server_id=12345)])[0]
    wait_until(lambda: lists_of(simulator, 12345) == 2)
    client.delete_backup(victim.id)
    after = client.list_backups(server_id=12345)  # the read in flight began before the delete
    assert victim.id not in {b.id for b in after.backups}
    assert victim.id in {b.id for b in before.result(WAIT).backups}
    assert lists_of(simulator, 12345) == 3


def test_distinct_lists_are_at_the_provider_at_the_same_time(
    simulator: Simulator, client: BackupsClient
) -> None:
    simulator.faults.latency = 2.0
    servers = (12345, 12346, 12347)
    futures = in_threads([lambda s=s: client.list_backups(server_id=s) for s in servers])
    for future in futures:
        future.result(WAIT)
    arrivals = [r.at for r in simulator.api_calls("GET", "/backups/")]
    assert len(arrivals) == 3
    assert max(arrivals) - min(arrivals) < 2.0  # each arrived before the first was answered


def test_a_waiter_whose_budget_runs_out_gets_the_timeout_it_would_have_got_alone(
    simulator: Simulator, client: BackupsClient
) -> None:
    simulator.inject(method="GET", path="/backups/", hang=3.0)
    with client.budget(0.2), pytest.raises(ProviderUnavailable) as alone:  # alone, slow answer
        client.list_backups(server_id=12346)

    simulator.inject(method="GET", path="/backups/", hang=3.0)

    def patient() -> BackupList:
        with client.budget(10):
            return client.list_backups(server_id=12345)

    def impatient() -> BackupList:
        with client.budget(0.2):
            return client.list_backups(server_id=12345)

    leader = in_threads([patient])[0]
    wait_until(lambda: lists_of(simulator, 12345) == 1)
    started = time.monotonic()
    joiner = in_threads([impatient])[0]
    error = joiner.exception(WAIT)
    waited = time.monotonic() - started
    assert isinstance(error, ProviderUnavailable)
    assert type(error) is type(alone.value)
    assert error.message == alone.value.message
    assert waited < 2.5  # its own budget (0.5 s at the least), not the 3 s of the shared call
    assert not leader.done()
    assert leader.result(WAIT).backups  # the shared call went on for the patient one
    assert lists_of(simulator, 12345) == 1


def test_an_error_of_the_shared_call_reaches_every_waiter(
    simulator: Simulator, client: BackupsClient
) -> None:
    simulator.inject(method="GET", path="/backups/", status=401, hang=1.5)
    first = in_threads([lambda: client.list_backups(server_id=12345)])[0]
    wait_until(lambda: lists_of(simulator, 12345) == 1)
    rest = in_threads([lambda: client.list_backups(server_id=12345) for _ in range(4)])
    errors = [f.exception(WAIT) for f in [first, *rest]]
    assert all(isinstance(e, AuthenticationFailed) for e in errors)
    assert len({e.message for e in errors if e is not None}) == 1
    assert len({id(e) for e in errors}) == 5
    assert lists_of(simulator, 12345) == 1
    assert client.list_backups(server_id=12345).backups  # the next list is a new call


# -- provider metrics -------------------------------------------------------------------------


def test_every_attempt_is_timed_and_failures_counted_by_endpoint_and_status(
    simulator: Simulator,
) -> None:
    def seconds(endpoint: str, method: str) -> float:
        return sample("backupbot_provider_request_seconds_count", endpoint=endpoint, method=method)

    def errors(endpoint: str, status: str) -> float:
        return sample("backupbot_provider_errors_total", endpoint=endpoint, status=status)

    cases = [
        ("/backups/", "GET"),
        ("/backups/", "POST"),
        ("/backups/{id}/", "DELETE"),
        ("/servers/{id}/restore/", "POST"),
    ]
    failures = [
        ("/backups/", "503"),
        ("/backups/", "timeout"),
        ("/backups/", "invalid_body"),
        ("/backups/{id}/", "404"),
        ("/servers/{id}/restore/", "connect"),
    ]
    timed = {case: seconds(*case) for case in cases}
    failed = {case: errors(*case) for case in failures}
    with BackupsClient(
        simulator.base_url, SIM_TOKEN, read_timeout=0.5, backoff_base=0.01, max_retries=1
    ) as client:
        simulator.inject(method="GET", path="/backups/", status=503)
        client.list_backups(server_id=12345)  # 503, then a good answer: 2 attempts
        simulator.inject(method="GET", path="/backups/", hang=2.0)
        client.list_backups(server_id=12345)  # timed out, then a good answer
        simulator.inject(method="GET", path="/backups/", status=200, body="<html>oops</html>")
        with pytest.raises(Exception, match="not JSON"):
            client.list_backups(server_id=12346)
        backup = client.create_backup(12345, "metrics")
        simulator.finish(backup.id)
        client.delete_backup(backup.id)
        with pytest.raises(Exception, match="not found"):
            client.delete_backup(backup.id)
        client.restore_server(12346, next(iter(client.list_backups(12346).backups)).id)
    nowhere = BackupsClient("http://127.0.0.1:9/api/v1", SIM_TOKEN, max_retries=0)
    with nowhere, pytest.raises(ProviderUnavailable):
        nowhere.restore_server(12345, 1)
    delta = {case: seconds(*case) - timed[case] for case in cases}
    # GET: 503 + good, timeout + good, bad body, before-create list, list before restore
    assert delta == {
        ("/backups/", "GET"): 7,
        ("/backups/", "POST"): 1,
        ("/backups/{id}/", "DELETE"): 2,
        ("/servers/{id}/restore/", "POST"): 2,
    }
    assert {case: errors(*case) - failed[case] for case in failures} == {
        ("/backups/", "503"): 1,
        ("/backups/", "timeout"): 1,
        ("/backups/", "invalid_body"): 1,
        ("/backups/{id}/", "404"): 1,
        ("/servers/{id}/restore/", "connect"): 1,
    }


# -- the work pool ----------------------------------------------------------------------------


def test_the_pool_refuses_past_its_queue_and_keeps_its_gauges() -> None:
    depth, running = "backupbot_work_queue_depth", "backupbot_work_in_flight"
    base_depth, base_running = sample(depth), sample(running)
    release = threading.Event()
    pool = WorkPool(2, 3)
    try:
        futures = [pool.submit(release.wait, WAIT) for _ in range(5)]
        wait_until(lambda: sample(running) - base_running == 2)
        assert sample(depth) - base_depth == 3
        with pytest.raises(WorkQueueFull):
            pool.submit(release.wait, WAIT)
        assert pool.accepted() == 5
        release.set()
        assert all(f.result(WAIT) for f in futures)
        wait_until(lambda: pool.accepted() == 0)
        assert (sample(depth), sample(running)) == (base_depth, base_running)
        assert pool.submit(lambda: "room again").result(WAIT) == "room again"
    finally:
        release.set()
        pool.shutdown(wait=True)


def test_shutdown_finishes_accepted_work_or_cancels_what_waits() -> None:
    depth = sample("backupbot_work_queue_depth")
    release = threading.Event()
    pool = WorkPool(1, 5)
    running = pool.submit(release.wait, WAIT)
    waiting = [pool.submit(lambda: "ran") for _ in range(3)]
    wait_until(lambda: sample("backupbot_work_queue_depth") - depth == 3)
    stopper = threading.Thread(target=pool.shutdown, kwargs={"cancel_futures": True})
    stopper.start()
    wait_until(lambda: all(f.cancelled() for f in waiting))
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.submit(lambda: "too late")
    release.set()
    stopper.join(WAIT)
    assert running.result(WAIT) is True  # what was running finished
    assert (pool.accepted(), sample("backupbot_work_queue_depth")) == (0, depth)

    kept = WorkPool(1, 5)
    results = [kept.submit(lambda n=n: n) for n in range(4)]
    kept.shutdown(wait=True)  # without cancel_futures: everything accepted still runs
    assert [f.result(0) for f in results] == [0, 1, 2, 3]


def test_work_runs_in_a_copy_of_the_submitters_context() -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
    pool = WorkPool(1, 10)
    try:
        token = request_id.set("req-1")
        seen = pool.submit(request_id.get)
        request_id.reset(token)
        changed = pool.submit(lambda: request_id.set("inside") and request_id.get())
        assert (seen.result(WAIT), changed.result(WAIT)) == ("req-1", "inside")
        assert request_id.get() == "-"  # a change made by the work stays in its copy
    finally:
        pool.shutdown(wait=True)


# -- through Slack ---------------------------------------------------------------------------


@pytest.fixture
def make_rig(slack, simulator, database_url) -> Iterator[Callable[..., AppRig]]:  # type: ignore[no-untyped-def]
    yield from rigs_of(AppRig, slack, simulator, database_url)


def answers(rig: AppRig) -> dict[str, str]:
    """The text of each person's answer (not a "waiting for the provider" notice), by user."""
    found = {}
    for response in rig.slack.responses:
        if "Waiting for" not in response.body.get("text", ""):
            user_id = rig.slack.response_urls[response.url_id].user_id
            found[str(user_id)] = json.dumps(response.body)
    return found


def test_identical_slash_commands_share_one_provider_call(
    make_rig: Callable[..., AppRig],
) -> None:
    rig = make_rig()
    shared = sample("backupbot_provider_shared_reads_total")
    rig.simulator.faults.latency = 2.0
    people = [f"U_P{n}" for n in range(10)]
    for person in people:
        rig.slack.add_user(person, person.lower())
    acks = in_threads([lambda p=p: rig.command("list 12345", user_id=p) for p in people])
    assert all(f.result(WAIT).text == "" for f in acks)
    wait_until(lambda: len(rig.audit("list")) == 10)
    assert lists_of(rig.simulator, 12345) == 1
    assert sample("backupbot_provider_shared_reads_total") - shared == 9
    wait_until(lambda: len(answers(rig)) == 10)
    assert all("web-server-01" in text for text in answers(rig).values())
    assert {row.actor_user_id for row in rig.audit("list")} == set(people)


def test_distinct_servers_are_listed_at_the_same_time(make_rig: Callable[..., AppRig]) -> None:
    rig = make_rig()
    rig.simulator.faults.latency = 2.0
    servers = (12345, 12346, 12347)
    acks = in_threads([lambda s=s: rig.command(f"list {s}") for s in servers])
    assert all(f.result(WAIT).status == 200 for f in acks)
    wait_until(lambda: len(rig.audit("list")) == 3)
    arrivals = [r.at for r in rig.simulator.api_calls("GET", "/backups/")]
    assert len(arrivals) == 3
    assert max(arrivals) - min(arrivals) < 2.0  # none waited for another's answer


def test_a_full_queue_answers_busy_at_once_and_does_nothing(
    make_rig: Callable[..., AppRig],
) -> None:
    rig = make_rig(WORK_THREADS="1", WORK_QUEUE_LIMIT="1")
    busy = sample("backupbot_busy_answers_total")
    depth, running = sample("backupbot_work_queue_depth"), sample("backupbot_work_in_flight")
    rig.simulator.inject(method="GET", path="/backups/", hang=2.0)
    rig.command("list 12345")  # takes the one thread
    wait_until(lambda: lists_of(rig.simulator, 12345) == 1)
    rig.command("list 12346")  # waits in the queue
    assert sample("backupbot_work_queue_depth") - depth == 1
    assert sample("backupbot_work_in_flight") - running == 1

    started = time.monotonic()
    refused = rig.command("list 12347", user_id="U_CAROL")
    took = time.monotonic() - started
    assert BUSY.split(" and ")[0] in refused.json()["text"]
    assert refused.json().get("response_type") == "ephemeral"
    assert took < 1.0  # in the ack itself
    assert sample("backupbot_busy_answers_total") - busy == 1
    help_refused = rig.command("help", user_id="U_CAROL")
    assert "try again in a minute" in help_refused.json()["text"]
    assert sample("backupbot_busy_answers_total") - busy == 2

    wait_until(lambda: len(rig.audit("list")) == 2)  # the accepted two are answered
    wait_until(lambda: sample("backupbot_work_in_flight") == running)
    assert sample("backupbot_work_queue_depth") == depth
    assert lists_of(rig.simulator, 12347) == 0  # nothing was done for the refused ones
    with rig.bot.sessions() as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.actor_user_id == "U_CAROL"))
        assert list(rows) == []
    assert "U_CAROL" not in answers(rig)
    # With room again, the same person is served.
    assert rig.run("list 12347", user_id="U_CAROL")["text"]
