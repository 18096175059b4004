"""The VPS Backups API simulator, exercised over real loopback HTTP with plain httpx."""

from __future__ import annotations

import argparse
import calendar
import functools
import itertools
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from bot.sandbox.vps import FaultConfig, Simulator, add_arguments, run_from_args

TOKEN = "sim-test-token-5f2a9c"
WRONG_TOKEN = "not-the-right-one-93b1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WEB, DB, CACHE = 12345, 12346, 12347
SEEDED = 7 * 3 + 2  # a week of daily backups for three servers, two manual ones for the first
BACKUP_KEYS = {
    "id",
    "server",
    "backup_type",
    "status",
    "size_mb",
    "created_at",
    "expires_at",
    "description",
}
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what the warning is about
BUSY = {"detail": "A backup or restore is already in progress for this server."}


@pytest.fixture
def make_sim(make_simulator: Callable[..., Simulator]) -> Callable[..., Simulator]:
    return functools.partial(make_simulator, TOKEN, complete_after=0.3)


@pytest.fixture
def sim(make_sim: Callable[..., Simulator]) -> Simulator:
    return make_sim(faults=FaultConfig(seed=7))


def client_for(sim: Simulator, timeout: float | httpx.Timeout = 5.0) -> httpx.Client:
    return httpx.Client(base_url=sim.base_url, headers=AUTH, timeout=timeout)


@pytest.fixture
def client(sim: Simulator) -> Iterator[httpx.Client]:
    with client_for(sim) as c:
        yield c


def wait_until(predicate: Callable[[], Any], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def one_month_after(moment: datetime) -> datetime:
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return moment.replace(
        year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1])
    )


def listed(c: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = c.get("/backups/", params=params)
    assert response.status_code == 200, response.text
    return response.json()["results"]


# -- authentication ---------------------------------------------------------------------------


def test_missing_token_is_401_and_changes_nothing(sim: Simulator) -> None:
    with httpx.Client(base_url=sim.base_url, timeout=5) as anonymous:
        listing = anonymous.get("/backups/")
        created = anonymous.post("/backups/", json={"server_id": WEB})
        deleted = anonymous.delete("/backups/101/")
        unknown = anonymous.get("/nowhere/")
    for response in (listing, created, deleted, unknown):
        assert response.status_code == 401
        assert response.json() == {"detail": "Authentication credentials were not provided."}
        assert response.headers["content-type"] == "application/json"
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert sim.backup(101) is not None
    assert [b for b in range(1000, 1010) if sim.backup(b)] == []


def test_wrong_token_is_401_and_changes_nothing(sim: Simulator) -> None:
    headers = {"Authorization": f"Bearer {WRONG_TOKEN}"}
    with httpx.Client(base_url=sim.base_url, headers=headers, timeout=5) as intruder:
        responses = [
            intruder.get("/backups/"),
            intruder.post("/backups/", json={"server_id": WEB}),
            intruder.delete("/backups/101/"),
            intruder.post(f"/servers/{WEB}/restore/", json={"backup_id": 101}),
        ]
    assert [r.status_code for r in responses] == [401] * 4
    assert all(r.json() == {"detail": "Invalid token."} for r in responses)
    assert sim.backup(101) is not None
    assert sim.backup(1000) is None
    assert sim.restores == []
    assert [r.authorized for r in sim.requests] == [False] * 4


def test_a_bad_token_is_401_whatever_the_random_faults(
    make_sim: Callable[..., Simulator],
) -> None:
    sim = make_sim(faults=FaultConfig(failure_rate=1.0, failure_statuses=(503, 429, 500), seed=1))
    wrong = {"Authorization": f"Bearer {WRONG_TOKEN}"}
    with httpx.Client(base_url=sim.base_url, timeout=5) as anonymous:
        statuses = [anonymous.get("/backups/").status_code for _ in range(5)]
        statuses += [
            anonymous.post("/backups/", json={"server_id": WEB}, headers=wrong).status_code
        ]
        sim.faults = FaultConfig(timeout_rate=1.0, hang_seconds=30)
        started = time.monotonic()
        statuses += [anonymous.get("/backups/", headers=wrong).status_code for _ in range(3)]
        assert time.monotonic() - started < 3  # no hang either
        with (
            client_for(sim, timeout=httpx.Timeout(5.0, read=0.2)) as c,
            pytest.raises(httpx.ReadTimeout),
        ):
            c.get("/backups/")  # the right token still meets the faults
        # A scripted fault still comes first, whoever asks.
        sim.inject(status=503)
        assert anonymous.get("/backups/").status_code == 503
    assert statuses == [401] * 9
    assert sim.backup(1000) is None


def test_other_auth_schemes_count_as_missing(sim: Simulator) -> None:
    response = httpx.get(
        f"{sim.base_url}/backups/", headers={"Authorization": f"Token {TOKEN}"}, timeout=5
    )
    assert response.status_code == 401
    assert response.json()["detail"] == "Authentication credentials were not provided."


# -- listing ------------------------------------------------------------------------------------


def test_list_has_the_contract_shape(client: httpx.Client) -> None:
    response = client.get("/backups/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    page = response.json()
    assert set(page) == {"count", "results"}  # no next/previous without pagination
    assert page["count"] == len(page["results"]) == SEEDED
    names = {WEB: "web-server-01", DB: "db-server-01", CACHE: "cache-01"}
    for backup in page["results"]:
        assert set(backup) == BACKUP_KEYS
        assert backup["server"] == {
            "id": backup["server"]["id"],
            "name": names[backup["server"]["id"]],
        }
        assert backup["status"] == "completed"
        assert isinstance(backup["size_mb"], int) and 1000 <= backup["size_mb"] <= 9000
        assert ISO.fullmatch(backup["created_at"])
        assert backup["id"] < 1000
    assert len({b["size_mb"] for b in page["results"]}) > 5  # sizes vary


def test_list_filters(client: httpx.Client) -> None:
    db = listed(client, server_id=DB)
    assert len(db) == 7 and {b["server"]["id"] for b in db} == {DB}
    manual = listed(client, backup_type="manual")
    assert len(manual) == 2 and {b["backup_type"] for b in manual} == {"manual"}
    automatic_web = listed(client, server_id=WEB, backup_type="automatic")
    assert len(automatic_web) == 7
    assert {(b["server"]["id"], b["backup_type"]) for b in automatic_web} == {(WEB, "automatic")}
    assert listed(client, server_id=DB, backup_type="manual") == []
    unknown = client.get("/backups/", params={"server_id": 99999})
    assert unknown.status_code == 200 and unknown.json() == {"count": 0, "results": []}
    # An empty value is no filter, as django-filter treats it.
    assert len(listed(client, server_id="")) == SEEDED


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"server_id": "abc"}, {"server_id": ["A valid integer is required."]}),
        ({"server_id": "1.5"}, {"server_id": ["A valid integer is required."]}),
        (
            {"backup_type": "weekly"},
            {"backup_type": ["Select a valid choice. weekly is not one of the available choices."]},
        ),
    ],
)
def test_list_rejects_bad_filters(
    client: httpx.Client, params: dict[str, str], expected: dict[str, Any]
) -> None:
    response = client.get("/backups/", params=params)
    assert response.status_code == 400
    assert response.json() == expected


def test_list_is_not_sorted_by_date_but_stable(client: httpx.Client) -> None:
    first = listed(client)
    created = [b["created_at"] for b in first]
    assert created != sorted(created)
    assert created != sorted(created, reverse=True)
    assert [b["id"] for b in listed(client)] == [b["id"] for b in first]


def test_automatic_backups_expire_a_calendar_month_later_manual_never(
    client: httpx.Client,
) -> None:
    for backup in listed(client):
        created = parse_time(backup["created_at"])
        if backup["backup_type"] == "automatic":
            assert parse_time(backup["expires_at"]) == one_month_after(created)
            assert backup["created_at"].endswith("T03:00:00Z")
            assert backup["description"] == "Automatic daily backup"
        else:
            assert backup["expires_at"] is None
            assert backup["server"]["id"] == WEB
            assert backup["description"]
    descriptions = {b["description"] for b in listed(client, backup_type="manual")}
    assert "Pre-update backup" in descriptions


@pytest.mark.parametrize(
    ("created", "expires"),
    [
        ("2027-01-16T03:00:00Z", "2027-02-16T03:00:00Z"),  # the original's example, shifted
        ("2027-01-31T03:00:00Z", "2027-02-28T03:00:00Z"),
        ("2028-01-31T03:00:00Z", "2028-02-29T03:00:00Z"),  # a leap year
        ("2027-03-31T10:30:00Z", "2027-04-30T10:30:00Z"),
        ("2027-12-15T03:00:00Z", "2028-01-15T03:00:00Z"),
        ("2027-06-30T03:00:00Z", "2027-07-30T03:00:00Z"),
    ],
)
def test_automatic_expiry_is_one_calendar_month(created: str, expires: str) -> None:
    sim = Simulator(TOKEN)
    added = sim.add_backup(WEB, backup_type="automatic", created_at=parse_time(created))
    assert (added["created_at"], added["expires_at"]) == (created, expires)


def test_expired_automatic_backups_disappear(make_sim: Callable[..., Simulator]) -> None:
    sim = make_sim()
    now = datetime.now(UTC)
    old = sim.add_backup(CACHE, backup_type="automatic", created_at=now - timedelta(days=40))
    assert parse_time(old["expires_at"]) < now
    soon = sim.add_backup(CACHE, backup_type="automatic", expires_at=now + timedelta(seconds=0.4))
    kept = sim.add_backup(CACHE, created_at=now - timedelta(days=400))  # manual: never expires
    with client_for(sim) as c:
        ids = {b["id"] for b in listed(c, server_id=CACHE)}
        assert old["id"] not in ids and {soon["id"], kept["id"]} <= ids
        assert len(ids) == 7 + 2
        assert c.delete(f"/backups/{old['id']}/").status_code == 404
        time.sleep(0.5)
        ids = {b["id"] for b in listed(c, server_id=CACHE)}
        assert soon["id"] not in ids and kept["id"] in ids and len(ids) == 7 + 1
    assert sim.backup(old["id"]) is None and sim.backup(soon["id"]) is None


def test_a_long_history_keeps_only_the_unexpired_month(make_sim: Callable[..., Simulator]) -> None:
    sim = make_sim(history_days=40)
    now = datetime.now(UTC)
    with client_for(sim) as c:
        automatic = listed(c, server_id=DB, backup_type="automatic")
    assert 27 <= len(automatic) < 40
    assert all(parse_time(b["expires_at"]) > now for b in automatic)
    created = sorted(parse_time(b["created_at"]) for b in automatic)
    assert all(b - a == timedelta(days=1) for a, b in itertools.pairwise(created))
    assert one_month_after(created[0] - timedelta(days=1)) <= now  # the day before has expired


def test_seed_history_is_one_backup_a_day_at_three(make_sim: Callable[..., Simulator]) -> None:
    sim = make_sim(seed_data=False)
    assert sim.servers == {}
    sim.add_server(1, "alpha")
    sim.add_server(2, "beta")
    now = datetime.now(UTC).replace(hour=2, minute=0, second=0, microsecond=0)
    sim.seed_history(3, now=now)  # before today's 03:00: yesterday's is the latest
    with client_for(sim) as c:
        alpha = listed(c, server_id=1)
        beta = listed(c, server_id=2)
    three = now.replace(hour=3)
    assert sorted(b["created_at"] for b in alpha if b["backup_type"] == "automatic") == [
        (three - timedelta(days=day)).strftime("%Y-%m-%dT%H:%M:%SZ") for day in (3, 2, 1)
    ]
    assert len(beta) == 3 and {b["backup_type"] for b in beta} == {"automatic"}
    manual = [b for b in alpha if b["backup_type"] == "manual"]
    assert len(manual) == 2 and all(b["expires_at"] is None for b in manual)
    first = min(b["id"] for b in alpha + beta)
    assert {b["id"] for b in alpha + beta} == set(range(first, first + 8))
    # Ids do not follow creation time; the first id is the first server's oldest backup.
    oldest = min(alpha, key=lambda b: b["created_at"])
    assert oldest["id"] == first
    for backups in (alpha, beta):
        newest = max(backups, key=lambda b: b["created_at"])
        assert newest["id"] != max(b["id"] for b in backups)


def layout(sim: Simulator) -> dict[int, tuple[int, str, str]]:
    with client_for(sim) as c:
        return {b["id"]: (b["server"]["id"], b["backup_type"], b["created_at"]) for b in listed(c)}


def test_seeded_ids_are_not_in_creation_order(make_sim: Callable[..., Simulator]) -> None:
    seeded = {seed: layout(make_sim(faults=FaultConfig(seed=seed))) for seed in (1, 2)}
    assert layout(make_sim(faults=FaultConfig(seed=1))) == seeded[1]  # reproducible
    assert seeded[1] != seeded[2]
    assert set(seeded[1].values()) == set(seeded[2].values())  # the same backups
    for ids in (*seeded.values(), layout(make_sim())):
        assert sorted(ids) == list(range(101, 101 + SEEDED))
        by_id = [ids[i][2] for i in sorted(ids)]
        assert by_id != sorted(by_id)
        assert ids[101][:2] == (WEB, "automatic")
        assert ids[101][2] == min(c for server, _, c in ids.values() if server == WEB)
        for server in (WEB, DB, CACHE):
            mine = {i: created for i, (owner, _, created) in ids.items() if owner == server}
            newest = max(mine.values())
            assert mine[max(mine)] < newest, f"server {server}: highest id is the newest"


def test_no_history_still_seeds_the_manual_backups(make_sim: Callable[..., Simulator]) -> None:
    with client_for(make_sim(history_days=0)) as c:
        backups = listed(c)
    assert len(backups) == 2
    assert {(b["server"]["id"], b["backup_type"]) for b in backups} == {(WEB, "manual")}
    assert {b["id"] for b in backups} == {101, 102}
    assert Simulator(TOKEN, seed_data=False).backup(101) is None


def test_same_seed_same_sizes() -> None:
    sizes = [
        [Simulator(TOKEN, faults=FaultConfig(seed=11)).backup(i)["size_mb"] for i in (101, 110)]
        for _ in range(2)
    ]
    assert sizes[0] == sizes[1]


# -- creating -----------------------------------------------------------------------------------


def test_create_answers_201_then_completes_with_a_size(
    sim: Simulator, client: httpx.Client
) -> None:
    response = client.post("/backups/", json={"server_id": WEB, "description": "Pre-deploy"})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == BACKUP_KEYS | {"message"}
    assert body["id"] >= 1000
    assert body["server"] == {"id": WEB, "name": "web-server-01"}
    assert (body["backup_type"], body["status"], body["size_mb"]) == ("manual", "in_progress", None)
    assert body["expires_at"] is None and body["description"] == "Pre-deploy"
    assert ISO.fullmatch(body["created_at"])
    assert abs(parse_time(body["created_at"]) - datetime.now(UTC)) < timedelta(seconds=5)
    assert body["message"] == (
        "Backup is being created. This may take several minutes depending on server size."
    )
    row = next(b for b in listed(client, server_id=WEB) if b["id"] == body["id"])
    assert (row["status"], row["size_mb"]) == ("in_progress", None)
    assert "message" not in row
    wait_until(lambda: sim.backup(body["id"])["status"] != "in_progress")
    row = next(b for b in listed(client, server_id=WEB) if b["id"] == body["id"])
    assert row["status"] == "completed"
    assert isinstance(row["size_mb"], int) and 1000 <= row["size_mb"] <= 9000
    without = client.post("/backups/", json={"server_id": DB}).json()
    assert without["description"] == "" and without["id"] == body["id"] + 1


def test_create_accepts_a_numeric_string_like_drf(client: httpx.Client) -> None:
    response = client.post("/backups/", json={"server_id": str(DB)})
    assert response.status_code == 201
    assert response.json()["server"]["id"] == DB


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"content": b"not json"}, None),
        (
            {"json": [WEB]},
            {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]},
        ),
        ({"json": {}}, {"server_id": ["This field is required."]}),
        ({"content": b""}, {"server_id": ["This field is required."]}),
        ({"json": {"server_id": "abc"}}, {"server_id": ["A valid integer is required."]}),
        ({"json": {"server_id": True}}, {"server_id": ["A valid integer is required."]}),
        ({"json": {"server_id": 12345.5}}, {"server_id": ["A valid integer is required."]}),
        ({"json": {"server_id": None}}, {"server_id": ["This field may not be null."]}),
        ({"json": {"server_id": WEB, "description": 5}}, {"description": ["Not a valid string."]}),
        (
            {"json": {"server_id": WEB, "description": "x" * 256}},
            {"description": ["Ensure this field has no more than 255 characters."]},
        ),
    ],
    ids=[
        "not-json",
        "list",
        "empty-object",
        "empty-body",
        "word",
        "bool",
        "float",
        "null",
        "description-int",
        "description-long",
    ],
)
def test_create_rejects_bad_bodies(
    sim: Simulator, client: httpx.Client, kwargs: dict[str, Any], expected: dict[str, Any] | None
) -> None:
    response = client.post("/backups/", headers={"Content-Type": "application/json"}, **kwargs)
    assert response.status_code == 400
    if expected is None:
        assert response.json()["detail"].startswith("JSON parse error")
    else:
        assert response.json() == expected
    assert sim.backup(1000) is None


def test_create_for_an_unknown_server_is_404(sim: Simulator, client: httpx.Client) -> None:
    response = client.post("/backups/", json={"server_id": 99999})
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
    assert sim.backup(1000) is None


def test_busy_server_is_409_until_its_backup_ends(make_sim: Callable[..., Simulator]) -> None:
    sim = make_sim(complete_after=60)
    with client_for(sim) as c:
        first = c.post("/backups/", json={"server_id": WEB}).json()
        again = c.post("/backups/", json={"server_id": WEB})
        assert again.status_code == 409 and again.json() == BUSY
        restore = c.post(f"/servers/{WEB}/restore/", json={"backup_id": 101})
        assert restore.status_code == 409 and restore.json() == BUSY
        assert c.post("/backups/", json={"server_id": DB}).status_code == 201
        in_progress = c.delete(f"/backups/{first['id']}/")
        assert in_progress.status_code == 409
        assert in_progress.json() == {
            "detail": "Backup is still in progress and cannot be deleted."
        }
        sim.finish(first["id"])
        assert c.post("/backups/", json={"server_id": WEB}).status_code == 201
        assert c.delete(f"/backups/{first['id']}/").status_code == 204
    assert sim.restores == []


# -- deleting -----------------------------------------------------------------------------------


def test_delete_answers_204_then_404(sim: Simulator, client: httpx.Client) -> None:
    response = client.delete("/backups/101/")
    assert response.status_code == 204
    assert response.content == b""
    assert "content-type" not in response.headers
    assert sim.backup(101) is None
    assert 101 not in {b["id"] for b in listed(client)}
    assert len(listed(client)) == SEEDED - 1
    again = client.delete("/backups/101/")
    assert again.status_code == 404 and again.json() == {"detail": "Not found."}
    assert client.delete("/backups/abc/").status_code == 404


# -- restoring ----------------------------------------------------------------------------------


def test_restore_answers_202_and_the_server_is_busy_meanwhile(
    sim: Simulator, client: httpx.Client
) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    response = client.post(f"/servers/{WEB}/restore/", json={"backup_id": 101})
    assert response.status_code == 202
    assert response.json() == {
        "server": {"id": WEB, "name": "web-server-01"},
        "backup_id": 101,
        "status": "in_progress",
        "message": "Server restore started.",
    }
    [restore] = sim.restores
    assert (restore["server_id"], restore["backup_id"]) == (WEB, 101)
    assert restore["at"].tzinfo is not None and restore["at"] >= before
    assert client.post(f"/servers/{WEB}/restore/", json={"backup_id": 101}).json() == BUSY
    busy = client.post("/backups/", json={"server_id": WEB})
    assert busy.status_code == 409
    time.sleep(0.35)  # restore_after defaults to complete_after (0.3 s)
    assert client.post("/backups/", json={"server_id": WEB}).status_code == 201
    assert len(sim.restores) == 1


RestoreCase = Callable[[Simulator], tuple[int, Any, int, dict[str, Any] | None]]
RESTORE_ERRORS: dict[str, RestoreCase] = {
    "unknown-server": lambda s: (99999, {"backup_id": 101}, 404, {"detail": "Not found."}),
    "missing": lambda s: (WEB, {}, 400, {"backup_id": ["This field is required."]}),
    "not-int": lambda s: (
        WEB,
        {"backup_id": "x"},
        400,
        {"backup_id": ["A valid integer is required."]},
    ),
    "not-json": lambda s: (WEB, b"{oops", 400, None),
    "unknown-backup": lambda s: (WEB, {"backup_id": 4242}, 404, {"detail": "Backup not found."}),
    "other-server": lambda s: (
        DB,
        {"backup_id": (b := s.add_backup(WEB)["id"])},
        400,
        {"backup_id": [f"Backup {b} does not belong to server {DB}."]},
    ),
    "not-completed": lambda s: (
        DB,
        {"backup_id": (b := s.add_backup(DB, status="failed")["id"])},
        400,
        {"backup_id": [f"Backup {b} is not completed."]},
    ),
}


@pytest.mark.parametrize("case", RESTORE_ERRORS.values(), ids=RESTORE_ERRORS.keys())
def test_restore_errors(sim: Simulator, client: httpx.Client, case: RestoreCase) -> None:
    server_id, body, status, expected = case(sim)
    if isinstance(body, bytes):
        response = client.post(f"/servers/{server_id}/restore/", content=body)
    else:
        response = client.post(f"/servers/{server_id}/restore/", json=body)
    assert response.status_code == status
    if expected is None:
        assert response.json()["detail"].startswith("JSON parse error")
    else:
        assert response.json() == expected
    assert sim.restores == []


# -- routing ------------------------------------------------------------------------------------


def test_unknown_paths_404_and_wrong_methods_405(client: httpx.Client) -> None:
    for path in ("/nowhere/", "/backups", "/backups/101/extra/", "/servers/abc/restore/"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json() == {"detail": "Not found."}
    put = client.put("/backups/", json={})
    assert put.status_code == 405
    assert put.json() == {"detail": 'Method "PUT" not allowed.'}
    assert put.headers["allow"] == "GET, POST"
    get_one = client.get("/backups/101/")  # the contract has no GET of one backup
    assert get_one.status_code == 405 and get_one.headers["allow"] == "DELETE"
    get_restore = client.get(f"/servers/{WEB}/restore/")
    assert get_restore.status_code == 405 and get_restore.headers["allow"] == "POST"


# -- random faults ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 429])
def test_failure_rate_answers_the_status_without_processing(
    make_sim: Callable[..., Simulator], status: int
) -> None:
    sim = make_sim(faults=FaultConfig(failure_rate=1.0, failure_statuses=(status,), retry_after=2))
    with client_for(sim) as c:
        response = c.post("/backups/", json={"server_id": WEB})
        assert response.status_code == status
        reason = {
            500: "Internal Server Error",
            503: "Service Unavailable",
            429: "Too Many Requests",
        }
        assert response.json() == {"detail": f"Simulated {reason[status]}."}
        if status in (429, 503):
            assert response.headers["retry-after"] == "2"
        else:
            assert "retry-after" not in response.headers
        sim.faults = FaultConfig()
        assert len(listed(c, server_id=WEB, backup_type="manual")) == 2  # nothing was created


@pytest.mark.parametrize(
    ("configured", "sent"), [(0.5, "1"), (1.2, "2"), (2.0, "2"), (0.001, "1"), (0, "0")]
)
def test_retry_after_is_whole_seconds_rounded_up(
    make_sim: Callable[..., Simulator], configured: float, sent: str
) -> None:
    faults = FaultConfig(failure_rate=1.0, failure_statuses=(503, 429), retry_after=configured)
    sim = make_sim(faults=faults)
    with client_for(sim) as c:
        responses = [c.get("/backups/") for _ in range(4)]
    assert {r.headers["retry-after"] for r in responses} == {sent}


def test_failure_rate_is_reproducible_with_a_seed(make_sim: Callable[..., Simulator]) -> None:
    def statuses() -> list[int]:
        sim = make_sim(faults=FaultConfig(failure_rate=0.5, seed=3))
        with client_for(sim) as c:
            return [c.get("/backups/").status_code for _ in range(12)]

    first = statuses()
    assert first == statuses()
    assert 200 in first and set(first) - {200}


def test_timeout_mode_before_hangs_before_processing(make_sim: Callable[..., Simulator]) -> None:
    sim = make_sim(faults=FaultConfig(timeout_rate=1.0, hang_seconds=0.6, timeout_mode="before"))
    with (
        client_for(sim, timeout=httpx.Timeout(5.0, read=0.2)) as c,
        pytest.raises(httpx.ReadTimeout),
    ):
        c.post("/backups/", json={"server_id": WEB})
    assert sim.backup(1000) is None  # still hanging: not processed yet
    wait_until(lambda: sim.backup(1000) is not None)  # then processed all the same


def test_timeout_mode_after_processes_then_hangs(make_sim: Callable[..., Simulator]) -> None:
    sim = make_sim(faults=FaultConfig(timeout_rate=1.0, hang_seconds=0.6, timeout_mode="after"))
    with (
        client_for(sim, timeout=httpx.Timeout(5.0, read=0.2)) as c,
        pytest.raises(httpx.ReadTimeout),
    ):
        c.post("/backups/", json={"server_id": WEB})
    assert sim.backup(1000) is not None  # done while the client still waited
    wait_until(lambda: sim.api_calls("POST")[0].status == 0)  # the answer found nobody


def timeout_sides(sim: Simulator, requests: int) -> list[str]:
    """For each POST that timed out: was the backup made before the client gave up?"""
    sides = []
    with client_for(sim, timeout=httpx.Timeout(5.0, read=0.15)) as c:
        for number in range(requests):
            with pytest.raises(httpx.ReadTimeout):
                c.post("/backups/", json={"server_id": WEB})
            sides.append("after" if sim.backup(1000 + number) is not None else "before")
            wait_until(lambda n=number: sim.backup(1000 + n) is not None)
    return sides


def test_timeout_mode_mixed_hangs_on_either_side(make_sim: Callable[..., Simulator]) -> None:
    assert FaultConfig().timeout_mode == "mixed"
    sim = make_sim(complete_after=0, faults=FaultConfig(timeout_rate=1.0, hang_seconds=0.5, seed=4))
    assert set(timeout_sides(sim, 6)) == {"before", "after"}


def test_latency_delays_every_answer(sim: Simulator, client: httpx.Client) -> None:
    started = time.monotonic()
    client.get("/backups/")
    fast = time.monotonic() - started
    sim.faults.latency = 0.25  # the config is mutable while serving
    started = time.monotonic()
    assert client.get("/backups/").status_code == 200
    assert time.monotonic() - started >= 0.25 > fast


def test_fail_rate_makes_backups_fail(make_sim: Callable[..., Simulator]) -> None:
    sim = make_sim(faults=FaultConfig(fail_rate=1.0))
    with client_for(sim) as c:
        backup_id = c.post("/backups/", json={"server_id": DB}).json()["id"]
        wait_until(lambda: sim.backup(backup_id)["status"] != "in_progress")
        [row] = [b for b in listed(c, server_id=DB) if b["id"] == backup_id]
    assert row["status"] == "failed"
    assert row["size_mb"] is None
    assert row["error"] == "Disk snapshot failed"
    assert set(row) == BACKUP_KEYS | {"error"}


def test_vanish_rate_makes_backups_disappear(make_sim: Callable[..., Simulator]) -> None:
    sim = make_sim(faults=FaultConfig(vanish_rate=1.0))
    with client_for(sim) as c:
        backup_id = c.post("/backups/", json={"server_id": DB}).json()["id"]
        assert backup_id in {b["id"] for b in listed(c, server_id=DB)}
        time.sleep(0.35)
        assert backup_id not in {b["id"] for b in listed(c, server_id=DB)}
        assert len(listed(c, server_id=DB)) == 7
        assert c.delete(f"/backups/{backup_id}/").status_code == 404
    assert sim.backup(backup_id) is None


# -- scripted faults ----------------------------------------------------------------------------


def test_inject_status_is_one_shot_and_not_processed(sim: Simulator, client: httpx.Client) -> None:
    sim.inject(method="POST", path="/backups/", status=503, headers={"Retry-After": "7"})
    response = client.post("/backups/", json={"server_id": WEB})
    assert response.status_code == 503
    assert response.json() == {"detail": "Service Unavailable"}
    assert response.headers["retry-after"] == "7"
    assert sim.backup(1000) is None
    assert client.post("/backups/", json={"server_id": WEB}).status_code == 201


def test_inject_malformed_body(sim: Simulator, client: httpx.Client) -> None:
    sim.inject(status=200, body="<html>oops</html>")
    response = client.get("/backups/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text == "<html>oops</html>"
    with pytest.raises(ValueError):
        response.json()
    sim.inject(status=400, body={"error": "custom"})
    assert client.get("/backups/").json() == {"error": "custom"}


def test_inject_matches_method_and_path_prefix_in_order(
    sim: Simulator, client: httpx.Client
) -> None:
    sim.inject(path="/servers/", status=502, count=2)
    sim.inject(method="DELETE", status=500)
    sim.inject(method="DELETE", status=418)
    assert client.get("/backups/").status_code == 200  # matches neither
    restore = f"/servers/{WEB}/restore/"
    assert client.post(restore, json={"backup_id": 101}).status_code == 502
    assert client.post(restore, json={"backup_id": 101}).status_code == 502
    assert sim.restores == []
    assert client.post(restore, json={"backup_id": 101}).status_code == 202
    assert client.delete("/backups/101/").status_code == 500
    assert client.delete("/backups/101/").status_code == 418
    assert sim.backup(101) is not None
    assert client.delete("/backups/101/").status_code == 204


def test_injected_faults_come_before_random_ones(make_sim: Callable[..., Simulator]) -> None:
    sim = make_sim(faults=FaultConfig(failure_rate=1.0, failure_statuses=(500,)))
    sim.inject(status=418)
    with client_for(sim) as c:
        assert c.get("/backups/").status_code == 418
        assert c.get("/backups/").status_code == 500


def test_inject_corrupt_rows_sit_beside_good_ones(sim: Simulator, client: httpx.Client) -> None:
    sim.inject(method="GET", path="/backups/", corrupt=[{"size_mb": "4 GB"}, {"id": None}])
    rows = listed(client)
    assert len(rows) == SEEDED
    assert rows[0]["size_mb"] == "4 GB" and isinstance(rows[0]["id"], int)
    assert rows[1]["id"] is None and isinstance(rows[1]["size_mb"], int)
    assert all(isinstance(r["id"], int) and isinstance(r["size_mb"], int) for r in rows[2:])
    assert all(isinstance(r["size_mb"], int) for r in listed(client))  # one-shot
    assert sim.backup(101)["size_mb"] != "4 GB"  # the answer, not the state


def test_inject_hang_alone_is_a_slow_answer(sim: Simulator, client: httpx.Client) -> None:
    sim.inject(method="GET", hang=0.3)
    started = time.monotonic()
    assert client.get("/backups/").status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert client.get("/backups/").status_code == 200
    assert time.monotonic() - started < 0.3


def test_inject_hang_processes_after_the_client_gave_up(sim: Simulator) -> None:
    sim.inject(method="POST", hang=0.6)
    with client_for(sim, timeout=httpx.Timeout(5.0, read=0.2)) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.post("/backups/", json={"server_id": WEB})
        assert sim.backup(1000) is None
        wait_until(lambda: sim.backup(1000) is not None)


def test_inject_after_processing_status(sim: Simulator, client: httpx.Client) -> None:
    sim.inject(method="POST", path="/backups/", status=502, after_processing=True)
    response = client.post("/backups/", json={"server_id": WEB, "description": "lost answer"})
    assert response.status_code == 502
    assert response.json() == {"detail": "Bad Gateway"}
    created = sim.backup(1000)  # the server did it, then answered 502
    assert created is not None and created["description"] == "lost answer"
    assert client.post("/backups/", json={"server_id": WEB}).json() == BUSY


def test_inject_after_processing_hang_does_it_and_client_times_out(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.sandbox.vps")
    sim.inject(method="POST", hang=0.5, after_processing=True)
    with client_for(sim, timeout=httpx.Timeout(5.0, read=0.2)) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.post("/backups/", json={"server_id": WEB})
        created = sim.backup(1000)  # done before the hang, while the client still waited
        assert created is not None and created["status"] in ("in_progress", "completed")
    wait_until(lambda: "client went away" in caplog.text)
    [post] = sim.api_calls("POST")
    assert post.status == 0


def test_a_client_closing_cleanly_gets_no_answer_recorded(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.sandbox.vps")
    sim.inject(method="POST", hang=0.3, after_processing=True)
    body = b'{"server_id": 12345}'
    request = (
        b"POST /api/v1/backups/ HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    host, port = httpx.URL(sim.base_url).host, httpx.URL(sim.base_url).port
    with socket.create_connection((host, port)) as raw:
        raw.sendall(request)
        wait_until(lambda: sim.backup(1000) is not None)
    # Closed with a FIN (no reset): the simulator notices before writing, not from a failed write.
    wait_until(lambda: "no answer (201)" in caplog.text)
    assert sim.api_calls("POST")[0].status == 0


def test_stop_does_not_wait_for_a_hanging_request(sim: Simulator) -> None:
    sim.inject(hang=30)
    with (
        client_for(sim, timeout=httpx.Timeout(5.0, read=0.2)) as c,
        pytest.raises(httpx.ReadTimeout),
    ):
        c.get("/backups/")
    started = time.monotonic()
    sim.stop()
    assert time.monotonic() - started < 2


# -- pagination ---------------------------------------------------------------------------------


def test_pagination_when_page_size_is_set(make_sim: Callable[..., Simulator]) -> None:
    sim = make_sim(page_size=5)
    with client_for(sim) as c:
        first = c.get("/backups/").json()
        assert set(first) == {"count", "next", "previous", "results"}
        assert first["count"] == SEEDED and len(first["results"]) == 5
        assert first["previous"] is None
        assert first["next"] == f"{sim.base_url}/backups/?page=2"
        seen, url, pages = [], f"{sim.base_url}/backups/", 0
        while url:
            page = c.get(url).json()
            seen += [b["id"] for b in page["results"]]
            url, pages = page["next"], pages + 1
        assert pages == 5 and len(set(seen)) == SEEDED
        assert page["previous"] == f"{sim.base_url}/backups/?page=4"

        filtered = c.get("/backups/", params={"server_id": WEB, "page": 2}).json()
        assert filtered["count"] == 9
        assert {b["server"]["id"] for b in filtered["results"]} == {WEB}
        assert filtered["next"] is None  # 9 backups, pages of 5
        assert filtered["previous"] == f"{sim.base_url}/backups/?server_id={WEB}"
        second = c.get("/backups/", params={"server_id": WEB}).json()
        assert second["next"] == f"{sim.base_url}/backups/?server_id={WEB}&page=2"

        for bad in ("6", "0", "abc"):
            response = c.get("/backups/", params={"page": bad})
            assert response.status_code == 404
            assert response.json() == {"detail": "Invalid page."}
        empty = c.get("/backups/", params={"server_id": 99999}).json()
        assert empty == {"count": 0, "next": None, "previous": None, "results": []}


# -- the record, the connection, the log ---------------------------------------------------------


def test_requests_are_recorded_in_order(sim: Simulator, client: httpx.Client) -> None:
    client.get("/backups/", params={"server_id": WEB, "backup_type": "manual"})
    client.post("/backups/", json={"server_id": DB, "description": "rec"})
    client.post("/backups/", content=b"plain text")
    httpx.get(f"{sim.base_url}/backups/", timeout=5)
    first, second, third, fourth = sim.requests
    assert (first.method, first.path, first.status) == ("GET", "/api/v1/backups/", 200)
    assert first.query == {"server_id": str(WEB), "backup_type": "manual"}
    assert first.body is None and first.authorized
    assert (second.method, second.status) == ("POST", 201)
    assert second.body == {"server_id": DB, "description": "rec"}
    assert third.body == "plain text" and third.status == 400
    assert (fourth.authorized, fourth.status) == (False, 401)
    assert first.at <= second.at <= third.at <= fourth.at
    assert sim.api_calls("POST", "/backups/") == [second, third]
    assert sim.api_calls(path="/servers/") == []
    assert sim.api_calls("get") == [first, fourth]


def test_the_record_keeps_only_the_newest_requests(make_sim: Callable[..., Simulator]) -> None:
    assert Simulator(TOKEN).max_recorded_requests == 100_000
    sim = make_sim(max_recorded_requests=10)
    with client_for(sim) as c:
        for number in range(25):
            assert c.get("/backups/", params={"server_id": number}).status_code == 200
            assert len(sim.requests) <= 10
    kept = [int(r.query["server_id"]) for r in sim.requests]
    assert kept == list(range(25 - len(kept), 25)) and len(kept) >= 9
    assert all(r.status == 200 for r in sim.requests)
    assert len(sim.api_calls("GET")) == len(kept)
    silent = make_sim(max_recorded_requests=0)
    with client_for(silent) as c:
        c.get("/backups/")
    assert silent.requests == []
    with pytest.raises(ValueError, match="max_recorded_requests"):
        Simulator(TOKEN, max_recorded_requests=-1)


def test_keep_alive_reuses_one_connection(client: httpx.Client) -> None:
    responses = [client.get("/backups/") for _ in range(3)]
    responses.append(client.post("/backups/", json={"server_id": CACHE}))
    responses.append(client.get("/backups/", params={"server_id": CACHE}))
    assert [r.status_code for r in responses] == [200, 200, 200, 201, 200]
    assert {r.http_version for r in responses} == {"HTTP/1.1"}
    ports = {r.extensions["network_stream"].get_extra_info("client_addr") for r in responses}
    assert len(ports) == 1
    # waitress closes the connection after a 204 (it has no length to frame the next answer by);
    # the client opens a new one.
    deleted = client.delete("/backups/101/")
    assert deleted.status_code == 204 and deleted.headers["connection"] == "close"
    assert client.get("/backups/").status_code == 200


def test_the_log_has_a_line_per_request_and_never_the_token(
    sim: Simulator, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.sandbox.vps")
    client.get("/backups/")
    client.post("/backups/", json={"server_id": WEB})
    httpx.get(
        f"{sim.base_url}/backups/",
        headers={"Authorization": f"Bearer {WRONG_TOKEN}"},
        timeout=5,
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.sandbox.vps"]
    assert any(line.startswith("GET /api/v1/backups/ 200") for line in lines)
    assert any(line.startswith("POST /api/v1/backups/ 201") for line in lines)
    assert any(line.startswith("GET /api/v1/backups/ 401") for line in lines)
    assert TOKEN not in caplog.text
    assert WRONG_TOKEN not in caplog.text


# -- the Python API ----------------------------------------------------------------------------


def test_finish_set_outcome_and_add_backup(make_sim: Callable[..., Simulator]) -> None:
    sim = make_sim(complete_after=0.3)
    done = sim.add_backup(CACHE, description="by hand")
    assert (done["status"], done["backup_type"], done["expires_at"]) == (
        "completed",
        "manual",
        None,
    )
    assert isinstance(done["size_mb"], int)
    auto = sim.add_backup(CACHE, backup_type="automatic", size_mb=1234)
    assert auto["size_mb"] == 1234
    assert parse_time(auto["expires_at"]) == one_month_after(parse_time(auto["created_at"]))

    running = sim.add_backup(WEB, status="in_progress")
    assert running["size_mb"] is None
    sim.set_outcome(running["id"], "vanish")
    other = sim.add_backup(DB, status="in_progress")
    sim.finish(other["id"], "failed")
    assert sim.backup(other["id"])["status"] == "failed"
    assert sim.backup(running["id"])["status"] == "in_progress"
    wait_until(lambda: sim.backup(running["id"]) is None)

    with pytest.raises(ValueError):
        sim.finish(other["id"])  # no longer in progress
    with pytest.raises(KeyError):
        sim.finish(424242)
    with pytest.raises(ValueError):
        sim.set_outcome(sim.add_backup(WEB, status="in_progress")["id"], "exploded")


def test_context_manager_and_idempotent_stop() -> None:
    with Simulator(TOKEN, complete_after=0.3) as sim:
        url = sim.base_url
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/v1", url)
        assert httpx.get(f"{url}/backups/", headers=AUTH, timeout=5).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/backups/", headers=AUTH, timeout=5)
    sim.stop()


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="failure_rate"):
        FaultConfig(failure_rate=1.5)
    with pytest.raises(ValueError, match="failure_statuses"):
        FaultConfig(failure_statuses=(200,))
    with pytest.raises(ValueError, match="timeout_mode"):
        FaultConfig(timeout_mode="sideways")
    with pytest.raises(ValueError):
        Simulator("")
    with pytest.raises(ValueError):
        Simulator(TOKEN).inject(method="GET")  # neither status nor hang
    with pytest.raises(ValueError):
        Simulator(TOKEN).inject(status=200, corrupt=[{"id": None}])  # a status replaces the rows


# -- command line glue ---------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_add_arguments_defaults() -> None:
    args = parse([])
    assert (args.host, args.port, args.token) == ("127.0.0.1", 8099, None)
    assert (args.complete_after, args.history_days, args.no_seed_data) == (30.0, 7, False)
    assert args.failure_statuses == "500,503,429"
    assert args.timeout_mode == "mixed"
    assert parse(["--timeout-mode", "after"]).timeout_mode == "after"
    with pytest.raises(SystemExit):
        parse(["--timeout-mode", "sideways"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--failure-rate", "2"], "failure_rate"),
        (["--failure-statuses", "500,abc"], "--failure-statuses"),
        (["--failure-statuses", "200"], "failure_statuses"),
        (["--port", "70000"], "--port"),
    ],
)
def test_run_from_args_refuses_bad_values(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_from_args(parse(argv), TOKEN)


def test_run_from_args_serves_until_stopped(capsys: pytest.CaptureFixture[str]) -> None:
    stop = threading.Event()
    result: list[int] = []
    args = parse(["--port", "0", "--history-days", "2"])
    thread = threading.Thread(target=lambda: result.append(run_from_args(args, TOKEN, stop=stop)))
    thread.start()
    printed: list[str] = []
    try:
        wait_until(
            lambda: printed.append(capsys.readouterr().out) or "stops it." in "".join(printed)
        )
        out = "".join(printed)
        # Two days of automatic backups for three servers, plus the first server's two manual ones.
        match = re.search(r"on (http://127\.0\.0\.1:\d+/api/v1) \(3 servers, 8 backups\)", out)
        assert match, out
        assert TOKEN not in out
        listing = httpx.get(f"{match.group(1)}/backups/", headers=AUTH, timeout=5)
        assert listing.json()["count"] == 8
    finally:
        stop.set()
        thread.join(timeout=5)
    assert result == [0]
    assert "Warning" not in capsys.readouterr().err  # loopback: nothing to warn about


def test_run_from_args_on_all_interfaces_warns_and_shows_a_usable_url(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stop = threading.Event()
    result: list[int] = []
    args = parse(["--host", ALL_INTERFACES, "--port", "0", "--history-days", "0"])
    thread = threading.Thread(target=lambda: result.append(run_from_args(args, TOKEN, stop=stop)))
    thread.start()
    out, err = [], []
    try:

        def banner_and_warning() -> bool:
            captured = capsys.readouterr()
            out.append(captured.out)
            err.append(captured.err)
            return "stops it." in "".join(out) and "other machines" in "".join(err)

        wait_until(banner_and_warning)
        match = re.search(
            r"on (http://127\.0\.0\.1:\d+/api/v1) \(3 servers, 2 backups\)", "".join(out)
        )
        assert match, out
        assert ALL_INTERFACES not in "".join(out)
        [warning] = [line for line in "".join(err).splitlines() if line]
        assert ALL_INTERFACES in warning and "reachable from other machines" in warning
        assert TOKEN not in warning
        listing = httpx.get(f"{match.group(1)}/backups/", headers=AUTH, timeout=5)
        assert listing.json()["count"] == 2  # no history: the two manual backups alone
    finally:
        stop.set()
        thread.join(timeout=5)
    assert result == [0]
