"""A pipeline's log as server-sent events: its tail at once, then what is added while the
pipeline runs, then an ``end`` event with its status.

Events: ``log`` ({"text": ...}, appended), ``reset`` ({"text": ...}, the log's tail again, when
it was rewritten rather than appended), ``end`` ({"status": ..., "duration": ...}). Each event's
id is the log's length in bytes so far, so a browser that reconnects (Last-Event-ID) gets only
what it missed.

Bounded, so that open streams cost other users nothing: each look reads only the bytes past what
was sent (and the few before them, to tell a rewritten log), at most ``stream_event_bytes`` per
event; a new stream starts with the last ``pipeline_log_read_bytes``. One user holds at most
``streams_per_user`` streams (the next gets a 429), and the looks of all streams share a few
threads of their own, so streams never take the threads that API requests and pages run in.
"""

# No `from __future__ import annotations`: FastAPI must see the local Annotated dependencies.
import asyncio
import math
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Annotated, TypeVar

import anyio
from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from backend.projects import ProjectService
from backend.web.views import FINISHED, duration, elapsed
from nakama.access import Action
from nakama.auth import Principal
from nakama.errors import NakamaError
from nakama.logslice import complete_utf8, cut_note
from nakama.models import PipelinePublic
from nakama.ports import LogPiece
from nakama.settings import LogSettings

# A stream ends after this many seconds even if the pipeline still runs; the browser reconnects
# and goes on from where it was (a proxy would cut a longer idle connection anyway).
MAX_STREAM_S = 600.0
# Bytes before a stream's offset read again at each look: if they changed, the log was
# rewritten (a retried GitLab job) and the stream starts again from its tail.
OVERLAP = 64
# Threads that all streams' looks share (log reads and status queries).
LOOK_THREADS = 4
STREAMS_SETTING = "logs.streams_per_user, NAKAMA_LOGS__STREAMS_PER_USER"

T = TypeVar("T")


@dataclass(frozen=True)
class LogStep:
    """What to send after one look at the log."""

    event: str  # "log"; "reset" when the log was rewritten; "" when nothing is to be sent
    data: bytes  # the bytes to send (for "reset": none, the stream reads the tail again)
    offset: int  # the stream's offset after sending them


def next_step(*, offset: int, seen: bytes, piece: LogPiece, final: bool = False) -> LogStep:
    """Decide what to send of ``piece``, read from ``offset - len(seen)`` on, when the stream
    has sent the log up to ``offset`` and ``seen`` are the last bytes it sent. An incomplete
    UTF-8 character at the end waits for the next look, unless ``final``."""
    begin = offset - len(seen)
    if piece.size < offset or piece.start != begin or piece.data[: len(seen)] != seen:
        return LogStep("reset", b"", offset)
    new = piece.data[len(seen) :]
    usable = len(new) if final else complete_utf8(new)
    if not usable:
        return LogStep("", b"", offset)
    return LogStep("log", new[:usable], offset + usable)


def end_event(pipeline: PipelinePublic) -> ServerSentEvent:
    seconds = pipeline.duration_s
    if seconds is None:
        seconds = elapsed(pipeline.started_at, pipeline.finished_at)
    return ServerSentEvent(
        event="end", data={"status": pipeline.status, "duration": duration(seconds)}
    )


def _holder(caller: Principal) -> str:
    return f"user {caller.user_id}" if caller.user_id is not None else f"token {caller.token_id}"


def make_stream_router(
    *,
    projects: ProjectService,
    user: Callable[[Request], Principal],
    interval_s: float,
    settings: LogSettings | None = None,
) -> APIRouter:
    """``interval_s``: seconds between two looks at a running pipeline's log."""
    logs = settings or LogSettings()
    router = APIRouter(include_in_schema=False)
    holding: Counter[str] = Counter()  # open streams per user; touched on the event loop only
    limiter = anyio.CapacityLimiter(LOOK_THREADS)

    async def look(call: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(call, limiter=limiter)

    async def readable(
        name: str, pipeline_id: int, caller: Annotated[Principal, Depends(user)]
    ) -> AsyncIterator[None]:
        """Checked before the stream starts: once it has, the status cannot change any more.
        Holds one of the caller's stream places until the stream ends."""
        holder = _holder(caller)
        if holding[holder] >= logs.streams_per_user:
            raise HTTPException(
                status_code=429,
                detail=(
                    f"{holding[holder]} log streams are open for you, the most one user may "
                    f"hold (setting {STREAMS_SETTING}): close a pipeline page and try again"
                ),
                headers={"Retry-After": str(math.ceil(max(interval_s, 5.0)))},
            )
        holding[holder] += 1
        try:
            await run_in_threadpool(projects.check, name, caller, Action.develop)
            await run_in_threadpool(projects.pipeline, name, pipeline_id)
            yield
        finally:
            holding[holder] -= 1
            if holding[holder] <= 0:
                del holding[holder]

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
        def read(offset: int | None, max_bytes: int) -> LogPiece | None:
            try:
                return projects.pipeline_log(name, pipeline_id, offset=offset, max_bytes=max_bytes)
            except NakamaError:
                return None

        async def tail_start() -> int:
            probe = await look(partial(read, None, 1))
            size = probe.size if probe is not None else 0
            return max(0, size - logs.pipeline_log_read_bytes)

        try:
            resumed: int | None = max(0, int(last_event_id)) if last_event_id else None
        except ValueError:
            resumed = None
        offset = resumed if resumed is not None else await tail_start()
        seen: bytes | None = None  # last bytes sent; None: not known yet (a new stream)
        event, note = "log", ""
        if resumed is None and offset:
            note = cut_note(LogPiece(data=b"", start=offset, size=offset))
        finished: PipelinePublic | None = None
        waited = 0.0
        while True:
            begin = max(0, offset - OVERLAP)
            piece = await look(partial(read, begin, logs.stream_event_bytes + offset - begin))
            if piece is None:
                step = LogStep("", b"", offset)
            else:
                known = seen if seen is not None else piece.data[: offset - begin]
                step = next_step(offset=offset, seen=known, piece=piece, final=finished is not None)
            if step.event == "reset":
                offset, seen, event = await tail_start(), b"", "reset"
                note = cut_note(LogPiece(data=b"", start=offset, size=offset)) if offset else ""
                continue
            if step.data:
                text = note + step.data.decode(errors="replace")
                yield ServerSentEvent(event=event, data={"text": text}, id=str(step.offset))
                before = seen if seen is not None else known
                seen = (before + step.data)[-OVERLAP:]
                offset, event, note = step.offset, "log", ""
                if piece is not None and offset < piece.size:
                    continue  # more is there already: send it without waiting
            if finished is not None:
                yield end_event(finished)
                return
            pipeline = await look(partial(projects.pipeline, name, pipeline_id))
            if pipeline.status in FINISHED:
                finished = pipeline  # one more look: what was written before it finished
                continue
            if waited >= MAX_STREAM_S or await request.is_disconnected():
                return
            await asyncio.sleep(interval_s)
            waited += interval_s

    return router
