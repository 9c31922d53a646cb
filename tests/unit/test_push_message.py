"""What the pusher is told of a plan: one line saying what the push will do and why."""

from __future__ import annotations

import pytest

from nakama.planning import Action, Plan, RefUpdate, plan_push, push_message
from nakama.settings import DEFAULT_DEPENDENCY_FILES

A, B = "a" * 40, "b" * 40


def plan(changed: list[str] | None, *, exists: bool = True, ref: str = "refs/heads/main") -> Plan:
    return plan_push(
        RefUpdate(ref=ref, before=A, after=B),
        deploy_branch="main",
        dependency_patterns=DEFAULT_DEPENDENCY_FILES,
        changed_paths=changed,
        build_exists=exists,
    )


@pytest.mark.parametrize(
    ("changed", "exists", "live", "line"),
    [
        (["requirements.txt", "app.py"], True, False,
         "requirements.txt changed: building a new environment; the current version keeps "
         "serving until the new one is up"),
        (["uv.lock", "pyproject.toml"], True, False,
         "pyproject.toml, uv.lock changed: building a new environment; the current version "
         "keeps serving until the new one is up"),
        (["app.py"], False, False,
         "no build exists yet for this commit's dependencies: building one; the current version "
         "keeps serving until the new one is up"),
        (["app.py"], True, False,
         "only code changed (1 file): no build; the app restarts on the new code"),
        (["app.py"], True, True,
         "only code changed (1 file): live reload, the running app reruns it (no restart, no "
         "build)"),
    ],
)  # fmt: skip
def test_push_message(changed: list[str], exists: bool, live: bool, line: str) -> None:
    assert push_message(plan(changed, exists=exists), live=live) == line


def test_a_build_plan_names_the_dependency_files_that_changed() -> None:
    assert plan(["app.py", "packages.txt", "nakama.toml"]).dependency_changes == (
        "nakama.toml",
        "packages.txt",
    )
    assert plan(["app.py"]).dependency_changes == ()


def test_an_ignored_push_says_why_and_a_cluster_build_says_image() -> None:
    ignored = plan(["app.py"], ref="refs/heads/feature")
    assert ignored.action is Action.IGNORE
    assert push_message(ignored).startswith("nothing to deploy: branch 'feature' is not")
    assert push_message(plan(["Dockerfile"]), build="image").startswith(
        "Dockerfile changed: building a new image;"
    )
