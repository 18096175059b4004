"""Secrets never leave: a whole scenario through the real app (signed HTTP, the Slack double, the
provider simulator) with recognisable secrets, some short, then every log handler (including ones
added after start-up, on a logger that does not propagate), every Slack call and message, the
uploaded export, every audit row, the command line's output and the `repr`s are searched for them.
And the masking rules themselves: long secrets anywhere, short ones where they stand alone."""

from __future__ import annotations

import json
import logging
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bot import cli
from bot.config import load_settings
from bot.db import AuditEvent
from bot.logs import MASK, JsonFormatter, Redactor, TextFormatter, protect, request_scope
from bot.sandbox.slack import SlackSender
from bot.sandbox.vps import Simulator
from bot.slack import blocks
from tests.socket_double import SocketModeDouble
from tests.test_slack_app import AppRig, text_of

BOT_TOKEN = "xoxb-S3CRET-bot-token-1111"
SIGNING = "S3CRET-signing-secret-2222"
VPS_TOKEN = "S3CRET-vps-token-3333"
AUDIT_KEY = "S3CRET-audit-key-4444-long"
METRICS = "Mx~9"  # short: masked where it stands alone
DB_PASSWORD = (
    "S3CRET-pg-pw-5555"  # PostgreSQL only (its test server trusts; the password rides along)
)


class SecretRig(AppRig):
    """`AppRig` whose every secret is one of ours."""

    def __init__(self, slack: Any, simulator: Simulator, database_url: str) -> None:
        super().__init__(
            slack,
            simulator,
            database_url,
            SLACK_SIGNING_SECRET=SIGNING,
            VPS_API_TOKEN=VPS_TOKEN,
            AUDIT_SIGNING_KEY=AUDIT_KEY,
            METRICS_TOKEN=METRICS,
            BACKUP_AUDITORS="U_BOB",
        )
        self.sender = SlackSender(f"{self.server.url}/slack/events", SIGNING, slack)


def _with_password(url: str) -> str:
    if not url.startswith("postgresql"):
        return url
    scheme, _, rest = url.partition("://")
    user, _, host = rest.partition("@")
    return f"{scheme}://{user}:{DB_PASSWORD}@{host}"


class Kept(logging.Handler):
    """A handler someone adds after start-up, with the stdlib's plain formatter."""

    def __init__(self, formatter: logging.Formatter | None = None) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(formatter or logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def secret_rig(make_simulator: Callable[..., Simulator], database_url: str) -> Iterator[SecretRig]:
    slack = SocketModeDouble(bot_token=BOT_TOKEN)
    slack.start()
    simulator = make_simulator(token=VPS_TOKEN)
    rig = SecretRig(slack, simulator, _with_password(database_url))
    try:
        yield rig
    finally:
        rig.close()
        slack.stop()


def test_no_secret_reaches_logs_slack_audit_rows_the_command_line_or_reprs(
    secret_rig: SecretRig,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    rig = secret_rig
    postgres = rig.settings.database_url.startswith("postgresql")
    secrets = [BOT_TOKEN, SIGNING, VPS_TOKEN, AUDIT_KEY, METRICS] + (
        [DB_PASSWORD] if postgres else []
    )
    caplog.set_level(logging.DEBUG)
    # Handlers added after start-up: on the root logger, on one of ours, in JSON, and on a
    # library's logger that does not propagate to the root (so no root handler sees its records).
    late_root, late_json, late_edge, isolated = Kept(), Kept(JsonFormatter()), Kept(), Kept()
    logging.getLogger().addHandler(late_root)
    logging.getLogger().addHandler(late_json)
    logging.getLogger("bot.slack.edge").addHandler(late_edge)
    library = logging.getLogger("slack_sdk")
    monkeypatch.setattr(library, "propagate", False)
    library.addHandler(isolated)
    try:
        cli_output = _scenario(rig, monkeypatch, capsys, tmp_path)
    finally:
        logging.getLogger().removeHandler(late_root)
        logging.getLogger().removeHandler(late_json)
        logging.getLogger("bot.slack.edge").removeHandler(late_edge)
        library.removeHandler(isolated)

    # What the scenario made the redaction do: the failures were logged, masked, everywhere.
    assert "boom" in late_edge.text and MASK in late_edge.text
    assert "RuntimeError" in late_edge.text  # with its traceback
    assert MASK in isolated.text and "token" in isolated.text
    assert any("boom" in json.loads(line).get("exception", "") for line in late_json.lines)

    with rig.bot.sessions() as session:
        rows = [
            {c.key: getattr(event, c.key) for c in AuditEvent.__table__.columns}
            for event in session.scalars(select(AuditEvent))
        ]
    assert len(rows) >= 8
    uploads = [
        f.content.decode() if isinstance(f.content, bytes) else str(f.content)
        for f in rig.slack.files
    ]
    assert uploads and all(json.loads(line)["row_hash"] for line in uploads[0].splitlines())
    places = {
        "caplog": caplog.text,
        "root handler added later": late_root.text,
        "JSON handler added later": late_json.text,
        "bot.slack.edge handler added later": late_edge.text,
        "a non-propagating library logger": isolated.text,
        "Slack calls": json.dumps([c.args for c in rig.slack.calls], default=str),
        "response_url posts": json.dumps([r.body for r in rig.slack.responses], default=str),
        "uploaded files": "\n".join(uploads),
        "audit rows": json.dumps(rows, default=str),
        "command line": cli_output,
        "reprs": "\n".join(
            (repr(rig.settings), str(rig.settings), repr(rig.bot), repr(rig.bot.engine))
        ),
    }
    for place, text in places.items():
        assert text, f"nothing captured in {place}"
        for secret in secrets:
            assert secret not in text, f"{secret!r} found in {place}"


def _scenario(
    rig: SecretRig,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> str:
    """list, create, a click, a failing Slack call, exceptions in a listener and in the work
    pool, a provider error, an audit export, a scrape; then the command line. Its output."""
    listing = rig.run("list")
    rig.command("create web-server-01 nightly")
    assert rig.audit("create", "ok")
    rig.slack.fail("chat.postMessage", "channel_not_found")  # a Slack call that fails
    rig.command("create db-server-01 second")
    assert len(rig.audit("create")) >= 1
    rig.click(listing, f"{blocks.LIST_PAGE}_next")

    leak = f"boom: {SIGNING} {BOT_TOKEN} {VPS_TOKEN} {AUDIT_KEY} key={METRICS} {DB_PASSWORD}"

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(leak)

    with monkeypatch.context() as patch:  # an exception on Bolt's thread, then on the work pool
        patch.setattr(blocks.PageState, "decode", classmethod(broken))
        assert (
            rig.sender.block_actions(
                SlackSender.action_for(listing["blocks"], f"{blocks.LIST_PAGE}_next"),
                user_id="U_ALICE",
                channel_id="C_OPS",
            ).status
            == 200
        )
        patch.setattr(blocks, "backup_list", broken)
        assert "Reference for the bot's operators" in text_of(rig.run("list"))
    logging.getLogger("slack_sdk").debug("a library logging our token %s", BOT_TOKEN)

    rig.simulator.inject(
        method="GET",
        path="/backups/",
        status=500,
        body={"detail": f"token {VPS_TOKEN} bad"},
        count=8,
    )
    assert "Could not list" in text_of(rig.run("list web-server-01"))
    assert "sent to our DM" in text_of(rig.run("audit export format:jsonl", user_id="U_BOB"))
    scrape = httpx.get(
        f"{rig.server.url}/metrics", headers={"Authorization": f"Bearer {METRICS}"}, timeout=10
    )
    assert scrape.status_code == 200 and "backupbot_commands_total" in scrape.text

    # The command line, as an operator runs it with the same environment.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    environment = {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING,
        "VPS_API_TOKEN": VPS_TOKEN,
        "AUDIT_SIGNING_KEY": AUDIT_KEY,
        "METRICS_TOKEN": METRICS,
        "DATABASE_URL": rig.settings.database_url,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    codes = [
        cli.main(["audit", "checkpoint"]),
        cli.main(["audit", "verify"]),
        cli.main(["audit", "export", "--format", "jsonl"]),
    ]
    monkeypatch.setenv("DATABASE_URL", f"postgresql+psycopg://bot:{DB_PASSWORD}@127.0.0.1:1/x")
    codes.append(cli.main(["audit", "verify"]))  # cannot connect: the error is printed
    monkeypatch.setenv("VPS_API_URL", f"ftp://bot:{VPS_TOKEN}@example.com/")
    codes.append(cli.main(["audit", "verify"]))  # a URL with credentials: refused, not echoed
    output = capsys.readouterr()
    assert codes == [0, 0, 0, 2, 2], output.err
    assert "cannot use the audit log" in output.err and "VPS_API_URL" in output.err
    return output.out + output.err


# -- the masking rules -----------------------------------------------------------------------------


def test_long_secrets_are_masked_anywhere_short_ones_where_they_stand_alone() -> None:
    redact = Redactor(["a-long-secret-value", "t0k", "x"])
    assert redact("url?key=a-long-secret-valueXYZ") == f"url?key={MASK}XYZ"
    assert redact("Bearer t0k, 't0k'") == f"Bearer {MASK}, '{MASK}'"
    assert redact("t0kyo and at0k stay") == "t0kyo and at0k stay"
    assert redact("x marks, but max and x1 stay") == f"{MASK} marks, but max and x1 stay"
    assert Redactor([])("nothing to do") == "nothing to do"


def test_every_record_is_masked_whatever_the_logger_handler_or_formatter() -> None:
    secret = "pr0tected-value-for-the-records"
    protect([secret])  # as start-up does; everything below comes after
    logger = logging.getLogger("test.secrets.isolated")
    logger.propagate = False
    plain, text, json_lines = Kept(), Kept(TextFormatter()), Kept(JsonFormatter())
    for handler in (plain, text, json_lines):
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with request_scope("abcd1234"):
            logger.warning("args %s and %r", secret, {"token": secret})
            try:
                raise ValueError(f"carries {secret}")
            except ValueError:
                logger.exception("failed")
            logger.info("with a stack", stack_info=True, extra={"note": secret})
        # A record made without the factory (from a socket, a queue) is masked by our formatters.
        raw = logging.makeLogRecord({"msg": f"raw {secret}", "levelname": "INFO", "name": "x"})
        outside = text.format(raw) + json_lines.format(raw)
    finally:
        for handler in (plain, text, json_lines):
            logger.removeHandler(handler)
    everything = plain.text + text.text + json_lines.text + outside
    assert secret not in everything
    assert everything.count(MASK) >= 6
    assert "ValueError: carries" in plain.text and "[abcd1234]" in text.text
    parsed = [json.loads(line) for line in json_lines.lines]
    assert [p["request_id"] for p in parsed] == ["abcd1234"] * 3
    assert "ValueError" in parsed[1]["exception"] and "stack" in parsed[2]


def test_a_short_secret_is_allowed_with_a_warning_naming_only_its_variable(
    make_simulator: Callable[..., Simulator],
    slack: SocketModeDouble,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from bot.app import build_app

    simulator = make_simulator(token="t0k")
    settings = load_settings(
        {
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": SIGNING,
            "SLACK_API_URL": slack.api_url,
            "VPS_API_URL": simulator.base_url,
            "VPS_API_TOKEN": "t0k",
            "DATABASE_URL": f"sqlite:///{tmp_path}/bot.db",
        },
        env_file=None,
    )
    with caplog.at_level(logging.WARNING):
        bot = build_app(settings)
        bot.close()
    [warning] = [r.getMessage() for r in caplog.records if "shorter than" in r.getMessage()]
    assert warning.startswith("VPS_API_TOKEN is shorter than 8 characters")
    logging.getLogger("test.secrets").warning("Authorization: Bearer t0k")
    assert caplog.records[-1].getMessage() == f"Authorization: Bearer {MASK}"


def test_settings_and_their_errors_never_show_the_database_password() -> None:
    url = "postgresql+psycopg://bot:p%40ss-w0rd@db/backupbot?sslpassword=k3y-pass"
    settings = load_settings({"DATABASE_URL": url}, env_file=None)
    shown = repr(settings) + str(settings)
    for secret in ("p%40ss-w0rd", "p@ss-w0rd", "k3y-pass"):
        assert secret not in shown
        assert secret in settings.secrets()
    assert "bot:***@db" in shown
    with pytest.raises(Exception) as error:
        load_settings(
            {"DATABASE_URL": "mysql://bot:s3cret-pw@db/x?password=other-s3cret"}, env_file=None
        )
    assert "s3cret-pw" not in str(error.value) and "other-s3cret" not in str(error.value)
    assert "".join(traceback.format_exception(error.value)).count("s3cret") == 0


def test_the_command_lines_errors_are_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    password = "cl1-pass-w0rd-secret"
    monkeypatch.setenv("DATABASE_URL", f"postgresql+psycopg://bot:{password}@127.0.0.1:1/x")
    assert cli.main(["db", "upgrade"]) == 2
    err = capsys.readouterr().err
    assert "cannot upgrade the database" in err and password not in err
