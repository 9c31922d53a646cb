"""A PostgreSQL database per app (issue 14), on the server the operator names
(``NAKAMA_ADDONS__POSTGRES_URL``, an admin DSN). Both modes: the app gets ``DATABASE_URL`` as a
secret variable, which the runtime hands it like any other (local: the process's environment;
cluster: the app's Kubernetes Secret), and restarts.

On the server a project has:

- ``<prefix>_<project>``, a NOLOGIN role that owns the database of the same name, whose
  ``CONNECT`` and ``TEMPORARY`` are revoked from ``PUBLIC``: no other app's role can connect;
- ``<prefix>_<project>_<n>``, the login role the app connects as, a member of the owner whose
  sessions start as the owner (``ALTER ROLE … SET role``), so what the app makes is the owner's.
  Its password goes to the server as a SCRAM verifier made by libpq, never as text.

A rotation makes login role n+1, restarts the app with it (the restart drops no request), and
only then drops role n: the instance being replaced keeps working until it is stopped.

Every name reaches the server through :class:`psycopg.sql.Identifier` (quoted), and only names
that start with the prefix are ever dropped. A create that fails or is interrupted is undone
(``state`` creating: the caller never got an answer and the app never got the address); a
delete or a rotation that is interrupted is finished at the next start.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel
from sqlalchemy import Select, delete, select
from sqlalchemy.engine import URL, make_url

from backend.variables import DATABASE_VARIABLE, VariableService, remove_variable, store_variable
from nakama.db.session import Database
from nakama.db.tables import AppDatabase, as_utc, utcnow
from nakama.errors import Conflict, NakamaError, NotFound, TemporaryError
from nakama.logs import get_logger
from nakama.secretbox import SecretBox
from nakama.settings import AddonSettings
from nakama.variables import redact

if TYPE_CHECKING:
    import psycopg

log = get_logger(__name__)
_APPLICATION = "nakama-app-databases"  # application_name of Nakama's admin sessions
SETTING = "NAKAMA_ADDONS__POSTGRES_URL"
NOT_CONFIGURED = (
    "no PostgreSQL server is configured for app databases: the operator sets "
    f"{SETTING} to an admin DSN (a superuser, or a role with CREATEROLE and CREATEDB), "
    "e.g. postgresql://nakama_admin:PASSWORD@db.internal:5432/postgres"
)


class DatabasePublic(BaseModel):
    """A project's database as shown: where it is and who connects, never the password."""

    project: str
    database: str
    role: str
    host: str
    port: int
    state: str
    created_at: datetime
    rotated_at: datetime | None


class DatabaseStatus(BaseModel):
    """What the project page and ``database show`` need: whether the operator configured a
    server (and what to set if not), and the project's database if it has one."""

    configured: bool
    message: str | None
    database: DatabasePublic | None


class _Server:
    """Statements on the admin DSN's server; each opens its own autocommit connection (CREATE
    and DROP DATABASE cannot run in a transaction)."""

    def __init__(self, url: str, *, connection_limit: int) -> None:
        parsed = make_url(url)
        self.host = parsed.host or "localhost"
        self.port = parsed.port or 5432
        self.query = dict(parsed.query)
        self._password = parsed.password
        self._conninfo = dict(
            host=self.host,
            port=str(self.port),
            user=parsed.username,
            password=parsed.password,
            dbname=parsed.database or "postgres",
            connect_timeout="10",
            application_name=_APPLICATION,
            **{k: v if isinstance(v, str) else v[-1] for k, v in parsed.query.items()},
        )
        self._limit = connection_limit

    @contextmanager
    def connect(self, dbname: str | None = None) -> Iterator[psycopg.Connection[Any]]:
        import psycopg
        from psycopg.conninfo import make_conninfo

        info = {k: v for k, v in self._conninfo.items() if v is not None}
        if dbname is not None:
            info["dbname"] = dbname
        try:
            with psycopg.connect(make_conninfo(**info), autocommit=True) as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise TemporaryError(
                f"the PostgreSQL server for app databases ({self.host}:{self.port}) cannot be "
                f"reached or refused the connection: {self._clean(exc)}"
            ) from None
        except psycopg.Error as exc:
            raise NakamaError(
                f"the PostgreSQL server for app databases refused: {self._clean(exc)}"
            ) from None

    def _clean(self, exc: Exception) -> str:
        return redact(str(exc).strip(), [self._password] if self._password else [])[:500]

    # --- reads -----------------------------------------------------------------------------
    def existing(self, *, roles: list[str], database: str) -> list[str]:
        """Which of these names are on the server already."""
        with self.connect() as conn:
            found = [
                f"role {r}"
                for (r,) in conn.execute(
                    "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (roles,)
                )
            ]
            if self._database_exists(conn, database):
                found.append(f"database {database}")
        return found

    # --- changes ---------------------------------------------------------------------------
    def end_orphans(self, row: AppDatabase, *, wait_s: float = 10.0) -> None:
        """End Nakama's admin sessions still working on ``row``'s names: a Nakama killed
        during a create leaves its statement running on the server (a CREATE DATABASE that
        waits for template1 completes once it may), which would make the database again
        after an undo dropped it."""
        from psycopg import sql

        with self.connect() as conn:
            names = [
                sql.Identifier(n).as_string(conn)
                for n in (row.database, row.owner_role, row.login_role)
            ]
            mine = (
                "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
                " AND application_name = %s AND usename = current_user AND state = 'active'"
                " AND EXISTS (SELECT 1 FROM unnest(%s::text[]) AS n WHERE position(n in query) > 0)"
            )
            deadline = time.monotonic() + wait_s
            while True:
                pids = [p for (p,) in conn.execute(mine, (_APPLICATION, names))]
                if not pids or time.monotonic() > deadline:
                    return
                for pid in pids:
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                log.info("ended an interrupted create's session", database=row.database)
                time.sleep(0.1)

    def make(self, row: AppDatabase, password: str) -> None:
        """The owner role, the login role and the database; what is there already is kept (an
        undone create drops all of them, so a second try starts clean)."""
        from psycopg import sql

        with self.connect() as conn:
            if not self._role_exists(conn, row.owner_role):
                conn.execute(
                    sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(row.owner_role))
                )
        self.make_login(row.login_role, owner=row.owner_role, password=password)
        with self.connect() as conn:
            if not self._database_exists(conn, row.database):
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(row.database), sql.Identifier(row.owner_role)
                    )
                )
            conn.execute(
                sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(
                    sql.Identifier(row.database)
                )
            )

    def make_login(self, login: str, *, owner: str, password: str) -> None:
        """Login role ``login``, a member of ``owner`` whose sessions start as it, with this
        password (sent as libpq's SCRAM verifier; a role left by an interrupted try gets it)."""
        from psycopg import sql

        with self.connect() as conn:
            verifier = conn.pgconn.encrypt_password(
                password.encode(), login.encode(), b"scram-sha-256"
            ).decode()
            name = sql.Identifier(login)
            if self._role_exists(conn, login):
                conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(name, sql.Literal(verifier))
                )
            else:
                conn.execute(
                    sql.SQL(
                        "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
                        " CONNECTION LIMIT {} PASSWORD {} IN ROLE {}"
                    ).format(
                        name,
                        sql.Literal(self._limit),
                        sql.Literal(verifier),
                        sql.Identifier(owner),
                    )
                )
            conn.execute(sql.SQL("ALTER ROLE {} SET role = {}").format(name, sql.Literal(owner)))

    def drop_login(self, login: str, *, owner: str, database: str) -> None:
        """Drop a login role; what it owns in the app's database becomes the owner's first."""
        from psycopg import sql

        with self.connect() as conn:
            if not self._role_exists(conn, login):
                return
            in_db = self._database_exists(conn, database)
        if in_db:
            with self.connect(database) as conn:
                conn.execute(
                    sql.SQL("REASSIGN OWNED BY {} TO {}").format(
                        sql.Identifier(login), sql.Identifier(owner)
                    )
                )
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(login)))
        with self.connect() as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(login)))

    def drop(self, row: AppDatabase, logins: list[str]) -> None:
        """The database (its sessions ended: WITH FORCE), the login roles and the owner."""
        from psycopg import sql

        with self.connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(row.database)
                )
            )
        for login in logins:
            self.drop_login(login, owner=row.owner_role, database=row.database)
        with self.connect() as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(row.owner_role)))

    @staticmethod
    def _database_exists(conn: psycopg.Connection[Any], name: str) -> bool:
        return bool(
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        )

    @staticmethod
    def _role_exists(conn: psycopg.Connection[Any], name: str) -> bool:
        return bool(conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone())


class DatabaseService:
    def __init__(
        self, db: Database, box: SecretBox, settings: AddonSettings, variables: VariableService
    ) -> None:
        self._db = db
        self._box = box
        self._settings = settings
        self._variables = variables
        self._prefix = settings.postgres_prefix
        self._address = _app_address(settings)

    @property
    def configured(self) -> bool:
        return self._settings.postgres_url is not None

    def _server(self) -> _Server:
        url = self._settings.postgres_url
        if url is None:
            raise Conflict(NOT_CONFIGURED)
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise Conflict(
                "app databases need psycopg, which this install lacks: "
                "pip install 'nakama[postgres]'"
            ) from None
        return _Server(
            url.get_secret_value(), connection_limit=self._settings.postgres_connection_limit
        )

    # --- reads -----------------------------------------------------------------------------
    def status(self, project: str) -> DatabaseStatus:
        self._variables.check_project(project)
        row = self._row(project)
        return DatabaseStatus(
            configured=self.configured,
            message=None if self.configured else NOT_CONFIGURED,
            database=self._public(row) if row is not None else None,
        )

    def get(self, project: str) -> DatabasePublic:
        self._variables.check_project(project)
        row = self._row(project)
        if row is None:
            raise NotFound(f"project {project!r} has no database")
        return self._public(row)

    # --- changes ---------------------------------------------------------------------------
    def create(self, project: str) -> DatabasePublic:
        """Make the project's database and restart its app with ``DATABASE_URL``."""
        server = self._server()
        with self._variables.lock(project):
            self._variables.check_project(project, changing=True)
            if self._row(project) is not None:
                raise Conflict(f"project {project!r} has a database already")
            owner = f"{self._prefix}_{project}"
            row = AppDatabase(
                project=project,
                database=owner,
                owner_role=owner,
                login_role=f"{owner}_1",
                state="creating",
            )
            there = server.existing(roles=[owner, row.login_role], database=owner)
            if there:
                raise Conflict(
                    f"the PostgreSQL server has {', '.join(there)} already, which this Nakama "
                    f"did not make: another installation sharing the server needs another "
                    f"NAKAMA_ADDONS__POSTGRES_PREFIX (now {self._prefix!r})"
                )
            password = _password()
            row.password = self._box.encrypt(password)
            with self._db.session() as s:
                s.add(row)
            try:
                server.make(row, password)
            except NakamaError:
                self._undo(server, project)
                raise
            with self._db.session() as s:
                stored = s.scalars(_query(project)).one()
                stored.state = "ready"
                store_variable(
                    s,
                    self._box,
                    project,
                    DATABASE_VARIABLE,
                    self._app_url(server, row, password),
                    secret=True,
                )
            log.info("app database created", project=project, database=row.database)
            self._variables.apply(
                project, failed=f"the database of {project!r} was made, but the app not restarted"
            )
            return self.get(project)

    def rotate(self, project: str) -> DatabasePublic:
        """New credentials: the next login role, the app restarted with it, the old one dropped."""
        server = self._server()
        with self._variables.lock(project):
            self._variables.check_project(project, changing=True)
            row = self._ready_row(project)
            if row.old_login_role is not None:  # an interrupted rotation: finish it first
                self._finish_rotation(server, row)
            login = _next_login(row.login_role)
            password = _password()
            server.make_login(login, owner=row.owner_role, password=password)
            with self._db.session() as s:
                stored = s.scalars(_query(project)).one()
                stored.old_login_role, stored.login_role = stored.login_role, login
                stored.password = self._box.encrypt(password)
                stored.rotated_at = utcnow()
                store_variable(
                    s,
                    self._box,
                    project,
                    DATABASE_VARIABLE,
                    self._app_url(server, stored, password),
                    secret=True,
                )
                row = stored
            log.info("app database credentials rotated", project=project, role=login)
            self._variables.apply(
                project,
                failed=f"new credentials of {project!r}'s database stored, but the app not "
                "restarted (the old ones still work; rotate again)",
            )
            self._finish_rotation(server, row)
            return self.get(project)

    def delete(self, project: str) -> None:
        """Restart the app without ``DATABASE_URL``, then drop the database and its roles."""
        server = self._server()
        with self._variables.lock(project):
            self._variables.check_project(project, changing=True)
            row = self._row(project)
            if row is None:
                raise NotFound(f"project {project!r} has no database")
            with self._db.session() as s:
                remove_variable(s, project, DATABASE_VARIABLE)
                stored = s.scalars(_query(project)).one()
                stored.state = "deleting"
            try:
                self._variables.apply(project, failed="the app was not restarted")
            except NakamaError as exc:  # it is going anyway: an app not restarted is no reason
                log.warning("app not restarted before its database went", error=str(exc))
            self._drop(server, row)

    def drop_for_project(self, project: str) -> None:
        """Drop the project's database, if any, as the project goes (its app is gone)."""
        row = self._row(project)
        if row is None:
            return
        with self._variables.lock(project):
            self._drop(self._server(), row)

    def resume(self) -> None:
        """At start: undo interrupted creates, finish interrupted deletes and rotations. A
        server that cannot be reached leaves them for the next start (logged)."""
        with self._db.session() as s:
            rows = list(s.scalars(select(AppDatabase)).all())
        pending = [r for r in rows if r.state != "ready" or r.old_login_role is not None]
        if not pending:
            return
        try:
            server = self._server()
        except Conflict as exc:
            log.error("app databases left as they are", error=str(exc))
            return
        for row in pending:
            try:
                with self._variables.lock(row.project):
                    if row.state == "creating":
                        server.end_orphans(row)
                        self._undo(server, row.project)
                    elif row.state == "deleting":
                        self._drop(server, row)
                    else:
                        self._finish_rotation(server, row)
            except NakamaError as exc:
                log.error("app database not finished", project=row.project, error=str(exc))

    # --- plumbing --------------------------------------------------------------------------
    def _check_ours(self, *names: str | None) -> None:
        """Nakama drops only names it makes: a row changed by hand cannot point it elsewhere."""
        for name in names:
            if name is not None and not name.startswith(f"{self._prefix}_"):
                raise Conflict(
                    f"{name!r} does not start with {self._prefix + '_'!r}: Nakama does not drop it"
                )

    def _undo(self, server: _Server, project: str) -> None:
        row = self._row(project)
        if row is None:
            return
        self._check_ours(row.database, row.owner_role, row.login_role)
        try:
            server.drop(row, [row.login_role])
        except NakamaError as exc:
            log.error("interrupted database create not undone yet", project=project, error=str(exc))
            return
        with self._db.session() as s:
            s.execute(delete(AppDatabase).where(AppDatabase.project == project))
        log.info("interrupted database create undone", project=project)

    def _drop(self, server: _Server, row: AppDatabase) -> None:
        logins = [row.login_role] + ([row.old_login_role] if row.old_login_role else [])
        self._check_ours(row.database, row.owner_role, *logins)
        server.drop(row, logins)
        with self._db.session() as s:
            s.execute(delete(AppDatabase).where(AppDatabase.project == row.project))
            remove_variable(s, row.project, DATABASE_VARIABLE)
        log.info("app database dropped", project=row.project, database=row.database)

    def _finish_rotation(self, server: _Server, row: AppDatabase) -> None:
        old = row.old_login_role
        if old is None:
            return
        self._check_ours(old)
        server.drop_login(old, owner=row.owner_role, database=row.database)
        with self._db.session() as s:
            stored = s.scalars(_query(row.project)).one()
            stored.old_login_role = None
        row.old_login_role = None

    def _app_url(self, server: _Server, row: AppDatabase, password: str) -> str:
        host, port = self._address
        query = {k: v for k, v in server.query.items() if k in ("sslmode", "sslrootcert")}
        return URL.create(
            "postgresql",
            username=row.login_role,
            password=password,
            host=host,
            port=port,
            database=row.database,
            query=query,
        ).render_as_string(hide_password=False)

    def _row(self, project: str) -> AppDatabase | None:
        with self._db.session() as s:
            return s.scalar(_query(project))

    def _ready_row(self, project: str) -> AppDatabase:
        row = self._row(project)
        if row is None:
            raise NotFound(f"project {project!r} has no database")
        if row.state != "ready":
            raise Conflict(f"the database of {project!r} is {row.state}")
        return row

    def _public(self, row: AppDatabase) -> DatabasePublic:
        host, port = self._address
        return DatabasePublic(
            project=row.project,
            database=row.database,
            role=row.login_role,
            host=host,
            port=port,
            state=row.state,
            created_at=as_utc(row.created_at),
            rotated_at=as_utc(row.rotated_at) if row.rotated_at is not None else None,
        )


def _password() -> str:
    return secrets.token_urlsafe(32)


def _next_login(login: str) -> str:
    base, _, n = login.rpartition("_")
    return f"{base}_{int(n) + 1}"


def _query(project: str) -> Select[AppDatabase]:
    return select(AppDatabase).where(AppDatabase.project == project)


def _app_address(settings: AddonSettings) -> tuple[str, int]:
    """The (host, port) apps reach the server at: postgres_app_host, else the admin DSN's."""
    host, port = "", 5432
    if settings.postgres_url is not None:
        parsed = make_url(settings.postgres_url.get_secret_value())
        host, port = parsed.host or "localhost", parsed.port or 5432
    if settings.postgres_app_host:
        parts = urlsplit(f"//{settings.postgres_app_host}")
        host, port = parts.hostname or host, parts.port or port
    return host, port
