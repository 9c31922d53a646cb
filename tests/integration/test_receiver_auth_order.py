"""A delivery without the right token learns nothing about the hook's schema: 401 comes before
any 422, on both endpoints and both URL styles (``/build-image/<project>`` and the older
``/build-image`` that names the project in the body only).

Alice and Bob each have a project. Bob sends bodies that are invalid in every way the receiver
checks to Alice's hooks, with his own token, with none and with a made-up one: each is a 401
whose detail names no field. The same bodies with Bob's token on his own hooks are the 422s
(and 400s) that name what is wrong: the checks are there, after the token.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

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

ALICE, BOB = "alice-app", "bob-app"
TOKENS = {ALICE: "a" * 43, BOB: "b" * 43}
ENDPOINTS = ["build-image", "code-reload"]
# Words of the push hook's schema and of the receiver's checks that a 422 may name.
SCHEMA_WORDS = [
    "path_with_namespace",
    "before",
    "after",
    "ref",
    "object_kind",
    "JSON",
    "Idempotency-Key",
    "field",
    "body",
]
NO_PROJECT = (
    "invalid token: no project to check it against (send the hook to /{endpoint}/<project>)"
)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.migrate()
    with database.session() as s:
        for name, token in TOKENS.items():
            s.add(Project(name=name, status="running", branch="main", hook_token=token))
    yield database
    database.dispose()


@pytest.fixture(params=["bare ASGI front", "FastAPI routes"])
def client(request: pytest.FixtureRequest, db: Database) -> Iterator[httpx.Client]:
    """The receiver as nakama up serves it (the bare front before the API), and its FastAPI
    routes (the same handler, documented in the OpenAPI schema)."""
    intake = Intake(db=db, settings=ReceiverSettings(), on_stored=lambda: None)
    api = FastAPI()
    api.include_router(make_receiver_router(intake))
    app = ReceiverApp(intake, fallback=api) if request.param == "bare ASGI front" else api
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c
    intake.close()


def push_body(project: str, **change: object) -> bytes:
    body = load_reference("push_hook.json")
    body["project"]["path_with_namespace"] = f"local/{project}"
    body.update(change)
    return json.dumps(body).encode()


def invalid_bodies(project: str) -> dict[str, bytes]:
    """Bodies each failing one check, all naming ``project`` first where they name one."""
    head = b'{"project": {"path_with_namespace": "local/%s"}' % project.encode()
    return {
        "bad sha": push_body(project, before="not-a-sha"),
        "no after": push_body(project, after=None),
        "empty ref": push_body(project, ref=""),
        "wrong kind": push_body(project, object_kind="merge_request"),
        "not JSON": head + b", not json",
        "deep": head + b', "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        "project of another": push_body(BOB if project == ALICE else ALICE),
        "project not an object": b'{"project": 5, "path_with_namespace": "local/%s"}'
        % project.encode(),
        "no project": b'{"before": "x"}',
        "array": b"[1, 2]",
        "empty object": b"{}",
    }


def url(endpoint: str, style: str, project: str) -> str:
    return f"/{endpoint}/{project}" if style == "project in the URL" else f"/{endpoint}"


def headers(token: str | None, *, delivery: bool = True) -> dict[str, str]:
    out = {"Content-Type": "application/json", "X-Gitlab-Event": "Push Hook"}
    if delivery:
        out["Idempotency-Key"] = str(uuid.uuid4())
    if token is not None:
        out["X-Gitlab-Token"] = token
    return out


def events(db: Database) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(WebhookEvent)) or 0


@pytest.mark.parametrize("style", ["project in the URL", "project in the body only"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    "token",
    [None, "", TOKENS[BOB], "w" * 43],
    ids=["no token", "empty token", "bob's token", "made-up token"],
)
def test_an_invalid_body_without_the_right_token_is_a_401_naming_no_field(
    client: httpx.Client, db: Database, style: str, endpoint: str, token: str | None
) -> None:
    allowed = {"missing X-Gitlab-Token header"} if not token else {"invalid token"}
    bodies = invalid_bodies(ALICE)
    if style == "project in the body only":  # a body naming Bob's project is his to send there
        del bodies["project of another"]
        if token:  # the bodies naming no project
            allowed.add(NO_PROJECT.format(endpoint=endpoint))
    for what, body in bodies.items():
        for delivery in (True, False):
            r = client.post(
                url(endpoint, style, ALICE), content=body, headers=headers(token, delivery=delivery)
            )
            assert r.status_code == 401, (what, r.status_code, r.text)
            detail = r.json()["detail"]
            assert set(r.json()) == {"detail"}, r.text
            assert detail in allowed, (what, detail)
            for word in SCHEMA_WORDS:
                assert word not in detail, (what, detail)
    assert events(db) == 0


@pytest.mark.parametrize("style", ["project in the URL", "project in the body only"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_the_same_bodies_with_the_right_token_say_what_is_wrong(
    client: httpx.Client, db: Database, style: str, endpoint: str
) -> None:
    """Bob's own hooks: the checks that the 401 hides are made once the token matched."""
    bodies = invalid_bodies(BOB)
    if style == "project in the body only":
        del bodies["project of another"]  # Alice's token is checked: the test above
        for what in ("project not an object", "no project", "array", "empty object"):
            del bodies[what]  # no project to take a token from: see below
    answers = {}
    for what, body in bodies.items():
        r = client.post(url(endpoint, style, BOB), content=body, headers=headers(TOKENS[BOB]))
        answers[what] = (r.status_code, r.json()["detail"])
    assert {w: s for w, (s, _) in answers.items()} == {
        w: 400 if w in ("not JSON", "deep") else 422 for w in bodies
    }, answers
    assert "before" in answers["bad sha"][1] and "ref" in answers["empty ref"][1]
    if style == "project in the URL":
        assert ALICE in answers["project of another"][1]
    # A valid body with no delivery id: named once the token matched.
    r = client.post(
        url(endpoint, style, BOB),
        content=push_body(BOB),
        headers=headers(TOKENS[BOB], delivery=False),
    )
    assert r.status_code == 422 and "Idempotency-Key" in r.json()["detail"]
    assert events(db) == 0
    r = client.post(url(endpoint, style, BOB), content=push_body(BOB), headers=headers(TOKENS[BOB]))
    assert r.status_code == 202, r.text


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_an_old_url_body_without_a_project_is_a_401_even_with_a_real_token(
    client: httpx.Client, db: Database, endpoint: str
) -> None:
    """Where the body names no project there is no token to check the given one against: a
    401 that points to the URL naming the project, whoever sends it (the same for Bob's real
    token as for a made-up one, so it tells nobody whether their token is real)."""
    for body in (b"{}", b"[1, 2]", b'{"project": {"name": "bob-app"}}', b"{not json"):
        answers = {
            client.post(f"/{endpoint}", content=body, headers=headers(token)).text
            for token in (TOKENS[BOB], "w" * 43)
        }
        assert len(answers) == 1, answers
        r = json.loads(answers.pop())
        assert r["detail"] == NO_PROJECT.format(endpoint=endpoint)
    r = client.post(f"/{endpoint}/{BOB}", content=b"{}", headers=headers(TOKENS[BOB]))
    assert r.status_code == 422, "the URL naming the project takes the token, then the check"
    assert events(db) == 0
