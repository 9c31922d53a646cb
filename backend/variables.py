"""The variable service: a project's environment variables, kept in the database and applied to
the running app through the Runtime port (which restarts it).

Values may be secrets. They go to the database, encrypted (:mod:`nakama.secretbox`), and to the
runtime, nowhere else: what is shown is :func:`nakama.variables.public`, logs name the key only,
and an error from applying a change is stripped of every secret value before it is raised.
"""

from __future__ import annotations

import builtins
import threading

from sqlalchemy import ColumnElement, Select, delete, select, update
from sqlalchemy.orm import Session

from nakama.db.session import Database
from nakama.db.tables import AppDatabase, NotificationTarget, Project, ProjectVariable
from nakama.errors import Conflict, NakamaError, NotFound
from nakama.logs import get_logger
from nakama.models import VariablePublic
from nakama.ports import Runtime
from nakama.secretbox import SecretBox, SecretsKeyError
from nakama.variables import check_total, public, redact, validate_key, validate_value

log = get_logger(__name__)


def stored_environment(db: Database, project: str, box: SecretBox) -> dict[str, str]:
    """The project's variables as the app gets them (none for a project that is not there)."""
    return {key: value for key, value, _ in _stored(db, project, box)}


def _stored(db: Database, project: str, box: SecretBox) -> list[tuple[str, str, bool]]:
    """(key, value, secret) of each of the project's variables, secrets decrypted."""
    with db.session() as s:
        rows = s.execute(
            select(ProjectVariable.key, ProjectVariable.value, ProjectVariable.secret).where(
                ProjectVariable.project == project
            )
        ).all()
    return [(key, _value(box, project, key, value, secret), secret) for key, value, secret in rows]


def _value(box: SecretBox, project: str, key: str, stored: str, secret: bool) -> str:
    return box.decrypt(stored, what=_what(project, key)) if secret else stored


# The variable a project's database (backend.databases) sets; only that service changes it.
DATABASE_VARIABLE = "DATABASE_URL"


def store_variable(
    s: Session, box: SecretBox, project: str, key: str, value: str, *, secret: bool
) -> None:
    """Create or replace one variable in the session's transaction (encrypted if secret)."""
    stored = box.encrypt(value) if secret else value
    row = s.scalar(
        select(ProjectVariable).where(
            ProjectVariable.project == project, ProjectVariable.key == key
        )
    )
    if row is None:
        s.add(ProjectVariable(project=project, key=key, value=stored, secret=secret))
    else:
        row.value, row.secret = stored, secret


def remove_variable(s: Session, project: str, key: str) -> None:
    """Delete one variable, if it is there, in the session's transaction."""
    s.execute(
        delete(ProjectVariable).where(
            ProjectVariable.project == project, ProjectVariable.key == key
        )
    )


def _what(project: str, key: str) -> str:
    return f"the secret variable {key!r} of project {project!r}"


def reencrypt_secrets(db: Database, box: SecretBox) -> int:
    """Encrypt every secret variable with the box's first key, in one transaction (all or
    none: the older keys still open every value if it is interrupted); how many there are.
    A SecretsKeyError (naming the first variable no key opens) changes nothing."""
    with db.session() as s:
        rows = s.scalars(
            select(ProjectVariable)
            .where(ProjectVariable.secret.is_(True))
            .order_by(ProjectVariable.id)
            .with_for_update()
        ).all()
        for row in rows:
            # Not through the ORM's onupdate: a new key is no change of the variable.
            s.execute(
                update(ProjectVariable)
                .where(ProjectVariable.id == row.id)
                .values(
                    value=box.rotate(row.value, what=_what(row.project, row.key)),
                    updated_at=row.updated_at,
                )
            )
        # The notification targets' URLs and signing secrets are under the same keys.
        targets = s.scalars(
            select(NotificationTarget).order_by(NotificationTarget.id).with_for_update()
        ).all()
        for target in targets:
            what = _target_what(target)
            secret = target.secret
            s.execute(
                update(NotificationTarget)
                .where(NotificationTarget.id == target.id)
                .values(
                    url=box.rotate(target.url, what=what),
                    secret=box.rotate(secret, what=what) if secret is not None else None,
                )
            )
    return len(rows) + len(targets)


def _target_what(target: NotificationTarget) -> str:
    return f"notification target {target.id} of project {target.project!r}"


def check_secrets(db: Database, box: SecretBox) -> int:
    """SecretsKeyError naming the first secret variable no key opens; else how many there are.
    Run at start-up: with a lost or wrong key Nakama does not start (and so never mixes
    secrets under a new key with ones under the old)."""
    with db.session() as s:
        rows = s.execute(
            select(ProjectVariable.project, ProjectVariable.key, ProjectVariable.value).where(
                ProjectVariable.secret.is_(True)
            )
        ).all()
        targets = s.scalars(select(NotificationTarget)).all()
    for project, key, value in rows:
        box.decrypt(value, what=_what(project, key))
    for target in targets:
        box.decrypt(target.url, what=_target_what(target))
        if target.secret is not None:
            box.decrypt(target.secret, what=_target_what(target))
    return len(rows) + len(targets)


class VariableService:
    def __init__(self, db: Database, runtime: Runtime, box: SecretBox) -> None:
        self._db = db
        self._runtime = runtime
        self._box = box
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    # --- reads -----------------------------------------------------------------------------
    def list(self, project: str) -> builtins.list[VariablePublic]:
        """The project's variables sorted by key, secrets without their values."""
        self.check_project(project)
        with self._db.session() as s:
            rows = s.scalars(
                select(ProjectVariable)
                .where(ProjectVariable.project == project)
                .order_by(ProjectVariable.key)
            ).all()
        return [self._public(r) for r in rows]

    def get(self, project: str, key: str) -> VariablePublic:
        """One variable as :meth:`list` shows it; NotFound if the project or it is missing."""
        self.check_project(project)
        return self._public(self._row(project, key))

    def environment(self, project: str) -> dict[str, str]:
        """The real values, for the runtime only: never show them."""
        self.check_project(project)
        return stored_environment(self._db, project, self._box)

    # --- changes ---------------------------------------------------------------------------
    def set(self, project: str, key: str, value: str, *, secret: bool) -> None:
        """Create or replace a variable, then restart the app with it (also when unchanged,
        so that repeating a change whose restart failed applies it)."""
        validate_key(key)
        validate_value(key, value)
        with self.lock(project):
            self.check_project(project, changing=True)
            self._check_unmanaged(project, key)
            check_total({**stored_environment(self._db, project, self._box), key: value})
            with self._db.session() as s:
                store_variable(s, self._box, project, key, value, secret=secret)
            log.info("variable set", project=project, key=key, secret=secret)
            self.apply(project, removed=value if secret else None)

    def delete(self, project: str, key: str) -> None:
        """Remove a variable and restart the app without it; NotFound if it is not there."""
        with self.lock(project):
            self.check_project(project, changing=True)
            self._check_unmanaged(project, key)
            with self._db.session() as s:
                row = s.scalar(self._query(project, key))
                if row is None:
                    raise NotFound(f"variable {key[:100]!r} of project {project!r} not found")
                removed = self._removed_secret(row)
                s.delete(row)
            log.info("variable deleted", project=project, key=key)
            self.apply(project, removed=removed)

    def restart(self, project: str) -> None:
        """Restart the app on what it runs, with its variables: the restart a change of them
        makes, so a restart and a change never cross. An app that does not run is left alone
        (it gets its variables when it starts)."""
        with self.lock(project):
            self.check_project(project, changing=True)
            log.info("app restart asked", project=project)
            self.apply(project, failed=f"the app of {project!r} was not restarted")

    # --- plumbing --------------------------------------------------------------------------
    def apply(self, project: str, *, failed: str = "", removed: str | None = None) -> None:
        """Give the runtime the whole current set (call with :meth:`lock` held); an error it
        raises comes out redacted, ``removed`` (a secret just taken out) too, and after
        ``failed`` (by default: the variables were saved, but not applied)."""
        rows = _stored(self._db, project, self._box)
        variables = {key: value for key, value, _ in rows}
        secrets = [value for _, value, secret in rows if secret]
        if removed is not None:
            secrets.append(removed)
        try:
            self._runtime.set_environment(project, variables)
        except NakamaError as exc:
            message = redact(str(exc), secrets)
            # Not chained: the original's message may hold a value (an app's log lines).
            failed = failed or f"variables of {project!r} saved, but not applied to the app"
            raise type(exc)(f"{failed}: {message}") from None

    def _check_unmanaged(self, project: str, key: str) -> None:
        """Conflict for the variable the project's database owns."""
        if key != DATABASE_VARIABLE:
            return
        with self._db.session() as s:
            has_database = s.scalar(select(AppDatabase.id).where(AppDatabase.project == project))
        if has_database is not None:
            raise Conflict(
                f"{DATABASE_VARIABLE} of project {project!r} is its database's address: "
                f"`nakama projects database rotate {project}` gives it new credentials and "
                f"`nakama projects database delete {project}` removes it"
            )

    def check_project(self, project: str, *, changing: bool = False) -> None:
        """NotFound for a missing project; Conflict for changing one being deleted."""
        with self._db.session() as s:
            status = s.scalar(select(Project.status).where(Project.name == project))
        if status is None:
            raise NotFound(f"project {project!r} not found")
        if changing and status == "deleting":
            raise Conflict(f"project {project!r} is being deleted")

    @staticmethod
    def matching(project: str, key: str) -> tuple[ColumnElement[bool], ...]:
        return (ProjectVariable.project == project, ProjectVariable.key == key)

    @staticmethod
    def _query(project: str, key: str) -> Select[ProjectVariable]:
        return select(ProjectVariable).where(*VariableService.matching(project, key))

    def _row(self, project: str, key: str) -> ProjectVariable:
        with self._db.session() as s:
            row = s.scalar(self._query(project, key))
        if row is None:
            raise NotFound(f"variable {key[:100]!r} of project {project!r} not found")
        return row

    def lock(self, project: str) -> threading.Lock:
        """One lock per project: a change and its restart finish before the next begins, so
        the last restart always carries the last change."""
        with self._locks_lock:
            return self._locks.setdefault(project, threading.Lock())

    def _public(self, row: ProjectVariable) -> VariablePublic:
        value = _value(self._box, row.project, row.key, row.value, row.secret)
        return public(key=row.key, value=value, secret=row.secret, updated_at=row.updated_at)

    def _removed_secret(self, row: ProjectVariable) -> str | None:
        """A deleted secret's value, to keep it out of the error of the restart; a variable no
        key opens may still be deleted (no app has had that value from this Nakama)."""
        if not row.secret:
            return None
        try:
            return self._box.decrypt(row.value)
        except SecretsKeyError:
            return None
