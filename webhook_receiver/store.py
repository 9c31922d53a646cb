"""Durable event storage with group commit.

Each delivery must be on disk before its 2xx, but one transaction per delivery caps intake at a
few hundred events a second. A single writer thread takes every delivery waiting at that moment,
inserts them in one transaction and then answers each one, so the commit cost is shared while
no answer goes out before its event is stored. The event loop never waits on the database.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Insert, Table
from sqlalchemy.dialects import postgresql, sqlite

from nakama.db.session import Database
from nakama.db.tables import WebhookEvent
from nakama.errors import TemporaryError
from nakama.logs import get_logger

log = get_logger(__name__)

# Deliveries taken into one transaction at most; more wait for the next one.
MAX_BATCH = 256


def dedup_key(endpoint: str, project: str, delivery: str) -> str:
    """The key a delivery is stored under once: ``endpoint:project:delivery``. The project is in
    it so that one project's deliveries can never be taken for another's duplicates, whatever
    keys their senders choose. 140 characters of the delivery id keep it within the column
    (200: an endpoint of 11, a project name of 40 at most)."""
    return f"{endpoint}:{project}:{delivery[:140]}"


@dataclass(frozen=True)
class NewEvent:
    endpoint: str
    dedup_key: str
    event_kind: str
    project: str
    body: str


@dataclass
class _Pending:
    event: NewEvent
    future: asyncio.Future[int | None]
    loop: asyncio.AbstractEventLoop


def _insert_ignoring_duplicates(db: Database) -> Insert:
    table = WebhookEvent.__table__
    assert isinstance(table, Table)
    if db.engine.dialect.name == "postgresql":
        stmt: Any = postgresql.insert(table).on_conflict_do_nothing(index_elements=["dedup_key"])
    else:
        stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=["dedup_key"])
    return stmt.returning(table.c.dedup_key, table.c.id)  # type: ignore[no-any-return]


class EventStore:
    """Stores events; ``await store(event)`` returns the new id, or None for a duplicate."""

    def __init__(self, db: Database, *, on_stored: Callable[[], None] | None = None) -> None:
        self._db = db
        self._on_stored = on_stored
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._insert = _insert_ignoring_duplicates(db)

    async def store(self, event: NewEvent) -> int | None:
        self._ensure_started()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int | None] = loop.create_future()
        self._queue.put(_Pending(event, future, loop))
        return await future

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="event-writer", daemon=True
                    )
                    self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[_Pending]) -> None:
        rows = [vars(p.event) for p in batch]
        try:
            with self._db.transaction() as conn:
                inserted: dict[str, int] = {
                    key: event_id for key, event_id in conn.execute(self._insert, rows)
                }
        except Exception as exc:
            log.error("storing events failed", count=len(batch), error=type(exc).__name__)
            error = TemporaryError("the event could not be stored; send it again")
            _answer(batch, [error] * len(batch))
            return
        stored_any = bool(inserted)
        # A key sent twice in one batch is stored once: the second delivery is a duplicate.
        _answer(batch, [inserted.pop(p.event.dedup_key, None) for p in batch])
        if self._on_stored is not None and stored_any:
            self._on_stored()


def _answer(batch: list[_Pending], results: list[int | Exception | None]) -> None:
    """Hand the results to the waiting requests: one wake-up per event loop, not per event."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Pending, int | Exception | None]]] = {}
    for pending, result in zip(batch, results, strict=True):
        by_loop.setdefault(pending.loop, []).append((pending, result))
    for loop, items in by_loop.items():
        loop.call_soon_threadsafe(_resolve, items)


def _resolve(items: list[tuple[_Pending, int | Exception | None]]) -> None:
    for pending, result in items:
        if pending.future.done():
            continue  # the client went away
        if isinstance(result, Exception):
            pending.future.set_exception(result)
        else:
            pending.future.set_result(result)
