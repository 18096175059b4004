"""The Backups API client (`bot.vps`), driven against the simulator over real loopback HTTP.

Nothing is monkeypatched: every fault is one the simulator really produces on the wire (scripted
with `Simulator.inject` or drawn from `FaultConfig`). The client gets a recording `sleep` so that
backoffs and Retry-After waits are asserted rather than waited for, and short read timeouts where
a test makes the simulator hang.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from bot.config import Secret
from bot.sandbox.vps import FaultConfig, Simulator
from bot.vps.client import BackupsClient
from bot.vps.errors import (
    AuthenticationFailed,
    NotFound,
    OutcomeUnknown,
    ProviderUnavailable,
    Rejected,
    ServerBusy,
    UnexpectedResponse,
    VpsError,
)
from bot.vps.models import Backup, DeleteOutcome, Phase, RestoreAccepted

TOKEN = "vps-client-test-token-8d41e7c2"
WRONG_TOKEN = "wrong-token-for-the-client-55aa"
SECRETS = (TOKEN, WRONG_TOKEN)
WEB, DB, CACHE = 12345, 12346, 12347
SEEDED = 7 * 3 + 2  # a week of daily backups for three servers, two manual ones for the first
FIRST_NEW = 1000  # the simulator's first id for a backup created after seeding
SHORT = 0.2  # read timeout for tests that make the simulator hang
HANG = 5.0  # how long those hangs last; Simulator.stop() cuts them short at teardown
RACE = 0.5  # read timeout where a helper thread must act while a request hangs


class Sleeps(list[float]):
    """A `sleep` that records what the client asked for and returns at once."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


# -- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _token_never_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test runs with all loggers at DEBUG (httpx, httpcore, the client, the simulator) and
    fails if the API token shows up in any record, formatted traceback included."""
    caplog.set_level(logging.DEBUG)
    yield
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for when in ("setup", "call"):
        for record in caplog.get_records(when):
            text = formatter.format(record)
            for secret in SECRETS:
                assert secret not in text, f"token logged by {record.name}: {text!r}"


@pytest.fixture
def make_sim(make_simulator: Callable[..., Simulator]) -> Callable[..., Simulator]:
    # New backups stay in_progress unless a test ends them.
    return functools.partial(make_simulator, TOKEN, complete_after=60.0)


@pytest.fixture
def sim(make_sim: Callable[..., Simulator]) -> Simulator:
    return make_sim()


@pytest.fixture
def connect() -> Iterator[Callable[..., BackupsClient]]:
    made: list[BackupsClient] = []

    def make(target: Simulator | str, **kwargs: Any) -> BackupsClient:
        base_url = target.base_url if isinstance(target, Simulator) else target
        kwargs.setdefault("token", TOKEN)
        kwargs.setdefault("connect_timeout", 1.0)
        kwargs.setdefault("read_timeout", 3.0)
        kwargs.setdefault("backoff_base", 0.01)
        kwargs.setdefault("reconcile_delay", 0.01)
        kwargs.setdefault("sleep", Sleeps())
        kwargs.setdefault("rng", random.Random(0))
        client = BackupsClient(base_url, kwargs.pop("token"), **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(sim: Simulator, connect: Callable[..., BackupsClient]) -> BackupsClient:
    return connect(sim)


def assert_no_token(exc: BaseException) -> None:
    """Neither str() nor repr() of the error, nor of anything chained to it, shows a token."""
    seen: BaseException | None = exc
    while seen is not None:
        for secret in SECRETS:
            assert secret not in str(seen), f"token in str({type(seen).__name__})"
            assert secret not in repr(seen), f"token in repr({type(seen).__name__})"
        seen = seen.__cause__ or seen.__context__


def raised(expected: type[VpsError], call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The error `call` raises, of exactly `expected` (not a subclass), checked for tokens."""
    with pytest.raises(VpsError) as info:
        call(*args, **kwargs)
    error = info.value
    assert type(error) is expected, f"{type(error).__name__}: {error}"
    assert_no_token(error)
    return error


def wait_until(predicate: Callable[[], Any], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def when(predicate: Callable[[], Any], action: Callable[[], Any]) -> threading.Thread:
    """Run `action` on a thread as soon as `predicate` holds (e.g. while a request hangs)."""

    def run() -> None:
        wait_until(predicate)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def manual_ids(sim: Simulator, server_id: int) -> set[int]:
    """Ids of the server's manual backups, read from the simulator's state (not over HTTP)."""
    found = set()
    for backup_id in range(100, FIRST_NEW + 50):
        backup = sim.backup(backup_id)
        if backup and backup["server"]["id"] == server_id and backup["backup_type"] == "manual":
            found.add(backup_id)
    return found


def backup_json(backup_id: int, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": backup_id,
        "server": {"id": WEB, "name": "web-server-01"},
        "backup_type": "automatic",
        "status": "completed",
        "size_mb": 4523,
        "created_at": "2025-01-16T03:00:00Z",
        "expires_at": "2025-02-16T03:00:00Z",
        "description": "Automatic daily backup",
    }
    data.update(overrides)
    return data


# -- listing --------------------------------------------------------------------------------------


def test_list_all_parses_the_contract_shape(sim: Simulator, client: BackupsClient) -> None:
    listing = client.list_backups()
    assert listing.count == SEEDED == len(listing.backups)
    assert len({b.id for b in listing.backups}) == SEEDED
    [get] = sim.api_calls("GET")
    assert (get.path, get.query, get.status, get.authorized) == ("/api/v1/backups/", {}, 200, True)
    for backup in listing.backups:
        raw = sim.backup(backup.id)
        assert raw is not None
        assert backup.server.id == raw["server"]["id"] and backup.server.name
        assert backup.created_at.tzinfo is not None
        assert backup.created_at.utcoffset() == timedelta(0)
        assert backup.created_at.strftime("%Y-%m-%dT%H:%M:%SZ") == raw["created_at"]
        assert backup.phase is Phase.COMPLETED and backup.size_mb == raw["size_mb"] > 0
        if backup.backup_type == "automatic":
            # One calendar month, as the provider's own example shows (the parse is what we test).
            assert backup.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ") == raw["expires_at"]
            assert 28 <= (backup.expires_at - backup.created_at).days <= 31
            assert backup.expires_at.utcoffset() == timedelta(0)
        else:
            assert backup.backup_type == "manual" and backup.is_manual
            assert backup.expires_at is None
    # The provider's order is kept as it came (not by date); newest_first sorts.
    assert [b.id for b in listing.backups] != sorted(b.id for b in listing.backups)
    newest = listing.newest_first()
    assert [b.created_at for b in newest] == sorted((b.created_at for b in newest), reverse=True)


def test_list_filters_by_server_and_type(sim: Simulator, client: BackupsClient) -> None:
    web = client.list_backups(server_id=WEB)
    assert web.count == 9 and {b.server.id for b in web.backups} == {WEB}
    manual = client.list_backups(backup_type="manual")
    assert manual.count == 2 and {b.backup_type for b in manual.backups} == {"manual"}
    db_auto = client.list_backups(server_id=DB, backup_type="automatic")
    assert db_auto.count == 7
    assert {(b.server.id, b.backup_type) for b in db_auto.backups} == {(DB, "automatic")}
    assert client.list_backups(server_id=99999).backups == ()
    queries = [r.query for r in sim.api_calls("GET")]
    assert queries == [
        {"server_id": str(WEB)},
        {"backup_type": "manual"},
        {"server_id": str(DB), "backup_type": "automatic"},
        {"server_id": "99999"},
    ]


def test_list_refuses_bad_ids_without_asking(sim: Simulator, client: BackupsClient) -> None:
    for bad in (0, -3, True, "12345"):
        with pytest.raises(ValueError, match="server_id"):
            client.list_backups(server_id=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backup_id"):
        client.delete_backup(0)
    with pytest.raises(ValueError, match="backup_id"):
        client.restore_server(WEB, -1)
    assert sim.requests == []


def test_list_with_an_unknown_type_is_rejected_with_the_providers_reason(
    sim: Simulator, client: BackupsClient
) -> None:
    error = raised(Rejected, client.list_backups, backup_type="weekly")
    assert error.status_code == 400
    assert "backup_type" in str(error) and "weekly is not one of the available choices" in str(
        error
    )


@pytest.mark.parametrize(("server_id", "pages", "total"), [(None, 5, SEEDED), (WEB, 2, 9)])
def test_list_follows_next_across_pages(
    make_sim: Callable[..., Simulator],
    connect: Callable[..., BackupsClient],
    server_id: int | None,
    pages: int,
    total: int,
) -> None:
    sim = make_sim(page_size=5)
    listing = connect(sim).list_backups(server_id=server_id)
    assert listing.count == total == len(listing.backups) == len({b.id for b in listing.backups})
    gets = sim.api_calls("GET")
    assert len(gets) == pages and {g.status for g in gets} == {200}
    expected_filter = {} if server_id is None else {"server_id": str(server_id)}
    assert gets[0].query == expected_filter
    assert [g.query.get("page") for g in gets[1:]] == [str(n) for n in range(2, pages + 1)]
    assert all({k: v for k, v in g.query.items() if k != "page"} == expected_filter for g in gets)


def test_list_follows_a_relative_next_link(sim: Simulator, client: BackupsClient) -> None:
    # DRF sends absolute links, but a relative one must resolve against the page it came in.
    sim.inject(
        method="GET",
        status=200,
        body={"count": 3, "next": f"/api/v1/backups/?server_id={CACHE}", "results": []},
    )
    sim.inject(
        method="GET",
        status=200,
        body={"count": 3, "next": f"?server_id={CACHE}", "results": [backup_json(1)]},
    )
    listing = client.list_backups()
    assert listing.count == 3
    assert [b.id for b in listing.backups][:1] == [1]
    assert {b.server.id for b in listing.backups[1:]} == {CACHE}
    paths = [(r.path, r.query, r.status) for r in sim.api_calls("GET")]
    assert paths == [
        ("/api/v1/backups/", {}, 200),
        ("/api/v1/backups/", {"server_id": str(CACHE)}, 200),
        ("/api/v1/backups/", {"server_id": str(CACHE)}, 200),
    ]


def test_list_does_not_follow_next_to_another_host(
    make_sim: Callable[..., Simulator], connect: Callable[..., BackupsClient]
) -> None:
    sim, elsewhere = make_sim(), make_sim()
    sim.inject(
        method="GET",
        status=200,
        body={"count": 2, "next": f"{elsewhere.base_url}/backups/?page=2", "results": []},
    )
    error = raised(UnexpectedResponse, connect(sim).list_backups)
    assert "another host" in str(error)
    assert elsewhere.requests == []  # the Bearer token never went there


def test_list_stops_after_too_many_pages(sim: Simulator, client: BackupsClient) -> None:
    loop = {"count": 1, "next": f"{sim.base_url}/backups/", "results": []}
    sim.inject(method="GET", status=200, body=loop, count=150)
    error = raised(UnexpectedResponse, client.list_backups)
    assert "100 pages" in str(error)
    assert len(sim.api_calls("GET")) == 100


def test_list_is_lenient_with_nulls_unknown_status_and_extra_fields(
    sim: Simulator, client: BackupsClient, caplog: pytest.LogCaptureFixture
) -> None:
    odd_status = f"snapshotting-{time.monotonic_ns()}"  # new to the process: warned about once
    results = [
        backup_json(7, status="in_progress", size_mb=None, expires_at=None, backup_type="manual"),
        backup_json(8, status=odd_status, region="eu-west", tags=["x"], links={"self": "/x"}),
        backup_json(9, status="failed", size_mb=None, error="Disk snapshot failed"),
        backup_json(10, server=CACHE, created_at="2025-01-16T05:00:00+02:00", id="10"),
        backup_json(11, created_at="2025-01-16T03:00:00", size_mb=12.5, description=None),
    ]
    sim.inject(method="GET", status=200, body={"count": 5, "results": results, "extra": True})
    running, unknown, failed, offset, naive = client.list_backups().backups
    assert (running.phase, running.size_mb, running.expires_at) == (Phase.RUNNING, None, None)
    assert unknown.status == odd_status and unknown.phase is Phase.RUNNING
    assert any(
        odd_status in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records
    )
    assert failed.phase is Phase.FAILED
    assert (offset.id, offset.server.id) == (10, CACHE)
    assert offset.created_at == datetime(2025, 1, 16, 3, 0, tzinfo=UTC)
    assert offset.created_at.utcoffset() == timedelta(0)
    assert naive.created_at == datetime(2025, 1, 16, 3, 0, tzinfo=UTC)  # bare dates taken as UTC
    assert (naive.size_mb, naive.description) == (12.5, "")
    # A bare array is not the documented shape but carries the same facts.
    sim.inject(method="GET", status=200, body=[backup_json(12)])
    bare = client.list_backups()
    assert bare.count == 1 and bare.backups[0].expires_at == datetime(2025, 2, 16, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("<html>Bad gateway at the edge</html>", "not JSON"),
        ({"detail": "ok"}, "no 'results' array"),
        ({"count": "many", "results": []}, "count='many'"),
    ],
)
def test_list_of_the_wrong_shape_is_an_unexpected_response(
    sim: Simulator, client: BackupsClient, body: Any, words: str
) -> None:
    sim.inject(method="GET", status=200, body=body)
    error = raised(UnexpectedResponse, client.list_backups)
    assert words in str(error)
    assert len(sim.api_calls("GET")) == 1  # a well-formed 200 is not retried


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ({"server": {"id": WEB}, "status": "completed"}, "without"),
        (backup_json(1, created_at="yesterday"), "not a date"),
        (backup_json(1, id=None), "id=None"),
        ("501", "not a JSON object"),
    ],
)
def test_a_row_of_the_wrong_shape_is_left_out_and_counted_not_fatal(
    sim: Simulator, client: BackupsClient, caplog: pytest.LogCaptureFixture, row: Any, words: str
) -> None:
    good = [backup_json(7), backup_json(8)]
    sim.inject(method="GET", status=200, body={"count": 3, "results": [good[0], row, good[1]]})
    listing = client.list_backups()
    assert [b.id for b in listing.backups] == [7, 8]
    assert listing.unreadable == 1
    assert any(words in r.getMessage() for r in caplog.records)


def test_an_unreadable_row_with_an_id_is_named_and_a_size_that_is_not_a_number_is_unknown(
    sim: Simulator, client: BackupsClient
) -> None:
    rows = [backup_json(7, size_mb="4 GB"), backup_json(9, created_at="yesterday")]
    sim.inject(method="GET", status=200, body={"count": 2, "results": rows})
    listing = client.list_backups()
    [sized] = listing.backups
    assert (sized.id, sized.size_mb) == (7, None)  # kept, its size shown as unknown
    assert listing.unreadable_ids == frozenset({9})


def test_find_backup(sim: Simulator, client: BackupsClient) -> None:
    some = client.list_backups(server_id=DB).backups[0]
    assert client.find_backup(some.id, server_id=DB) == some
    assert client.find_backup(some.id) == some
    error = raised(NotFound, client.find_backup, some.id, server_id=WEB)
    assert error.kind == "backup" and str(some.id) in str(error)
    raised(NotFound, client.find_backup, 424242)
    assert [r.query for r in sim.api_calls("GET")] == [
        {"server_id": str(DB)},
        {"server_id": str(DB)},
        {},
        {"server_id": str(WEB)},
        {},
    ]


# -- create ----------------------------------------------------------------------------------------


def test_create_returns_the_new_backup(sim: Simulator, client: BackupsClient) -> None:
    backup = client.create_backup(WEB, description="Pre-deployment backup")
    assert isinstance(backup, Backup)
    assert (backup.id, backup.server.id, backup.server.name) == (FIRST_NEW, WEB, "web-server-01")
    assert (backup.backup_type, backup.status, backup.phase) == (
        "manual",
        "in_progress",
        Phase.RUNNING,
    )
    assert backup.size_mb is None and backup.expires_at is None
    assert backup.description == "Pre-deployment backup"
    assert backup.message and "being created" in backup.message
    assert abs(backup.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    [post] = sim.api_calls("POST")
    assert post.status == 201
    assert post.body == {"server_id": WEB, "description": "Pre-deployment backup"}
    # Without a description none is sent.
    other = client.create_backup(CACHE)
    assert other.description == "" and sim.api_calls("POST")[1].body == {"server_id": CACHE}


def test_create_errors(sim: Simulator, client: BackupsClient) -> None:
    before = manual_ids(sim, WEB)
    error = raised(NotFound, client.create_backup, 99999)
    assert error.kind == "server" and error.status_code == 404 and "99999" in str(error)
    error = raised(Rejected, client.create_backup, WEB, description="x" * 300)
    assert error.status_code == 400
    assert "description: Ensure this field has no more than 255 characters." in str(error)
    client.create_backup(WEB)
    busy = raised(ServerBusy, client.create_backup, WEB)
    assert busy.status_code == 409 and "already in progress" in str(busy)
    assert isinstance(busy, Rejected)
    assert manual_ids(sim, WEB) == before | {FIRST_NEW}  # ours, nothing more


@pytest.mark.parametrize("status", [429])
def test_create_retries_answers_that_did_nothing(
    sim: Simulator, connect: Callable[..., BackupsClient], status: int
) -> None:
    sleeps = Sleeps()
    before = manual_ids(sim, WEB)
    sim.inject(method="POST", path="/backups/", status=status, headers={"Retry-After": "2"})
    backup = connect(sim, sleep=sleeps).create_backup(WEB, description=f"after a {status}")
    assert [p.status for p in sim.api_calls("POST")] == [status, 201]
    assert len(sleeps) == 1 and 2.0 <= sleeps[0] <= 2.1
    assert manual_ids(sim, WEB) - before == {backup.id}
    assert backup.description == f"after a {status}"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_create_answered_5xx_after_processing_is_found_not_repeated(
    sim: Simulator, client: BackupsClient, status: int
) -> None:
    before = manual_ids(sim, WEB)
    sim.inject(method="POST", path="/backups/", status=status, after_processing=True)
    backup = client.create_backup(WEB, description="lost answer")
    assert [p.status for p in sim.api_calls("POST")] == [status]
    assert manual_ids(sim, WEB) - before == {backup.id}
    assert (backup.description, backup.status) == ("lost answer", "in_progress")


@pytest.mark.parametrize("status", [500, 503])
def test_create_answered_5xx_that_made_nothing_is_unconfirmed_never_repeated(
    sim: Simulator, client: BackupsClient, status: int
) -> None:
    """A 5xx may come from a gateway that passed the POST on: it is looked for, not re-sent."""
    before = manual_ids(sim, WEB)
    sim.inject(method="POST", path="/backups/", status=status)  # and nothing was created
    error = raised(OutcomeUnknown, client.create_backup, WEB, description="once")
    assert f"HTTP {status}" in str(error) and "before trying again" in str(error)
    assert [p.status for p in sim.api_calls("POST")] == [status]
    assert manual_ids(sim, WEB) == before
    # the list before the POST, then one check per reconcile attempt
    assert len(sim.api_calls("GET")) == 1 + client.reconcile_attempts


def test_create_that_times_out_after_processing_is_found_by_listing(
    sim: Simulator, connect: Callable[..., BackupsClient]
) -> None:
    before = manual_ids(sim, WEB)
    sim.inject(method="POST", path="/backups/", hang=HANG, after_processing=True)
    client = connect(sim, read_timeout=SHORT)
    backup = client.create_backup(WEB, description="slow answer")
    assert len(sim.api_calls("POST")) == 1
    assert manual_ids(sim, WEB) - before == {backup.id}
    assert backup.description == "slow answer" and backup.id == FIRST_NEW


def test_create_that_times_out_before_processing_is_reported_unknown_not_repeated(
    sim: Simulator, connect: Callable[..., BackupsClient]
) -> None:
    # The docstring: after a timeout the client lists; if nothing new appeared it does not POST
    # again but reports OutcomeUnknown for a person to check.
    sleeps = Sleeps()
    sim.inject(method="POST", path="/backups/", hang=1.0)
    client = connect(sim, read_timeout=SHORT, sleep=sleeps, reconcile_attempts=3)
    error = raised(OutcomeUnknown, client.create_backup, WEB, description="queued")
    assert isinstance(error, ProviderUnavailable)
    assert "check its backups" in str(error) and "before trying again" in str(error)
    assert len(sim.api_calls("POST")) == 1
    assert len(sim.api_calls("GET")) == 1 + 3  # the list before, then three checks
    assert sleeps == [0.01, 0.01]  # reconcile_delay between the checks
    # The provider processes the request late: exactly one backup, never a second POST.
    wait_until(lambda: sim.backup(FIRST_NEW) is not None)
    assert sim.backup(FIRST_NEW)["description"] == "queued"  # type: ignore[index]
    assert sim.backup(FIRST_NEW + 1) is None
    assert len(sim.api_calls("POST")) == 1


def test_create_picks_its_own_backup_by_description_when_another_appears(
    sim: Simulator, connect: Callable[..., BackupsClient]
) -> None:
    sim.inject(method="POST", path="/backups/", hang=HANG, after_processing=True)
    # While our POST hangs (after creating 1000), someone else's manual backup appears.
    other = when(
        lambda: sim.backup(FIRST_NEW) is not None,
        lambda: sim.add_backup(WEB, description="someone else's"),
    )
    backup = connect(sim, read_timeout=RACE).create_backup(WEB, description="ours")
    other.join(timeout=3)
    assert (backup.id, backup.description) == (FIRST_NEW, "ours")
    assert sim.backup(FIRST_NEW + 1)["description"] == "someone else's"  # type: ignore[index]
    assert len(sim.api_calls("POST")) == 1


def test_create_with_two_indistinguishable_new_backups_is_unknown(
    sim: Simulator, connect: Callable[..., BackupsClient]
) -> None:
    sim.inject(method="POST", path="/backups/", hang=HANG, after_processing=True)
    other = when(
        lambda: sim.backup(FIRST_NEW) is not None, lambda: sim.add_backup(WEB, description="same")
    )
    client = connect(sim, read_timeout=RACE)
    error = raised(OutcomeUnknown, client.create_backup, WEB, description="same")
    other.join(timeout=3)
    assert f"{FIRST_NEW}, {FIRST_NEW + 1}" in str(error)
    assert len(sim.api_calls("POST")) == 1


def test_create_whose_check_fails_too_is_unknown(
    sim: Simulator, connect: Callable[..., BackupsClient]
) -> None:
    sim.inject(method="POST", path="/backups/", hang=HANG, after_processing=True)
    # Once the POST has been processed (and hangs), the listing that checks it will fail.
    checker = when(
        lambda: sim.backup(FIRST_NEW) is not None, lambda: sim.inject(method="GET", status=500)
    )
    client = connect(sim, read_timeout=RACE)
    error = raised(OutcomeUnknown, client.create_backup, WEB)
    checker.join(timeout=3)
    assert "listing its backups to check failed too" in str(error)
    assert error.status_code == 500
    assert len(sim.api_calls("POST")) == 1 and sim.backup(FIRST_NEW + 1) is None


# -- delete ----------------------------------------------------------------------------------------


def test_delete_then_delete_again(sim: Simulator, client: BackupsClient) -> None:
    assert client.delete_backup(101) is DeleteOutcome.DELETED
    assert sim.backup(101) is None
    error = raised(NotFound, client.delete_backup, 101)  # a plain 404: not "already deleted"
    assert (error.kind, error.status_code) == ("backup", 404) and "101" in str(error)
    assert [(r.method, r.path, r.status) for r in sim.requests] == [
        ("DELETE", "/api/v1/backups/101/", 204),
        ("DELETE", "/api/v1/backups/101/", 404),
    ]


def test_delete_of_a_running_backup_is_refused(sim: Simulator, client: BackupsClient) -> None:
    backup = client.create_backup(DB)
    error = raised(ServerBusy, client.delete_backup, backup.id)
    assert error.status_code == 409 and "still in progress" in str(error)
    assert sim.backup(backup.id) is not None


def test_delete_that_timed_out_after_processing_is_already_deleted(
    sim: Simulator, connect: Callable[..., BackupsClient]
) -> None:
    sleeps = Sleeps()
    sim.inject(method="DELETE", hang=HANG, after_processing=True)
    outcome = connect(sim, read_timeout=SHORT, sleep=sleeps).delete_backup(102)
    assert outcome is DeleteOutcome.ALREADY_DELETED
    assert [r.status for r in sim.api_calls("DELETE")] == [0, 404]  # 0: the client had gone
    assert len(sleeps) == 1 and sim.backup(102) is None


@pytest.mark.parametrize("status", [502, 504])
def test_delete_answered_5xx_after_processing_is_already_deleted(
    sim: Simulator, client: BackupsClient, status: int
) -> None:
    sim.inject(method="DELETE", status=status, after_processing=True)
    assert client.delete_backup(103) is DeleteOutcome.ALREADY_DELETED
    assert [r.status for r in sim.api_calls("DELETE")] == [status, 404]


@pytest.mark.parametrize("status", [429])
def test_delete_retries_answers_that_did_nothing(
    sim: Simulator, client: BackupsClient, status: int
) -> None:
    sim.inject(method="DELETE", status=status, headers={"Retry-After": "0"})
    assert client.delete_backup(104) is DeleteOutcome.DELETED
    # ...and a 404 after one of them is a plain NotFound: nothing suggests we deleted it.
    sim.inject(method="DELETE", status=status, headers={"Retry-After": "0"})
    raised(NotFound, client.delete_backup, 104)
    assert [r.status for r in sim.api_calls("DELETE")] == [status, 204, status, 404]


def test_delete_gives_up_as_unknown_after_an_ambiguous_attempt(
    sim: Simulator, connect: Callable[..., BackupsClient]
) -> None:
    sim.inject(method="DELETE", status=502, count=3)
    error = raised(OutcomeUnknown, connect(sim, max_retries=2).delete_backup, 105)
    assert error.status_code == 502 and "may have gone through" in str(error)
    assert "(3 attempts)" in str(error)
    assert len(sim.api_calls("DELETE")) == 3


def test_delete_unreachable_after_an_ambiguous_attempt_is_unknown(
    sim: Simulator, connect: Callable[..., BackupsClient]
) -> None:
    # The first DELETE is carried out but its answer never comes; then the provider goes away.
    sim.inject(method="DELETE", hang=HANG, after_processing=True)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        sim.stop()

    client = connect(sim, read_timeout=SHORT, max_retries=2, sleep=sleep)
    error = raised(OutcomeUnknown, client.delete_backup, 106)
    assert "may have gone through" in str(error) and "connection failed" in str(error)
    assert len(sleeps) == 2 and len(sim.api_calls("DELETE")) == 1
    assert sim.backup(106) is None  # it was deleted indeed


# -- restore ---------------------------------------------------------------------------------------


def test_restore_is_accepted(sim: Simulator, client: BackupsClient) -> None:
    accepted = client.restore_server(WEB, 101)
    assert accepted == RestoreAccepted(
        server_id=WEB, backup_id=101, status_code=202, detail="Server restore started."
    )
    [post] = sim.api_calls("POST", "/servers/")
    assert (post.path, post.body) == (f"/api/v1/servers/{WEB}/restore/", {"backup_id": 101})
    assert [(r["server_id"], r["backup_id"]) for r in sim.restores] == [(WEB, 101)]
    # The server is now busy: a second restore is refused, not queued.
    busy = raised(ServerBusy, client.restore_server, WEB, 101)
    assert busy.status_code == 409
    assert len(sim.restores) == 1


def test_restore_errors(sim: Simulator, client: BackupsClient) -> None:
    web_backup = 101
    db_backup = sim.add_backup(DB)["id"]
    running = sim.add_backup(CACHE, status="in_progress")["id"]
    error = raised(NotFound, client.restore_server, 99999, web_backup)
    assert error.kind == "server" and "Server 99999" in str(error)
    error = raised(NotFound, client.restore_server, WEB, 424242)
    assert error.kind == "backup" and "Backup 424242" in str(error)
    error = raised(Rejected, client.restore_server, WEB, db_backup)
    assert error.status_code == 400
    assert f"Backup {db_backup} does not belong to server {WEB}." in str(error)
    error = raised(Rejected, client.restore_server, CACHE, running)
    assert f"Backup {running} is not completed." in str(error)
    assert sim.restores == []
    assert len(sim.api_calls("POST")) == 4  # none of them repeated


@pytest.mark.parametrize("status", [429])
def test_restore_retries_answers_that_did_nothing(
    sim: Simulator, connect: Callable[..., BackupsClient], status: int
) -> None:
    sleeps = Sleeps()
    sim.inject(method="POST", path="/servers/", status=status, headers={"Retry-After": "1"})
    accepted = connect(sim, sleep=sleeps).restore_server(WEB, 101)
    assert accepted.status_code == 202
    assert [r.status for r in sim.api_calls("POST")] == [status, 202]
    assert len(sim.restores) == 1 and 1.0 <= sleeps[0] <= 1.1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_restore_answered_5xx_is_unknown_and_never_repeated(
    sim: Simulator, client: BackupsClient, status: int
) -> None:
    sim.inject(method="POST", path="/servers/", status=status, after_processing=True)
    error = raised(OutcomeUnknown, client.restore_server, WEB, 101)
    assert error.status_code == status and "check the server" in str(error)
    assert len(sim.api_calls("POST")) == 1 and len(sim.restores) == 1


def test_restore_that_times_out_after_processing_is_unknown_and_never_repeated(
    sim: Simulator, connect: Callable[..., BackupsClient]
) -> None:
    sleeps = Sleeps()
    sim.inject(method="POST", path="/servers/", hang=HANG, after_processing=True)
    client = connect(sim, read_timeout=SHORT, sleep=sleeps)
    error = raised(OutcomeUnknown, client.restore_server, WEB, 101)
    assert "timed out" in str(error) and "may have started" in str(error)
    assert len(sim.api_calls("POST", "/servers/")) == 1
    assert len(sim.restores) == 1 and sleeps == []


def test_restore_retries_when_the_connection_was_refused(
    make_sim: Callable[..., Simulator], connect: Callable[..., BackupsClient]
) -> None:
    sim = make_sim()
    port = int(sim.base_url.split(":")[2].split("/")[0])
    sim.stop()  # nothing listens: the request never reaches the provider
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        sim.start("127.0.0.1", port)

    accepted = connect(sim, sleep=sleep).restore_server(WEB, 101)
    assert accepted.status_code == 202 and len(sleeps) == 1
    assert len(sim.api_calls("POST")) == 1 and len(sim.restores) == 1


@pytest.mark.parametrize(
    ("status", "body", "detail"),
    [
        (202, "<html>Accepted</html>", None),  # not JSON, but any 2xx is accepted
        (204, None, None),
        (200, {"message": "Queued for restore."}, "Queued for restore."),
    ],
)
def test_restore_accepts_any_2xx(
    sim: Simulator, client: BackupsClient, status: int, body: Any, detail: str | None
) -> None:
    sim.inject(method="POST", path="/servers/", status=status, body=body, after_processing=True)
    accepted = client.restore_server(WEB, 101)
    assert (accepted.status_code, accepted.detail) == (status, detail)
    assert len(sim.restores) == 1 and len(sim.api_calls("POST")) == 1


# -- status codes, error bodies and authentication -----------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected", "words"),
    [
        (401, {"detail": "Invalid token."}, AuthenticationFailed, "Invalid token."),
        (403, {"detail": "Forbidden."}, AuthenticationFailed, "Check VPS_API_TOKEN"),
        (404, None, UnexpectedResponse, "VPS_API_URL"),
        (400, {"detail": "Bad filter."}, Rejected, "Bad filter."),
        (400, {"message": "Nope."}, Rejected, "Nope."),
        (400, {"error": {"message": "Nested."}}, Rejected, "Nested."),
        (400, {"server_id": ["A valid integer is required."]}, Rejected, "server_id: A valid"),
        (400, ["First problem.", "Second."], Rejected, "First problem. Second."),
        (400, "<html>teapot</html>", Rejected, "HTTP 400 Bad Request"),
        (422, {"detail": "Unprocessable."}, Rejected, "Unprocessable."),
        (400, {"detail": "Server is locked by a task."}, ServerBusy, "locked"),
        (409, {"detail": "Already running."}, ServerBusy, "Already running."),
        (423, {"detail": "Locked."}, ServerBusy, "Locked."),
        (500, {"detail": "Oops."}, ProviderUnavailable, "HTTP 500 Internal Server Error: Oops."),
        (501, None, ProviderUnavailable, "HTTP 501"),
        (302, None, UnexpectedResponse, "unexpected HTTP 302 Found"),
    ],
)
def test_every_status_maps_to_its_error_without_retrying(
    sim: Simulator,
    connect: Callable[..., BackupsClient],
    status: int,
    body: Any,
    expected: type[VpsError],
    words: str,
) -> None:
    sleeps = Sleeps()
    headers = {"Location": "http://elsewhere.invalid/"} if status == 302 else None
    sim.inject(method="GET", status=status, body=body, headers=headers)
    error = raised(expected, connect(sim, sleep=sleeps).list_backups)
    assert words in str(error)
    assert error.status_code == status
    assert sleeps == [] and len(sim.requests) == 1


def test_long_provider_messages_are_clipped(sim: Simulator, client: BackupsClient) -> None:
    sim.inject(method="GET", status=400, body={"detail": "x" * 1000})
    error = raised(Rejected, client.list_backups)
    assert "x" * 299 + "…" in str(error) and "x" * 300 not in str(error)


@pytest.mark.parametrize("token", [WRONG_TOKEN, Secret(WRONG_TOKEN)])
def test_a_wrong_token_fails_every_operation(
    sim: Simulator, connect: Callable[..., BackupsClient], token: str | Secret
) -> None:
    client = connect(sim, token=token)
    for call, args in [
        (client.list_backups, ()),
        (client.find_backup, (101,)),
        (client.create_backup, (WEB,)),
        (client.delete_backup, (101,)),
        (client.restore_server, (WEB, 101)),
    ]:
        error = raised(AuthenticationFailed, call, *args)
        assert error.status_code == 401 and "Invalid token." in str(error)
    assert [r.authorized for r in sim.requests] == [False] * 5  # create stopped at its listing
    assert sim.backup(101) is not None and sim.restores == []


def test_the_right_token_is_sent_as_bearer_from_a_secret(
    sim: Simulator, connect: Callable[..., BackupsClient]
) -> None:
    client = connect(sim, token=Secret(TOKEN))
    assert client.list_backups().count == SEEDED
    assert sim.requests[0].authorized
    with pytest.raises(ValueError, match="empty"):
        BackupsClient(sim.base_url, Secret(""))


def test_a_token_echoed_by_the_provider_is_redacted(sim: Simulator, client: BackupsClient) -> None:
    sim.inject(method="GET", status=401, body={"detail": f"Token {TOKEN} is revoked."})
    error = raised(AuthenticationFailed, client.list_backups)
    assert "Token ********** is revoked." in str(error)
    sim.inject(method="DELETE", status=400, body={"detail": f"bad Bearer {TOKEN}"})
    error = raised(Rejected, client.delete_backup, 101)
    assert "bad Bearer **********" in str(error)


def test_the_client_repr_hides_the_token(sim: Simulator, client: BackupsClient) -> None:
    for text in (repr(client), str(client)):
        assert TOKEN not in text and sim.base_url in text


# -- retries of idempotent reads ----------------------------------------------------------------


@pytest.mark.parametrize("status", [502, 503, 504])
def test_get_retries_gateway_errors(
    sim: Simulator, connect: Callable[..., BackupsClient], status: int
) -> None:
    sleeps = Sleeps()
    sim.inject(method="GET", status=status, count=2)
    listing = connect(sim, sleep=sleeps, backoff_base=1.0, backoff_cap=1.5).list_backups()
    assert listing.count == SEEDED
    assert [r.status for r in sim.requests] == [status, status, 200]
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 1.0 and 0 <= sleeps[1] <= 1.5  # full jitter under base * 2**n, capped


def test_get_honours_retry_after_on_429(
    sim: Simulator, connect: Callable[..., BackupsClient]
) -> None:
    sleeps = Sleeps()
    sim.inject(method="GET", status=429, headers={"Retry-After": "3"})
    sim.inject(method="GET", status=429, headers={"Retry-After": "1.5"})
    when_text = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    sim.inject(method="GET", status=503, headers={"Retry-After": when_text})
    assert connect(sim, sleep=sleeps).list_backups().count == SEEDED
    assert len(sleeps) == 3
    assert 3.0 <= sleeps[0] <= 3.1 and 1.5 <= sleeps[1] <= 1.6
    assert 17.0 <= sleeps[2] <= 20.1  # an HTTP date counts from now
    assert [r.status for r in sim.requests] == [429, 429, 503, 200]


def test_a_retry_after_beyond_the_limit_gives_up_at_once(
    sim: Simulator, connect: Callable[..., BackupsClient]
) -> None:
    sleeps = Sleeps()
    sim.inject(method="GET", status=429, headers={"Retry-After": "120"})
    error = raised(ProviderUnavailable, connect(sim, sleep=sleeps).list_backups)
    assert error.status_code == 429
    assert "rate limiting" in str(error) and "wait 120 s" in str(error)
    assert error.retry_after == 120
    assert sleeps == [] and len(sim.requests) == 1


@pytest.mark.parametrize(("status", "words"), [(503, "HTTP 503"), (429, "rate limiting")])
def test_get_gives_up_after_max_retries(
    sim: Simulator, connect: Callable[..., BackupsClient], status: int, words: str
) -> None:
    sleeps = Sleeps()
    sim.inject(method="GET", status=status, count=10)
    error = raised(ProviderUnavailable, connect(sim, sleep=sleeps, max_retries=3).list_backups)
    assert error.status_code == status
    assert words in str(error) and "(4 attempts)" in str(error)
    assert len(sim.requests) == 4 and len(sleeps) == 3


def test_get_retries_a_read_timeout(sim: Simulator, connect: Callable[..., BackupsClient]) -> None:
    sleeps = Sleeps()
    sim.inject(method="GET", hang=HANG)
    listing = connect(sim, read_timeout=SHORT, sleep=sleeps).list_backups(server_id=WEB)
    assert listing.count == 9 and len(sleeps) == 1
    assert [r.status for r in sim.api_calls("GET")] == [0, 200]  # 0: the first one lost its client


def test_get_gives_up_after_timeouts(sim: Simulator, connect: Callable[..., BackupsClient]) -> None:
    sim.inject(method="GET", hang=HANG, count=2)
    client = connect(sim, read_timeout=SHORT, max_retries=1)
    error = raised(ProviderUnavailable, client.list_backups)
    assert error.status_code is None
    assert "could not be reached" in str(error) and "timed out" in str(error)
    assert len(sim.api_calls("GET")) == 2


def test_get_retries_a_refused_connection(
    make_sim: Callable[..., Simulator], connect: Callable[..., BackupsClient]
) -> None:
    sim = make_sim()
    port = int(sim.base_url.split(":")[2].split("/")[0])
    sim.stop()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            sim.start("127.0.0.1", port)  # the provider comes back after two refusals

    assert connect(sim, sleep=sleep).list_backups().count == SEEDED
    assert len(sleeps) == 2 and len(sim.requests) == 1


def test_an_unreachable_provider_is_unavailable(
    make_sim: Callable[..., Simulator], connect: Callable[..., BackupsClient]
) -> None:
    sim = make_sim()
    sim.stop()
    sleeps = Sleeps()
    error = raised(ProviderUnavailable, connect(sim, sleep=sleeps, max_retries=2).list_backups)
    assert "connection failed" in str(error) and "(3 attempts)" in str(error)
    assert len(sleeps) == 2
    raised(ProviderUnavailable, connect(sim, max_retries=0).create_backup, WEB)


# -- random faults (FaultConfig) -----------------------------------------------------------------


def test_random_failures_are_retried_through(
    make_sim: Callable[..., Simulator], connect: Callable[..., BackupsClient]
) -> None:
    faults = FaultConfig(failure_rate=0.5, failure_statuses=(429, 502, 503), retry_after=0, seed=11)
    sim = make_sim(faults=faults)
    sleeps = Sleeps()
    client = connect(sim, sleep=sleeps, max_retries=20)
    for _ in range(5):
        assert client.list_backups(server_id=WEB).count == 9
    statuses = [r.status for r in sim.requests]
    assert statuses.count(200) == 5 and len(statuses) > 5  # some failed and were retried
    assert len(sleeps) == len(statuses) - 5


def test_a_failure_rate_of_one_makes_the_provider_unavailable(
    make_sim: Callable[..., Simulator], connect: Callable[..., BackupsClient]
) -> None:
    sim = make_sim(faults=FaultConfig(failure_rate=1.0, failure_statuses=(500,)))
    error = raised(ProviderUnavailable, connect(sim).create_backup, WEB)
    assert error.status_code == 500 and "Simulated Internal Server Error." in str(error)
    assert sim.api_calls("POST") == []  # its first listing failed: nothing was attempted


def test_latency_within_the_timeout_is_fine_beyond_it_is_a_timeout(
    make_sim: Callable[..., Simulator], connect: Callable[..., BackupsClient]
) -> None:
    sim = make_sim(faults=FaultConfig(latency=0.05))
    client = connect(sim, read_timeout=SHORT, max_retries=1)
    started = time.monotonic()
    assert client.list_backups().count == SEEDED
    assert time.monotonic() - started >= 0.05
    sim.faults.latency = HANG
    error = raised(ProviderUnavailable, client.list_backups)
    assert "timed out" in str(error)
    assert len(sim.api_calls("GET")) == 3


def test_timeout_rate_hangs_are_retried_then_given_up(
    make_sim: Callable[..., Simulator], connect: Callable[..., BackupsClient]
) -> None:
    sim = make_sim(faults=FaultConfig(timeout_rate=1.0, hang_seconds=HANG))
    error = raised(
        ProviderUnavailable, connect(sim, read_timeout=SHORT, max_retries=1).list_backups
    )
    assert "timed out" in str(error) and len(sim.api_calls("GET")) == 2


def test_a_backup_that_fails_is_seen_as_failed(
    make_sim: Callable[..., Simulator], connect: Callable[..., BackupsClient]
) -> None:
    sim = make_sim(complete_after=0.05, faults=FaultConfig(fail_rate=1.0))
    client = connect(sim)
    backup = client.create_backup(DB, description="doomed")
    assert backup.phase is Phase.RUNNING
    wait_until(lambda: client.find_backup(backup.id, server_id=DB).phase is not Phase.RUNNING)
    failed = client.find_backup(backup.id, server_id=DB)
    assert (failed.status, failed.phase, failed.size_mb) == ("failed", Phase.FAILED, None)
    # A finished (failed) backup can be deleted.
    assert client.delete_backup(backup.id) is DeleteOutcome.DELETED


def test_a_backup_that_completes_gets_a_size(
    make_sim: Callable[..., Simulator], connect: Callable[..., BackupsClient]
) -> None:
    sim = make_sim(complete_after=0.05)
    client = connect(sim)
    backup = client.create_backup(CACHE)
    wait_until(lambda: client.find_backup(backup.id, server_id=CACHE).phase is Phase.COMPLETED)
    done = client.find_backup(backup.id, server_id=CACHE)
    assert done.size_mb is not None and done.size_mb > 0 and done.expires_at is None


def test_a_backup_that_vanishes_is_not_found(
    make_sim: Callable[..., Simulator], connect: Callable[..., BackupsClient]
) -> None:
    sim = make_sim(complete_after=0.05, faults=FaultConfig(vanish_rate=1.0))
    client = connect(sim)
    backup = client.create_backup(DB)
    wait_until(lambda: sim.backup(backup.id) is None)
    error = raised(NotFound, client.find_backup, backup.id, server_id=DB)
    assert error.kind == "backup"
    raised(NotFound, client.delete_backup, backup.id)
    assert client.list_backups(server_id=DB).count == 7


def test_a_wrong_base_url_is_named_as_such_not_as_a_missing_backup(
    sim: Simulator, connect: Callable[..., BackupsClient]
) -> None:
    wrong = connect(sim.base_url.replace("/api/v1", "/api/v9"))
    error = raised(UnexpectedResponse, wrong.list_backups)
    assert "VPS_API_URL" in str(error) and error.status_code == 404


def test_an_unsupported_url_scheme_is_a_typed_error(connect: Callable[..., BackupsClient]) -> None:
    odd = connect("ftp://127.0.0.1:1/api/v1", max_retries=0)
    raised(ProviderUnavailable, odd.list_backups)
    raised(OutcomeUnknown, odd.restore_server, 12345, 101)
