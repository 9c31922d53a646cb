"""Exponential back-off after failed attempts, per key (a client address, or an address and a
username): the first few failures are free, then each next attempt must wait twice as long as
the one before, up to a cap. It slows guessing down without a lock-out: the wait is the
guesser's own (keyed on their address), never the account's.

:meth:`Backoff.reserve` counts an attempt as failed *before* it is checked and
:meth:`Backoff.succeeded` takes that back, so concurrent attempts cannot all slip past the limit
while a slow check (scrypt) runs. Kept in memory: a restart forgets, which is fine for this.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """How many failures of one key are free, and the waits after them."""

    free: int
    initial_s: float
    max_s: float

    def wait_after(self, failures: int) -> float:
        """Seconds the next attempt waits after ``failures`` failures (0: none)."""
        if failures < self.free:
            return 0.0
        return min(self.max_s, self.initial_s * 2.0 ** min(failures - self.free, 60))


@dataclass
class _Record:
    failures: int = 0
    until: float = 0.0  # no attempt before this moment (the clock's)
    last: float = 0.0  # the last failure


# Keys kept at most; past it, quiet keys are dropped first (memory stays bounded).
MAX_KEYS = 100_000


class Backoff:
    """Failures per (rule, key), under one lock: an attempt that names several keys (an address
    and the pair address-username) passes only if none of them must wait, and is recorded
    against all of them at once."""

    def __init__(
        self, rules: dict[str, Rule], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rules = rules
        self._clock = clock
        self._records: dict[tuple[str, str], _Record] = {}
        self._lock = threading.Lock()

    def _get(self, key: tuple[str, str], now: float) -> _Record | None:
        record = self._records.get(key)
        if record is not None and self._expired(key[0], record, now):
            del self._records[key]
            return None
        return record

    def _expired(self, rule: str, record: _Record, now: float) -> bool:
        # Quiet for as long as the longest wait: the key starts afresh.
        return now >= record.until and now - record.last > self._rules[rule].max_s

    def _wait(self, keys: Iterable[tuple[str, str]], now: float) -> float:
        waits = [r.until - now for k in keys if (r := self._get(k, now)) is not None]
        return max([0.0, *waits])

    def _fail(self, keys: Iterable[tuple[str, str]], now: float) -> None:
        if len(self._records) >= MAX_KEYS:
            self._sweep(now)
        for key in keys:
            record = self._get(key, now) or self._records.setdefault(key, _Record())
            record.failures += 1
            record.last = now
            wait = self._rules[key[0]].wait_after(record.failures)
            if wait:
                record.until = max(record.until, now + wait)

    def _sweep(self, now: float) -> None:
        for key in [k for k, r in self._records.items() if self._expired(k[0], r, now)]:
            del self._records[key]
        if len(self._records) >= MAX_KEYS:  # still full: drop the quietest half
            by_age = sorted(self._records, key=lambda k: self._records[k].last)
            for key in by_age[: len(by_age) // 2]:
                del self._records[key]

    def wait_s(self, keys: dict[str, str]) -> float:
        """Seconds until an attempt for ``keys`` (rule name -> key) may be made (0: now)."""
        with self._lock:
            return self._wait(keys.items(), self._clock())

    def reserve(self, keys: dict[str, str]) -> float:
        """0.0 if an attempt may be made now, and then it is counted as failed until
        :meth:`succeeded` says otherwise; else the seconds to wait (nothing is counted)."""
        with self._lock:
            now = self._clock()
            wait = self._wait(keys.items(), now)
            if wait <= 0:
                self._fail(keys.items(), now)
            return wait

    def failed(self, keys: dict[str, str]) -> None:
        """Count a failure that was not reserved (a cheap check made first, then recorded)."""
        with self._lock:
            self._fail(keys.items(), self._clock())

    def succeeded(self, keys: dict[str, str], *, forget: Iterable[str] = ()) -> None:
        """A reserved attempt was right: take its failure back; the rules named in ``forget``
        start afresh for their key (the pair of a user who signed in)."""
        dropped = set(forget)
        with self._lock:
            now = self._clock()
            for rule, key in keys.items():
                record = self._get((rule, key), now)
                if record is None:
                    continue
                if rule in dropped:
                    del self._records[(rule, key)]
                    continue
                record.failures = max(0, record.failures - 1)
                if self._rules[rule].wait_after(record.failures) == 0:
                    record.until = 0.0
