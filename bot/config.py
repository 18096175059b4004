"""Settings from the environment and `.env`, validated once, with errors that name the variable.

The process environment wins over `.env`. Secrets are kept in `Secret` so that neither `repr()` of
the settings nor an error message can show them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from dotenv import dotenv_values
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_VPS_API_URL = "https://admin.vps.org/api/v1"
DEFAULT_DATABASE_URL = "sqlite:///backupbot.db"

ROLE_VARIABLES = {
    "viewer": "BACKUP_VIEWERS",
    "operator": "BACKUP_OPERATORS",
    "approver": "BACKUP_APPROVERS",
    "auditor": "BACKUP_AUDITORS",
    "admin": "BACKUP_ADMINS",
}

_PRINCIPAL = re.compile(r"^[UWS][A-Z0-9_]{2,}$")  # "_" for readable test and demo ids
_CHANNEL = re.compile(r"^[CGD][A-Z0-9_]{2,}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable and what is expected."""


class Secret:
    """A string that hides itself: `repr()` and `str()` mask it; only `.reveal()` shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class Settings:
    """Everything the bot reads from its environment (DESIGN.md's table, plus two tuning knobs)."""

    slack_bot_token: Secret | None = None
    slack_signing_secret: Secret | None = None
    slack_app_token: Secret | None = None
    slack_api_url: str = DEFAULT_SLACK_API_URL
    vps_api_url: str = DEFAULT_VPS_API_URL
    vps_api_token: Secret | None = None
    vps_timeout_seconds: float = 30.0
    database_url: str = DEFAULT_DATABASE_URL
    port: int = 3000
    roles: dict[str, frozenset[str]] = field(default_factory=dict)
    channels: frozenset[str] | None = None
    approval_ttl_minutes: int = 30
    restore_safety_backup: bool = True
    approvals_channel: str | None = None
    restore_approvals_required: int = 1
    delete_requires_approval: bool = False  # deletes go through the approval flow too
    watch_poll_seconds: float = 10.0
    watch_deadline_hours: float = 24.0
    worker_lease_seconds: float = 300.0
    log_level: str = "INFO"
    audit_signing_key: Secret | None = None  # HMAC key of audit checkpoints; never stored
    audit_channel: str | None = None  # where checkpoints are posted (the Slack side)
    audit_checkpoint_hours: float = 24.0
    audit_retention_days: int | None = None  # None: keep audit rows forever
    work_threads: int = 128  # requests worked on at once (threads; mostly waiting on I/O)
    work_queue_limit: int = 200  # requests waiting for a thread before "busy, try again"
    provider_concurrency: int = 32  # requests at the provider at once
    backup_stale_hours: float = 36.0  # a server whose newest good backup is older is stale
    health_sweep_minutes: float = 30.0  # 0: no background sweep (on demand only)
    alerts_channel: str | None = None  # where health alerts go (none: recorded, not posted)
    digest_channel: str | None = None  # where the daily digest goes (none: no digest)
    digest_time: time = time(8, 0)  # when, UTC
    log_format: str = "text"  # or "json": one JSON object a line
    metrics_port: int | None = None  # /metrics on its own port (Socket Mode; HTTP mode: moved)
    metrics_token: Secret | None = None  # when set, /metrics wants `Authorization: Bearer …`

    def __repr__(self) -> str:
        """Every setting, with the database URL's password masked (tokens mask themselves)."""
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["database_url"] = _shown_url(self.database_url)
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    def require(self, *names: str) -> None:
        """Raise ConfigError for the first of these environment variables that is not set."""
        for name in names:
            attr = name.lower()
            if attr not in {f.name for f in fields(self)}:
                raise KeyError(name)
            if getattr(self, attr) in (None, ""):
                hint = _REQUIRED_HINTS.get(name, "it is required")
                raise ConfigError(f"{name} is not set: {hint}")

    def named_secrets(self) -> dict[str, list[str]]:
        """Each configured secret's variable and value(s), for masking (never for showing). The
        database password is there as written in the URL (percent-encoded) and decoded."""
        found: dict[str, list[str]] = {}
        for name in _SECRET_VARIABLES:
            value = getattr(self, name.lower())
            if value:
                found[name] = [value.reveal()]
        passwords = _url_passwords(self.database_url)
        if passwords:
            found["DATABASE_URL"] = passwords
        return found

    def secrets(self) -> list[str]:
        """Every configured secret's value, for masking in logs (never for showing)."""
        return [value for values in self.named_secrets().values() for value in values]

    def members(self, role: str) -> frozenset[str]:
        return self.roles.get(role, frozenset())


_SECRET_VARIABLES = (
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "VPS_API_TOKEN",
    "AUDIT_SIGNING_KEY",
    "METRICS_TOKEN",
)
# Query parameters of a database URL that carry a password (libpq's names).
_PASSWORD_PARAMETERS = ("password", "sslpassword")


def _url_passwords(url: str) -> list[str]:
    """The password(s) in a database URL, decoded and as written."""
    parsed = make_url(url)
    found = [str(parsed.password)] if parsed.password else []
    raw = urlsplit(url).password
    if raw:
        found += [raw, unquote(raw)]
    for key in _PASSWORD_PARAMETERS:
        value = parsed.query.get(key)
        found += [value] if isinstance(value, str) else list(value or ())
    return sorted({value for value in found if value})


def _shown_url(url: str) -> str:
    """A database URL fit to show: its password masked, in the URL and in its query."""
    parsed = make_url(url)
    masked = {key: "***" for key in _PASSWORD_PARAMETERS if key in parsed.query}
    return parsed.update_query_dict(masked).render_as_string(hide_password=True)


_REQUIRED_HINTS = {
    "SLACK_BOT_TOKEN": "the bot token (xoxb-...) from your Slack app's OAuth page",
    "SLACK_SIGNING_SECRET": "the signing secret from your Slack app's Basic Information page "
    "(needed in HTTP mode)",
    "VPS_API_TOKEN": "the Bearer token of the VPS provider's Backups API",
}


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
) -> Settings:
    """Read and validate settings; the environment wins over the `.env` file."""
    values: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    env = {k: v.strip() for k, v in values.items()}

    def get(name: str) -> str | None:
        value = env.get(name, "")
        return value or None

    return Settings(
        slack_bot_token=_token(get("SLACK_BOT_TOKEN"), "SLACK_BOT_TOKEN", "xoxb-"),
        slack_signing_secret=_secret(get("SLACK_SIGNING_SECRET")),
        slack_app_token=_token(get("SLACK_APP_TOKEN"), "SLACK_APP_TOKEN", "xapp-"),
        slack_api_url=_url(get("SLACK_API_URL") or DEFAULT_SLACK_API_URL, "SLACK_API_URL"),
        vps_api_url=_url(get("VPS_API_URL") or DEFAULT_VPS_API_URL, "VPS_API_URL"),
        vps_api_token=_secret(get("VPS_API_TOKEN")),
        vps_timeout_seconds=_number(get("VPS_TIMEOUT_SECONDS"), "VPS_TIMEOUT_SECONDS", 30.0),
        database_url=_database_url(get("DATABASE_URL") or DEFAULT_DATABASE_URL),
        port=_port(get("PORT")),
        roles={
            role: _principals(get(var), var, default="*" if role == "viewer" else "")
            for role, var in ROLE_VARIABLES.items()
        },
        channels=_channels(get("BACKUP_CHANNELS")),
        approval_ttl_minutes=int(
            _number(get("APPROVAL_TTL_MINUTES"), "APPROVAL_TTL_MINUTES", 30, integer=True)
        ),
        restore_safety_backup=_boolean(get("RESTORE_SAFETY_BACKUP"), "RESTORE_SAFETY_BACKUP", True),
        approvals_channel=_channel(get("APPROVALS_CHANNEL"), "APPROVALS_CHANNEL"),
        restore_approvals_required=int(
            _number(
                get("RESTORE_APPROVALS_REQUIRED"), "RESTORE_APPROVALS_REQUIRED", 1, integer=True
            )
        ),
        delete_requires_approval=_boolean(
            get("DELETE_REQUIRES_APPROVAL"), "DELETE_REQUIRES_APPROVAL", False
        ),
        watch_poll_seconds=_number(get("WATCH_POLL_SECONDS"), "WATCH_POLL_SECONDS", 10.0),
        watch_deadline_hours=_number(get("WATCH_DEADLINE_HOURS"), "WATCH_DEADLINE_HOURS", 24.0),
        worker_lease_seconds=_number(get("WORKER_LEASE_SECONDS"), "WORKER_LEASE_SECONDS", 300.0),
        log_level=_log_level(get("LOG_LEVEL")),
        audit_signing_key=_signing_key(get("AUDIT_SIGNING_KEY")),
        audit_channel=_channel(get("AUDIT_CHANNEL"), "AUDIT_CHANNEL"),
        audit_checkpoint_hours=_number(
            get("AUDIT_CHECKPOINT_HOURS"), "AUDIT_CHECKPOINT_HOURS", 24.0
        ),
        audit_retention_days=_retention(get("AUDIT_RETENTION_DAYS")),
        work_threads=int(_number(get("WORK_THREADS"), "WORK_THREADS", 128, integer=True)),
        work_queue_limit=int(
            _number(get("WORK_QUEUE_LIMIT"), "WORK_QUEUE_LIMIT", 200, integer=True)
        ),
        provider_concurrency=int(
            _number(get("PROVIDER_CONCURRENCY"), "PROVIDER_CONCURRENCY", 32, integer=True)
        ),
        backup_stale_hours=_number(get("BACKUP_STALE_HOURS"), "BACKUP_STALE_HOURS", 36.0),
        health_sweep_minutes=_sweep_minutes(get("HEALTH_SWEEP_MINUTES")),
        alerts_channel=_channel(get("ALERTS_CHANNEL"), "ALERTS_CHANNEL"),
        digest_channel=_channel(get("DIGEST_CHANNEL"), "DIGEST_CHANNEL"),
        digest_time=_time_of_day(get("DIGEST_TIME"), "DIGEST_TIME"),
        log_format=_log_format(get("LOG_FORMAT")),
        metrics_port=_port(get("METRICS_PORT"), "METRICS_PORT") if get("METRICS_PORT") else None,
        metrics_token=_secret(get("METRICS_TOKEN")),
    )


def _secret(value: str | None) -> Secret | None:
    return Secret(value) if value else None


_MIN_KEY_LENGTH = 16


def _signing_key(value: str | None) -> Secret | None:
    if value is None:
        return None
    if len(value) < _MIN_KEY_LENGTH:
        # Its length is said, never the value.
        raise ConfigError(
            f"AUDIT_SIGNING_KEY must be at least {_MIN_KEY_LENGTH} characters (a random string, "
            "e.g. from `python -c 'import secrets; print(secrets.token_hex(32))'`)"
        )
    return Secret(value)


def _retention(value: str | None) -> int | None:
    if value is None:
        return None
    return int(_number(value, "AUDIT_RETENTION_DAYS", 0, integer=True))


def _token(value: str | None, name: str, prefix: str) -> Secret | None:
    if value is None:
        return None
    if not value.startswith(prefix):
        # The value itself is never echoed: a pasted token of the wrong kind is still a secret.
        raise ConfigError(f"{name} must start with '{prefix}' (the value given does not)")
    return Secret(value)


def _url(value: str, name: str) -> str:
    parts = urlsplit(value)
    if parts.username or parts.password:  # first: the message below echoes the value
        raise ConfigError(f"{name} must not carry credentials in the URL")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"{name} must be an http(s) URL such as https://example.com/api, got {value!r}"
        )
    return value


def _database_url(value: str) -> str:
    try:
        url = make_url(value)
    except ArgumentError:
        # Not echoed: a database URL may carry a password.
        raise ConfigError(
            "DATABASE_URL is not a valid SQLAlchemy URL; expected e.g. sqlite:///backupbot.db "
            "or postgresql+psycopg://user:password@host/dbname"
        ) from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            "DATABASE_URL must point at SQLite or PostgreSQL, got "
            f"{url.get_backend_name()!r} ({_shown_url(value)})"
        )
    if url.get_backend_name() == "postgresql" and url.get_driver_name() != "psycopg":
        # Only psycopg (3) is installed; postgresql:// alone means psycopg2 to SQLAlchemy.
        raise ConfigError(
            "DATABASE_URL must use the psycopg driver: write postgresql+psycopg://… "
            f"(got {url.drivername}://…)"
        )
    return value


def _port(value: str | None, name: str = "PORT") -> int:
    if value is None:
        return 3000
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ConfigError(f"{name} must be a TCP port number from 1 to 65535, got {value!r}")
    return int(value)


# The largest sane value of each number setting: past it, a typo (1e12) rather than a wish.
_MAXIMUM = {
    "VPS_TIMEOUT_SECONDS": 600,
    "APPROVAL_TTL_MINUTES": 7 * 24 * 60,
    "RESTORE_APPROVALS_REQUIRED": 10,
    "WATCH_POLL_SECONDS": 3600,
    "WATCH_DEADLINE_HOURS": 30 * 24,
    "WORKER_LEASE_SECONDS": 3600,
    "AUDIT_CHECKPOINT_HOURS": 30 * 24,
    "AUDIT_RETENTION_DAYS": 100 * 366,
    "WORK_THREADS": 1024,
    "WORK_QUEUE_LIMIT": 100_000,
    "PROVIDER_CONCURRENCY": 256,
    "BACKUP_STALE_HOURS": 90 * 24,
    "HEALTH_SWEEP_MINUTES": 24 * 60,
}


def _number(value: str | None, name: str, default: float, *, integer: bool = False) -> float:
    if value is None:
        return default
    top = _MAXIMUM[name]
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{name} must be {kind} from 0 to {top}, got {value!r}") from None
    if not 0 < number <= top:  # NaN fails this too
        raise ConfigError(f"{name} must be greater than 0 and at most {top}, got {value!r}")
    return number


def _boolean(value: str | None, name: str, default: bool) -> bool:
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _principals(value: str | None, name: str, *, default: str) -> frozenset[str]:
    items = [item.strip() for item in (value if value is not None else default).split(",")]
    result = frozenset(item for item in items if item)
    for item in result:
        if item != "*" and not _PRINCIPAL.match(item):
            raise ConfigError(
                f"{name} must list Slack user ids (U… or W…) and user-group ids (S…) separated by "
                f"commas, or *, got {item!r}"
            )
    return result


def _channel(value: str | None, name: str) -> str | None:
    if value is not None and not _CHANNEL.match(value):
        raise ConfigError(f"{name} must be a Slack channel id (C… or G…), got {value!r}")
    return value


def _channels(value: str | None) -> frozenset[str] | None:
    if value is None:
        return None
    items = frozenset(item.strip() for item in value.split(",") if item.strip())
    for item in items:
        _channel(item, "BACKUP_CHANNELS")
    return items or None


def _log_format(value: str | None) -> str:
    if value is None:
        return "text"
    if value.lower() not in ("text", "json"):
        raise ConfigError(f"LOG_FORMAT must be text or json, got {value!r}")
    return value.lower()


def _log_level(value: str | None) -> str:
    if value is None:
        return "INFO"
    if value.upper() not in _LOG_LEVELS:
        levels = ", ".join(sorted(_LOG_LEVELS))
        raise ConfigError(f"LOG_LEVEL must be one of {levels}, got {value!r}")
    return value.upper()


def _sweep_minutes(value: str | None) -> float:
    """HEALTH_SWEEP_MINUTES; 0 turns the background sweep off (sweeps on demand only)."""
    if value is not None and value.strip() in ("0", "0.0"):
        return 0.0
    return _number(value, "HEALTH_SWEEP_MINUTES", 30.0)


_TIME_OF_DAY = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")


def _time_of_day(value: str | None, name: str) -> time:
    if value is None:
        return time(8, 0)
    match = _TIME_OF_DAY.match(value)
    if not match:
        raise ConfigError(f"{name} must be a UTC time of day as HH:MM (24 h), got {value!r}")
    return time(int(match.group(1)), int(match.group(2)))
