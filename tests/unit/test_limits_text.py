"""How limits are said (nakama.limits_text): the rows the CLI and the Resources panel show, the
merge that keeps other overrides when one is changed, and the stop reason in a status detail."""

from __future__ import annotations

from typing import Any

import pytest

from nakama.limits import effective_limits
from nakama.limits_text import (
    LimitRow,
    disk_text,
    format_cores,
    limit_rows,
    merge_overrides,
    stop_reason,
)
from nakama.settings import LimitsSettings


def answer(overrides: dict[str, Any], data_bytes: int | None = None) -> dict[str, Any]:
    """What GET /projects/{name}/limits answers with ``overrides`` set."""
    limits = effective_limits(LimitsSettings(), overrides).as_dict()
    return {
        "limits": limits,
        "overrides": overrides,
        "enforced_by": "cgroup v2",
        "data_bytes": data_bytes,
    }


@pytest.mark.parametrize(
    ("cpu", "said"), [(1.0, "1 core"), (0.5, "0.5 cores"), (2.0, "2 cores"), (0.25, "0.25 cores")]
)
def test_cores(cpu: float, said: str) -> None:
    assert format_cores(cpu) == said


@pytest.mark.parametrize(
    ("disk_mib", "data_bytes", "said"),
    [
        (2048, int(12.3 * 2**20), "12.3 MiB of 2 GiB"),
        (1024, 0, "0 MiB of 1 GiB"),
        (512, 3 * 2**29, "1.5 GiB of 512 MiB"),  # over the limit: said as it is
        (2048, None, "2 GiB (usage not measured)"),
    ],
)
def test_disk(disk_mib: int, data_bytes: int | None, said: str) -> None:
    assert disk_text(disk_mib, data_bytes) == said


def test_rows_mark_what_an_admin_set() -> None:
    rows = limit_rows(answer({"memory_mib": 512, "cpu": 0.5}, data_bytes=2**20), cluster=False)
    assert rows[:3] == [
        LimitRow("memory", "512 MiB", overridden=True),
        LimitRow("CPU", "0.5 cores", overridden=True),
        LimitRow("processes", str(LimitsSettings().processes), overridden=False),
    ]
    assert [r.label for r in rows] == ["memory", "CPU", "processes", "disk ($DATA_DIR)", "log kept"]
    assert rows[3].value.startswith("1 MiB of ")


@pytest.mark.parametrize(
    ("cluster", "overrides", "tail"),
    [
        (False, {}, []),
        (True, {}, [("replicas", "1", False), ("autoscaler", "off", False)]),
        (
            True,
            {"replicas": 2, "autoscale_max": 4},
            [("replicas", "2", True), ("autoscaler", "2 to 4 pods at 80% CPU", True)],
        ),
        (
            None,
            {"autoscale_max": 3, "autoscale_cpu_percent": 60},
            [
                ("replicas (cluster mode)", "1", False),
                ("autoscaler (cluster mode)", "1 to 3 pods at 60% CPU", True),
            ],
        ),
    ],
)
def test_replicas_only_where_they_apply(
    cluster: bool | None, overrides: dict[str, Any], tail: list[tuple[str, str, bool]]
) -> None:
    rows = limit_rows(answer(overrides), cluster=cluster)[5:]
    assert [(r.label, r.value, r.overridden) for r in rows] == tail


@pytest.mark.parametrize(
    ("current", "changes", "merged"),
    [
        ({}, {"memory_mib": 512}, {"memory_mib": 512}),
        (
            {"cpu": 2.0, "replicas": 2},
            {"memory_mib": 512},
            {"cpu": 2.0, "replicas": 2, "memory_mib": 512},
        ),
        ({"cpu": 2.0, "memory_mib": 256}, {"memory_mib": 512}, {"cpu": 2.0, "memory_mib": 512}),
        ({"cpu": 2.0, "memory_mib": 256}, {"memory_mib": None}, {"cpu": 2.0}),
        ({"cpu": 2.0}, {"disk_mib": None}, {"cpu": 2.0}),
        ({"cpu": 2.0}, {}, {"cpu": 2.0}),
    ],
)
def test_a_change_keeps_the_other_overrides(
    current: dict[str, Any], changes: dict[str, Any], merged: dict[str, Any]
) -> None:
    before = dict(current)
    assert merge_overrides(current, changes) == merged
    assert current == before  # not changed in place


@pytest.mark.parametrize(
    ("detail", "reason"),
    [
        (
            "stopped: out of memory (limit 512 MiB); restarts=2",
            "stopped: out of memory (limit 512 MiB)",
        ),
        ("restarts=3; last stop: killed by signal 9", "last stop: killed by signal 9"),
        (
            "stopped: data directory over its limit (3 GiB of 2 GiB): free space",
            "stopped: data directory over its limit (3 GiB of 2 GiB): free space",
        ),
        ("restarts=1", None),
        ("starts on its next request", None),
        ("", None),
        (None, None),
    ],
)
def test_stop_reason(detail: str | None, reason: str | None) -> None:
    assert stop_reason(detail) == reason
