"""HTTP intake: token check, size limit, schema check, durable store, 2xx.

Nothing here decides what a push means; it only makes sure a valid event is stored once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

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
from nakama.settings import ReceiverSettings
from webhook_receiver.store import EventStore, NewEvent

log = get_logger(__name__)

ENDPOINTS = ("build-image", "code-reload")
PUSH_KINDS = ("Push Hook", "Tag Push Hook")
# A stand-in secret so an unknown project costs the same comparison as a known one.
_DUMMY_SECRET = "x" * 43


class Rejection(Exception):
    """A delivery we answer with a 4xx and do not store."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Rejection(400, "invalid Content-Length")
        if int(declared) > limit:
            raise Rejection(413, f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Rejection(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejection(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Rejection(422, "body must be a JSON object")
    return data


def _project_name(data: dict[str, Any]) -> str:
    project = data.get("project")
    if not isinstance(project, dict):
        raise Rejection(422, "body has no 'project' object")
    path = project.get("path_with_namespace") or project.get("name")
    if not isinstance(path, str) or not path:
        raise Rejection(422, "body has no project.path_with_namespace")
    return path.rsplit("/", 1)[-1].lower()


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "invalid push event: " + "; ".join(parts)


class TokenCache:
    """Projects' hook tokens, kept for a few seconds so a burst of deliveries does not query the
    database once per delivery. A miss always asks the database."""

    def __init__(self, db: Database, *, ttl_s: float = 5.0) -> None:
        self._db = db
        self._ttl_s = ttl_s
        self._entries: dict[str, tuple[str, float]] = {}

    def get(self, project: str) -> str | None:
        now = time.monotonic()
        hit = self._entries.get(project)
        if hit is not None and hit[1] > now:
            return hit[0]
        with self._db.session() as s:
            token = s.scalar(select(Project.hook_token).where(Project.name == project))
        if token is None:
            self._entries.pop(project, None)
        else:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[project] = (token, now + self._ttl_s)
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

    def _check_token(self, project: str, given: str | None) -> None:
        expected = self._tokens.get(project)
        if not given:
            raise Rejection(401, "missing X-Gitlab-Token header")
        ok = tokens_equal(given, expected or _DUMMY_SECRET)
        if not ok or expected is None:
            raise Rejection(401, "invalid token")

    async def handle(self, endpoint: str, request: Request) -> JSONResponse:
        headers = request.headers
        delivery = headers.get("idempotency-key") or headers.get("x-gitlab-event-uuid")
        structlog.contextvars.bind_contextvars(delivery=delivery, endpoint=endpoint)
        try:
            body = await _read_body(request, self._settings.max_body_bytes)
            data = _parse_json(body)
            project = _project_name(data)
            self._check_token(project, headers.get("x-gitlab-token"))
            kind = headers.get("x-gitlab-event", "")
            if kind not in PUSH_KINDS:
                log.info("event ignored", kind=kind[:60], project=project)
                return JSONResponse({"status": "ignored", "reason": f"{kind or 'no'} event"})
            try:
                PushEvent.model_validate(data)
            except ValidationError as exc:
                raise Rejection(422, _validation_message(exc)) from None
            if not delivery:
                raise Rejection(422, "missing Idempotency-Key or X-Gitlab-Event-UUID header")
            try:
                event_id = await self._store.store(
                    NewEvent(
                        endpoint=endpoint,
                        dedup_key=f"{endpoint}:{delivery[:150]}",
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
            return _error(rej.status, rej.message)
        finally:
            structlog.contextvars.unbind_contextvars("delivery", "endpoint")


def make_receiver_router(intake: Intake) -> APIRouter:
    router = APIRouter(tags=["webhooks"])

    @router.post(
        "/build-image", status_code=202, summary="Push hook: build when dependencies change"
    )
    async def build_image(request: Request) -> JSONResponse:
        return await intake.handle("build-image", request)

    @router.post(
        "/code-reload", status_code=202, summary="Push hook: reload when only code changes"
    )
    async def code_reload(request: Request) -> JSONResponse:
        return await intake.handle("code-reload", request)

    return router


class ReceiverApp:
    """The receiver as a bare ASGI app, for the hot path.

    Placed in front of the API (see backend.app), it answers ``POST /build-image`` and
    ``POST /code-reload`` without the framework's routing, dependency and middleware layers;
    every other request goes to ``fallback``. The FastAPI routes above serve the same handler
    and document it in the OpenAPI schema.
    """

    def __init__(self, intake: Intake, *, fallback: ASGIApp) -> None:
        self._intake = intake
        self._fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        endpoint = path[1:] if path in ("/build-image", "/code-reload") else None
        if endpoint is None or scope["method"] != "POST":
            await self._fallback(scope, receive, send)
            return
        response = await self._intake.handle(endpoint, Request(scope, receive))
        await response(scope, receive, send)
