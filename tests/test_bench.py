"""The benchmarks still run (tiny sizes; their timings are printed by `make bench`, not tested)."""

from __future__ import annotations

from bench import watch_polling
from bot.watch import Watcher


def test_watch_polling_benchmark_counts_calls_per_round() -> None:
    batched = watch_polling.run(Watcher, backups=6, servers=2, latency=0.0)
    single = watch_polling.run(watch_polling.PerBackupWatcher, backups=6, servers=2, latency=0.0)
    assert batched.calls_per_round == 2
    assert single.calls_per_round == 6
    assert batched.max_delay >= batched.median_delay >= 0
