"""One watcher process for the multi-instance test: runs rounds for a while, prints its count."""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slack_sdk import WebClient

from bot.audit import AuditLog
from bot.db import make_engine, make_session_factory
from bot.slack.notify import SlackNotifier
from bot.vps.client import BackupsClient
from bot.watch import Watcher, WatchSettings


def main() -> int:
    engine = make_engine(os.environ["WORKER_DATABASE_URL"])
    sessions = make_session_factory(engine)
    vps = BackupsClient(os.environ["WORKER_VPS_URL"], os.environ["WORKER_VPS_TOKEN"])
    web = WebClient(token=os.environ["WORKER_SLACK_TOKEN"], base_url=os.environ["WORKER_SLACK_URL"])
    settings = WatchSettings(
        first_poll=0.05, max_poll=0.2, tick=0.02, thread_grace=timedelta(0), batch=7
    )
    watcher = Watcher(sessions, vps, SlackNotifier(web), AuditLog(sessions), settings=settings)
    notified = 0
    deadline = time.monotonic() + float(os.environ.get("WORKER_SECONDS", "5"))
    while time.monotonic() < deadline:
        notified += watcher.run_once().notified
        time.sleep(0.01)
    print(f"notified {notified}", flush=True)
    vps.close()
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
