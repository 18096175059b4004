"""Slash-command ack latency under a slow provider: ack-first (ours) versus work-then-ack.

Bolt runs listeners on a pool of 5 threads by default and answers Slack only when a listener
calls `ack()`. A listener that calls the provider before acking ties up a thread for the whole
provider call, so a burst of commands queues up behind it and later acks miss Slack's 3 s. Ours
acks first and runs the provider call on a separate pool. Both apps are served by the same
waitress server, signed requests come from the same sender, in one run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slack_bolt import Ack, App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from waitress.server import create_server

from bot.app import build_app
from bot.config import load_settings
from bot.sandbox.slack import SlackDouble, SlackSender
from bot.sandbox.vps import Simulator
from bot.vps.client import BackupsClient

TOKEN = "bench-token"  # noqa: S105 - the simulator's, not a real one
SECRET = "bench-secret"  # noqa: S105


@dataclass
class Result:
    median: float
    worst: float
    late: int  # acks slower than 3 s or not 200


def burst(url: str, slack: SlackDouble, commands: int) -> Result:
    sender = SlackSender(url, SECRET, slack, timeout=30)
    times: list[float] = []
    late = 0
    lock = threading.Lock()

    def one() -> None:
        nonlocal late
        start = time.monotonic()
        status = sender.slash_command("list web-server-01").status
        took = time.monotonic() - start
        with lock:
            times.append(took)
            if status != 200 or took > 3.0:
                late += 1

    threads = [threading.Thread(target=one) for _ in range(commands)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Result(statistics.median(times), max(times), late)


def work_then_ack_app(simulator: Simulator, slack: SlackDouble) -> tuple[Any, BackupsClient]:
    """The straightforward listener: call the provider, then ack with the answer."""
    vps = BackupsClient(simulator.base_url, TOKEN)
    app = App(
        signing_secret=SECRET,
        token=slack.bot_token,
        token_verification_enabled=False,
    )
    app.client.base_url = slack.api_url

    def handle(ack: Ack, command: dict[str, Any]) -> None:
        count = len(vps.list_backups(server_id=12345).backups)
        ack(f"{count} backups")

    app.command("/backup")(handle)
    return SlackRequestHandler(app), vps


def run(commands: int, latency: float) -> tuple[Result, Result]:
    with tempfile.TemporaryDirectory() as tmp:
        simulator = Simulator(TOKEN, complete_after=3600)
        slack = SlackDouble()
        simulator.start()
        slack.start()
        settings = load_settings(
            environ={
                "SLACK_BOT_TOKEN": slack.bot_token,
                "SLACK_SIGNING_SECRET": SECRET,
                "SLACK_API_URL": slack.api_url,
                "VPS_API_URL": simulator.base_url,
                "VPS_API_TOKEN": TOKEN,
                "DATABASE_URL": f"sqlite:///{Path(tmp) / 'bench.db'}",
            },
            env_file=None,
        )
        bot = build_app(settings)
        ours = bot.http_server(host="127.0.0.1", port=0).start()
        handler, vps = work_then_ack_app(simulator, slack)
        naive = create_server(handler, host="127.0.0.1", port=0, threads=8)
        naive_thread = threading.Thread(target=naive.run, daemon=True)
        naive_thread.start()
        try:
            simulator.faults.latency = latency
            first = burst(f"{ours.url}/slack/events", slack, commands)
            naive_url = f"http://127.0.0.1:{naive.effective_port}/slack/events"  # type: ignore[union-attr]
            second = burst(naive_url, slack, commands)
            return first, second
        finally:
            naive.close()
            naive.task_dispatcher.shutdown()  # type: ignore[union-attr]
            ours.stop()
            bot.close()
            vps.close()
            slack.stop()
            simulator.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--commands", type=int, default=20)
    parser.add_argument("--ack-latency", type=float, default=1.0, help="provider latency, s")
    args, _ = parser.parse_known_args(argv)
    ours, naive = run(args.commands, args.ack_latency)
    print(
        f"\nslash-command acks: {args.commands} at once, provider latency {args.ack_latency:.1f} s"
    )
    print(f"{'strategy':>15} {'median ack':>11} {'worst ack':>10} {'late (>3 s)':>12}")
    for name, result in (("ack first", ours), ("work then ack", naive)):
        print(f"{name:>15} {result.median:>10.3f}s {result.worst:>9.3f}s {result.late:>12}")
    print(
        f"{'ratio':>15} {naive.median / ours.median:>10.1f}x {naive.worst / ours.worst:>9.1f}x"
        "   (work then ack / ack first)"
    )
