"""A refused hook body is answered, not reset, when the client writes all of it before it reads.

GitLab writes a hook's whole body, then reads the answer. A server that answers early and
closes with part of the body unread makes the kernel reset the connection, and the client loses
the answer: GitLab logs a failed delivery instead of the 413 (or 401) and disables the hook after
four. The receiver sends its answer at once, then reads and drops the rest of the body (within
bounds) before it closes. Driven with raw sockets against uvicorn, with both of its HTTP
parsers (httptools, what ``nakama up`` uses, and h11).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import func, select

from nakama.db.session import Database
from nakama.db.tables import Project, WebhookEvent
from nakama.settings import ReceiverSettings
from tests.support import free_port
from webhook_receiver.bodies import discard_bound
from webhook_receiver.intake import Intake, ReceiverApp, make_receiver_router

ALICE, BOB = "alice-app", "bob-app"
TOKENS = {ALICE: "a" * 43, BOB: "b" * 43}
LIMIT = 1024 * 1024  # the default receiver.max_body_bytes
BODY = 5 * 1024 * 1024


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.migrate()
    with database.session() as s:
        for name, token in TOKENS.items():
            s.add(Project(name=name, status="running", branch="main", hook_token=token))
    yield database
    database.dispose()


@contextmanager
def uvicorn_serving(app: object, *, http: str) -> Iterator[int]:
    port = free_port()
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host="127.0.0.1",
        port=port,
        http=http,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(params=["httptools", "h11"])
def port(request: pytest.FixtureRequest, db: Database) -> Iterator[int]:
    intake = Intake(db=db, settings=ReceiverSettings(max_body_bytes=LIMIT), on_stored=lambda: None)
    api = FastAPI()
    api.include_router(make_receiver_router(intake))
    # The bare ASGI front, as nakama up serves it, before the FastAPI routes (the same handler).
    with uvicorn_serving(ReceiverApp(intake, fallback=api), http=request.param) as bound:
        yield bound
    intake.close()


def request_head(path: str, token: str | None, *, framing: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += ["X-Gitlab-Event: Push Hook", f"Idempotency-Key: {uuid.uuid4()}", framing]
    if token is not None:
        lines.append(f"X-Gitlab-Token: {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def project_first(project: str, size: int) -> bytes:
    """``size`` bytes of a push hook body that names ``project`` first, then pads."""
    start = b'{"project": {"path_with_namespace": "local/%s"}, "padding": "' % project.encode()
    return start + b"x" * (size - len(start) - 2) + b'"}'


def chunked(body: bytes, *, chunk: int = 64 * 1024) -> bytes:
    parts = [
        b"%x\r\n" % len(body[i : i + chunk]) + body[i : i + chunk] + b"\r\n"
        for i in range(0, len(body), chunk)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


def send_all_then_read(port: int, message: bytes) -> bytes:
    """Write the whole request in one go, as GitLab does, and only then read the answer to its
    end; a reset surfaces as ConnectionResetError or BrokenPipeError."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(message)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def events(db: Database) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(WebhookEvent)) or 0


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("path", [f"/build-image/{ALICE}", "/code-reload"])
def test_a_5_mib_body_written_before_reading_gets_its_413(
    port: int, db: Database, framing: str, path: str
) -> None:
    body = project_first(ALICE, BODY)
    if framing == "chunked":
        message = request_head(path, TOKENS[ALICE], framing="Transfer-Encoding: chunked")
        message += chunked(body)
    else:
        message = request_head(path, TOKENS[ALICE], framing=f"Content-Length: {len(body)}")
        message += body
    answer = send_all_then_read(port, message)
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), answer[:300]
    assert b"NAKAMA_RECEIVER__MAX_BODY_BYTES" in payload
    assert b"connection: close" in head.lower()
    assert events(db) == 0


@pytest.mark.parametrize(
    ("token", "detail"),
    [(None, b"missing X-Gitlab-Token header"), (TOKENS[BOB], b"invalid token")],
)
def test_a_strangers_5_mib_body_gets_its_401(
    port: int, db: Database, token: str | None, detail: bytes
) -> None:
    """Bob's token (or none) for Alice's project: refused before a byte of the body is read,
    and still answered when he writes all 5 MiB first."""
    body = project_first(ALICE, BODY)
    message = request_head(f"/build-image/{ALICE}", token, framing=f"Content-Length: {len(body)}")
    answer = send_all_then_read(port, message + body)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:300]
    assert detail in answer
    assert events(db) == 0


def test_what_is_read_after_the_answer_is_bounded(port: int, db: Database) -> None:
    """A body that never ends is read for at most discard_bound(limit) bytes after the 413,
    then the connection is closed: the answer comes first, the server does not read forever."""
    bound = discard_bound(LIMIT)
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        head = request_head(
            f"/build-image/{ALICE}", TOKENS[ALICE], framing="Transfer-Encoding: chunked"
        )
        conn.sendall(head + b"%x\r\n" % len(project_first(ALICE, 1024)))
        conn.sendall(project_first(ALICE, 1024) + b"\r\n")
        piece = b"%x\r\n%s\r\n" % (1 << 20, b"x" * (1 << 20))
        answer = b""
        try:
            while sent < 4 * bound:
                conn.sendall(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    print(f"bytes written before the server closed: {sent:,} (bound {bound:,})")
    assert sent < 2 * bound, f"the server read {sent} bytes, beyond its bound of {bound}"
    assert sent > bound - LIMIT, "the rest of the body was read up to the bound"
    assert events(db) == 0
