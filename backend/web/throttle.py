"""Failed sign-ins slow down guessing: after a few failures for one username or one client, new
attempts are refused for a while. Kept in memory: a restart forgets, which is fine for this."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque


class Throttle:
    def __init__(self, *, max_failures: int, window_s: float) -> None:
        self._max = max_failures
        self._window = window_s
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and now - times[0] > self._window:
            times.popleft()
        if not times:  # forget quiet keys, so memory stays bounded by recent failures
            del self._failures[key]
        return times

    def blocked(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            return len(self._recent(key, now)) >= self._max

    def failed(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent(key, now)
            self._failures[key].append(now)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)
