"""KubernetesRuntime.set_visibility against the GitLab fake (real bare repositories, driven by
python-gitlab): a visibility change is one commit to the app's Ingress files in the GitOps
repository, the rest of the app's files stay as they are (Flux's image automation owns the tag in
the Deployment), and asking again for what is there commits nothing."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from backend.cluster.runtime import KubernetesRuntime
from flux.validate import validate_documents
from nakama.clients.gitlab import GitLabClient
from nakama.errors import InvalidInput
from nakama.settings import FluxSettings
from tests.fakes import gitlab_git
from tests.fakes.gitlab import FakeProject, GitLabFake
from tests.fakes.kubernetes import KubeFake, kube_fake
from tests.integration.test_cluster_adapters import make_runtime as make_cluster_runtime

__all__ = ["kube_fake"]  # the fixture, until tests/conftest.py lists tests.fakes.kubernetes

NAME = "demo"
GITOPS = "nakama/gitops"
FOLDER = f"apps/{NAME}"
INGRESS = f"{FOLDER}/ingress.yaml"
MIDDLEWARE = f"{FOLDER}/middleware.yaml"
CONFIG = f"{FOLDER}/kustomization.yaml"
DEPLOYMENT = f"{FOLDER}/deployment.yaml"
AUTH_URL = "nginx.ingress.kubernetes.io/auth-url"
MIDDLEWARES = "traefik.ingress.kubernetes.io/router.middlewares"


@pytest.fixture
def head(gitlab_fake: GitLabFake) -> str:
    """The app's repository in the fake (the runtime mints its deploy token there)."""
    project = gitlab_fake.create_project(f"nakama-apps/{NAME}", files={"app.py": b"print(1)\n"})
    sha = gitlab_git.branch_head(project.repo, "main")
    assert sha is not None
    return sha


@pytest.fixture
def gitops(gitlab_fake: GitLabFake) -> FakeProject:
    return gitlab_fake.create_project(GITOPS, files={"README.md": b"the cluster\n"})


def make_runtime(
    tmp_path: Path,
    gitlab_fake: GitLabFake,
    client: GitLabClient,
    kube: KubeFake,
    **flux: Any,
) -> KubernetesRuntime:
    return make_cluster_runtime(
        tmp_path, gitlab_fake, client, kube.api_client(),
        flux=FluxSettings(app_domain="apps.test", **flux),
    )  # fmt: skip


def commits(project: FakeProject) -> list[str]:
    out = subprocess.run(
        ["git", "--git-dir", str(project.repo), "rev-list", "main"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()


def files_at(project: FakeProject, rev: str = "main") -> dict[str, str]:
    return {
        path: gitlab_git.read_blob(project.repo, blob).decode()
        for path, (_mode, blob) in gitlab_git.list_tree(project.repo, rev).items()
    }


def subject(project: FakeProject) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(project.repo), "log", "-1", "--format=%an|%s", "main"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def annotations(text: str) -> dict[str, str]:
    found: dict[str, str] = YAML(typ="safe").load(text)["metadata"].get("annotations", {})
    return found


def listed(text: str) -> list[str]:
    resources: list[str] = YAML(typ="safe").load(text)["resources"]
    return resources


def all_valid(files: dict[str, str]) -> bool:
    docs = [
        d for p, t in files.items() if p.endswith(".yaml") for d in YAML(typ="safe").load_all(t)
    ]
    return validate_documents([d for d in docs if d]) == []


def automation_bumps_the_tag(client: GitLabClient, project: FakeProject) -> str:
    """What Flux's image automation does: a commit rewriting the image line of deployment.yaml."""
    text = files_at(project)[DEPLOYMENT]
    bumped = text.replace("main-00000000-19700101000000", "main-da156088-20261122040506")
    assert bumped != text
    handle = client.api.projects.get(GITOPS, lazy=True)
    action = {
        "action": "update",
        "file_path": DEPLOYMENT,
        "content": base64.b64encode(bumped.encode()).decode(),
        "encoding": "base64",
    }
    handle.commits.create(
        {"branch": "main", "commit_message": "demo: deploy the newest image", "actions": [action]}
    )
    return bumped


def test_the_ingress_loses_forward_auth_when_public_and_gets_it_back(
    tmp_path: Path,
    gitlab_fake: GitLabFake,
    gitlab_client: GitLabClient,
    kube_fake: KubeFake,
    head: str,
    gitops: FakeProject,
) -> None:
    runtime = make_runtime(tmp_path, gitlab_fake, gitlab_client, kube_fake)
    runtime.prepare(NAME, commit=head)
    private = files_at(gitops)
    assert AUTH_URL in annotations(private[INGRESS])  # prepare renders the default, private
    deployed = automation_bumps_the_tag(gitlab_client, gitops)
    before = commits(gitops)

    runtime.set_visibility(NAME, "private")  # what is there already: no commit
    assert commits(gitops) == before

    runtime.set_visibility(NAME, "public")
    public = files_at(gitops)
    assert len(commits(gitops)) == len(before) + 1
    assert subject(gitops) == f"Nakama|nakama: make app {NAME} public"
    assert annotations(public[INGRESS]) == {}
    assert public[INGRESS] == runtime.manifests(NAME, commit=None, visibility="public")[INGRESS]
    changed = {p for p in private if public.get(p) != private[p]}
    assert changed == {INGRESS, DEPLOYMENT}  # the Deployment by the automation, not by us
    assert public[DEPLOYMENT] == deployed
    assert all_valid(public)

    runtime.set_visibility(NAME, "public")  # again: nothing to do
    assert len(commits(gitops)) == len(before) + 1

    runtime.set_visibility(NAME, "internal")
    internal = files_at(gitops)
    assert len(commits(gitops)) == len(before) + 2
    assert annotations(internal[INGRESS]) == annotations(private[INGRESS])
    assert internal[INGRESS] == private[INGRESS]
    assert internal[DEPLOYMENT] == deployed
    runtime.set_visibility(NAME, "private")  # guarded the same way as internal: no commit
    assert len(commits(gitops)) == len(before) + 2


def test_on_traefik_the_middleware_comes_and_goes_with_the_guard(
    tmp_path: Path,
    gitlab_fake: GitLabFake,
    gitlab_client: GitLabClient,
    kube_fake: KubeFake,
    head: str,
    gitops: FakeProject,
) -> None:
    runtime = make_runtime(
        tmp_path, gitlab_fake, gitlab_client, kube_fake, ingress_controller="traefik"
    )
    runtime.prepare(NAME, commit=head)
    private = files_at(gitops)
    assert annotations(private[INGRESS]) == {MIDDLEWARES: "nakama-apps-demo-auth@kubernetescrd"}
    assert "middleware.yaml" in listed(private[CONFIG]) and MIDDLEWARE in private

    runtime.set_visibility(NAME, "public")
    public = files_at(gitops)
    assert MIDDLEWARE not in public
    assert "middleware.yaml" not in listed(public[CONFIG])
    assert annotations(public[INGRESS]) == {}
    assert all_valid(public)

    runtime.set_visibility(NAME, "private")
    assert files_at(gitops) == private


def test_a_commit_refused_once_is_planned_again(
    tmp_path: Path,
    gitlab_fake: GitLabFake,
    gitlab_client: GitLabClient,
    kube_fake: KubeFake,
    head: str,
    gitops: FakeProject,
) -> None:
    runtime = make_runtime(tmp_path, gitlab_fake, gitlab_client, kube_fake)
    runtime.prepare(NAME, commit=head)
    before = commits(gitops)
    posted = len(gitlab_fake.requests_to("POST", "/repository/commits"))
    gitlab_fake.fail_next(400, method="POST", path="/repository/commits")
    runtime.set_visibility(NAME, "public")
    assert len(gitlab_fake.requests_to("POST", "/repository/commits")) == posted + 2
    assert len(commits(gitops)) == len(before) + 1
    assert annotations(files_at(gitops)[INGRESS]) == {}


def test_an_app_without_manifests_is_left_alone_and_nonsense_is_refused(
    tmp_path: Path,
    gitlab_fake: GitLabFake,
    gitlab_client: GitLabClient,
    kube_fake: KubeFake,
    head: str,
    gitops: FakeProject,
) -> None:
    runtime = make_runtime(tmp_path, gitlab_fake, gitlab_client, kube_fake)
    before = commits(gitops)
    runtime.set_visibility(NAME, "public")  # not prepared: no half an app
    assert commits(gitops) == before
    with pytest.raises(InvalidInput, match="unknown visibility 'secret'"):
        runtime.set_visibility(NAME, "secret")
    runtime.prepare(NAME, commit=head)
    runtime.remove(NAME)
    removed = commits(gitops)
    runtime.set_visibility(NAME, "public")  # removed: stays removed
    assert commits(gitops) == removed
    assert files_at(gitops) == {"README.md": "the cluster\n"}
