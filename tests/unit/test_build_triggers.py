"""The files that make a push a build: the settings' list, what the planner does with each, and
the README's list of them agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nakama.planning import Action, RefUpdate, plan_push
from nakama.settings import DEFAULT_DEPENDENCY_FILES

README = Path(__file__).resolve().parent.parent.parent / "README.md"


def _readme_list() -> list[str]:
    text = README.read_text()
    match = re.search(r"\*\*build\*\* if a dependency file changed \(([^)]*)\)", text)
    assert match, "README's 'What happens on a push' lost its list of dependency files"
    return re.findall(r"`([^`]+)`", match.group(1))


def test_the_readme_lists_every_file_that_triggers_a_build() -> None:
    assert _readme_list() == list(DEFAULT_DEPENDENCY_FILES)


@pytest.mark.parametrize(
    "path",
    ["requirements.txt", "requirements-dev.txt", "pyproject.toml", "uv.lock", "poetry.lock",
     "Pipfile.lock", "packages.txt", "Dockerfile", ".python-version", "nakama.toml"],
)  # fmt: skip
def test_each_listed_file_makes_a_push_a_build(path: str) -> None:
    plan = plan_push(
        RefUpdate(ref="refs/heads/main", before="a" * 40, after="b" * 40),
        deploy_branch="main",
        dependency_patterns=DEFAULT_DEPENDENCY_FILES,
        changed_paths=[path, "app.py"],
        build_exists=True,
    )
    assert plan.action is Action.BUILD
    assert plan.dependency_changes == (path,)
