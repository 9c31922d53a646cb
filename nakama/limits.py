"""What one app may use: memory, CPU, processes, disk for ``$DATA_DIR`` and (cluster mode)
replicas, with an optional CPU autoscaler.

Defaults come from :class:`nakama.settings.LimitsSettings`; an admin may override any of them
per project (:class:`LimitOverrides`, stored with the project). Local mode enforces them with
cgroups or rlimits (``backend.local.limits``); cluster mode renders them as the app container's
``resources``, the Deployment's ``replicas`` and a HorizontalPodAutoscaler.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nakama.errors import InvalidInput
from nakama.settings import LimitsSettings


@dataclass(frozen=True)
class AppLimits:
    """The limits in force for one app."""

    memory_mib: int
    cpu: float  # cores
    processes: int
    disk_mib: int
    log_mib: int = 10
    replicas: int = 1
    # Cluster mode: a HorizontalPodAutoscaler between ``replicas`` and this many pods, aiming at
    # ``autoscale_cpu_percent`` of the CPU request; None: a fixed number of replicas.
    autoscale_max: int | None = None
    autoscale_cpu_percent: int = 80

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * 1024 * 1024

    @property
    def disk_bytes(self) -> int:
        return self.disk_mib * 1024 * 1024

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class LimitOverrides(BaseModel):
    """An admin's per-project changes to the defaults; a field left out keeps the default."""

    model_config = ConfigDict(extra="forbid")

    memory_mib: int | None = Field(default=None, ge=32, le=1024 * 1024)
    cpu: float | None = Field(default=None, gt=0, le=256)
    processes: int | None = Field(default=None, ge=8, le=1_000_000)
    disk_mib: int | None = Field(default=None, ge=1, le=16 * 1024 * 1024)
    log_mib: int | None = Field(default=None, ge=1, le=10_240)
    replicas: int | None = Field(default=None, ge=1, le=100)
    autoscale_max: int | None = Field(default=None, ge=1, le=100)
    autoscale_cpu_percent: int | None = Field(default=None, ge=10, le=100)

    @model_validator(mode="after")
    def _autoscale_range(self) -> LimitOverrides:
        if (
            self.autoscale_max is not None
            and self.replicas is not None
            and self.autoscale_max < self.replicas
        ):
            raise ValueError("autoscale_max must be at least replicas")
        return self

    def stored(self) -> dict[str, Any]:
        """What is kept with the project: only the fields that were set."""
        return self.model_dump(exclude_none=True)


def parse_overrides(data: Mapping[str, Any] | None) -> LimitOverrides:
    """Overrides from stored or submitted data; InvalidInput names what is wrong."""
    try:
        return LimitOverrides.model_validate(dict(data or {}))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'limits'}: {err['msg']}"
            for err in exc.errors(include_input=False)
        )
        raise InvalidInput(f"invalid limits: {problems}") from None


def effective_limits(
    defaults: LimitsSettings, overrides: Mapping[str, Any] | LimitOverrides | None = None
) -> AppLimits:
    """The defaults with a project's overrides on top."""
    over = overrides if isinstance(overrides, LimitOverrides) else parse_overrides(overrides)
    values: dict[str, Any] = {
        "memory_mib": defaults.memory_mib,
        "cpu": defaults.cpu,
        "processes": defaults.processes,
        "disk_mib": defaults.disk_mib,
        "log_mib": defaults.log_mib,
        "replicas": defaults.replicas,
    }
    values |= over.stored()
    limits = AppLimits(**values)
    if limits.autoscale_max is not None and limits.autoscale_max < limits.replicas:
        raise InvalidInput(
            f"invalid limits: autoscale_max {limits.autoscale_max} is below replicas "
            f"{limits.replicas}"
        )
    return limits


def format_mib(mib: float) -> str:
    """``512 MiB``, ``1 GiB``, ``1.5 GiB``: how sizes are shown to people."""
    value, unit = (mib / 1024, "GiB") if mib >= 1024 else (mib, "MiB")
    shown = f"{value:.1f}".removesuffix(".0")
    return f"{shown} {unit}"
