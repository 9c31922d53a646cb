"""``GET /metrics``: Prometheus text for the gateway's per-app requests and latency, pipelines
by kind and status with their durations, and webhook deliveries stored by status.

Pipeline and webhook figures are read from the database at scrape time (a few grouped
counts), so they are right across restarts and replicas. The endpoint needs the admin token
unless the operator opens it (``NAKAMA_METRICS_PUBLIC=true``, for a scraper inside a trusted
network).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, func, select

from backend.gateway.viewer import bearer_token
from nakama.auth import TokenStore
from nakama.db.session import Database
from nakama.db.tables import Pipeline, WebhookEvent
from nakama.settings import Settings


class DatabaseCollector(Collector):
    """Pipelines and webhook deliveries, counted in the database when scraped."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _seconds(self) -> ColumnElement[Any]:
        """A pipeline's run time in seconds, as this database computes it (summed there, so
        a scrape reads a row per kind, not per pipeline)."""
        if self._db.engine.dialect.name == "postgresql":
            return func.extract("epoch", Pipeline.finished_at - Pipeline.started_at)
        return (
            func.julianday(Pipeline.finished_at) - func.julianday(Pipeline.started_at)
        ) * 86400.0

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        with self._db.session() as s:
            pipelines = s.execute(
                select(Pipeline.kind, Pipeline.status, func.count()).group_by(
                    Pipeline.kind, Pipeline.status
                )
            ).all()
            spent = s.execute(
                select(Pipeline.kind, func.sum(self._seconds()))
                .where(Pipeline.finished_at.is_not(None), Pipeline.started_at.is_not(None))
                .group_by(Pipeline.kind)
            ).all()
            events = s.execute(
                select(WebhookEvent.endpoint, WebhookEvent.status, func.count()).group_by(
                    WebhookEvent.endpoint, WebhookEvent.status
                )
            ).all()
        count = GaugeMetricFamily(
            "nakama_pipelines", "Pipelines stored, by kind and status", labels=["kind", "status"]
        )
        for kind, status, n in pipelines:
            count.add_metric([kind, status], n)
        yield count
        seconds = CounterMetricFamily(
            "nakama_pipeline_seconds", "Seconds spent in finished pipelines", labels=["kind"]
        )
        for kind, total in sorted(spent):
            seconds.add_metric([kind], float(total or 0.0))
        yield seconds
        hooks = GaugeMetricFamily(
            "nakama_webhook_events",
            "Webhook deliveries stored, by endpoint and status",
            labels=["endpoint", "status"],
        )
        for endpoint, status, n in events:
            hooks.add_metric([endpoint, status], n)
        yield hooks


def install_metrics(
    app: FastAPI,
    *,
    registry: CollectorRegistry,
    tokens: TokenStore,
    settings: Settings,
    db: Database,
) -> None:
    registry.register(DatabaseCollector(db))

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        if not settings.metrics_public:
            token = bearer_token(request.headers.get("authorization"))
            client = request.client.host if request.client else None
            caller = tokens.authenticate(token, client=client) if token else None
            if caller is None or not caller.is_admin:
                return Response(
                    "the admin token is needed (Authorization: Bearer <token>)\n",
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="nakama"'},
                )
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
