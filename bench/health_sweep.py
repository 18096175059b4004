"""The health sweep at scale: 500 servers x 60 backups against the bare paged list it is made of.

The simulator holds S servers with B backups each (daily automatic ones for a few weeks, manual
ones over three months; a few servers stale, a few with a failed newest backup), paged P rows a
page. Its pages are recorded once and replayed by an in-process transport that answers each request
after a small latency, as a real network would: the simulator itself sorts and renders every row
for every page, which would swamp (and flatter) what is measured here. Side by side in one process:

- the floor: `BackupsClient.list_backups()` alone, every page of every backup, parsed;
- a sweep: `HealthMonitor.sweep(force=True)`: that list, the classification of every server, the
  incidents read and written in the database, alerts posted to the Slack double (the first sweep
  opens the incidents and posts their alerts; the later ones find nothing new).

Printed: provider calls of each (goal: a sweep makes exactly the pages of one list, not one call
per server) and the median time of each, as a ratio (goal: a steady sweep within 1.5x the floor).
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from slack_sdk import WebClient

from bot.audit import AuditLog
from bot.db import make_engine, make_session_factory, upgrade
from bot.health import HealthMonitor, HealthSettings
from bot.sandbox.slack import SlackDouble
from bot.sandbox.vps import Simulator
from bot.slack.health_post import SlackHealthPoster
from bot.vps.client import BackupsClient

TOKEN = "bench-token"  # noqa: S105 - the simulator's, not a real one
FIRST_SERVER = 80000
AUTOMATIC_DAYS = 24  # automatic backups expire (and vanish) a month after they were made


@dataclass
class Result:
    servers: int
    backups: int
    pages: int
    floor_calls: int
    sweep_calls: int
    first_sweep: float
    floor: float  # median seconds
    sweep: float  # median seconds of the steady sweeps
    unhealthy: int
    alerts: int

    @property
    def ratio(self) -> float:
        return self.sweep / self.floor


class Replay(httpx.BaseTransport):
    """The recorded pages of `GET /backups/`, by `page`, each after `latency` seconds."""

    def __init__(self, pages: dict[str, bytes], latency: float) -> None:
        self.pages, self.latency, self.calls = pages, latency, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        time.sleep(self.latency)
        body = self.pages[request.url.params.get("page", "1")]
        headers = {"Content-Type": "application/json"}
        return httpx.Response(200, headers=headers, stream=httpx.ByteStream(body))


def record(simulator: Simulator) -> dict[str, bytes]:
    pages: dict[str, bytes] = {}
    url: str | None = f"{simulator.base_url}/backups/"
    with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as http:
        while url:
            answer = http.get(url)
            answer.raise_for_status()
            pages[answer.url.params.get("page", "1")] = answer.content
            url = answer.json().get("next")
    return pages


def seed(simulator: Simulator, servers: int, per_server: int, now: datetime) -> int:
    """S servers, B backups each; every 20th stale (nothing for 3 days), every 50th with a
    failed newest backup. Returns how many backups there are."""
    count = 0
    for index in range(servers):
        server_id = FIRST_SERVER + index
        simulator.add_server(server_id, f"node-{index:04d}")
        shift = timedelta(days=3) if index % 20 == 7 else timedelta(0)
        automatic = min(per_server, AUTOMATIC_DAYS)
        for day in range(automatic):
            simulator.add_backup(
                server_id,
                backup_type="automatic",
                created_at=now - shift - timedelta(days=day, hours=2),
                description="Automatic daily backup",
            )
        for number in range(per_server - automatic):
            simulator.add_backup(
                server_id,
                created_at=now - shift - timedelta(hours=37 * number + 5),
                description="Before a deploy",
            )
        count += per_server
        if index % 50 == 3:
            simulator.add_backup(
                server_id,
                backup_type="automatic",
                status="failed",
                created_at=now - timedelta(hours=1),
            )
            count += 1
    return count


def run(
    servers: int = 500,
    per_server: int = 60,
    page_size: int = 1000,
    repeat: int = 3,
    latency: float = 0.002,
    database_url: str | None = None,
) -> Result:
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        simulator = Simulator(TOKEN, complete_after=3600, seed_data=False, page_size=page_size)
        slack = SlackDouble()
        simulator.start()
        slack.start()
        try:
            backups = seed(simulator, servers, per_server, now)
            replay = Replay(record(simulator), latency)
        finally:
            simulator.stop()
        vps = BackupsClient(simulator.base_url, TOKEN, read_timeout=120, transport=replay)
        try:
            web = WebClient(token=slack.bot_token, base_url=slack.api_url)
            monitor = HealthMonitor(
                sessions,
                vps,
                AuditLog(sessions),
                SlackHealthPoster(web),
                settings=HealthSettings(alerts_channel="C_OPS"),
            )
            pages = math.ceil(backups / page_size)

            def calls() -> int:
                return replay.calls

            floors, sweeps = [], []
            before = calls()
            start = time.perf_counter()
            first = monitor.sweep(force=True)
            first_sweep = time.perf_counter() - start
            sweep_calls = calls() - before
            assert first is not None and first.problem is None, first
            for _ in range(repeat):  # interleaved, so drift hits both alike
                before = calls()
                start = time.perf_counter()
                listing = vps.list_backups()
                floors.append(time.perf_counter() - start)
                floor_calls = calls() - before
                assert len(listing.backups) == first.backups
                start = time.perf_counter()
                report = monitor.sweep(force=True)
                sweeps.append(time.perf_counter() - start)
                assert report is not None and not report.opened
            return Result(
                servers=first.servers,
                backups=first.backups,
                pages=pages,
                floor_calls=floor_calls,
                sweep_calls=sweep_calls,
                first_sweep=first_sweep,
                floor=statistics.median(floors),
                sweep=statistics.median(sweeps),
                unhealthy=first.unhealthy,
                alerts=len(slack.calls_to("chat.postMessage")),
            )
        finally:
            vps.close()
            slack.stop()
            engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--health-servers", type=int, default=500, help="default: %(default)s")
    parser.add_argument(
        "--health-backups", type=int, default=60, help="per server (default: %(default)s)"
    )
    parser.add_argument("--health-page-size", type=int, default=1000, help="default: %(default)s")
    parser.add_argument("--health-repeat", type=int, default=3, help="default: %(default)s")
    parser.add_argument(
        "--health-latency", type=float, default=0.002, help="seconds per provider request"
    )
    parser.add_argument("--health-database", default=None, help="a database URL (default: SQLite)")
    args, _ = parser.parse_known_args(argv)
    result = run(
        args.health_servers,
        args.health_backups,
        args.health_page_size,
        args.health_repeat,
        args.health_latency,
        args.health_database,
    )
    print(
        f"health sweep: {result.servers} servers, {result.backups} backups, "
        f"{args.health_page_size} a page, provider latency {args.health_latency * 1000:.0f} ms"
    )
    print(
        f"  provider calls: sweep {result.sweep_calls}, bare list {result.floor_calls} "
        f"(pages: {result.pages}; one call per server would be {result.servers})"
    )
    print(
        f"  time: steady sweep {result.sweep * 1000:.0f} ms, bare paged list (floor) "
        f"{result.floor * 1000:.0f} ms, ratio {result.ratio:.2f}x (goal within 1.5x); first "
        f"sweep {result.first_sweep * 1000:.0f} ms ({result.unhealthy} unhealthy servers, "
        f"{result.alerts} alerts posted)"
    )
