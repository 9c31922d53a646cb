"""The engine and session factory, and schema migration to the latest revision at start-up."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from nakama.secretbox import SecretBox

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# The Alembic config attribute that hands the migrations the keys for secret variables.
BOX_ATTRIBUTE = "secret_box"


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
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["connection_url"] = self.url
        cfg.attributes[BOX_ATTRIBUTE] = secrets
        with self.engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

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
    def transaction(self) -> Iterator[Connection]:
        """A Core connection in one transaction, for bulk statements."""
        with self._turn, self.engine.begin() as connection:
            yield connection

    def dispose(self) -> None:
        self.engine.dispose()
