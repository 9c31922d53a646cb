"""What each app may use: the defaults from settings, an admin's overrides per project (kept
in ``projects.limits``), and how much of ``$DATA_DIR`` it uses now."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select

from nakama.db.session import Database
from nakama.db.tables import Project
from nakama.errors import NotFound
from nakama.limits import AppLimits, LimitOverrides, effective_limits, parse_overrides
from nakama.logs import get_logger
from nakama.ports import Runtime
from nakama.settings import LimitsSettings

log = get_logger(__name__)


class LimitsPublic(BaseModel):
    limits: dict[str, Any] = Field(description="the limits in force (defaults and overrides)")
    overrides: dict[str, Any] = Field(description="what an admin set for this project")
    enforced_by: str = Field(description="how the limits are enforced where the app runs")
    data_bytes: int | None = Field(
        description="bytes the app keeps in $DATA_DIR (measured at most every 30 s; None: "
        "not known here)"
    )


def stored_limits(db: Database, project: str) -> dict[str, Any] | None:
    """The project's overrides as stored (None: none, or no such project)."""
    with db.session() as s:
        return s.scalar(select(Project.limits).where(Project.name == project))


class LimitService:
    def __init__(
        self, db: Database, runtime: Runtime, defaults: LimitsSettings, *, enforced_by: str
    ) -> None:
        self._db, self._runtime, self._defaults = db, runtime, defaults
        self._enforced_by = enforced_by

    def limits(self, project: str) -> AppLimits:
        return effective_limits(self._defaults, stored_limits(self._db, project))

    def get(self, project: str) -> LimitsPublic:
        overrides = parse_overrides(stored_limits(self._db, project)).stored()
        return LimitsPublic(
            limits=effective_limits(self._defaults, overrides).as_dict(),
            overrides=overrides,
            enforced_by=self._enforced_by,
            data_bytes=self._runtime.data_usage(project),
        )

    def set(self, project: str, overrides: LimitOverrides) -> LimitsPublic:
        """Replace the project's overrides (an empty set: the defaults) and apply them: the
        app restarts with them. InvalidInput if the result is inconsistent."""
        stored = overrides.stored()
        limits = effective_limits(self._defaults, stored)  # refuses before anything changes
        with self._db.session() as s:
            row = s.scalar(select(Project).where(Project.name == project).with_for_update())
            if row is None:
                raise NotFound(f"project {project!r} not found")
            row.limits = stored or None
            s.commit()
        self._runtime.set_limits(project, limits)
        log.info("limits changed", project=project, **stored)
        return self.get(project)
