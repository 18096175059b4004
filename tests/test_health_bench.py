"""The health sweep benchmark still runs (tiny sizes; `make bench` prints the real numbers)."""

from __future__ import annotations

from bench import health_sweep


def test_the_sweep_benchmark_counts_the_pages_of_one_list() -> None:
    result = health_sweep.run(servers=40, per_server=6, page_size=50, repeat=1, latency=0.0)
    assert result.servers == 40 and result.backups == 40 * 6 + 1  # one server's failed backup
    assert result.pages == 5
    assert result.sweep_calls == result.floor_calls == result.pages
    assert result.unhealthy == 3  # two stale, one failed
    assert result.alerts == result.unhealthy
    assert result.floor > 0 and result.sweep > 0
