"""Watcher polling: one list call per server per round versus one call per backup.

For N in-flight backups over M servers, both strategies run side by side in one process against
the simulator (with a small per-request latency, as a real network has) and the Slack double.
Printed: provider calls per round, and the delay from "the provider finished every backup" to
"the thread reply was posted" (median and worst), with the per-backup/batched ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from slack_sdk import WebClient

from bot.audit import Actor, AuditLog
from bot.db import WatchJob, make_engine, make_session_factory, upgrade
from bot.sandbox.slack import RecordedCall, SlackDouble
from bot.sandbox.vps import Simulator
from bot.slack.notify import SlackNotifier
from bot.vps.client import BackupsClient
from bot.watch import Watcher, WatchSettings

TOKEN = "bench-token"  # noqa: S105 - the simulator's, not a real one
SETTINGS = WatchSettings(first_poll=0.2, max_poll=0.5, backoff=1.5, tick=0.02)


class PerBackupWatcher(Watcher):
    """The obvious alternative: look each backup up on its own (the API has no GET by id, so
    each lookup is a list of its server)."""

    def _poll_server(self, server_id: int, jobs: list[WatchJob]) -> int:
        return sum(super(PerBackupWatcher, self)._poll_server(server_id, [job]) for job in jobs)


@dataclass
class Result:
    calls_per_round: int
    median_delay: float
    max_delay: float


def run(kind: type[Watcher], backups: int, servers: int, latency: float) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        simulator = Simulator(TOKEN, complete_after=3600, seed_data=False)
        slack = SlackDouble()
        simulator.start()
        slack.start()
        vps = BackupsClient(simulator.base_url, TOKEN)
        try:
            for server in range(servers):
                simulator.add_server(70000 + server, f"node-{server:02d}")
            web = WebClient(token=slack.bot_token, base_url=slack.api_url)
            watcher = kind(sessions, vps, SlackNotifier(web), AuditLog(sessions), settings=SETTINGS)
            ids = []
            actor = Actor("U_ALICE", "alice", "T111", "C_OPS")
            for index in range(backups):
                data = simulator.add_backup(70000 + index % servers, status="in_progress")
                backup = next(
                    b for b in vps.list_backups(data["server"]["id"]).backups if b.id == data["id"]
                )
                job = watcher.watch(backup, actor)
                ts = str(web.chat_postMessage(channel="C_OPS", text=f"started {backup.id}")["ts"])
                watcher.attach_thread(job, "C_OPS", ts)
                ids.append(backup.id)
            simulator.faults.latency = latency
            time.sleep(SETTINGS.first_poll)
            before = len(simulator.api_calls("GET", "/backups/"))
            watcher.run_once()
            calls = len(simulator.api_calls("GET", "/backups/")) - before
            watcher.start()
            time.sleep(SETTINGS.max_poll)  # into the steady state of the backoff
            finished_at = time.time()
            for backup_id in ids:
                simulator.finish(backup_id)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                replies = [
                    c
                    for c in slack.calls_to("chat.postMessage")
                    if c.args.get("thread_ts") and c.ok
                ]
                if len(replies) >= backups:
                    break
                time.sleep(0.05)
            watcher.stop()
            delays = [c.at - finished_at for c in replies if isinstance(c, RecordedCall)]
            if len(delays) < backups:
                raise RuntimeError(f"only {len(delays)} of {backups} replies arrived")
            return Result(calls, statistics.median(delays), max(delays))
        finally:
            vps.close()
            slack.stop()
            simulator.stop()
            engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--latency", type=float, default=0.02, help="provider latency, seconds")
    parser.add_argument(
        "--cases",
        default="50x5,200x20",
        help="comma-separated BACKUPSxSERVERS (default: %(default)s)",
    )
    args, _ = parser.parse_known_args(argv)
    print(f"watcher polling, provider latency {args.latency * 1000:.0f} ms per request")
    print(
        f"{'backups x servers':>18} {'strategy':>11} {'calls/round':>12} "
        f"{'median delay':>13} {'max delay':>10}"
    )
    for case in args.cases.split(","):
        backups, servers = (int(part) for part in case.split("x"))
        batched = run(Watcher, backups, servers, args.latency)
        single = run(PerBackupWatcher, backups, servers, args.latency)
        for name, result in (("batched", batched), ("per-backup", single)):
            print(
                f"{case:>18} {name:>11} {result.calls_per_round:>12} "
                f"{result.median_delay:>12.2f}s {result.max_delay:>9.2f}s"
            )
        print(
            f"{case:>18} {'ratio':>11} {single.calls_per_round / batched.calls_per_round:>11.1f}x "
            f"{single.median_delay / batched.median_delay:>12.1f}x "
            f"{single.max_delay / batched.max_delay:>9.1f}x   (per-backup / batched)"
        )
