"""How an app's limits are told to people, and how an admin's change to them is put together.

The CLI (``nakama projects limits``) and the project page's Resources panel say the same rows in
the same words, from the API's answer (:class:`backend.limits.LimitsPublic` as a dict). A change
is merged into the overrides stored now, because ``PUT /projects/{name}/limits`` replaces them
all: without the merge, setting the memory would drop an override of the CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nakama.limits import format_mib

# The overrides an admin may set, in the order they are shown.
FIELDS = (
    "memory_mib",
    "cpu",
    "processes",
    "disk_mib",
    "log_mib",
    "replicas",
    "autoscale_max",
    "autoscale_cpu_percent",
)

# The parts of an app's status detail that say why it stopped (backend.local.runtime).
_STOP_PREFIXES = ("stopped: ", "last stop: ")


@dataclass(frozen=True)
class LimitRow:
    label: str
    value: str
    overridden: bool  # an admin set it for this project (else: the platform's default)


def format_cores(cpu: float) -> str:
    """``1 core``, ``0.5 cores``, ``2 cores``."""
    shown = f"{cpu:g}"
    return f"{shown} core" if cpu == 1 else f"{shown} cores"


def disk_text(disk_mib: int, data_bytes: int | None) -> str:
    """``12.3 MiB of 2 GiB`` (what ``$DATA_DIR`` holds of its limit), or the limit alone when
    the usage is not known."""
    if data_bytes is None:
        return f"{format_mib(disk_mib)} (usage not measured)"
    return f"{format_mib(data_bytes / 2**20)} of {format_mib(disk_mib)}"


def autoscaler_text(limits: Mapping[str, Any]) -> str:
    top = limits.get("autoscale_max")
    if top is None:
        return "off"
    return f"{limits['replicas']} to {top} pods at {limits['autoscale_cpu_percent']}% CPU"


def limit_rows(answer: Mapping[str, Any], *, cluster: bool | None) -> list[LimitRow]:
    """The rows for ``GET /projects/{name}/limits``'s ``answer``. Replicas and the autoscaler
    apply in cluster mode only: ``cluster=False`` leaves them out, ``None`` (the mode is not
    known) shows them marked as such."""
    limits, over = answer["limits"], answer.get("overrides") or {}
    rows = [
        LimitRow("memory", format_mib(limits["memory_mib"]), "memory_mib" in over),
        LimitRow("CPU", format_cores(limits["cpu"]), "cpu" in over),
        LimitRow("processes", str(limits["processes"]), "processes" in over),
        LimitRow(
            "disk ($DATA_DIR)",
            disk_text(limits["disk_mib"], answer.get("data_bytes")),
            "disk_mib" in over,
        ),
        LimitRow("log kept", format_mib(limits["log_mib"]), "log_mib" in over),
    ]
    if cluster is not False:
        tail = " (cluster mode)" if cluster is None else ""
        scaled = "autoscale_max" in over or "autoscale_cpu_percent" in over
        rows += [
            LimitRow(f"replicas{tail}", str(limits["replicas"]), "replicas" in over),
            LimitRow(f"autoscaler{tail}", autoscaler_text(limits), scaled),
        ]
    return rows


def merge_overrides(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """The overrides to PUT: ``current`` with ``changes`` on top, where a change to None takes
    that field back to its default."""
    merged = dict(current)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def stop_reason(detail: str | None) -> str | None:
    """Why the app stopped, from its status detail (``stopped: out of memory (limit 512 MiB);
    restarts=2`` gives ``stopped: out of memory (limit 512 MiB)``); None if it says no reason."""
    for part in (detail or "").split("; "):
        if part.startswith(_STOP_PREFIXES):
            return part
    return None
