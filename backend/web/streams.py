"""A pipeline's log as server-sent events: what is there at once, then what is added while the
pipeline runs, then an ``end`` event with its status.

Events: ``log`` ({"text": ...}, appended), ``reset`` ({"text": ...}, the whole log, when it was
rewritten rather than appended), ``end`` ({"status": ..., "duration": ...}). Each event's id is
the log's length so far, so a browser that reconnects (Last-Event-ID) gets only what it missed.
"""

# No `from __future__ import annotations`: FastAPI must see the local Annotated dependencies.
import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from backend.projects import ProjectService
from backend.web.views import FINISHED, duration, elapsed
from nakama.access import Action
from nakama.auth import Principal
from nakama.errors import NakamaError
from nakama.models import PipelinePublic

# A stream ends after this many seconds even if the pipeline still runs; the browser reconnects
# and goes on from where it was (a proxy would cut a longer idle connection anyway).
MAX_STREAM_S = 600.0


@dataclass(frozen=True)
class LogStep:
    """What to send for one look at the log."""

    event: str  # "log" or "reset"; "" when nothing changed
    text: str
    offset: int


def next_step(sent: str, current: str) -> LogStep:
    """Decide what to send given the log ``sent`` so far and the ``current`` log."""
    if current == sent:
        return LogStep("", "", len(current))
    if current.startswith(sent):
        return LogStep("log", current[len(sent) :], len(current))
    return LogStep("reset", current, len(current))


def end_event(pipeline: PipelinePublic) -> ServerSentEvent:
    seconds = pipeline.duration_s
    if seconds is None:
        seconds = elapsed(pipeline.started_at, pipeline.finished_at)
    return ServerSentEvent(
        event="end", data={"status": pipeline.status, "duration": duration(seconds)}
    )


def make_stream_router(
    *, projects: ProjectService, user: Callable[[Request], Principal], interval_s: float
) -> APIRouter:
    """``interval_s``: seconds between two looks at a running pipeline's log."""
    router = APIRouter(include_in_schema=False)

    async def readable(
        name: str, pipeline_id: int, caller: Annotated[Principal, Depends(user)]
    ) -> None:
        """Checked before the stream starts: once it has, the status cannot change any more."""
        await run_in_threadpool(projects.check, name, caller, Action.develop)
        await run_in_threadpool(projects.pipeline, name, pipeline_id)

    @router.get(
        "/projects/{name}/pipelines/{pipeline_id}/log/events",
        response_class=EventSourceResponse,
        dependencies=[Depends(readable)],
    )
    async def log_events(
        request: Request,
        name: str,
        pipeline_id: int,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> AsyncIterator[ServerSentEvent]:
        try:
            offset = max(0, int(last_event_id or 0))
        except ValueError:
            offset = 0
        sent: str | None = None
        waited = 0.0
        while waited < MAX_STREAM_S:
            pipeline = await run_in_threadpool(projects.pipeline, name, pipeline_id)
            try:
                current = await run_in_threadpool(projects.pipeline_log, name, pipeline_id)
            except NakamaError:
                current = sent or ""
            if sent is None:
                # First look: skip what a reconnecting browser already has.
                sent = current[:offset] if offset <= len(current) else ""
            step = next_step(sent, current)
            if step.event:
                yield ServerSentEvent(
                    event=step.event, data={"text": step.text}, id=str(step.offset)
                )
                sent = current
            if pipeline.status in FINISHED:
                yield end_event(pipeline)
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(interval_s)
            waited += interval_s

    return router
