"""The GitLab CI templates Nakama ships validate against GitLab's own CI schema (draft-07) and
keep the contract the GitLab pipelines adapter relies on."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from ruamel.yaml import YAML

from tests.conftest import REFERENCE, REPO_ROOT

TEMPLATE_DIR = REPO_ROOT / "gitlab-ci-templates"
TEMPLATES = sorted(TEMPLATE_DIR.glob("*.yml"))
BUILDER = TEMPLATE_DIR / "image-builder.gitlab-ci.yml"
RELOADER = TEMPLATE_DIR / "code-reloader.gitlab-ci.yml"


def load(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text())


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    schema = json.loads((REFERENCE / "gitlab" / "ci.schema.json").read_text())
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def problems(validator: Draft7Validator, document: Any) -> list[str]:
    return sorted(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(document)
    )


def test_both_templates_exist() -> None:
    assert {BUILDER, RELOADER} <= set(TEMPLATES)


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_template_validates_against_gitlab_ci_schema(
    path: Path, validator: Draft7Validator
) -> None:
    assert problems(validator, load(path)) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda job: job.update(scirpt=job.pop("script")), "scirpt"),
        (lambda job: job.update(resource_group=["a", "b"]), "resource_group"),
        (lambda job: job.update(interruptible="yes"), "interruptible"),
        (lambda job: job["rules"].append({"iff": "$X"}), "rules"),
    ],
    ids=["misspelt-key", "resource-group-list", "interruptible-string", "bad-rule"],
)
def test_invalid_template_is_rejected(
    validator: Draft7Validator, change: Any, expected: str
) -> None:
    document = copy.deepcopy(load(BUILDER))
    change(document["build-image"])
    found = problems(validator, document)
    assert found, f"the schema accepted a template with a broken {expected}"
    assert any(expected in p for p in found), found


def test_templates_can_be_included_together() -> None:
    """Both go into one .gitlab-ci.yml: only job keys at the top level, no name shared, so
    neither overrides the other's stages, variables or workflow when GitLab merges them."""
    names: list[str] = []
    for path in (BUILDER, RELOADER):
        document = load(path)
        assert all(isinstance(job, dict) and "script" in job for job in document.values())
        names += list(document)
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("path", "job", "kind"),
    [(BUILDER, "build-image", "build"), (RELOADER, "reload-code", "reload")],
)
def test_jobs_run_only_when_triggered_for_their_kind(path: Path, job: str, kind: str) -> None:
    spec = load(path)[job]
    assert spec["rules"] == [
        {"if": f'$CI_PIPELINE_SOURCE == "trigger" && $NAKAMA_KIND == "{kind}"'}
    ]
    assert "$NAKAMA_PROJECT" in spec["resource_group"]
    assert spec["interruptible"] is True
    assert spec["image"]["name"] == "$NAKAMA_PLATFORM_IMAGE"
    assert spec["variables"]["GIT_STRATEGY"] == "none"


def test_builder_runs_nakama_build_with_buildah_settings() -> None:
    job = load(BUILDER)["build-image"]
    assert job["variables"]["BUILDAH_ISOLATION"] == "chroot"
    assert job["variables"]["STORAGE_DRIVER"] == "vfs"
    [script] = job["script"]
    assert script.startswith("nakama build ")
    for flag, value in (
        ("--repo", "$NAKAMA_REPO"),
        ("--commit", "$NAKAMA_COMMIT"),
        ("--branch", "$NAKAMA_REF"),
        ("--image", "$NAKAMA_IMAGE"),
        ("--registry-password-file", "$NAKAMA_REGISTRY_PASSWORD_FILE"),
        ("--git-password-file", "$NAKAMA_GIT_TOKEN_FILE"),
    ):
        assert f'{flag} "{value}"' in script
    # Secrets reach the job as File variables: paths on the command line, never values.
    assert "--registry-password " not in script and "--git-password " not in script


def test_reloader_runs_nakama_reload_restart() -> None:
    job = load(RELOADER)["reload-code"]
    assert job["script"] == [
        'nakama reload restart --project "$NAKAMA_PROJECT" --commit "$NAKAMA_COMMIT"'
        ' --kubeconfig "$KUBECONFIG"'
    ]
