"""The `backupbot` command line, run as a user runs it: a real process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VPS_", "SLACK_", "BACKUP_"))}
    env.pop("DATABASE_URL", None)
    env.update(extra)
    return env


def _run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = _run("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("simulator", "db"):
        assert re.search(rf"^\s+{command}\b", result.stdout, re.MULTILINE), result.stdout


def test_simulator_without_a_token_is_one_clear_line(tmp_path: Path) -> None:
    result = _run("simulator", "--port", "0", cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "VPS_API_TOKEN" in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_database_url_is_one_clear_line(tmp_path: Path) -> None:
    result = _run("db", "upgrade", cwd=tmp_path, DATABASE_URL="not a url")
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "DATABASE_URL" in result.stderr


def test_unreachable_database_names_the_problem_without_the_password(tmp_path: Path) -> None:
    url = "postgresql+psycopg://bob:hunter2secret@127.0.0.1:1/nothing"
    result = _run("db", "upgrade", cwd=tmp_path, DATABASE_URL=url)
    assert result.returncode != 0
    assert "cannot upgrade the database" in result.stderr
    assert "hunter2secret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_db_upgrade_creates_a_sqlite_database(tmp_path: Path) -> None:
    result = _run("db", "upgrade", cwd=tmp_path, DATABASE_URL="sqlite:///bot.db")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "bot.db").stat().st_size > 0


@pytest.fixture
def simulator_url(tmp_path: Path) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "simulator", "--port", "0", "--complete-after", "1"],
        cwd=tmp_path,
        env=_env(VPS_API_TOKEN="t0k"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+\S*?)[ ,]", line)
        assert match, f"no URL in {line!r}"
        yield match.group(1).rstrip("/")
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_simulator_command_serves_the_contract(simulator_url: str) -> None:
    auth = {"Authorization": "Bearer t0k"}
    with httpx.Client(base_url=simulator_url, timeout=10) as http:
        assert http.get("/backups/", params={"server_id": 12345}).status_code == 401
        listing = http.get("/backups/", params={"server_id": 12345}, headers=auth)
        assert listing.status_code == 200
        seeded = listing.json()["results"]
        assert seeded and all(b["server"]["id"] == 12345 for b in seeded)

        created = http.post("/backups/", json={"server_id": 12345}, headers=auth)
        assert created.status_code == 201
        backup = created.json()
        assert backup["status"] == "in_progress" and backup["size_mb"] is None

        deadline = time.monotonic() + 10
        while True:
            results = http.get("/backups/", params={"server_id": 12345}, headers=auth).json()
            current = next(b for b in results["results"] if b["id"] == backup["id"])
            if current["status"] == "completed" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert current["status"] == "completed" and current["size_mb"] > 0

        assert http.delete(f"/backups/{backup['id']}/", headers=auth).status_code == 204
        assert http.delete(f"/backups/{backup['id']}/", headers=auth).status_code == 404
