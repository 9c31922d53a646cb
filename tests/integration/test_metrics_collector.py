"""The database figures of ``/metrics`` on SQLite and PostgreSQL: pipelines by kind and status,
and the seconds spent in finished ones, summed by the database itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, generate_latest

from backend.metrics import DatabaseCollector
from nakama.db.session import Database
from nakama.db.tables import Pipeline


def test_pipeline_counts_and_seconds(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    start = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    with db.session() as s:
        for kind, status, seconds in [
            ("build", "success", 90.0),
            ("build", "failed", 30.0),
            ("reload", "success", 1.5),
            ("reload", "running", None),
        ]:
            s.add(
                Pipeline(
                    project="p", kind=kind, status=status, commit_sha="a" * 40, branch="main",
                    reason="r", started_at=start,
                    finished_at=start + timedelta(seconds=seconds) if seconds else None,
                )
            )  # fmt: skip
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(db))
    text = generate_latest(registry).decode()
    db.dispose()
    assert 'nakama_pipelines{kind="build",status="success"} 1.0' in text
    assert 'nakama_pipelines{kind="reload",status="running"} 1.0' in text
    seconds = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("nakama_pipeline_seconds_total{")
    }
    assert abs(seconds["build"] - 120.0) < 0.01, text
    assert abs(seconds["reload"] - 1.5) < 0.01, text
