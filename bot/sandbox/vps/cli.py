"""`backupbot simulator`: the VPS simulator's options, and serving it until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from dataclasses import fields

from bot.sandbox.vps.state import TIMEOUT_MODES, FaultConfig, as_int
from bot.sandbox.vps.wsgi import Simulator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator's options, for the `backupbot simulator` command."""
    faults = FaultConfig()
    statuses, add = ",".join(map(str, faults.failure_statuses)), parser.add_argument
    add("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    add("--port", type=int, default=8099, help="port to listen on (default: %(default)s)")
    add("--token", default=None, help="Bearer token clients must send (default: $VPS_API_TOKEN)")
    for flag, kind, default, text in (
        ("--complete-after", float, 30.0, "seconds a new backup stays in_progress, and a restore"),
        ("--latency", float, faults.latency, "seconds before every answer"),
        ("--failure-rate", float, faults.failure_rate, "probability [0-1] of an error answer"),
        ("--failure-statuses", str, statuses, "comma-separated statuses for such answers"),
        ("--retry-after", float, faults.retry_after, "Retry-After seconds with a 429 or 503"),
        ("--timeout-rate", float, faults.timeout_rate, "probability [0-1] a request hangs"),
        ("--hang-seconds", float, faults.hang_seconds, "length of such a hang"),
        ("--fail-rate", float, faults.fail_rate, "probability [0-1] a new backup ends failed"),
        ("--vanish-rate", float, faults.vanish_rate, "probability [0-1] a new backup vanishes"),
        ("--seed", int, None, "random seed, for reproducible faults, ids and sizes"),
        ("--page-size", int, None, "paginate lists with ?page=N"),
        ("--history-days", int, 7, "days of daily automatic backups per server (+2 manual)"),
    ):
        add(flag, type=kind, default=default, help=f"{text} (default: %(default)s)")
    add(
        "--timeout-mode",
        choices=TIMEOUT_MODES,
        default=faults.timeout_mode,
        help="whether a hang comes before processing, after it, or either (default: %(default)s)",
    )
    add("--no-seed-data", action="store_true", help="start with no servers and no backups")


def _statuses(text: str) -> tuple[int, ...]:
    statuses = [as_int(part) if part.strip() else None for part in text.split(",")]
    if None in statuses:
        raise ValueError(f"--failure-statuses must be comma-separated status codes, got {text!r}")
    return tuple(status for status in statuses if status is not None)


def run_from_args(
    args: argparse.Namespace, token: str, *, stop: threading.Event | None = None
) -> int:
    """Serve until SIGINT/SIGTERM (or until `stop` is set, for callers off the main thread)."""
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535, got {args.port}")
    names = [field.name for field in fields(FaultConfig) if field.name != "failure_statuses"]
    faults = FaultConfig(
        **{name: getattr(args, name) for name in names},
        failure_statuses=_statuses(args.failure_statuses),
    )
    simulator = Simulator(
        token,
        complete_after=args.complete_after,
        faults=faults,
        page_size=args.page_size,
        seed_data=not args.no_seed_data,
        history_days=args.history_days,
    )
    previous = None
    if threading.current_thread() is threading.main_thread():  # SIGTERM stops it as Ctrl-C does
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        base_url = simulator.start(args.host, args.port)
        backups = len(simulator.list_backups({}))
        print(
            f"VPS Backups API simulator on {base_url} ({len(simulator.servers)} servers, "
            f"{backups} backups). Ctrl-C stops it.",
            flush=True,
        )
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print(
                f"Warning: listening on {args.host or 'all interfaces'}, so the simulator is "
                "reachable from other machines; --host 127.0.0.1 keeps it local.",
                file=sys.stderr,
                flush=True,
            )
        (stop or threading.Event()).wait()
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0
