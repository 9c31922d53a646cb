from datetime import UTC, datetime

import pytest

from nakama.errors import Conflict
from nakama.models import PipelinePublic
from nakama.rollback import (
    check_target,
    choose_targets,
    compare_base,
    is_rollback,
    rollback_reason,
)

A, B, C = "a" * 40, "b" * 40, "c" * 40
T = datetime(2026, 1, 1, tzinfo=UTC)


def pipe(pipeline_id: int, commit: str, status: str = "success") -> PipelinePublic:
    return PipelinePublic(
        id=pipeline_id,
        project="demo",
        kind="build",
        status=status,
        commit=commit,
        branch="main",
        reason="r",
        tag=None,
        error=None,
        created_at=T,
        started_at=None,
        finished_at=None,
        duration_s=None,
    )


def test_the_reason_marks_a_rollback() -> None:
    reason = rollback_reason(12, "abc1234def" + "0" * 30)
    assert reason == "rollback to pipeline #12 (commit abc1234)"
    assert is_rollback(reason)
    for other in (None, "", "only code changed (1 file)", "reconcile: missed push; rollback"):
        assert not is_rollback(other)


@pytest.mark.parametrize(
    ("pipelines", "deployed", "expected"),
    [
        ([], None, []),
        ([pipe(3, C), pipe(2, B), pipe(1, A)], C, [2, 1]),  # the deployed commit is left out
        ([pipe(4, B), pipe(3, B), pipe(2, A)], A, [4]),  # one per commit: the newest
        ([pipe(3, C, "failed"), pipe(2, B, "superseded"), pipe(1, A)], None, [1]),
        ([pipe(5, A), pipe(4, C), pipe(1, A)], A, [4]),  # a rollback to A deployed A again
    ],
)
def test_targets(
    pipelines: list[PipelinePublic], deployed: str | None, expected: list[int]
) -> None:
    assert [p.id for p in choose_targets(pipelines, deployed_commit=deployed)] == expected


@pytest.mark.parametrize(
    ("target", "deployed", "words"),
    [
        (pipe(3, A, "failed"), B, "pipeline #3 did not succeed (failed)"),
        (pipe(3, A, "running"), B, "did not succeed (running)"),
        (pipe(3, A), A, "commit aaaaaaa of pipeline #3 is what is deployed now"),
    ],
)
def test_refused_targets(target: PipelinePublic, deployed: str, words: str) -> None:
    with pytest.raises(Conflict, match=words.replace("(", r"\(").replace(")", r"\)")):
        check_target(target, deployed_commit=deployed)


def test_a_successful_older_commit_is_a_target() -> None:
    check_target(pipe(1, A), deployed_commit=B)
    check_target(pipe(1, A), deployed_commit=None)


ROLLBACK = rollback_reason(1, A)


@pytest.mark.parametrize(
    ("reason", "status", "commit", "expected"),
    [
        (None, None, None, C),  # no pipeline yet
        ("only code changed (1 file)", "success", B, C),  # after a push: the push's before
        (ROLLBACK, "success", A, A),  # after a rollback: what runs
        (ROLLBACK, "pending", A, A),  # ... or is about to run
        (ROLLBACK, "running", A, A),
        (ROLLBACK, "failed", A, C),  # a failed rollback left the app as it was
    ],
)
def test_compare_base(
    reason: str | None, status: str | None, commit: str | None, expected: str
) -> None:
    base = compare_base(C, newest_reason=reason, newest_status=status, newest_commit=commit)
    assert base == expected
