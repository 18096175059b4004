"""The `backupbot` command line: one entry point for every way of running the bot."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NoReturn

from bot.ages import AgeError, parse_age
from bot.config import ConfigError, Settings, load_settings
from bot.logs import configure as configure_logging
from bot.logs import redact

if TYPE_CHECKING:
    from bot.audit import AuditLog


class _CommandFailed(Exception):
    """A command could not start for a reason a person can fix; the message says which."""


class _Parser(argparse.ArgumentParser):
    """argparse, whose mistakes are one line (without the usage block before it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from bot import console
    from bot.sandbox import vps

    parser = _Parser(
        prog="backupbot",
        description="Backup Bot: manage VPS backups from Slack.",
        epilog="Settings come from the environment and .env (see .env.example).",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    run = commands.add_parser(
        "run",
        help="run the Slack app (Socket Mode if SLACK_APP_TOKEN is set, else HTTP on PORT)",
        description="Run the Slack app. HTTP mode serves POST /slack/events and GET /healthz.",
    )
    run.add_argument("--http", action="store_true", help="force HTTP mode")
    run.add_argument("--host", default="0.0.0.0", help="HTTP mode interface (default: %(default)s)")  # noqa: S104
    run.add_argument("--port", type=_port, default=None, help="HTTP mode port (default: $PORT)")

    sim = commands.add_parser(
        "simulator",
        help="serve a simulated VPS Backups API on loopback (for trying things out and tests)",
        description="A stateful VPS Backups API simulator honouring the provider's contract.",
    )
    vps.add_arguments(sim)

    for name, summary in (
        ("console", "chat with the bot in this terminal: a simulated Slack and provider"),
        ("demo", "the one-command demo (what `make demo` runs): the console, nothing to set up"),
    ):
        chat = commands.add_parser(
            name,
            help=summary,
            description="A terminal chat with the real bot: type /backup … as a Slack user; the "
            "bot's messages, buttons and thread replies are drawn here. Slack and the VPS "
            "provider are simulated on loopback and the database is a temporary SQLite file, so "
            "no Slack app, provider account or .env is needed (and .env is not read).",
        )
        console.add_arguments(chat)

    audit = commands.add_parser(
        "audit", help="the audit log (audit verify, checkpoint, export, prune)"
    )
    audit_commands = audit.add_subparsers(
        dest="audit_command", required=True, metavar="AUDIT_COMMAND", parser_class=_Parser
    )
    verify = audit_commands.add_parser(
        "verify",
        help="check the audit log's hash chain and signed checkpoints; exit 1 if a row was "
        "edited, removed or moved, the newest rows cut off, or a checkpoint forged",
    )
    verify.add_argument(
        "--checkpoint",
        metavar="FILE_OR_JSON",
        default=None,
        help="check against this checkpoint (a JSON line from `audit checkpoint`, or a file "
        "holding one) instead of the stored ones; needs AUDIT_SIGNING_KEY",
    )
    audit_commands.add_parser(
        "checkpoint",
        help="sign and store the log's state (rows, newest row, its hash) with "
        "AUDIT_SIGNING_KEY; print it as one JSON line to keep elsewhere too",
    )
    audit_commands.add_parser(
        "prune",
        help="remove rows older than AUDIT_RETENTION_DAYS (a checkpoint first; the chain still "
        "verifies)",
    )
    export = audit_commands.add_parser(
        "export", help="write the audit log as CSV or JSON Lines (streamed: any size)"
    )
    export.add_argument(
        "--since", type=_age, default=None, metavar="AGE", help="only rows this recent: 7d, 12h, 2w"
    )
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="default: csv")
    export.add_argument("--user", metavar="USER_ID", help="only this person's rows (U…)")
    export.add_argument("--server", type=_id, metavar="SERVER_ID", help="only this server's")
    export.add_argument("--action", help="only this action and its steps (restore: restore.*)")
    export.add_argument("--outcome", choices=("ok", "denied", "error"), help="only this outcome")
    export.add_argument("--approval", type=_id, metavar="N", help="the story of one approval")
    export.add_argument(
        "--request", metavar="ID", help="the rows of one Slack request (an error's reference)"
    )
    export.add_argument("--output", "-o", default="-", help="file to write (default: stdout)")

    db = commands.add_parser("db", help="database maintenance (db upgrade)")
    db_commands = db.add_subparsers(
        dest="db_command", required=True, metavar="DB_COMMAND", parser_class=_Parser
    )
    db_commands.add_parser("upgrade", help="run the database migrations up to the newest")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("console", "demo"):
        return _console(args)  # self-contained: reads neither .env nor the environment's tokens
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.secrets(), settings.log_format)
        return _dispatch(args, settings)
    except (ConfigError, _CommandFailed) as exc:
        print(redact(f"backupbot: error: {exc}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "run":
        return _run(args, settings)
    if args.command == "simulator":
        return _simulator(args, settings)
    if args.command == "audit":
        return _audit(args, settings)
    if args.command == "db" and args.db_command == "upgrade":
        return _db_upgrade(settings)
    raise _CommandFailed(f"unknown command {args.command!r}")  # argparse prevents this


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from bot.app import build_app
    from bot.db import SchemaOutOfDate
    from bot.slack.app import SlackUnavailable
    from bot.slack.serving import HttpServer
    from bot.wsgi_server import WsgiServer

    socket_mode = settings.socket_mode and not args.http
    port = args.port if args.port is not None else settings.port
    if not socket_mode:
        _check_port(args.host, port)  # before anything starts, so the error stands alone
    try:
        bot = build_app(settings, socket_mode=socket_mode)
    except (SchemaOutOfDate, SlackUnavailable) as exc:
        raise _CommandFailed(str(exc)) from None
    except SQLAlchemyError as exc:
        raise _CommandFailed(f"cannot use the database: {_db_reason(exc)}") from None
    bot.start_workers()
    stop = threading.Event()
    server: HttpServer | None = None
    metrics: WsgiServer | None = None

    def on_signal(signum: int, _frame: object) -> None:
        # SIGTERM is how deploys stop us: finish in-flight work and release the watcher's
        # leases (bot.close) instead of dying and leaving them to expire.
        logging.getLogger(__name__).info("signal %s: shutting down", signum)
        stop.set()
        if server is not None:
            server.request_stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if settings.metrics_port:
            try:
                metrics = bot.metrics_server(host=args.host).start()
            except OSError as exc:
                raise _CommandFailed(
                    f"cannot listen on {args.host}:{settings.metrics_port} (METRICS_PORT): "
                    f"{exc.strerror or exc}"
                ) from None
            logging.getLogger(__name__).info(
                "GET /metrics and /healthz on %s:%s", args.host, metrics.port
            )
        if socket_mode:
            logging.getLogger(__name__).info("Backup Bot running in Socket Mode")
            bot.run_socket_mode(stop)
        else:
            try:
                server = bot.http_server(host=args.host, port=port)
            except OSError as exc:
                raise _CommandFailed(
                    f"cannot listen on {args.host}:{port}: {exc.strerror or exc}"
                ) from None
            logging.getLogger(__name__).info(
                "Backup Bot serving POST /slack/events, %sGET /healthz on %s:%s",
                "" if settings.metrics_port else "GET /metrics and ",
                args.host,
                server.port,
            )
            if not stop.is_set():
                server.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if metrics is not None:
            metrics.stop()
        bot.close()
        logging.getLogger(__name__).info("Backup Bot stopped")
    return 0


def _console(args: argparse.Namespace) -> int:
    from bot import console

    try:
        return console.run(console.from_args(args))
    except (console.ConsoleError, OSError) as exc:
        print(f"backupbot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _simulator(args: argparse.Namespace, settings: Settings) -> int:
    from bot.sandbox import vps

    token = args.token
    if token is None:
        if settings.vps_api_token is None:
            raise ConfigError(
                "VPS_API_TOKEN is not set: give the token clients must send with --token, "
                "or set VPS_API_TOKEN"
            )
        token = settings.vps_api_token.reveal()
    try:
        return vps.run_from_args(args, token)
    except ValueError as exc:
        raise _CommandFailed(str(exc)) from None
    except OSError as exc:
        raise _CommandFailed(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None


def _db_upgrade(settings: Settings) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from bot.db import upgrade

    try:
        upgrade(settings.database_url)
    except SQLAlchemyError as exc:
        raise _CommandFailed(f"cannot upgrade the database: {_db_reason(exc)}") from None
    print("database is up to date")
    return 0


def _check_port(host: str, port: int) -> None:
    if port == 0:
        return
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise _CommandFailed(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _id(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 2**63:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value!r}")
    return int(value)


def _port(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected a TCP port from 1 to 65535 (0: any free one), got {value!r}"
        )
    return int(value)


def _age(value: str) -> timedelta:
    try:
        return parse_age(value)
    except AgeError:
        raise argparse.ArgumentTypeError(
            f"expected an age like 7d, 12h, 30m or 2w (at most 100 years), got {value!r}"
        ) from None


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from bot.audit import AuditBroken, AuditLog, AuditUnavailable, CheckpointError
    from bot.db import (
        SchemaOutOfDate,
        current_revision,
        head_revision,
        make_engine,
        make_session_factory,
    )

    missing = _missing_sqlite_file(settings.database_url)
    if missing:
        raise _CommandFailed(f"no database at {missing}: check DATABASE_URL")
    engine = make_engine(settings.database_url)
    # Alembic's "Context impl …" lines are noise here: an error stays one line.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    try:
        if current_revision(engine) != head_revision():
            raise SchemaOutOfDate("the database is not up to date: run `backupbot db upgrade`")
        log = AuditLog(make_session_factory(engine))
        key = settings.audit_signing_key.reveal() if settings.audit_signing_key else None
        if args.audit_command == "verify":
            return _audit_verify(log, key, args.checkpoint)
        if args.audit_command == "checkpoint":
            print(log.checkpoint(_signing_key(key, "write a checkpoint")).to_json())
            return 0
        if args.audit_command == "prune":
            return _audit_prune(log, _signing_key(key, "prune"), settings.audit_retention_days)
        filters = {
            "since": datetime.now(UTC) - args.since if args.since else None,
            "user_id": args.user,
            "server_id": args.server,
            "action": args.action,
            "outcome": args.outcome,
            "approval_id": args.approval,
            "request_id": args.request,
        }
        if args.output == "-":
            log.export(sys.stdout, args.format, **filters)
        else:
            with open(args.output, "w", newline="", encoding="utf-8") as out:
                count = log.export(out, args.format, **filters)
            print(f"{count} audit rows written to {args.output}", file=sys.stderr)
        return 0
    except (SchemaOutOfDate, AuditUnavailable, AuditBroken, CheckpointError) as exc:
        raise _CommandFailed(str(exc)) from None
    except SQLAlchemyError as exc:
        raise _CommandFailed(f"cannot use the audit log: {_db_reason(exc)}") from None
    except OSError as exc:
        raise _CommandFailed(f"cannot write {args.output}: {exc.strerror}") from None
    finally:
        engine.dispose()


def _signing_key(key: str | None, purpose: str) -> str:
    if key is None:
        raise _CommandFailed(
            f"AUDIT_SIGNING_KEY is not set: it is needed to {purpose} (a random string of at "
            "least 16 characters, kept out of the database)"
        )
    return key


def _audit_verify(log: AuditLog, key: str | None, given: str | None) -> int:
    from bot.audit import Checkpoint

    checkpoint = None
    if given is not None:
        _signing_key(key, "check a checkpoint")
        checkpoint = Checkpoint.from_json(_checkpoint_text(given))
    result = log.verify(key, checkpoint)
    if not result.ok:
        where = f" at row {result.broken_at}" if result.broken_at is not None else ""
        why = result.reason or result.checkpoint_failed
        if result.reason and result.checkpoint_failed:
            why += f"; also, {result.checkpoint_failed}"
        print(f"audit log BROKEN{where}: {why} ({result.rows} rows checked)", file=sys.stderr)
        return 1
    start = f", starting after {result.anchor.describe()}" if result.anchor else ""
    if key is None:
        trust = " (chain only: AUDIT_SIGNING_KEY is not set, so no checkpoint was checked)"
    elif result.checkpoint is None:
        trust = " (chain only: no signed checkpoint yet; run `backupbot audit checkpoint`)"
    else:
        others = result.checkpoints_checked - 1
        more = f" and {others} earlier" if others > 0 else ""
        trust = f"; matches {result.checkpoint.describe()}{more}"
    print(f"audit log intact: {result.rows} rows, head {result.head}{start}{trust}")
    return 0


def _checkpoint_text(given: str) -> str:
    """The checkpoint's JSON: given inline, or the last JSON line of a file."""
    from bot.audit import CheckpointError

    if given.lstrip().startswith("{"):
        return given
    try:
        with open(given, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle if line.strip().startswith("{")]
    except OSError as exc:
        raise CheckpointError(f"cannot read {given}: {exc.strerror}") from None
    if not lines:
        raise CheckpointError(f"{given} holds no checkpoint (a JSON line)")
    return lines[-1]


def _audit_prune(log: AuditLog, key: str, days: int | None) -> int:
    if days is None:
        raise _CommandFailed(
            "AUDIT_RETENTION_DAYS is not set, so audit rows are kept forever and nothing is pruned"
        )
    result = log.prune(key, timedelta(days=days))
    print(result.checkpoint.to_json())
    if result.anchor is None:
        print(f"nothing to prune: no audit row is older than {days} days")
    else:
        print(
            f"pruned {result.removed} audit rows older than {days} days, up to row "
            f"{result.anchor.last_id}; the chain now starts after {result.anchor.describe()}"
        )
    return 0


def _missing_sqlite_file(url: str) -> str | None:
    """The path of a SQLite database file that does not exist (reading must not create it)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return None if os.path.exists(parsed.database) else parsed.database


def _db_reason(exc: Exception) -> str:
    """The first line of a driver error, without the SQL or URL (which may hold a password)."""
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()
    return text[0] if text else type(original).__name__
