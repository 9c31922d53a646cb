"""The receiver's HTTP contract, driven with the reference payloads and headers, on the URLs
that name the project (``/build-image/<project>``) and on the older ones that do not."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from nakama.db.session import Database
from nakama.db.tables import Project, WebhookEvent
from nakama.settings import ReceiverSettings
from tests.conftest import load_reference
from tests.support import serve
from webhook_receiver.intake import Intake, ReceiverApp, make_receiver_router

TOKENS = {
    "diaspora": "s3cret-diaspora",
    "flight": "s3cret-flight",
    "example": "s3cret-example",
    "gitlab-test": "s3cret-gitlab-test",
}
LIMIT = 64 * 1024


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.migrate()
    with database.session() as s:
        for name, token in TOKENS.items():
            s.add(Project(name=name, status="running", branch="master", hook_token=token))
    yield database
    database.dispose()


@pytest.fixture
def stored_calls() -> list[int]:
    return []


@pytest.fixture
def client(db: Database, stored_calls: list[int]) -> Iterator[httpx.Client]:
    app = FastAPI()
    intake = Intake(
        db=db,
        settings=ReceiverSettings(max_body_bytes=LIMIT),
        on_stored=lambda: stored_calls.append(1),
    )
    app.include_router(make_receiver_router(intake))
    with serve(app) as url, httpx.Client(base_url=url) as c:
        yield c
    intake.close()


def headers(
    token: str | None, *, kind: str = "Push Hook", key: str | None = None
) -> dict[str, str]:
    base: dict[str, str] = load_reference("request_headers_example.json")
    base = {**base, "X-Gitlab-Event": kind, "Idempotency-Key": key or str(uuid.uuid4())}
    base.pop("X-Gitlab-Token")
    if token is not None:
        base["X-Gitlab-Token"] = token
    return base


def count_events(db: Database) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(WebhookEvent)) or 0


REFERENCE_DELIVERIES = [
    ("push_hook.json", "Push Hook", "diaspora"),
    ("push_hook_branch_create.json", "Push Hook", "flight"),
    ("push_hook_branch_delete.json", "Push Hook", "flight"),
    ("tag_push_hook.json", "Tag Push Hook", "example"),
]


# Where each endpoint is reached: the project in the URL, or (hooks made before) in the body only.
URLS = ["/build-image/{}", "/code-reload/{}", "/build-image", "/code-reload"]


def url(template: str, project: str) -> str:
    return template.format(project)


@pytest.mark.parametrize("endpoint", URLS)
@pytest.mark.parametrize(("name", "kind", "project"), REFERENCE_DELIVERIES)
def test_reference_pushes_are_stored_before_the_answer(
    client: httpx.Client,
    db: Database,
    stored_calls: list[int],
    endpoint: str,
    name: str,
    kind: str,
    project: str,
) -> None:
    body = load_reference(name)
    r = client.post(url(endpoint, project), json=body, headers=headers(TOKENS[project], kind=kind))
    assert r.status_code == 202, r.text
    event_id = r.json()["event_id"]
    with db.session() as s:
        row = s.get(WebhookEvent, event_id)
        assert row is not None
        assert row.project == project and row.status == "pending" and row.event_kind == kind
        assert row.endpoint == endpoint.split("/")[1]
        assert json.loads(row.body)["after"] == body["after"]
    assert stored_calls == [1]


def test_recorded_delivery_with_its_own_headers(client: httpx.Client, db: Database) -> None:
    recorded = load_reference("push_hook_event_log_example.json")
    hdrs = {**recorded["request_headers"], "X-Gitlab-Token": TOKENS["flight"]}
    r = client.post("/build-image", content=json.dumps(recorded["request_data"]), headers=hdrs)
    assert r.status_code == 202, r.text
    again = client.post("/build-image", content=json.dumps(recorded["request_data"]), headers=hdrs)
    assert again.status_code == 200 and again.json() == {"status": "duplicate"}
    assert count_events(db) == 1


@pytest.mark.parametrize("endpoint", ["/build-image/gitlab-test", "/build-image"])
def test_pipeline_hook_is_acknowledged_and_not_stored(
    client: httpx.Client, db: Database, endpoint: str
) -> None:
    r = client.post(
        endpoint,
        json=load_reference("pipeline_hook.json"),
        headers=headers(TOKENS["gitlab-test"], kind="Pipeline Hook"),
    )
    assert r.status_code == 200 and r.json()["status"] == "ignored"
    assert count_events(db) == 0


@pytest.mark.parametrize("endpoint", ["/code-reload/diaspora", "/code-reload"])
@pytest.mark.parametrize(
    ("token", "message"),
    [
        (None, "missing X-Gitlab-Token"),
        ("wrong", "invalid token"),
        ("", "missing"),
        (TOKENS["flight"], "invalid token"),
    ],
)
def test_wrong_or_missing_token_is_401(
    client: httpx.Client, db: Database, token: str | None, message: str, endpoint: str
) -> None:
    r = client.post(endpoint, json=load_reference("push_hook.json"), headers=headers(token))
    assert r.status_code == 401
    assert message in r.json()["detail"]
    assert TOKENS["diaspora"] not in r.text
    assert count_events(db) == 0


@pytest.mark.parametrize(
    "endpoint", ["/code-reload/nobody", "/code-reload/No_Such!", "/code-reload"]
)
def test_unknown_project_is_401_not_404(client: httpx.Client, endpoint: str) -> None:
    body = load_reference("push_hook.json")
    body["project"]["path_with_namespace"] = "mike/nobody"
    r = client.post(endpoint, json=body, headers=headers(TOKENS["diaspora"]))
    assert r.status_code == 401 and r.json() == {"detail": "invalid token"}


@pytest.mark.parametrize("endpoint", ["/build-image/diaspora", "/build-image"])
def test_oversized_body_is_413(client: httpx.Client, db: Database, endpoint: str) -> None:
    body = load_reference("push_hook.json")
    body["padding"] = "x" * LIMIT
    r = client.post(endpoint, json=body, headers=headers(TOKENS["diaspora"]))
    assert r.status_code == 413
    assert "NAKAMA_RECEIVER__MAX_BODY_BYTES" in r.json()["detail"]
    assert count_events(db) == 0


def test_oversized_chunked_body_is_413(client: httpx.Client, db: Database) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"project": {"path_with_namespace": "mike/diaspora"}, "padding": "'
        for _ in range(LIMIT // 1024 + 2):
            yield b"x" * 1024

    for endpoint in ("/build-image/diaspora", "/build-image"):
        r = client.post(endpoint, content=chunks(), headers=headers(TOKENS["diaspora"]))
        assert r.status_code == 413


@pytest.mark.parametrize(
    ("content", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b"[1, 2]", 422, "JSON object"),
        (b"{}", 422, "project"),
        (b'{"project": {"path_with_namespace": 5}}', 422, "path_with_namespace"),
    ],
)
def test_malformed_bodies(
    client: httpx.Client, db: Database, content: bytes, status: int, message: str
) -> None:
    r = client.post("/build-image/diaspora", content=content, headers=headers(TOKENS["diaspora"]))
    assert r.status_code == status
    assert message in r.json()["detail"]
    assert count_events(db) == 0


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"{}", b'{"project": {"name": "x"}}'])
def test_a_body_without_its_project_needs_the_url_that_names_it(
    client: httpx.Client, db: Database, content: bytes
) -> None:
    # No project to check the token against: a 401, as for a wrong token (nothing on the schema).
    r = client.post("/build-image", content=content, headers=headers(TOKENS["diaspora"]))
    assert r.status_code == 401
    assert "/build-image/<project>" in r.json()["detail"]
    assert count_events(db) == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"before": "not-a-sha"}, "before"),
        ({"after": None}, "after"),
        ({"ref": ""}, "ref"),
        ({"object_kind": "merge_request"}, "object_kind"),
    ],
)
def test_schema_errors_are_422_with_the_field(
    client: httpx.Client, db: Database, change: dict[str, Any], message: str
) -> None:
    body = {**load_reference("push_hook.json"), **change}
    r = client.post("/build-image/diaspora", json=body, headers=headers(TOKENS["diaspora"]))
    assert r.status_code == 422
    assert message in r.json()["detail"]
    assert count_events(db) == 0


def test_duplicates_are_dropped_per_endpoint(client: httpx.Client, db: Database) -> None:
    body = load_reference("push_hook.json")
    key = str(uuid.uuid4())
    for endpoint in ("/build-image", "/code-reload"):
        first = client.post(endpoint, json=body, headers=headers(TOKENS["diaspora"], key=key))
        second = client.post(endpoint, json=body, headers=headers(TOKENS["diaspora"], key=key))
        assert first.status_code == 202 and second.json()["status"] == "duplicate"
    assert count_events(db) == 2


def test_event_uuid_dedups_when_there_is_no_idempotency_key(
    client: httpx.Client, db: Database
) -> None:
    hdrs = headers(TOKENS["diaspora"])
    del hdrs["Idempotency-Key"]
    body = load_reference("push_hook.json")
    assert client.post("/build-image", json=body, headers=hdrs).status_code == 202
    assert client.post("/build-image", json=body, headers=hdrs).json()["status"] == "duplicate"
    del hdrs["X-Gitlab-Event-UUID"]
    r = client.post("/build-image", json=body, headers=hdrs)
    assert r.status_code == 422 and "Idempotency-Key" in r.json()["detail"]
    assert count_events(db) == 1


def test_concurrent_deliveries_are_each_stored_once(client: httpx.Client, db: Database) -> None:
    import asyncio

    body = json.dumps(load_reference("push_hook.json"))
    keys = [str(uuid.uuid4()) for _ in range(40)] * 2

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=str(client.base_url)) as ac:
            return await asyncio.gather(
                *(
                    ac.post(
                        "/code-reload", content=body, headers=headers(TOKENS["diaspora"], key=k)
                    )
                    for k in keys
                )
            )

    answers = [r.json()["status"] for r in asyncio.run(send_all())]
    assert answers.count("accepted") == 40 and answers.count("duplicate") == 40
    assert count_events(db) == 40


def test_the_bare_asgi_front_serves_the_same_contract(db: Database) -> None:
    fallback = FastAPI()

    @fallback.get("/other")
    def other() -> dict[str, str]:
        return {"served": "by the fallback"}

    intake = Intake(db=db, settings=ReceiverSettings(max_body_bytes=LIMIT), on_stored=lambda: None)
    with serve(ReceiverApp(intake, fallback=fallback)) as url, httpx.Client(base_url=url) as c:
        body = load_reference("push_hook.json")
        accepted = c.post("/build-image", json=body, headers=headers(TOKENS["diaspora"]))
        assert accepted.status_code == 202 and accepted.json()["event_id"] >= 1
        assert c.post("/code-reload", json=body, headers=headers("nope")).status_code == 401
        again = c.post("/code-reload/diaspora", json=body, headers=headers(TOKENS["diaspora"]))
        assert again.status_code == 202
        assert c.post("/code-reload/flight", json=body, headers=headers("no")).status_code == 401
        assert c.get("/other").json() == {"served": "by the fallback"}
        assert c.get("/build-image").status_code in (404, 405)
        assert c.post("/build-image/diaspora/x", json=body).status_code == 404
    intake.close()
    assert count_events(db) == 2
