"""HTTP intake: token check, size limit, schema check, durable store, 2xx.

Nothing here decides what a push means; it only makes sure a valid event is stored once. A
body from a stranger costs almost nothing: hooks name their project in the URL
(``POST /build-image/<project>``), so the token is checked before the body is read, and a body
is parsed only after that, in a worker thread (see :mod:`webhook_receiver.bodies`). The older
URLs without a project (hooks made before) still work: the project is found in the body's first
64 KiB, its token checked, and only then is the rest read and the body parsed.
An unknown project answers exactly as a known one with a wrong token, in the same time, and
without the right token nothing is said about the body (401 before any 413 or 422). A refused
body is answered at once, then read to its end (within bounds) and dropped, so that a client
that writes all of it before reading gets the answer rather than a connection reset.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio.to_thread
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import select
from starlette.types import ASGIApp, Receive, Scope, Send

from nakama.auth import tokens_equal
from nakama.db.session import Database
from nakama.db.tables import Project
from nakama.errors import TemporaryError
from nakama.logs import get_logger
from nakama.models import PushEvent
from nakama.names import name_problem
from nakama.settings import ReceiverSettings
from webhook_receiver.bodies import (
    DISCARD_WITHIN_S,
    BodyReader,
    Rejection,
    discard_bound,
    parse_object,
    project_name,
)
from webhook_receiver.store import EventStore, NewEvent, dedup_key

log = get_logger(__name__)

ENDPOINTS = ("build-image", "code-reload")
PUSH_KINDS = ("Push Hook", "Tag Push Hook")
# A body this small (an ordinary push hook is 2-10 KB, 0.05 ms to parse) is parsed where it is:
# about 1 ms at worst, and a trip to a worker thread for every body cost a sixth of the intake's
# rate (benchmarks/webhook_intake.py: 1,006 -> 845 stored events/s). Larger ones, up to
# max_body_bytes (about 50 ms for a MiB), are parsed in a worker thread.
PARSE_ON_LOOP_BYTES = 16 * 1024
# A stand-in secret so an unknown project costs the same comparison as a known one.
_DUMMY_SECRET = "x" * 43


class _AnswerThenDiscard(JSONResponse):
    """An answer to a delivery whose body was not all read: it is sent whole (its
    Content-Length tells the client it is complete), then the rest of the body is read and
    dropped, within bounds (:meth:`BodyReader.discard`), and only then is the connection closed,
    so that the client reads the answer rather than a reset."""

    def __init__(self, content: Any, *, status_code: int, reader: BodyReader, limit: int) -> None:
        super().__init__(content, status_code=status_code, headers={"Connection": "close"})
        self._reader = reader
        self._limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send({"type": "http.response.body", "body": self.body, "more_body": True})
        await self._reader.discard(up_to=discard_bound(self._limit), within_s=DISCARD_WITHIN_S)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _answer(
    content: Any, *, status: int = 200, reader: BodyReader | None, limit: int
) -> JSONResponse:
    if reader is None or reader.complete:
        return JSONResponse(content, status_code=status)
    return _AnswerThenDiscard(content, status_code=status, reader=reader, limit=limit)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "invalid push event: " + "; ".join(parts)


def _decode(body: bytes, *, max_depth: int) -> tuple[dict[str, Any], str]:
    """Parse and check a push hook body (in a worker thread): the data and its project."""
    data = parse_object(body, max_depth=max_depth)
    named = project_name(data)
    try:
        PushEvent.model_validate(data)
    except ValidationError as exc:
        raise Rejection(422, _validation_message(exc)) from None
    return data, named


class TokenCache:
    """Projects' hook tokens, kept for a few seconds so a burst of deliveries does not query the
    database once per delivery. An unknown project is kept as well (as None), for as long: it
    costs what a known one costs, so answer times do not tell which projects exist (review L1).
    """

    def __init__(self, db: Database, *, ttl_s: float = 5.0, max_entries: int = 10_000) -> None:
        self._db = db
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: dict[str, tuple[str | None, float]] = {}

    def cached(self, project: str) -> tuple[bool, str | None]:
        """(True, token or None) while the entry is fresh; (False, None) when the database must
        be asked (:meth:`load`)."""
        hit = self._entries.get(project)
        if hit is not None and hit[1] > time.monotonic():
            return True, hit[0]
        return False, None

    def load(self, project: str) -> str | None:
        """Ask the database (blocking: call it in a worker thread) and keep the answer."""
        with self._db.session() as s:
            token = s.scalar(select(Project.hook_token).where(Project.name == project))
        self._entries.pop(project, None)
        while len(self._entries) >= self._max_entries:  # the oldest entries go first
            del self._entries[next(iter(self._entries))]
        self._entries[project] = (token, time.monotonic() + self._ttl_s)
        return token


class Intake:
    """Validates and stores webhook deliveries."""

    def __init__(
        self, *, db: Database, settings: ReceiverSettings, on_stored: Callable[[], None]
    ) -> None:
        self._settings = settings
        self._tokens = TokenCache(db)
        self._store = EventStore(db, on_stored=on_stored)

    def close(self) -> None:
        self._store.close()

    async def _check_token(self, project: str, given: str) -> None:
        expected: str | None = None
        if name_problem(project) is None:  # no database look-up for what cannot be a project
            hit, expected = self._tokens.cached(project)
            if not hit:
                expected = await anyio.to_thread.run_sync(self._tokens.load, project)
        ok = tokens_equal(given, expected or _DUMMY_SECRET)
        if not ok or expected is None:
            raise Rejection(401, "invalid token")

    async def handle(
        self, endpoint: str, request: Request, *, project: str | None = None
    ) -> JSONResponse:
        """One delivery to ``/<endpoint>/<project>`` or, with ``project`` None, to the old
        ``/<endpoint>`` that names the project in the body only."""
        headers = request.headers
        delivery = headers.get("idempotency-key") or headers.get("x-gitlab-event-uuid")
        structlog.contextvars.bind_contextvars(delivery=delivery, endpoint=endpoint)
        limit = self._settings.max_body_bytes
        reader = BodyReader(request, limit)
        try:
            given = headers.get("x-gitlab-token")
            if not given:
                raise Rejection(401, "missing X-Gitlab-Token header")
            if project is None:
                found = await reader.project()
                if found is None:
                    # No project, no token to check this one against: a 401 as for a wrong
                    # token, never a word on what the body lacks (review: 401 before 422).
                    raise Rejection(
                        401,
                        f"invalid token: no project to check it against (send the hook to"
                        f" /{endpoint}/<project>)",
                    )
                project = found
            else:
                project = project.lower()
            await self._check_token(project, given)
            reader.check_declared_size()
            kind = headers.get("x-gitlab-event", "")
            if kind not in PUSH_KINDS:
                log.info("event ignored", kind=kind[:60], project=project)
                return _answer(
                    {"status": "ignored", "reason": f"{kind or 'no'} event"},
                    reader=reader,
                    limit=limit,
                )
            body = await reader.read()
            depth = self._settings.max_json_depth
            if len(body) <= PARSE_ON_LOOP_BYTES:
                _, named = _decode(body, max_depth=depth)
            else:
                _, named = await anyio.to_thread.run_sync(lambda: _decode(body, max_depth=depth))
            if named != project:
                raise Rejection(
                    422, f"the body is for project {named[:60]!r}, the URL for {project!r}"
                )
            if not delivery:
                raise Rejection(422, "missing Idempotency-Key or X-Gitlab-Event-UUID header")
            try:
                event_id = await self._store.store(
                    NewEvent(
                        endpoint=endpoint,
                        dedup_key=dedup_key(endpoint, project, delivery),
                        event_kind=kind,
                        project=project,
                        body=body.decode(),
                    )
                )
            except TemporaryError as exc:
                raise Rejection(503, str(exc)) from None
            if event_id is None:
                log.info("duplicate delivery dropped", project=project)
                return JSONResponse({"status": "duplicate"})
            log.info("event stored", event_id=event_id, project=project)
            return JSONResponse({"status": "accepted", "event_id": event_id}, status_code=202)
        except Rejection as rej:
            log.warning("delivery rejected", status=rej.status, reason=rej.message)
            return _answer({"detail": rej.message}, status=rej.status, reader=reader, limit=limit)
        finally:
            structlog.contextvars.unbind_contextvars("delivery", "endpoint")


def make_receiver_router(intake: Intake) -> APIRouter:
    router = APIRouter(tags=["webhooks"])

    @router.post(
        "/build-image/{project}",
        status_code=202,
        summary="Push hook of one project: build when dependencies change",
    )
    async def build_image_of(project: str, request: Request) -> JSONResponse:
        return await intake.handle("build-image", request, project=project)

    @router.post(
        "/code-reload/{project}",
        status_code=202,
        summary="Push hook of one project: reload when only code changes",
    )
    async def code_reload_of(project: str, request: Request) -> JSONResponse:
        return await intake.handle("code-reload", request, project=project)

    @router.post(
        "/build-image",
        status_code=202,
        summary="Push hook naming its project in the body only (older hooks)",
    )
    async def build_image(request: Request) -> JSONResponse:
        return await intake.handle("build-image", request)

    @router.post(
        "/code-reload",
        status_code=202,
        summary="Push hook naming its project in the body only (older hooks)",
    )
    async def code_reload(request: Request) -> JSONResponse:
        return await intake.handle("code-reload", request)

    return router


def hook_target(path: str) -> tuple[str, str | None] | None:
    """``/build-image/alice`` → ``("build-image", "alice")``, ``/code-reload`` →
    ``("code-reload", None)``; None for any other path."""
    _, _, rest = path.partition("/")
    endpoint, slash, project = rest.partition("/")
    if endpoint not in ENDPOINTS:
        return None
    if not slash:
        return endpoint, None
    if not project or "/" in project:
        return None
    return endpoint, project


class ReceiverApp:
    """The receiver as a bare ASGI app, for the hot path.

    Placed in front of the API (see backend.app), it answers ``POST /build-image[/<project>]``
    and ``POST /code-reload[/<project>]`` without the framework's routing, dependency and
    middleware layers; every other request goes to ``fallback``. The FastAPI routes above serve
    the same handler and document it in the OpenAPI schema.
    """

    def __init__(self, intake: Intake, *, fallback: ASGIApp) -> None:
        self._intake = intake
        self._fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = hook_target(scope.get("path", "")) if scope["type"] == "http" else None
        if target is None or scope["method"] != "POST":
            await self._fallback(scope, receive, send)
            return
        endpoint, project = target
        response = await self._intake.handle(endpoint, Request(scope, receive), project=project)
        await response(scope, receive, send)
