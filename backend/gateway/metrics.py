"""What the gateway saw, per app: requests by status class and latency (Prometheus, exported at
``/metrics``), and the distinct signed-in viewers per day (kept in the database, shown on the
project page as "N viewers this week").

Viewers are written once per (app, user, day): the first request of a user on a day records
it, later ones are answered from a set in memory, so a busy app costs no database write per
request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from nakama.auth import Principal


class GatewayMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        record_viewer: Callable[[str, int, date], None] | None = None,
    ) -> None:
        """``record_viewer(app, user_id, day)`` stores a viewer of the day (idempotent)."""
        self.requests = Counter(
            "nakama_gateway_requests",
            "Requests the gateway answered for an app, by status class",
            ["app", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "nakama_gateway_request_seconds",
            "Seconds from a request's arrival until its answer was complete (WebSockets: closed)",
            ["app"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self._record = record_viewer
        self._counters: dict[tuple[str, int], Any] = {}
        self._histograms: dict[str, Any] = {}
        self._seen: set[tuple[str, int, date]] = set()
        self._lock = threading.Lock()

    def request(self, app: str, status: int, seconds: float) -> None:
        counter = self._counters.get((app, status // 100))
        if counter is None:  # labels() looks its child up anew each time: keep them
            counter = self.requests.labels(app=app, code=f"{status // 100}xx")
            self._counters[(app, status // 100)] = counter
        histogram = self._histograms.get(app)
        if histogram is None:
            histogram = self._histograms[app] = self.latency.labels(app=app)
        counter.inc()
        histogram.observe(seconds)

    def viewer(self, app: str, viewer: Principal | None) -> None:
        """Count ``viewer`` (a signed-in user) as one of today's viewers of ``app``."""
        if viewer is None or viewer.user_id is None or self._record is None:
            return
        key = (app, viewer.user_id, datetime.now(UTC).date())
        with self._lock:
            if key in self._seen:
                return
            if len(self._seen) > 100_000:  # a day's worth is plenty; start over
                self._seen.clear()
            self._seen.add(key)
        threading.Thread(target=self._record, args=key, daemon=True).start()
