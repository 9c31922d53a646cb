"""nakama.db.changes.Fresh: values kept while the change counter stays, one computation per key
at a time (issue 13: a change under load made 40 request threads compute the same list)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from nakama.db.changes import Fresh


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        return self.n


def test_a_value_is_kept_until_the_counter_moves() -> None:
    counter, calls = Counter(), []
    fresh: Fresh[str] = Fresh(counter, kept=10)

    def compute() -> str:
        calls.append(counter.n)
        return f"v{counter.n}"

    assert fresh.get(("a",), compute) == "v0"
    assert fresh.get(("a",), compute) == "v0"
    assert fresh.get(("b",), compute) == "v0"  # another key: its own computation
    counter.n = 1
    assert fresh.get(("a",), compute) == "v1"
    assert calls == [0, 0, 1]


def test_callers_missing_together_wait_for_one_computation() -> None:
    fresh: Fresh[str] = Fresh(Counter(), kept=10)
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def compute() -> str:
        calls.append(1)
        started.set()
        assert release.wait(10)
        return "list"

    with ThreadPoolExecutor(20) as pool:
        first = pool.submit(fresh.get, ("alice",), compute)
        assert started.wait(10)
        others = [pool.submit(fresh.get, ("alice",), compute) for _ in range(19)]
        release.set()
        assert [f.result(10) for f in [first, *others]] == ["list"] * 20
    assert len(calls) == 1


def test_two_keys_are_computed_side_by_side() -> None:
    """Alice's list may be computed while bob's is: one waits for the other here, so a
    single lock for all keys would never finish."""
    fresh: Fresh[str] = Fresh(Counter(), kept=10)
    alice_in, bob_done = threading.Event(), threading.Event()

    def alice() -> str:
        alice_in.set()
        assert bob_done.wait(10), "bob's computation never ran beside alice's"
        return "alice's"

    def bob() -> str:
        assert alice_in.wait(10)
        bob_done.set()
        return "bob's"

    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(fresh.get, ("alice",), alice)
        b = pool.submit(fresh.get, ("bob",), bob)
        assert (a.result(15), b.result(15)) == ("alice's", "bob's")


def test_a_failed_computation_is_not_kept_and_a_waiter_computes_itself() -> None:
    fresh: Fresh[str] = Fresh(Counter(), kept=10)
    started, release = threading.Event(), threading.Event()

    def failing() -> str:
        started.set()
        assert release.wait(10)
        raise RuntimeError("database gone")

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(fresh.get, ("alice",), failing)
        assert started.wait(10)
        waiter = pool.submit(fresh.get, ("alice",), lambda: "read again")
        release.set()
        with pytest.raises(RuntimeError, match="database gone"):
            first.result(10)
        assert waiter.result(10) == "read again"
    assert fresh.get(("alice",), lambda: "now") == "read again"


def test_at_most_kept_values() -> None:
    fresh: Fresh[int] = Fresh(Counter(), kept=3)
    calls: list[int] = []
    for i in range(5):
        fresh.get((i,), lambda i=i: calls.append(i) or i)  # type: ignore[misc]
    assert fresh.get((4,), lambda: -1) == 4  # the newest is kept
    assert fresh.get((0,), lambda: -1) == -1  # the oldest went with a full cache
