"""The GitLab CI templates Nakama ships validate against GitLab's own CI schema (draft-07) and
keep the contract the GitLab pipelines adapter relies on."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from ruamel.yaml import YAML

from image_builder.build import registry_credentials
from nakama.errors import InvalidInput
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
        ' --pipeline "$NAKAMA_PIPELINE" --kubeconfig "$KUBECONFIG"'
    ]


# --- GitLab's variable expansion -------------------------------------------------------------
# Gitlab::Ci::Variables::Collection (lib/gitlab/ci/variables/collection.rb and item.rb): in the
# value of every variable that is not raw, File variables included, $NAME, ${NAME} and %NAME%
# become that variable's value, or nothing if there is none; "$$" is left for the runner, which
# expands once more and turns "$$" into "$".
_RAILS = re.compile(r"\$\$|%%|\$(?P<a>[A-Za-z_][A-Za-z0-9_]*)|\$\{(?P<b>[A-Za-z_][A-Za-z0-9_]*)?\}"
                    r"|%(?P<c>[A-Za-z_][A-Za-z0-9_]*)%")  # fmt: skip
_RUNNER = re.compile(r"\$\$|\$(?P<a>[A-Za-z_][A-Za-z0-9_]*)|\$\{(?P<b>[A-Za-z_][A-Za-z0-9_]*)\}")


def gitlab_expand(value: str, variables: dict[str, str], *, raw: bool = False) -> str:
    """What a job sees of a CI/CD variable ``value``, given the other ``variables``."""
    if raw:
        return value

    def rails(match: re.Match[str]) -> str:
        key = match.group("a") or match.group("b") or match.group("c")
        return match.group(0) if key is None else variables.get(key, "")

    def runner(match: re.Match[str]) -> str:
        key = match.group("a") or match.group("b")
        return "$" if key is None else variables.get(key, "")

    return _RUNNER.sub(runner, _RAILS.sub(rails, value))


def test_the_expansion_eats_the_robot_names_dollar() -> None:
    """The failure the documented setup avoids: an expanded robot name logs in as another."""
    assert gitlab_expand("robot$nakama-apps+push", {}) == "robot-apps+push"
    assert gitlab_expand("robot${nakama}-apps+push", {"nakama": "x"}) == "robotx-apps+push"
    assert gitlab_expand("robot$$nakama-apps+push", {}) == "robot$nakama-apps+push"
    assert gitlab_expand("robot$nakama-apps+push", {}, raw=True) == "robot$nakama-apps+push"
    assert gitlab_expand("50%HOME%", {"HOME": "/root"}) == "50/root"


@dataclass(frozen=True)
class DocumentedVariable:
    name: str
    file: bool
    expand: str  # "off" (raw), "either"
    example: str | None


def documented_variables() -> list[DocumentedVariable]:
    """The pipelines project's variables as docs/cluster-install.md's step 2 table lists them."""
    text = (REPO_ROOT / "docs" / "cluster-install.md").read_text()
    section = text.split("### 2. GitLab", 1)[1].split("\n### ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[0].startswith("`"):
            continue
        example = re.fullmatch(r"`(.*)`", cells[3])
        rows.append(
            DocumentedVariable(
                name=cells[0].strip("`"),
                file="File" in cells[1],
                expand=cells[2].strip("*"),
                example=example.group(1) if example else None,
            )
        )
    return rows


def test_every_documented_value_reaches_the_job_as_written(tmp_path: Path) -> None:
    variables = documented_variables()
    names = {v.name for v in variables}
    assert {"NAKAMA_REGISTRY_PASSWORD_FILE", "NAKAMA_REGISTRY_USERNAME"} <= names
    values = {v.name: v.example or "" for v in variables}
    for variable in variables:
        assert variable.expand in ("off", "either"), variable
        if variable.example is None:
            continue
        modes = [True] if variable.expand == "off" else [True, False]
        for raw in modes:
            seen = gitlab_expand(variable.example, values, raw=raw)
            assert seen == variable.example, (variable.name, raw, seen)
    # The robot file, as documented and as the job reads it: the name keeps its "$" even with
    # "Expand variable reference" on.
    [robot] = [v for v in variables if v.name == "NAKAMA_REGISTRY_PASSWORD_FILE"]
    assert robot.file and robot.expand == "either" and robot.example is not None
    path = tmp_path / "NAKAMA_REGISTRY_PASSWORD_FILE"
    path.write_text(gitlab_expand(robot.example, values))
    name, _ = registry_credentials(None, path)
    assert name == "robot$nakama-apps+push"
    # The user name variable is documented raw: expanded, it would have been another user.
    [user] = [v for v in variables if v.name == "NAKAMA_REGISTRY_USERNAME"]
    assert user.expand == "off" and user.example == "robot$nakama-apps+push"
    assert gitlab_expand(user.example, values) == "robot-apps+push"


def test_an_expanded_robot_name_is_refused_with_the_reason(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("AbC123\n")
    with pytest.raises(InvalidInput, match="expanded away: mark the variable raw"):
        registry_credentials(gitlab_expand("robot$nakama-apps+push", {}), secret)
    assert registry_credentials("robot$nakama-apps+push", secret) == (
        "robot$nakama-apps+push",
        "AbC123",
    )
    with pytest.raises(InvalidInput, match="names no user"):
        registry_credentials(None, secret)
    bad = tmp_path / "bad"
    bad.write_text('{"name": "robot\\u0024x+push"}')
    with pytest.raises(InvalidInput, match='without a "secret"'):
        registry_credentials(None, bad)


def test_the_build_script_passes_what_the_runner_gives_it(tmp_path: Path) -> None:
    """The template's script run by sh, as the runner runs it, with a ``nakama`` that prints
    its arguments: values arrive whole (a name with "$" too), optional flags only when set."""
    [script] = load(BUILDER)["build-image"]["script"]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "nakama").write_text("#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
    (bindir / "nakama").chmod(0o755)
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "NAKAMA_REPO": "https://gitlab.example.org/nakama-apps/demo.git",
        "NAKAMA_COMMIT": "a" * 40,
        "NAKAMA_REF": "main",
        "NAKAMA_IMAGE": "harbor.example.org/nakama-apps/demo",
        "NAKAMA_REGISTRY_PASSWORD_FILE": "/builds/tmp/NAKAMA_REGISTRY_PASSWORD_FILE",
        "NAKAMA_GIT_USERNAME": "nakama",
        "NAKAMA_GIT_TOKEN_FILE": "/builds/tmp/NAKAMA_GIT_TOKEN_FILE",
    }

    def argv(**extra: str) -> list[str]:
        done = subprocess.run(["sh", "-c", script], env={**env, **extra}, capture_output=True,
                              text=True, check=True)  # fmt: skip
        return done.stdout.splitlines()

    plain = argv()
    assert plain[0] == "build" and "--registry-username" not in plain
    assert "--flux-receiver-url" not in plain
    assert (
        plain[plain.index("--registry-password-file") + 1] == env["NAKAMA_REGISTRY_PASSWORD_FILE"]
    )
    named = argv(NAKAMA_REGISTRY_USERNAME="robot$nakama-apps+push")
    assert named[named.index("--registry-username") + 1] == "robot$nakama-apps+push"
    pinged = argv(NAKAMA_FLUX_RECEIVER_URL="http://receiver/hook/x",
                  NAKAMA_FLUX_RECEIVER_TOKEN_FILE="/builds/tmp/T")  # fmt: skip
    assert pinged[pinged.index("--flux-receiver-url") + 1] == "http://receiver/hook/x"
    assert pinged[pinged.index("--flux-receiver-token-file") + 1] == "/builds/tmp/T"
