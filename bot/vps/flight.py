"""Single-flight: identical calls in flight at the same moment share one execution.

The idea of Go's `golang.org/x/sync/singleflight`, for threads. The first caller of a key (the
leader) runs the function; callers of the same key that arrive while it runs (joiners) wait for
its outcome instead of running it again. When the leader finishes, the key is forgotten: a call
that starts afterwards runs the function anew. Nothing is cached, so nothing goes stale.

- Every waiter keeps its own patience: `wait` bounds how long a joiner waits, and one whose wait
  runs out gets `FlightTimeout` while the shared call goes on for the others.
- An error of the shared call reaches every waiter, each as its own copy (one exception object
  raised in many threads at once would collect all their tracebacks).
- The value is handed to every waiter as is: share only immutable values.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class FlightTimeout(Exception):
    """A joiner's wait ended before the shared call did (the call itself goes on)."""


class _Call(Generic[V]):
    __slots__ = ("done", "error", "joiners", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: V | None = None
        self.error: BaseException | None = None
        self.joiners = 0


class SingleFlight(Generic[K, V]):
    """Shares one execution of `fn` among the callers of `do(key, fn)` that overlap in time."""

    def __init__(self, *, on_join: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._calls: dict[K, _Call[V]] = {}
        self._on_join = on_join

    def in_flight(self) -> int:
        """Keys being run at this moment (for tests and metrics)."""
        with self._lock:
            return len(self._calls)

    def do(self, key: K, fn: Callable[[], V], *, wait: float | None = None) -> V:
        """`fn()`, or the outcome of the identical call already running.

        `wait`: at most this many seconds for a call this caller joins (None: as long as it
        takes); past it, `FlightTimeout`. A leader is never cut short: it runs `fn` itself, and
        `fn` keeps its own time limits.
        """
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if call is None:
                call = self._calls[key] = _Call()
            else:
                call.joiners += 1
        if leader:
            return self._lead(key, call, fn)
        if self._on_join is not None:
            self._on_join()
        if not call.done.wait(wait):
            raise FlightTimeout(f"the shared call did not finish within {wait:.1f} s")
        if call.error is not None:
            raise _copy(call.error)
        return call.value  # type: ignore[return-value]  # set whenever error is None

    def _lead(self, key: K, call: _Call[V], fn: Callable[[], V]) -> V:
        try:
            call.value = fn()
            return call.value
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            # Forgotten before the waiters wake: whoever comes next starts a new call.
            with self._lock:
                del self._calls[key]
            call.done.set()


def _copy(error: BaseException) -> BaseException:
    """The same error (type, message, attributes, cause) as a new object with no traceback."""
    try:
        clone = type(error).__new__(type(error), *error.args)
        clone.__dict__.update(error.__dict__)
    except Exception:  # an exception type that cannot be made this way: share the original
        return error
    clone.__cause__ = error.__cause__
    clone.__suppress_context__ = error.__suppress_context__
    return clone
