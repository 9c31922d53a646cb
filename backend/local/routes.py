"""The gateway's route table: which loopback port serves each app now, how many requests each
port is still answering, and when each app last had a request.

The runtime switches an app's route once its new process is healthy and then waits for the old
port's requests to finish (:meth:`Routes.drain`) before stopping the old process; the gateway
counts every request it forwards (:meth:`Routes.forward`), and the idle check reads
:meth:`Routes.idle_s`. Thread-safe: the runtime works in threads, the gateway on the event loop,
and every method holds the lock only for a few dictionary operations.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager


class Routes:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._ports: dict[str, int] = {}
        self._in_flight: Counter[tuple[str, int]] = Counter()
        self._last_request: dict[str, float] = {}

    def port(self, app: str) -> int | None:
        """The port that serves ``app`` now (None: nothing does)."""
        with self._lock:
            return self._ports.get(app)

    def ports(self) -> set[int]:
        with self._lock:
            return set(self._ports.values())

    def switch(self, app: str, port: int) -> int | None:
        """Send ``app``'s new requests to ``port``; returns the port they went to before."""
        with self._lock:
            old = self._ports.get(app)
            self._ports[app] = port
            # A version that just came up gets a whole idle period: one woken by a request
            # that gave up waiting must not go back to sleep before the browser reloads.
            self._last_request[app] = time.monotonic()
            return old if old != port else None

    def clear(self, app: str) -> int | None:
        """``app`` is served by nothing now (stopped, asleep, removed); returns its old port."""
        with self._lock:
            return self._ports.pop(app, None)

    def clear_port(self, app: str, port: int) -> bool:
        """Stop routing ``app`` to ``port`` if that is where it goes (its process there ended:
        until it is back, nothing else on that port may get the app's requests)."""
        with self._lock:
            if self._ports.get(app) != port:
                return False
            del self._ports[app]
            return True

    @contextmanager
    def forward(self, app: str) -> Iterator[int | None]:
        """Count one request to ``app`` while it is forwarded; yields the port (None: no route)."""
        with self._lock:
            port = self._ports.get(app)
            self._last_request[app] = time.monotonic()
            if port is not None:
                self._in_flight[(app, port)] += 1
        try:
            yield port
        finally:
            if port is not None:
                with self._lock:
                    self._in_flight[(app, port)] -= 1
                    if self._in_flight[(app, port)] <= 0:
                        del self._in_flight[(app, port)]
                        self._lock.notify_all()

    def touch(self, app: str) -> None:
        """Note a request to ``app`` that was not forwarded (it woke a sleeping app)."""
        with self._lock:
            self._last_request[app] = time.monotonic()

    def in_flight(self, app: str, port: int) -> int:
        with self._lock:
            return self._in_flight.get((app, port), 0)

    def drain(self, app: str, port: int, *, timeout_s: float) -> bool:
        """Wait until no request to ``app`` on ``port`` is in flight, at most ``timeout_s``;
        True if they all finished."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._in_flight.get((app, port), 0) > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
            return True

    def idle_s(self, app: str) -> float:
        """Seconds since ``app``'s last request or since it last came up, whichever is later;
        0 while a request is in flight."""
        with self._lock:
            if any(a == app for a, _port in self._in_flight):
                return 0.0
            last = self._last_request.get(app)
            return 0.0 if last is None else time.monotonic() - last

    def forget(self, app: str) -> None:
        with self._lock:
            self._ports.pop(app, None)
            self._last_request.pop(app, None)
