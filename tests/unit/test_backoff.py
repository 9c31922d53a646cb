"""Back-off after failed attempts (nakama.backoff) and the sign-in throttle built on it, on a
clock the test moves: free failures, doubling waits up to the cap, reservations that concurrent
tries cannot slip past, and keys that never lock out anyone else."""

from __future__ import annotations

import threading

from backend.web.throttle import SignInThrottle
from nakama.backoff import Backoff, Rule
from nakama.settings import WebSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def backoff(clock: Clock, *, free: int = 3) -> Backoff:
    return Backoff({"r": Rule(free=free, initial_s=1.0, max_s=60.0)}, clock=clock)


def test_waits_double_after_the_free_failures_up_to_the_cap() -> None:
    clock = Clock()
    b = backoff(clock)
    keys = {"r": "bob"}
    waits = []
    for _ in range(12):
        waits.append(b.wait_s(keys))
        clock.now += waits[-1]  # bob waits as told, then fails again
        b.failed(keys)
    assert waits[:4] == [0.0, 0.0, 0.0, 1.0]
    assert waits[4:9] == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert waits[9:] == [60.0, 60.0, 60.0]  # the cap
    assert b.wait_s({"r": "alice"}) == 0.0  # another key is not touched


def test_a_quiet_key_is_forgotten_after_the_longest_wait() -> None:
    clock = Clock()
    b = backoff(clock, free=1)
    b.failed({"r": "bob"})
    assert b.wait_s({"r": "bob"}) == 1.0
    clock.now += 61.0
    assert b.wait_s({"r": "bob"}) == 0.0
    b.failed({"r": "bob"})
    assert b.wait_s({"r": "bob"}) == 1.0  # starts afresh, not at the old count


def test_reservations_let_only_the_free_tries_through_at_once() -> None:
    clock = Clock()
    b = backoff(clock, free=5)
    passed: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(50)

    def attempt() -> None:
        start.wait()
        ok = b.reserve({"r": "alice"}) == 0.0
        with lock:
            passed.append(ok)

    threads = [threading.Thread(target=attempt) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert passed.count(True) == 5 and len(passed) == 50


def test_a_right_try_takes_its_reservation_back() -> None:
    clock = Clock()
    b = backoff(clock, free=2)
    keys = {"r": "alice"}
    for _ in range(10):
        assert b.reserve(keys) == 0.0
        b.succeeded(keys)
    assert b.wait_s(keys) == 0.0
    assert b.reserve(keys) == 0.0  # one real failure, then a right one
    assert b.reserve(keys) == 0.0
    b.succeeded(keys)
    assert b.wait_s(keys) == 0.0  # one failure left: still free


def test_a_stranger_cannot_lock_a_user_out_from_elsewhere() -> None:
    clock = Clock()
    throttle = SignInThrottle(WebSettings(), clock=clock)
    for _ in range(5):
        assert throttle.reserve("198.51.100.7", "alice") == 0.0  # bob's wrong guesses
    assert throttle.reserve("198.51.100.7", "alice") > 0  # bob waits
    assert throttle.reserve("203.0.113.9", "alice") == 0.0  # alice, from her own address
    throttle.succeeded("203.0.113.9", "alice")
    # bob's address for other users: only the per-address count (30) holds it back.
    assert throttle.reserve("198.51.100.7", "carol") == 0.0


def test_many_users_from_one_address_hit_the_address_limit() -> None:
    clock = Clock()
    throttle = SignInThrottle(WebSettings(signin_failures_per_address=4), clock=clock)
    for name in ("a", "b", "c", "d"):
        assert throttle.reserve("192.0.2.1", name) == 0.0
    assert throttle.reserve("192.0.2.1", "e") > 0
    assert throttle.reserve("192.0.2.2", "e") == 0.0
