"""The restart patch and kubectl's rollout-status rule: pure functions, checked against facts."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from code_reloader.restart import (
    COMMIT_ANNOTATION,
    RESTARTED_AT,
    commit_patch,
    restart_patch,
    rfc3339,
    rollout_status,
)
from nakama.build_record import PIPELINE_ANNOTATION
from nakama.errors import InvalidInput
from tests.conftest import REFERENCE

SHA = "0123456789abcdef0123456789abcdef01234567"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)$")


def _reference_patch() -> dict[str, Any]:
    path = REFERENCE / "kubernetes" / "rollout_restart_patch.json"
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def test_the_patch_has_kubectls_shape_plus_the_commit_and_its_pipeline() -> None:
    now = datetime(2026, 8, 21, 10, 15, 30, tzinfo=UTC)
    expected = _reference_patch()
    annotations = expected["spec"]["template"]["metadata"]["annotations"]
    annotations[COMMIT_ANNOTATION] = SHA
    annotations[PIPELINE_ANNOTATION] = "42"
    assert restart_patch(SHA, now, pipeline=42) == expected
    # Without a pipeline id, one left by an earlier restart is deleted (null in a merge patch):
    # kept next to this newer commit, it would let an older build's image win the pod back.
    annotations[PIPELINE_ANNOTATION] = None
    assert restart_patch(SHA, now) == expected
    assert commit_patch(SHA, pipeline=7)["spec"]["template"]["metadata"]["annotations"] == {
        COMMIT_ANNOTATION: SHA,
        PIPELINE_ANNOTATION: "7",
    }


def test_without_a_commit_the_patch_is_exactly_kubectls() -> None:
    now = datetime(2026, 8, 21, 10, 15, 30, 999_999, tzinfo=UTC)
    assert restart_patch(None, now) == _reference_patch()


@pytest.mark.parametrize(
    ("now", "text"),
    [
        (datetime(2026, 8, 21, 10, 15, 30, tzinfo=UTC), "2026-08-21T10:15:30Z"),
        (
            datetime(2026, 8, 21, 10, 15, 30, 500, tzinfo=timezone(timedelta(hours=2))),
            "2026-08-21T10:15:30+02:00",
        ),
        (
            datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
            "2026-01-02T03:04:05-05:30",
        ),
    ],
)
def test_restarted_at_is_rfc3339_with_offset_at_second_precision(now: datetime, text: str) -> None:
    assert rfc3339(now) == text
    assert RFC3339.match(
        restart_patch(SHA, now)["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
    )


def test_local_time_carries_its_offset() -> None:
    assert RFC3339.match(rfc3339(datetime.now().astimezone()))


def test_each_call_at_a_later_second_gives_a_new_value() -> None:
    start = datetime(2026, 8, 21, 10, 15, 30, tzinfo=UTC)
    values = {
        restart_patch(SHA, start + timedelta(seconds=i))["spec"]["template"]["metadata"][
            "annotations"
        ][RESTARTED_AT]
        for i in range(5)
    }
    assert len(values) == 5


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(InvalidInput, match="timezone-aware"):
        restart_patch(SHA, datetime(2026, 8, 21, 10, 15, 30))


@pytest.mark.parametrize("commit", ["", "0123abc", SHA.upper(), SHA + "0", f"{SHA[:39]}g", "main"])
def test_only_full_hashes_are_accepted(commit: str) -> None:
    with pytest.raises(InvalidInput):
        restart_patch(commit, datetime.now(UTC))
    with pytest.raises(InvalidInput):
        commit_patch(commit)


def test_a_sha256_hash_is_accepted() -> None:
    sha256 = "ab" * 32
    annotations = commit_patch(sha256)["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {COMMIT_ANNOTATION: sha256, PIPELINE_ANNOTATION: None}


def _deployment(
    *,
    generation: int = 2,
    observed: int = 2,
    replicas: int = 2,
    status_replicas: int = 2,
    updated: int = 2,
    available: int = 2,
    reason: str | None = None,
) -> dict[str, Any]:
    conditions = [{"type": "Progressing", "status": "False", "reason": reason}] if reason else []
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": status_replicas,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "conditions": conditions,
        },
    }


@pytest.mark.parametrize(
    ("deployment", "done", "failed", "message"),
    [
        (_deployment(), True, False, "successfully rolled out"),
        (_deployment(generation=3), False, False, "observed"),
        (_deployment(updated=1, status_replicas=3), False, False, "1 of 2 new replicas"),
        (_deployment(status_replicas=3), False, False, "1 old replicas pending"),
        (_deployment(available=1), False, False, "1 of 2 updated replicas available"),
        (_deployment(updated=1, reason="ProgressDeadlineExceeded"), False, True, "deadline"),
        (_deployment(generation=3, reason="ProgressDeadlineExceeded"), False, False, "observed"),
        ({"metadata": {"generation": 1}, "spec": {}, "status": {}}, False, False, "observed"),
    ],
)
def test_rollout_status_follows_kubectl(
    deployment: dict[str, Any], done: bool, failed: bool, message: str
) -> None:
    status = rollout_status(deployment)
    assert (status.done, status.failed) == (done, failed)
    assert message in status.message
