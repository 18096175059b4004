"""One audit writer process for the multi-process test: writes WORKER_ROWS rows, prints how many."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.audit import Actor, AuditLog
from bot.db import Outcome, make_engine, make_session_factory


def main() -> int:
    engine = make_engine(os.environ["WORKER_DATABASE_URL"])
    log = AuditLog(make_session_factory(engine))
    actor = Actor(f"U_WORKER{os.getpid()}", "worker")
    count = int(os.environ.get("WORKER_ROWS", "500"))
    for i in range(count):
        log.record(actor, "create", Outcome.OK, server_id=12345, backup_id=i)
    print(f"wrote {count}", flush=True)
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
