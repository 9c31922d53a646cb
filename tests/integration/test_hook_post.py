"""The post-receive hook's one HTTP request (backend.local.post_receive.post), on a plain socket
instead of http.client (issue 13: http.client's import was most of the hook's time), against a
real uvicorn server: what it sends, and what it makes of each kind of answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from backend.local.post_receive import post
from tests.support import free_port, serve

BODY = b'{"object_kind": "push", "ref": "refs/heads/main"}'
seen: list[tuple[str, dict[str, str], bytes]] = []


def receiver() -> FastAPI:
    app = FastAPI()

    @app.post("/build-image/{name}")
    async def hook(name: str, request: Request) -> JSONResponse:
        seen.append((name, dict(request.headers), await request.body()))
        if request.headers.get("x-gitlab-token") != "right":
            return JSONResponse({"detail": "invalid X-Gitlab-Token"}, status_code=401)
        return JSONResponse({"status": "queued"}, status_code=202)

    @app.post("/chunked")
    async def chunked() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            yield b"project is "
            yield b"being deleted"

        return StreamingResponse(parts(), status_code=409, media_type="text/plain")

    @app.post("/moved")
    async def moved() -> PlainTextResponse:
        return PlainTextResponse("", status_code=302, headers={"Location": "/elsewhere"})

    return app


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with serve(receiver()) as url:
        yield url


def headers(token: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Gitlab-Token": token,
        "X-Gitlab-Event": "Push Hook",
    }


def test_a_delivery_sends_the_body_and_headers_and_a_2xx_is_success(base: str) -> None:
    seen.clear()
    assert post(f"{base}/build-image/alice-app", BODY, headers("right")) is None
    [(name, sent, body)] = seen
    assert (name, body) == ("alice-app", BODY)
    assert sent["x-gitlab-event"] == "Push Hook" and sent["content-length"] == str(len(BODY))
    assert sent["host"] == base.removeprefix("http://")
    assert post(f"{base}/moved", BODY, headers("right")) is None  # 3xx counts, as on GitLab


def test_a_refusal_says_the_status_and_the_receivers_reason(base: str) -> None:
    problem = post(f"{base}/build-image/alice-app", BODY, headers("wrong"))
    assert problem is not None
    assert "answered HTTP 401 Unauthorized" in problem and "invalid X-Gitlab-Token" in problem
    assert "wrong" not in problem  # the token sent is never repeated
    chunked = post(f"{base}/chunked", BODY, headers("right"))
    assert chunked is not None and chunked.endswith("409 Conflict (project is being deleted)")


def test_nothing_listening_and_header_injection_are_reported(base: str) -> None:
    port = free_port()
    problem = post(f"http://127.0.0.1:{port}/build-image/x", BODY, headers("right"))
    assert problem is not None and problem.startswith(f"could not reach http://127.0.0.1:{port}/")
    assert "ConnectionRefusedError" in problem
    seen.clear()
    evil = post(f"{base}/build-image/x", BODY, headers("right\r\nX-Admin: yes"))
    assert evil is not None and "line break" in evil and seen == []
    masked = post(f"http://bob:secret@127.0.0.1:{port}/x", BODY, headers("right"))
    assert masked is not None and "secret" not in masked
