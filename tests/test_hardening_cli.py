"""The hardening issue at the command line: real `python -m bot` processes. A setting or an argument
a person got wrong is one line on stderr and exit 2, never a traceback; reading never creates."""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.sandbox.slack import SlackDouble
from bot.sandbox.vps import Simulator
from tests.conftest import SIM_TOKEN
from tests.test_cli import _run

UNREACHABLE_PG = "postgresql+psycopg://postgres@127.0.0.1:1/x"


def _one_line_and_exit_2(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def app_env(tmp_path: Path, slack: SlackDouble, simulator: Simulator) -> dict[str, str]:
    """What `backupbot run` needs, all of it working, on an up-to-date SQLite database."""
    env = {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_API_URL": slack.api_url,
        "SLACK_SIGNING_SECRET": "process-secret",
        "VPS_API_URL": simulator.base_url,
        "VPS_API_TOKEN": SIM_TOKEN,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
    }
    upgraded = _run("db", "upgrade", cwd=tmp_path, **env)
    assert upgraded.returncode == 0, upgraded.stderr
    return env


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


def test_run_on_a_port_in_use_is_one_line(
    tmp_path: Path, app_env: dict[str, str], busy_port: int
) -> None:
    result = _run(
        "run", "--http", "--host", "127.0.0.1", "--port", str(busy_port), cwd=tmp_path, **app_env
    )
    line = _one_line_and_exit_2(result)
    assert str(busy_port) in line and "in use" in line


@pytest.mark.parametrize("args", [("run", "--http", "--port", "0"), ("audit", "verify")])
def test_an_unreachable_postgresql_is_one_line(
    tmp_path: Path, app_env: dict[str, str], args: tuple[str, ...]
) -> None:
    result = _run(*args, cwd=tmp_path, **{**app_env, "DATABASE_URL": UNREACHABLE_PG})
    line = _one_line_and_exit_2(result)
    assert re.search(r"database|audit log", line) and "127.0.0.1" in line


@pytest.mark.parametrize("port", ["-1", "99999"])
def test_a_port_out_of_range_is_one_line(tmp_path: Path, port: str) -> None:
    line = _one_line_and_exit_2(_run("run", "--http", "--port", port, cwd=tmp_path))
    assert port in line and "65535" in line


def test_an_export_age_past_what_is_possible_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    assert _run("db", "upgrade", cwd=tmp_path, DATABASE_URL=url).returncode == 0
    result = _run("audit", "export", "--since", "1000000d", cwd=tmp_path, DATABASE_URL=url)
    line = _one_line_and_exit_2(result)
    assert "1000000d" in line


def test_a_watch_deadline_of_1e12_hours_is_one_line(
    tmp_path: Path, app_env: dict[str, str]
) -> None:
    env = {**app_env, "WATCH_DEADLINE_HOURS": "1e12"}
    result = _run("run", "--http", "--port", "0", cwd=tmp_path, **env)
    line = _one_line_and_exit_2(result)
    assert "WATCH_DEADLINE_HOURS" in line


def test_a_psycopg2_url_names_the_driver_to_use(tmp_path: Path) -> None:
    url = "postgresql+psycopg2://postgres@127.0.0.1:5432/backupbot"
    line = _one_line_and_exit_2(_run("db", "upgrade", cwd=tmp_path, DATABASE_URL=url))
    assert "postgresql+psycopg://" in line


def test_audit_verify_of_a_missing_sqlite_file_does_not_create_it(tmp_path: Path) -> None:
    result = _run("audit", "verify", cwd=tmp_path, DATABASE_URL="sqlite:///nonexistent.db")
    line = _one_line_and_exit_2(result)
    assert "nonexistent.db" in line
    assert not (tmp_path / "nonexistent.db").exists()


def test_a_console_script_that_is_not_utf8_does_not_crash(tmp_path: Path) -> None:
    script = tmp_path / "script.txt"
    script.write_bytes(b"/backup help\n\xff\xfe caf\xe9 \x80\n/backup list web-server-01\n")
    result = _run("console", "--script", str(script), "--no-color", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "web-server-01" in result.stdout  # the lines after the bad one were played too
