import pytest

from nakama.planning import ZERO_SHA, Action, RefUpdate, plan_push
from nakama.settings import DEFAULT_DEPENDENCY_FILES

A = "a" * 40
B = "b" * 40


def plan(
    ref: str = "refs/heads/main",
    before: str = A,
    after: str = B,
    changed: list[str] | None = None,
    exists: bool = True,
):  # type: ignore[no-untyped-def]
    return plan_push(
        RefUpdate(ref=ref, before=before, after=after),
        deploy_branch="main",
        dependency_patterns=DEFAULT_DEPENDENCY_FILES,
        changed_paths=changed,
        build_exists=exists,
    )


@pytest.mark.parametrize(
    ("kwargs", "action", "reason"),
    [
        ({"changed": ["app.py"]}, Action.RELOAD, "only code changed (1 file)"),
        ({"changed": ["app.py", "lib/x.py"]}, Action.RELOAD, "only code changed (2 files)"),
        ({"changed": ["app.py", "requirements.txt"]}, Action.BUILD, "requirements.txt"),
        ({"changed": ["uv.lock"], "exists": True}, Action.BUILD, "dependency files changed"),
        ({"changed": ["app.py"], "exists": False}, Action.BUILD, "no build exists"),
        ({"changed": []}, Action.RELOAD, "no files changed"),
        ({"changed": None, "before": ZERO_SHA}, Action.RELOAD, "new branch head"),
        ({"changed": None, "before": ZERO_SHA, "exists": False}, Action.BUILD, "no build"),
        ({"ref": "refs/heads/feature"}, Action.IGNORE, "not the deploy branch"),
        ({"ref": "refs/tags/v1.0"}, Action.IGNORE, "tag push (v1.0)"),
        ({"after": ZERO_SHA}, Action.IGNORE, "deleted"),
        ({"ref": "refs/merge-requests/1/head"}, Action.IGNORE, "not a branch"),
    ],
)
def test_plan_push(kwargs: dict, action: Action, reason: str) -> None:  # type: ignore[type-arg]
    result = plan(**kwargs)
    assert result.action is action
    assert reason in result.reason


def test_build_and_reload_carry_the_pushed_commit() -> None:
    assert plan(changed=["app.py"]).commit == B
    assert plan(changed=["requirements.txt"]).commit == B
    assert plan(ref="refs/heads/other").commit is None


def test_many_dependency_files_are_summarised() -> None:
    files = [f"requirements-{i}.txt" for i in range(8)]
    assert "and 3 more" in plan(changed=files).reason


def test_tag_push_to_a_name_like_the_branch_is_still_ignored() -> None:
    assert plan(ref="refs/tags/main").action is Action.IGNORE
