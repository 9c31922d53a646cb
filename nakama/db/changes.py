"""A number that changes with every committed change to what project lists, access checks and
sign-ins read, for caches of them to be keyed on (issue 13: the project list recomputed 200
projects for each of 1,000 requests a second).

The counter is the one row of ``change_counter``. Triggers in the database add one to it in the
same transaction as any INSERT, UPDATE or DELETE on a watched table, whoever writes (this
process, a second Nakama on the same PostgreSQL, the CLI): the new number becomes visible
together with the change, never before it. A reader takes the number first, then reads the
data; what it computes is at least as new as the number, so a cache entry stored under it is
never older than the number says.

The triggers are made at every start rather than in a migration: on SQLite an Alembic batch
migration copies a table to alter it, and the copy has no triggers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from sqlalchemy import text
from sqlalchemy.engine import Connection

V = TypeVar("V")

# Tables whose rows a project list, a project, an access check or a sign-in shows or depends on.
WATCHED = (
    "projects",
    "project_members",
    "users",
    "api_tokens",
    "web_sessions",
    "app_viewers",
)
_BUMP = "UPDATE change_counter SET n = n + 1 WHERE id = 1"
# The counter now (committed changes only).
CURRENT = "SELECT n FROM change_counter WHERE id = 1"
_PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION nakama_count_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  {_BUMP};
  RETURN NULL;
END $$
"""


def ensure_triggers(connection: Connection) -> int:
    """Make every missing trigger; how many were made (0 when all were there)."""
    made = 0
    if connection.dialect.name == "sqlite":
        for table in WATCHED:
            for op in ("INSERT", "UPDATE", "DELETE"):
                name = f"nakama_changes_{table}_{op.lower()}"
                exists = connection.execute(
                    text("SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = :name"),
                    {"name": name},
                ).first()
                if exists is None:
                    connection.execute(
                        text(f"CREATE TRIGGER {name} AFTER {op} ON {table} BEGIN {_BUMP}; END")
                    )
                    made += 1
        return made
    connection.execute(text(_PG_FUNCTION))
    for table in WATCHED:
        exists = connection.execute(
            text(
                "SELECT 1 FROM pg_trigger WHERE tgname = 'nakama_changes'"
                " AND tgrelid = CAST(:table AS regclass)"
            ),
            {"table": table},
        ).first()
        if exists is None:
            connection.execute(
                text(
                    f"CREATE TRIGGER nakama_changes AFTER INSERT OR UPDATE OR DELETE ON {table}"
                    " FOR EACH STATEMENT EXECUTE FUNCTION nakama_count_change()"
                )
            )
            made += 1
    return made


def drop_triggers(connection: Connection) -> None:
    """Remove every trigger and the function :func:`ensure_triggers` made (a downgrade past the
    counter's table: left behind, they would fail every write to a watched table)."""
    if connection.dialect.name == "sqlite":
        for table in WATCHED:
            for op in ("INSERT", "UPDATE", "DELETE"):
                name = f"nakama_changes_{table}_{op.lower()}"
                connection.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
        return
    for table in WATCHED:
        connection.execute(text(f"DROP TRIGGER IF EXISTS nakama_changes ON {table}"))
    connection.execute(text("DROP FUNCTION IF EXISTS nakama_count_change()"))


class Fresh(Generic[V]):
    """Values computed from what the watched tables hold, kept while the change counter stays
    where it was when they were computed (a key may add what else the value depends on).

    A None value is not kept: keys anyone can make up (a random token or session id) must
    not fill the cache and push out the values of real callers.

    One computation per key at a time: when a change makes every caller miss at once (the
    list of 200 projects, asked by 40 request threads), one computes and the others wait for
    its value instead of all computing the same thing (a stall of a second, measured)."""

    def __init__(self, counter: Callable[[], int], *, kept: int) -> None:
        """``counter``: the change counter (``Database.changes``); ``kept``: at most this many
        values, all dropped when full (a changed counter leaves old keys never asked again)."""
        self._counter = counter
        self._kept = kept
        self._values: dict[tuple[Hashable, ...], V] = {}
        # Keys being computed, each with the lock its computing thread holds meanwhile.
        self._computing: dict[tuple[Hashable, ...], threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[Hashable, ...], compute: Callable[[], V]) -> V:
        """The value of ``key``: the kept one if nothing changed since, else ``compute()``'s."""
        # The counter first, then the read: what compute() reads is at least as new.
        full = (self._counter(), *key)
        with self._lock:
            found = self._values.get(full)
            if found is not None:
                return found
            busy = self._computing.get(full)
            if busy is None:
                busy = self._computing[full] = threading.Lock()
                busy.acquire()
                mine = True
            else:
                mine = False
        if not mine:
            with busy:  # until the computing thread is done
                pass
            with self._lock:
                found = self._values.get(full)
            # None: that computation failed or found nothing; this caller tries in its turn.
            return found if found is not None else self.get(key, compute)
        try:
            value = compute()
            if value is not None:  # None (no such token, session ...) is not kept
                with self._lock:
                    if len(self._values) >= self._kept:
                        self._values.clear()
                    self._values[full] = value
            return value
        finally:
            with self._lock:
                del self._computing[full]
            busy.release()
