"""Workers that run in rounds on a daemon thread of their own: the watcher, the approval runner,
the health monitor and the audit checkpoints.

Each keeps its work in the database, so a round that fails (the database or the provider away for
a moment) is logged and the next round tries again; nothing is lost with it. `poke()` starts the
next round at once (a job just became due) instead of after `tick()` seconds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Self

log = logging.getLogger(__name__)


class Rounds:
    def __init__(self, name: str, tick: Callable[[], float]) -> None:
        """`name`: the thread's, and the worker's in log lines; `tick`: seconds between rounds
        (asked each time, so a changed setting applies to the next wait)."""
        self._name = name
        self._tick = tick
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> object:
        raise NotImplementedError

    def start(self) -> Self:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the round in progress (waiting at most `timeout` seconds for it)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def poke(self) -> None:
        """Run the next round now."""
        self._wake.set()

    def stopping(self) -> bool:
        """For a long round to end early when the worker is being stopped."""
        return self._stop.is_set()

    def _loop(self) -> None:
        log.info("%s started", self._name)
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("%s: a round failed; trying again shortly", self._name)
            self._wake.wait(self._tick())
            self._wake.clear()
        log.info("%s stopped", self._name)
