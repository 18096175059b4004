"""The benchmarks still run (tiny sizes; their timings are printed by `make bench`, not tested)."""

from __future__ import annotations

from bench import audit_review, watch_polling
from bot.watch import Watcher


def test_watch_polling_benchmark_counts_calls_per_round() -> None:
    batched = watch_polling.run(Watcher, backups=6, servers=2, latency=0.0)
    single = watch_polling.run(watch_polling.PerBackupWatcher, backups=6, servers=2, latency=0.0)
    assert batched.calls_per_round == 2
    assert single.calls_per_round == 6
    assert batched.max_delay >= batched.median_delay >= 0


def test_audit_review_benchmark_runs_on_a_small_sqlite_table() -> None:
    result = audit_review.run_sqlite(rows=2000, repeat=1)
    assert result.verify.rows == 2000  # the generated chain verifies
    assert [page.name for page in result.pages] == [name for name, _ in audit_review.cases(2000)]
    assert all(page.recent > 0 and page.floor > 0 for page in result.pages)
    assert result.small_rss > 0 and result.big_rss > 0
