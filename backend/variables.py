"""The variable service: a project's environment variables, kept in the database and applied to
the running app through the Runtime port (which restarts it).

Values may be secrets. They go to the database and to the runtime, nowhere else: what is shown
is :func:`nakama.variables.public`, logs name the key only, and an error from applying a change
is stripped of every secret value before it is raised.
"""

from __future__ import annotations

import builtins
import threading

from sqlalchemy import Select, select

from nakama.db.session import Database
from nakama.db.tables import Project, ProjectVariable
from nakama.errors import Conflict, NakamaError, NotFound
from nakama.logs import get_logger
from nakama.models import VariablePublic
from nakama.ports import Runtime
from nakama.variables import check_total, public, redact, validate_key, validate_value

log = get_logger(__name__)


def stored_environment(db: Database, project: str) -> dict[str, str]:
    """The project's variables as the app gets them (none for a project that is not there)."""
    with db.session() as s:
        rows = s.execute(
            select(ProjectVariable.key, ProjectVariable.value).where(
                ProjectVariable.project == project
            )
        ).all()
    return {key: value for key, value in rows}


class VariableService:
    def __init__(self, db: Database, runtime: Runtime) -> None:
        self._db = db
        self._runtime = runtime
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    # --- reads -----------------------------------------------------------------------------
    def list(self, project: str) -> builtins.list[VariablePublic]:
        """The project's variables sorted by key, secrets without their values."""
        self._check_project(project)
        with self._db.session() as s:
            rows = s.scalars(
                select(ProjectVariable)
                .where(ProjectVariable.project == project)
                .order_by(ProjectVariable.key)
            ).all()
        return [_public(r) for r in rows]

    def get(self, project: str, key: str) -> VariablePublic:
        """One variable as :meth:`list` shows it; NotFound if the project or it is missing."""
        self._check_project(project)
        return _public(self._row(project, key))

    def environment(self, project: str) -> dict[str, str]:
        """The real values, for the runtime only: never show them."""
        self._check_project(project)
        return stored_environment(self._db, project)

    # --- changes ---------------------------------------------------------------------------
    def set(self, project: str, key: str, value: str, *, secret: bool) -> None:
        """Create or replace a variable, then restart the app with it (also when unchanged,
        so that repeating a change whose restart failed applies it)."""
        validate_key(key)
        validate_value(key, value)
        with self._lock(project):
            self._check_project(project, changing=True)
            check_total({**stored_environment(self._db, project), key: value})
            with self._db.session() as s:
                row = s.scalar(self._query(project, key))
                if row is None:
                    s.add(ProjectVariable(project=project, key=key, value=value, secret=secret))
                else:
                    row.value, row.secret = value, secret
            log.info("variable set", project=project, key=key, secret=secret)
            self._apply(project, extra_secret=value if secret else None)

    def delete(self, project: str, key: str) -> None:
        """Remove a variable and restart the app without it; NotFound if it is not there."""
        with self._lock(project):
            self._check_project(project, changing=True)
            with self._db.session() as s:
                row = s.scalar(self._query(project, key))
                if row is None:
                    raise NotFound(f"variable {key[:100]!r} of project {project!r} not found")
                removed = row.value if row.secret else None
                s.delete(row)
            log.info("variable deleted", project=project, key=key)
            self._apply(project, extra_secret=removed)

    # --- plumbing --------------------------------------------------------------------------
    def _apply(self, project: str, *, extra_secret: str | None) -> None:
        """Give the runtime the whole current set; an error it raises comes out redacted."""
        with self._db.session() as s:
            rows = s.execute(
                select(ProjectVariable.key, ProjectVariable.value, ProjectVariable.secret).where(
                    ProjectVariable.project == project
                )
            ).all()
        variables = {key: value for key, value, _ in rows}
        secrets = [value for _, value, secret in rows if secret]
        if extra_secret is not None:
            secrets.append(extra_secret)
        try:
            self._runtime.set_environment(project, variables)
        except NakamaError as exc:
            message = redact(str(exc), secrets)
            # Not chained: the original's message may hold a value (an app's log lines).
            raise type(exc)(
                f"variables of {project!r} saved, but not applied to the app: {message}"
            ) from None

    def _check_project(self, project: str, *, changing: bool = False) -> None:
        with self._db.session() as s:
            status = s.scalar(select(Project.status).where(Project.name == project))
        if status is None:
            raise NotFound(f"project {project!r} not found")
        if changing and status == "deleting":
            raise Conflict(f"project {project!r} is being deleted")

    @staticmethod
    def _query(project: str, key: str) -> Select[ProjectVariable]:
        return select(ProjectVariable).where(
            ProjectVariable.project == project, ProjectVariable.key == key
        )

    def _row(self, project: str, key: str) -> ProjectVariable:
        with self._db.session() as s:
            row = s.scalar(self._query(project, key))
        if row is None:
            raise NotFound(f"variable {key[:100]!r} of project {project!r} not found")
        return row

    def _lock(self, project: str) -> threading.Lock:
        """One lock per project: a change and its restart finish before the next begins, so
        the last restart always carries the last change."""
        with self._locks_lock:
            return self._locks.setdefault(project, threading.Lock())


def _public(row: ProjectVariable) -> VariablePublic:
    return public(key=row.key, value=row.value, secret=row.secret, updated_at=row.updated_at)
