"""`bot.vps.flight.SingleFlight` on its own: sharing, a fresh call after, concurrency of distinct
keys, errors reaching every waiter, and a waiter's own patience."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from bot.vps.flight import FlightTimeout, SingleFlight

WAIT = 10.0  # generous: how long a test waits for a thread to get somewhere


class Gate:
    """A function that counts its calls and blocks until released."""

    def __init__(self, value: object = "answer") -> None:
        self.calls = 0
        self.started = threading.Event()
        self.release = threading.Event()
        self.value = value
        self._lock = threading.Lock()

    def __call__(self) -> object:
        with self._lock:
            self.calls += 1
        self.started.set()
        assert self.release.wait(WAIT), "never released"
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value


def joined_counter() -> tuple[Callable[[], None], Callable[[int], None]]:
    """`on_join` for a flight, and a function waiting until that many callers joined."""
    condition = threading.Condition()
    joined = 0

    def on_join() -> None:
        nonlocal joined
        with condition:
            joined += 1
            condition.notify_all()

    def wait_for(count: int) -> None:
        with condition:
            assert condition.wait_for(lambda: joined >= count, WAIT), f"{joined} joined"

    return on_join, wait_for


def test_callers_that_overlap_share_one_call_and_its_value() -> None:
    on_join, wait_for = joined_counter()
    flight: SingleFlight[str, object] = SingleFlight(on_join=on_join)
    gate = Gate(value=("same", "object"))
    with ThreadPoolExecutor(20) as pool:
        leader = pool.submit(flight.do, "k", gate)
        assert gate.started.wait(WAIT)
        joiners = [pool.submit(flight.do, "k", gate) for _ in range(19)]
        wait_for(19)
        assert flight.in_flight() == 1
        gate.release.set()
        results = [leader.result(WAIT)] + [f.result(WAIT) for f in joiners]
    assert gate.calls == 1
    assert all(result is gate.value for result in results)
    assert flight.in_flight() == 0


def test_a_call_after_the_shared_one_finished_runs_anew() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    calls: list[int] = []

    def count() -> int:
        calls.append(1)
        return len(calls)

    assert flight.do("k", count) == 1
    assert flight.do("k", count) == 2  # nothing cached
    assert len(calls) == 2


def test_distinct_keys_run_at_the_same_time() -> None:
    flight: SingleFlight[int, int] = SingleFlight()
    both_inside = threading.Barrier(2, timeout=WAIT)

    def meet(n: int) -> int:
        both_inside.wait()  # raises BrokenBarrierError if the other key had to wait for this one
        return n

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(flight.do, 1, lambda: meet(1))
        second = pool.submit(flight.do, 2, lambda: meet(2))
        assert (first.result(WAIT), second.result(WAIT)) == (1, 2)


class Refused(Exception):
    def __init__(self, message: str, *, code: int) -> None:  # keyword-only: no plain copy
        super().__init__(message)
        self.code = code


def test_an_error_of_the_shared_call_reaches_every_waiter_as_its_own_copy() -> None:
    on_join, wait_for = joined_counter()
    flight: SingleFlight[str, object] = SingleFlight(on_join=on_join)
    error = Refused("the provider said no", code=401)
    gate = Gate(value=error)
    with ThreadPoolExecutor(6) as pool:
        leader = pool.submit(flight.do, "k", gate)
        assert gate.started.wait(WAIT)
        joiners = [pool.submit(flight.do, "k", gate) for _ in range(5)]
        wait_for(5)
        gate.release.set()
        raised = [f.exception(WAIT) for f in [leader, *joiners]]
    assert gate.calls == 1
    assert raised[0] is error
    for other in raised[1:]:
        assert isinstance(other, Refused)
        assert other is not error
        assert (str(other), other.code) == ("the provider said no", 401)
    assert len({id(e) for e in raised}) == 6
    # The next call is a new one, and this time it works.
    assert flight.do("k", lambda: "fine") == "fine"


def test_a_waiter_whose_patience_ends_leaves_and_the_others_still_get_the_value() -> None:
    on_join, wait_for = joined_counter()
    flight: SingleFlight[str, object] = SingleFlight(on_join=on_join)
    gate = Gate()
    with ThreadPoolExecutor(3) as pool:
        leader = pool.submit(flight.do, "k", gate)
        assert gate.started.wait(WAIT)
        impatient = pool.submit(flight.do, "k", gate, wait=0.05)
        patient = pool.submit(flight.do, "k", gate, wait=WAIT)
        wait_for(2)
        with pytest.raises(FlightTimeout):
            impatient.result(WAIT)
        assert not leader.done()  # the shared call goes on
        gate.release.set()
        assert leader.result(WAIT) == patient.result(WAIT) == "answer"
    assert gate.calls == 1


def test_a_leader_that_fails_lets_the_key_go() -> None:
    flight: SingleFlight[str, object] = SingleFlight()

    def boom() -> object:
        raise ValueError("once")

    with pytest.raises(ValueError, match="once"):
        flight.do("k", boom)
    assert flight.in_flight() == 0
    assert flight.do("k", lambda: 7) == 7
