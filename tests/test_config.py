import subprocess
import sys

import pytest

from bot.config import ConfigError, load_settings

TOKEN = "xoxb-very-secret-1234"


def test_defaults_and_environment_wins_over_dotenv(tmp_path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=4000\nVPS_API_TOKEN=from-file\n")
    settings = load_settings({"PORT": "5000"}, env_file=env_file)
    assert settings.port == 5000
    assert settings.vps_api_token is not None
    assert settings.vps_api_token.reveal() == "from-file"
    assert settings.database_url == "sqlite:///backupbot.db"
    assert settings.members("viewer") == frozenset({"*"})
    assert settings.members("operator") == frozenset()
    assert settings.restore_safety_backup is True
    assert settings.watch_deadline_hours == 24.0


def test_secrets_are_not_in_repr() -> None:
    settings = load_settings(
        {
            "SLACK_BOT_TOKEN": TOKEN,
            "VPS_API_TOKEN": "vps-secret-9",
            "SLACK_SIGNING_SECRET": "sig-7",
            "DATABASE_URL": "postgresql+psycopg://bot:db-pass-31@db/backupbot",
        },
        env_file=None,
    )
    shown = repr(settings) + str(settings)
    for secret in (TOKEN, "vps-secret-9", "sig-7", "db-pass-31"):
        assert secret not in shown
    assert "bot:***@db" in shown  # the rest of the URL is still there to read


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"PORT": "abc"}, "PORT"),
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL"),
        ({"BACKUP_OPERATORS": "bob"}, "BACKUP_OPERATORS"),
        ({"RESTORE_SAFETY_BACKUP": "maybe"}, "RESTORE_SAFETY_BACKUP"),
        ({"APPROVAL_TTL_MINUTES": "0"}, "APPROVAL_TTL_MINUTES"),
        ({"WATCH_DEADLINE_HOURS": "-1"}, "WATCH_DEADLINE_HOURS"),
        ({"VPS_API_URL": "ftp://x"}, "VPS_API_URL"),
        ({"BACKUP_CHANNELS": "general"}, "BACKUP_CHANNELS"),
    ],
)
def test_malformed_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load_settings(env, env_file=None)


def test_wrong_token_kind_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"SLACK_BOT_TOKEN": "xapp-oops-secret"}, env_file=None)
    assert "oops-secret" not in str(info.value)


def test_require_names_missing_variable() -> None:
    settings = load_settings({}, env_file=None)
    with pytest.raises(ConfigError, match="VPS_API_TOKEN is not set"):
        settings.require("VPS_API_TOKEN")


def test_cli_bad_database_url_is_one_clear_line(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "db", "upgrade"],
        env={"DATABASE_URL": "nonsense://", "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("backupbot: error: DATABASE_URL")
    assert "Traceback" not in result.stderr


def test_configured_secrets_are_masked_in_every_log_line() -> None:
    import logging

    from bot.logs import MASK, RedactSecrets

    settings = load_settings(
        {
            "SLACK_BOT_TOKEN": TOKEN,
            "VPS_API_TOKEN": "vps-secret-9000",
            "DATABASE_URL": "postgresql+psycopg://bot:pg-pass-123@db/backupbot",
        },
        env_file=None,
    )
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(RedactSecrets(settings.secrets()))
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("calling %s with %s", f"https://x/?t={TOKEN}", "vps-secret-9000")
        try:
            raise RuntimeError("connect failed for bot:pg-pass-123@db")
        except RuntimeError:
            logger.exception("database")
    finally:
        logger.removeHandler(handler)
    text = "\n".join(records)
    for secret in (TOKEN, "vps-secret-9000", "pg-pass-123"):
        assert secret not in text
    assert text.count(MASK) >= 3


def test_audit_settings() -> None:
    key = "audit-key-0123456789abcdef"
    settings = load_settings(
        {
            "AUDIT_SIGNING_KEY": key,
            "AUDIT_CHANNEL": "C_AUDIT",
            "AUDIT_CHECKPOINT_HOURS": "6",
            "AUDIT_RETENTION_DAYS": "400",
        },
        env_file=None,
    )
    assert settings.audit_signing_key is not None and settings.audit_signing_key.reveal() == key
    assert key in settings.secrets() and key not in repr(settings)
    assert (settings.audit_channel, settings.audit_checkpoint_hours) == ("C_AUDIT", 6.0)
    assert settings.audit_retention_days == 400
    defaults = load_settings({}, env_file=None)
    assert defaults.audit_signing_key is None and defaults.audit_retention_days is None
    assert defaults.audit_checkpoint_hours == 24.0
    with pytest.raises(ConfigError, match="AUDIT_SIGNING_KEY must be at least 16") as short:
        load_settings({"AUDIT_SIGNING_KEY": "tiny-s3cret"}, env_file=None)
    assert "tiny-s3cret" not in str(short.value)
    with pytest.raises(ConfigError, match="AUDIT_RETENTION_DAYS"):
        load_settings({"AUDIT_RETENTION_DAYS": "forever"}, env_file=None)
