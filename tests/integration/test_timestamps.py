"""Every time in an API answer carries its zone, UTC (``Z`` or ``+00:00``), on SQLite (which
hands stored times back without a zone) and on PostgreSQL (which hands them back in the
session's zone), against a real ``nakama up`` whose own zone is not UTC either. Alice's
answers, bob's beside them; bob sees none of alice's."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, make_url, text

from tests.e2e.nakama_server import NakamaProcess, wait_for, write_tiny_kit

ZONED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")
NOT_UTC = "Asia/Tokyo"  # nine hours from UTC: a time taken for another zone's is far off


def in_a_zone_not_utc(database_url: str) -> None:
    """PostgreSQL sessions of this database speak Tokyo time."""
    if not database_url.startswith("postgresql"):
        return
    name = make_url(database_url).database
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"ALTER DATABASE \"{name}\" SET timezone TO '{NOT_UTC}'"))
    engine.dispose()


@pytest.fixture
def nakama(tmp_path: Path, database_url: str) -> Iterator[NakamaProcess]:
    in_a_zone_not_utc(database_url)
    server = NakamaProcess(
        data_dir=tmp_path / "data",
        starter_kit=write_tiny_kit(tmp_path / "kit"),
        uv_cache=tmp_path / "uv-cache",
        extra_env={"NAKAMA_DATABASE_URL": database_url, "TZ": NOT_UTC},
    )
    server.start()
    yield server
    server.close()
    server.kill_apps()


def client(nakama: NakamaProcess, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{nakama.url}/api/v1", timeout=30, headers={"Authorization": f"Bearer {token}"}
    )


def times(answer: Any, where: str = "") -> dict[str, str]:
    """Every ``*_at`` field of a JSON answer, by where it is."""
    found: dict[str, str] = {}
    if isinstance(answer, dict):
        for key, value in answer.items():
            if key.endswith("_at") and value is not None:
                found[f"{where}.{key}"] = value
            else:
                found.update(times(value, f"{where}.{key}"))
    elif isinstance(answer, list):
        for i, value in enumerate(answer):
            found.update(times(value, f"{where}[{i}]"))
    return found


def test_every_time_in_an_answer_is_utc_with_its_zone(nakama: NakamaProcess) -> None:
    before = datetime.now(UTC)
    tokens = {}
    for username in ("alice", "bob"):
        r = nakama.api.post("/api/v1/users", json={"username": username})
        assert r.status_code == 201, r.text
        tokens[username] = r.json()["token"]
    with client(nakama, tokens["alice"]) as alice, client(nakama, tokens["bob"]) as bob:
        assert alice.post("/projects", json={"name": "zoned"}).status_code == 201
        assert bob.post("/projects", json={"name": "bobs"}).status_code == 201
        for http, name in ((alice, "zoned"), (bob, "bobs")):
            wait_for(
                lambda http=http, name=name: (
                    http.get(f"/projects/{name}").json()["status"] == "running"
                ),
                timeout=120,
                what=f"{name} running",
            )
        put = alice.put("/projects/zoned/variables/LEVEL", json={"value": "3"})
        assert put.status_code == 200, put.text
        assert alice.post("/users/alice/tokens", json={"name": "laptop"}).status_code == 201
        first = alice.get("/projects/zoned/pipelines").json()[-1]["id"]
        answers = {
            "projects": alice.get("/projects"),
            "project": alice.get("/projects/zoned"),
            "pipelines": alice.get("/projects/zoned/pipelines"),
            "pipeline": alice.get(f"/projects/zoned/pipelines/{first}"),
            "variables": alice.get("/projects/zoned/variables"),
            "variable": put,
            "tokens": alice.get("/users/alice/tokens"),
            "users": nakama.api.get("/api/v1/users"),
            "bob's projects": bob.get("/projects"),
            "bob's tokens": bob.get("/users/bob/tokens"),
        }
        assert bob.get("/projects/zoned/variables").status_code == 404
        assert bob.get("/projects/zoned/pipelines").status_code == 404
        assert [p["name"] for p in answers["bob's projects"].json()] == ["bobs"]
    after = datetime.now(UTC)

    found: dict[str, str] = {}
    for what, answer in answers.items():
        assert answer.status_code == 200, (what, answer.text)
        found.update(times(answer.json(), what))
    kinds = {key.rsplit(".", 1)[1] for key in found}
    assert {"created_at", "updated_at", "started_at", "finished_at", "last_used_at"} <= kinds
    for where, value in found.items():
        assert ZONED.match(value), (where, value)
        moment = datetime.fromisoformat(value)
        assert moment.utcoffset() == timedelta(0), (where, value)
        # The instant itself is right: made during this test, not nine hours off.
        assert before - timedelta(minutes=1) <= moment <= after + timedelta(minutes=1), (
            where,
            value,
        )
