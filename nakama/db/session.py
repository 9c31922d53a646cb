"""The engine and session factory, and schema migration to the latest revision at start-up."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from nakama.db import changes
from nakama.secretbox import SecretBox

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# The Alembic config attribute that hands the migrations the keys for secret variables.
BOX_ATTRIBUTE = "secret_box"
# The newest revision under migrations/versions (a test checks that it is Alembic's head). A
# database already there needs no migration, and Alembic is not even imported: it is about a
# tenth of Nakama's memory (issue 13) and a fifth of a second of every start.
HEAD_REVISION = "0013"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the API read while a worker writes; busy_timeout waits instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database:
    """Owns the engine; ``session()`` gives a transaction that commits on success."""

    def __init__(self, url: str) -> None:
        self.url = url
        sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"future": True}
        if sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
            # Reads run side by side (read()); the request thread pool is 40 threads wide, and
            # a request waiting for a pooled connection waits for nothing the file needs. As
            # many kept as the pool has threads: an overflow connection is opened and closed
            # for one request (its pragmas included), which a loaded list showed.
            kwargs["pool_size"] = 40
            kwargs["max_overflow"] = 20
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["pool_size"] = 10
        self.engine: Engine = create_engine(url, **kwargs)
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time and, when busy, its waiting is sleep-and-retry (up to
        # tens of milliseconds a try). Taking turns on a lock in this process instead keeps
        # webhook answers fast; PostgreSQL needs no such thing.
        self._turn: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if sqlite else contextlib.nullcontext()
        )

    def migrate(self, *, secrets: SecretBox | None = None) -> None:
        """Bring the schema to the newest Alembic revision. ``secrets`` encrypts the secret
        variables of a database from before encryption at rest (without it the migration reads
        the keys from the environment or the data dir, as :mod:`nakama.secret_keys` does)."""
        if self.revision() != HEAD_REVISION:
            self._upgrade(secrets)
        with self.engine.begin() as connection:
            changes.ensure_triggers(connection)

    def revision(self) -> str | None:
        """The schema's Alembic revision (None: a database Alembic never touched)."""
        with self.engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            found = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return str(found) if found is not None else None

    def _upgrade(self, secrets: SecretBox | None) -> None:
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["connection_url"] = self.url
        cfg.attributes[BOX_ATTRIBUTE] = secrets
        with self.engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

    def changes(self) -> int:
        """The change counter (:mod:`nakama.db.changes`): a cache of what lists and sign-ins
        read is fresh while this number stays the same."""
        # On the pool's DBAPI connection: a Connection and a text() statement would cost
        # four times the query, and this runs for every API call.
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                cursor.execute(changes.CURRENT)
                row = cursor.fetchone()
            finally:
                cursor.close()
            raw.commit()  # ends the read's transaction on PostgreSQL at once
        finally:
            raw.close()
        if row is None:
            raise RuntimeError("the change counter's row is missing")
        return int(row[0])

    @contextmanager
    def session(self) -> Iterator[Session]:
        """An ORM session in one transaction, committed at the end unless it raised."""
        with self._turn:
            session = self._factory()
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """An ORM session for reads only, never committed. On SQLite it does not wait for the
        writers' turn: in WAL mode readers run beside a writer and see the last commit, and the
        turn exists for transactions that read and then write (SQLite refuses such an upgrade
        at once when another connection wrote meanwhile, busy timeout or not), which a read
        session never does. Anything changed in it is refused, not silently dropped."""
        session = self._factory(autoflush=False)
        try:
            yield session
            if session.new or session.dirty or session.deleted:
                raise RuntimeError("a read session changed rows; use Database.session()")
        finally:
            session.close()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A Core connection in one transaction, for bulk statements."""
        with self._turn, self.engine.begin() as connection:
            yield connection

    def dispose(self) -> None:
        self.engine.dispose()
