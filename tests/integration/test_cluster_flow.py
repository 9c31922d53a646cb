"""Cluster mode's whole flow in one test, through the composition root and the HTTP API.

A stateful GitLab fake on loopback (backed by real bare repositories, so compares and commits are
real) driven by python-gitlab, the real registry (docker-registry) with buildah, and the
Kubernetes fake: create a project -> push -> receiver -> pipeline triggered -> ``nakama build``
run as the CI job would -> image in the registry -> manifests committed -> delete leaves nothing
behind. Harbor's REST API (which docker-registry does not have) is served by respx routes that
act on the real registry; every other HTTP request passes through to the real servers.
"""

from __future__ import annotations

import io
import re
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import respx
from pydantic import SecretStr
from ruamel.yaml import YAML
from sqlalchemy import select

from backend.app import Platform, build_platform, create_app
from backend.cluster.gitlab_forge import GitLabForge
from backend.cluster.pipelines import GitLabPipelines
from backend.cluster.reconcile import Reconciler
from backend.cluster.registry import newest_first
from backend.cluster.runtime import KubernetesRuntime
from backend.projects import read_starter_kit
from code_reloader.restart import COMMIT_ANNOTATION
from flux.validate import validate_documents
from image_builder.build import build_main
from image_builder.dockerfile import REVISION_LABEL
from nakama.clients.oci import OciClient
from nakama.db.tables import Pipeline, Project, PushPlan, WebhookEvent
from nakama.errors import NotFound
from nakama.settings import (
    FluxSettings,
    GitLabSettings,
    HarborSettings,
    KubernetesSettings,
    Settings,
)
from nakama.tagging import DEPENDENCY_HASH_LABEL, TAG_PATTERN, dependency_hash
from tests.e2e.nakama_server import wait_for
from tests.fakes import gitlab_git
from tests.fakes.flux_standin import FluxStandIn, PodRun
from tests.fakes.gitlab import TOKEN, TRIGGER_TOKEN, FakePipeline, FakeProject, GitLabFake
from tests.fakes.kubernetes import KubeFake, kube_fake, kubeconfig
from tests.registry import PASSWORD, USERNAME, Registry, buildah_env, make_base_image
from tests.registry import registry_server as start_registry
from tests.support import free_port, serve

# The fixtures, until tests/conftest.py lists tests.fakes.kubernetes.
__all__ = ["kube_fake", "kubeconfig"]

NAME = "demo"
ADMIN = "nkm_cluster-flow-admin-token-0123456789"
BASE_IMAGE = "localhost/nakama-test/python:3.11-slim"
GITOPS = "nakama/gitops"
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)


# --- Harbor's REST API over the real registry ---------------------------------------------------
class RegistryHarbor:
    """What Nakama asks of Harbor's REST API, acting on the real registry: deleting a repository
    deletes every manifest in it."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.deleted: list[str] = []
        self.auth: list[str | None] = []

    def install(self, router: respx.MockRouter) -> None:
        api = re.escape(f"{self.registry.url}/api/v2.0")
        pattern = rf"^{api}/projects/(?P<project>[^/?]+)/repositories/(?P<repository>[^/?]+)$"
        router.route(method="DELETE", url__regex=pattern).mock(side_effect=self.delete_repository)
        router.route().pass_through()  # the registry's /v2/, GitLab's hooks, Nakama's API

    def delete_repository(
        self, request: httpx.Request, project: str, repository: str
    ) -> httpx.Response:
        self.auth.append(request.headers.get("Authorization"))
        name = f"{unquote(project)}/{unquote(unquote(repository))}"
        with httpx.Client(base_url=self.registry.url, auth=self.registry.auth) as client:
            listed = client.get(f"/v2/{name}/tags/list")
            tags = (listed.json().get("tags") or []) if listed.status_code == 200 else []
            if not tags:
                body = {"errors": [{"code": "NOT_FOUND", "message": f"{name} not found"}]}
                return httpx.Response(404, json=body)
            digests = {
                client.head(
                    f"/v2/{name}/manifests/{tag}", headers={"Accept": MANIFEST_TYPES}
                ).headers["Docker-Content-Digest"]
                for tag in tags
            }
            for digest in digests:
                client.delete(f"/v2/{name}/manifests/{digest}").raise_for_status()
        self.deleted.append(name)
        return httpx.Response(200)


# --- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def buildah(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("buildah")
    env = buildah_env(root / "storage")
    make_base_image(env, BASE_IMAGE, root)
    return env


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with start_registry(tmp_path / "registry", with_auth=True) as reg:
        yield reg


def cluster_settings(
    tmp_path: Path, *, port: int, gitlab_url: str, registry_url: str, **harbor: Any
) -> Settings:
    return Settings(
        mode="cluster",
        data_dir=tmp_path / "nakama",
        public_url=f"http://127.0.0.1:{port}",
        admin_token=SecretStr(ADMIN),
        gitlab=GitLabSettings(
            url=gitlab_url,
            token=SecretStr(TOKEN),
            trigger_token=SecretStr(TRIGGER_TOKEN),
            max_attempts=2,
        ),
        harbor=HarborSettings(url=registry_url, **harbor),
        kubernetes=KubernetesSettings(reload_via="kubernetes", restart_method="patch"),
        flux=FluxSettings(app_domain="apps.test", gitops_project=GITOPS),
    )


# --- helpers ------------------------------------------------------------------------------------
def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def commits(project: FakeProject) -> list[str]:
    return git("--git-dir", str(project.repo), "rev-list", "main").split()


def files_at(project: FakeProject, rev: str) -> dict[str, bytes]:
    return {
        path: gitlab_git.read_blob(project.repo, blob)
        for path, (_mode, blob) in gitlab_git.list_tree(project.repo, rev).items()
    }


def run_ci_job(pipeline: FakePipeline, tmp_path: Path, token: str) -> str:
    """``nakama build`` with the trigger variables, as image-builder.gitlab-ci.yml runs it (File
    variables are files); plain HTTP to the test registry and the test base image besides."""
    variables = pipeline.variables
    secrets = tmp_path / f"ci-{pipeline.id}"
    secrets.mkdir()
    (secrets / "registry-password").write_text(PASSWORD)
    (secrets / "git-token").write_text(token)
    out = io.StringIO()
    code = build_main(
        [
            "--repo", variables["NAKAMA_REPO"],
            "--commit", variables["NAKAMA_COMMIT"],
            "--branch", variables["NAKAMA_REF"],
            "--image", variables["NAKAMA_IMAGE"],
            "--registry-username", USERNAME,
            "--registry-password-file", str(secrets / "registry-password"),
            "--git-username", "oauth2",
            "--git-password-file", str(secrets / "git-token"),
            "--no-tls-verify",
            "--base-image", BASE_IMAGE,
            "--builder", "buildah",  # BASE_IMAGE is in buildah's storage, not the registry
        ],
        out=out,
    )  # fmt: skip
    assert code == 0, out.getvalue()
    return out.getvalue()


def push(work: Path, files: dict[str, str], message: str) -> str:
    for path, text in files.items():
        (work / path).write_text(text)
    git("commit", "-qam", message, cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def restarted_on(kube: KubeFake) -> str | None:
    """The commit the app's pod template names (the one its pods sync)."""
    template = kube.deployment(NAME)["spec"]["template"]["metadata"]
    return (template.get("annotations") or {}).get(COMMIT_ANNOTATION)


def rolled_out(standin: FluxStandIn) -> tuple[PodRun, int]:
    """Flux's image automation and a reconcile; the app's one live pod, and how many pods were
    started for it on the way (one per roll-out of a one-replica app)."""
    before = len(standin.pods_of(NAME))
    standin.automate_images()
    standin.poll()
    [pod] = standin.live_pods(NAME)
    return pod, len(standin.pods_of(NAME)) - before


def flux_standin(gitlab: GitLabFake, kube: KubeFake, registry: Registry) -> FluxStandIn:
    """Flux and the kubelet in the test (tests/fakes/flux_standin.py), on the real registry."""

    def tags(repository: str) -> list[str]:
        with OciClient(registry.url, username=USERNAME, password=PASSWORD) as oci:
            try:
                return oci.list_tags(repository)
            except NotFound:
                return []

    def exists(image: str) -> bool:
        reference, _, tag = image.rpartition(":")
        return tag in tags(reference.split("/", 1)[1])

    return FluxStandIn(
        gitlab=gitlab,
        kube=kube,
        gitops=GITOPS,
        registry_host=registry.host,
        image_exists=exists,
        list_tags=tags,
    )


def db_rows(platform: Platform, name: str) -> list[Any]:
    with platform.db.session() as s:
        found: list[Any] = []
        for table in (Pipeline, PushPlan, WebhookEvent):
            found += s.scalars(select(table).where(table.project == name)).all()
        found += s.scalars(select(Project).where(Project.name == name)).all()
        return found


# --- the flow -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_create_push_build_reload_delete(
    gitlab_fake: GitLabFake,
    kube_fake: KubeFake,
    kubeconfig: Path,
    buildah: dict[str, str],
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in buildah.items():
        monkeypatch.setenv(key, value)
    gitops = gitlab_fake.create_project(GITOPS, files={"README.md": b"the cluster\n"})
    gitops_start = commits(gitops)
    port = free_port()
    settings = cluster_settings(
        tmp_path,
        port=port,
        gitlab_url=gitlab_fake.url,
        registry_url=registry.url,
        username=USERNAME,
        password=SecretStr(PASSWORD),
    )
    harbor = RegistryHarbor(registry)
    with respx.mock(assert_all_called=False) as router:
        harbor.install(router)
        platform = build_platform(settings)
        assert platform.bootstrap_admin() is None
        assert isinstance(platform.runtime, KubernetesRuntime)
        with (
            serve(create_app(platform), port=port) as base,
            httpx.Client(
                base_url=f"{base}/api/v1", headers={"Authorization": f"Bearer {ADMIN}"}
            ) as api,
        ):
            # 1. Create: repository with the starter kit and hooks, manifests, a first build.
            gitlab_fake.add_user("jsmith")
            unknown = api.post("/projects", json={"name": NAME, "maintainer": "nobody"})
            assert unknown.status_code == 422 and "no GitLab user named 'nobody'" in unknown.text
            assert gitlab_fake.find_project(f"nakama-apps/{NAME}") is None  # nothing was made
            created = api.post("/projects", json={"name": NAME, "maintainer": "jsmith"})
            assert created.status_code == 201, created.text
            assert gitlab_fake.members(NAME)["jsmith"] == 40  # Maintainer, never Owner
            body = created.json()
            assert body["clone_url"] == f"{gitlab_fake.url}/nakama-apps/{NAME}.git"
            assert body["app_url"] == f"https://{NAME}.apps.test/"
            assert body["status"] == "building"
            app_repo = gitlab_fake.project(NAME)
            starter = gitlab_git.branch_head(app_repo.repo, "main")
            assert starter is not None
            assert files_at(app_repo, starter) == read_starter_kit(settings.starter_kit_dir)
            with platform.db.session() as s:
                hook_token = s.scalar(select(Project.hook_token).where(Project.name == NAME))
            hooks = gitlab_fake.hooks(NAME)
            assert [h.url for h in hooks] == [
                f"{base}/build-image/{NAME}",
                f"{base}/code-reload/{NAME}",
            ]
            assert {h.token for h in hooks} == {hook_token}
            assert all(h.push_events and h.branch_filter == "main" for h in hooks)

            gitops_created = commits(gitops)
            assert len(gitops_created) == len(gitops_start) + 1  # one commit, every file
            # Everything but the workload: no image exists yet (review D6).
            manifests = platform.runtime.manifests(NAME, commit=starter, workload=False)
            committed = files_at(gitops, gitops_created[0])
            assert {p: t.decode() for p, t in committed.items() if p != "README.md"} == manifests
            docs = [d for text in manifests.values() for d in YAML(typ="safe").load_all(text) if d]
            assert validate_documents(docs) == []
            assert f"apps/{NAME}/deployment.yaml" not in manifests
            # The init container's git read credentials: a read-only deploy token of the app.
            [deploy_token] = app_repo.deploy_tokens
            assert deploy_token.scopes == ["read_repository"]
            assert kube_fake.secret(f"{NAME}-git") == {
                "username": deploy_token.username,
                "token": deploy_token.token,
            }

            [first] = gitlab_fake.triggered("nakama/pipelines")
            image = f"{registry.host}/nakama-apps/{NAME}"
            assert first.variables == {
                "NAKAMA_KIND": "build",
                "NAKAMA_PROJECT": NAME,
                "NAKAMA_REPO": f"{gitlab_fake.url}/nakama-apps/{NAME}.git",
                "NAKAMA_COMMIT": starter,
                "NAKAMA_REF": "main",
                "NAKAMA_IMAGE": image,
                "NAKAMA_DEP_HASH": dependency_hash(
                    {"requirements.txt": files_at(app_repo, starter)["requirements.txt"]}
                ),
            }
            # The CI job runs; GitLab reports it done; Nakama shows it.
            trace = run_ci_job(first, tmp_path, gitlab_fake.token)
            assert "pushed: " in trace and PASSWORD not in trace and TOKEN not in trace
            gitlab_fake.set_pipeline_status(first.id, "success", trace=trace)
            project = api.get(f"/projects/{NAME}").json()
            assert (project["status"], project["deployed_commit"]) == ("running", starter)
            [build1] = api.get(f"/projects/{NAME}/pipelines").json()
            assert (build1["kind"], build1["status"]) == ("build", "success")
            assert api.get(f"/projects/{NAME}/pipelines/{build1['id']}/log").text == trace
            # The first image exists: Nakama committed the workload with its tag; Flux (the
            # stand-in) applies it, and the kubelet pulls the real image from the registry.
            standin = flux_standin(gitlab_fake, kube_fake, registry)
            standin.poll()
            [pod] = standin.live_pods(NAME)
            assert pod.image.startswith(f"{registry.host}/nakama-apps/{NAME}:main-{starter[:8]}-")
            assert (pod.ready, pod.commit) == (True, starter)
            assert api.get(f"/projects/{NAME}").json()["app_state"] == "running"
            gitops_created = commits(gitops)

            # 2. A dependency change: hook -> receiver -> compare -> BUILD -> trigger.
            work = tmp_path / "work"
            git("clone", "-q", gitlab_fake.git_url(NAME), str(work))
            requirements = (work / "requirements.txt").read_text() + "plotly==5.24.1\n"
            deps_commit = push(work, {"requirements.txt": requirements}, "plotly")
            second = wait_for(
                lambda: gitlab_fake.triggered("nakama/pipelines")[1:],
                timeout=30,
                what="the build pipeline of the dependency change",
            )[0]
            deps_hash = dependency_hash({"requirements.txt": requirements.encode()})
            assert second.variables == {
                **first.variables,
                "NAKAMA_COMMIT": deps_commit,
                "NAKAMA_DEP_HASH": deps_hash,
            }
            assert gitlab_fake.requests_to("GET", "/repository/compare")
            deliveries = gitlab_fake.wait_for_deliveries()
            assert [d.status for d in deliveries] == [202, 202]
            assert api.get(f"/projects/{NAME}").json()["last_push"]["action"] == "build"

            trace = run_ci_job(second, tmp_path, gitlab_fake.token)
            gitlab_fake.set_pipeline_status(second.id, "success", trace=trace)
            with OciClient(registry.url, username=USERNAME, password=PASSWORD) as oci:
                tags = oci.list_tags(f"nakama-apps/{NAME}")
                [tag] = [t for t in tags if t.startswith(f"main-{deps_commit[:8]}-")]
                assert re.match(TAG_PATTERN, tag)
                labels = oci.image_labels(f"nakama-apps/{NAME}", tag)
            assert labels[DEPENDENCY_HASH_LABEL] == deps_hash
            assert labels[REVISION_LABEL] == deps_commit
            found = platform.registry.find(NAME, deps_hash)
            assert found is not None and found.tag == tag

            # 3. A code-only change: RELOAD through the Kubernetes API, no pipeline in GitLab.
            code_commit = push(work, {"app.py": "import streamlit as st\nst.write('v2')\n"}, "v2")
            wait_for(lambda: restarted_on(kube_fake) == code_commit, timeout=30, what="the reload")
            assert len(gitlab_fake.triggered("nakama/pipelines")) == 2
            reload = api.get(f"/projects/{NAME}/pipelines").json()[0]
            assert (reload["kind"], reload["status"], reload["commit"]) == (
                "reload",
                "success",
                code_commit,
            )
            project = api.get(f"/projects/{NAME}").json()
            assert project["last_push"]["action"] == "reload"
            assert project["deployed_commit"] == code_commit

            # 4. Delete: nothing is left behind.
            assert api.delete(f"/projects/{NAME}").status_code == 202
            wait_for(
                lambda: api.get(f"/projects/{NAME}").status_code == 404,
                timeout=30,
                what="the delete to finish",
            )
    assert gitlab_fake.find_project(f"nakama-apps/{NAME}") is None  # and its deploy token
    assert kube_fake.secret(f"{NAME}-git") is None
    gitops_deleted = commits(gitops)
    assert len(gitops_deleted) == len(gitops_created) + 1  # one commit deleting every file
    assert files_at(gitops, gitops_deleted[0]) == {"README.md": b"the cluster\n"}
    assert harbor.deleted == [f"nakama-apps/{NAME}"]
    assert all(auth and auth.startswith("Basic ") for auth in harbor.auth)
    with OciClient(registry.url, username=USERNAME, password=PASSWORD) as oci:
        try:
            left = oci.list_tags(f"nakama-apps/{NAME}")
        except NotFound:
            left = []
    assert left == []
    assert gitlab_fake.triggered("nakama/pipelines") == []  # their logs went too
    assert db_rows(platform, NAME) == []


def test_gitlab_unreachable_on_create_is_a_503_and_the_name_stays_free(
    kube_fake: KubeFake, kubeconfig: Path, tmp_path: Path
) -> None:
    port = free_port()
    settings = cluster_settings(
        tmp_path,
        port=port,
        gitlab_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        registry_url="http://127.0.0.1:9",
    )
    platform = build_platform(settings)
    with (
        serve(create_app(platform), port=port) as base,
        httpx.Client(
            base_url=f"{base}/api/v1", headers={"Authorization": f"Bearer {ADMIN}"}
        ) as api,
    ):
        platform.bootstrap_admin()
        answer = api.post("/projects", json={"name": NAME})
        assert answer.status_code == 503
        detail = answer.json()["detail"]
        assert f"project {NAME!r} could not be created" in detail
        assert "cannot reach GitLab" in detail
        assert TOKEN not in detail and TRIGGER_TOKEN not in detail
        # Nothing was made, and no failed row holds the name (review M4): a retry may use it.
        assert api.get(f"/projects/{NAME}").status_code == 404
        assert api.get("/projects").json() == []


@pytest.mark.slow
def test_rollback_retags_the_old_image_and_the_next_push_deploys(
    gitlab_fake: GitLabFake,
    kube_fake: KubeFake,
    kubeconfig: Path,
    buildah: dict[str, str],
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rollback is a GitLab build pipeline of the old commit: ``nakama build`` re-tags the old
    image so that it is the newest tag (Flux's pick), the app moves to the old commit, the
    reconciler does not take the replaced head for a missed push, and the next push deploys
    with the dependencies it needs (planned from the rolled-back commit, not the old head)."""
    for key, value in buildah.items():
        monkeypatch.setenv(key, value)
    gitlab_fake.create_project(GITOPS, files={"README.md": b"the cluster\n"})
    port = free_port()
    settings = cluster_settings(
        tmp_path,
        port=port,
        gitlab_url=gitlab_fake.url,
        registry_url=registry.url,
        username=USERNAME,
        password=SecretStr(PASSWORD),
    )
    repository = f"nakama-apps/{NAME}"

    def newest_tag() -> tuple[str, str]:
        with OciClient(registry.url, username=USERNAME, password=PASSWORD) as oci:
            [tag, *_] = newest_first(oci.list_tags(repository))
            return tag, oci.image_labels(repository, tag)[DEPENDENCY_HASH_LABEL]

    def finish(pipeline: FakePipeline) -> str:
        trace = run_ci_job(pipeline, tmp_path, gitlab_fake.token)
        gitlab_fake.set_pipeline_status(pipeline.id, "success", trace=trace)
        return trace

    with respx.mock(assert_all_called=False) as router:
        RegistryHarbor(registry).install(router)
        platform = build_platform(settings)
        platform.bootstrap_admin()
        assert isinstance(platform.forge, GitLabForge)
        assert isinstance(platform.pipelines, GitLabPipelines)
        reconciler = Reconciler(
            db=platform.db,
            forge=platform.forge,
            registry=platform.registry,
            pipelines=platform.pipelines,
            planning=settings.planning,
            interval_s=10,
            catch_up_after=timedelta(0),  # a head not handled is caught up at once
        )
        with (
            serve(create_app(platform), port=port),
            httpx.Client(
                base_url=f"http://127.0.0.1:{port}/api/v1",
                headers={"Authorization": f"Bearer {ADMIN}"},
            ) as api,
        ):
            assert api.post("/projects", json={"name": NAME}).status_code == 201
            app_repo = gitlab_fake.project(NAME)
            starter = gitlab_git.branch_head(app_repo.repo, "main")
            assert starter is not None
            starter_hash = dependency_hash(
                {"requirements.txt": files_at(app_repo, starter)["requirements.txt"]}
            )
            [first] = gitlab_fake.triggered("nakama/pipelines")
            finish(first)
            api.get(f"/projects/{NAME}")  # GitLab's status read: the workload is committed
            standin = flux_standin(gitlab_fake, kube_fake, registry)
            standin.poll()
            work = tmp_path / "work"
            git("clone", "-q", gitlab_fake.git_url(NAME), str(work))
            requirements = (work / "requirements.txt").read_text() + "plotly==5.24.1\n"
            head = push(work, {"requirements.txt": requirements}, "plotly")
            deps_hash = dependency_hash({"requirements.txt": requirements.encode()})
            second = wait_for(
                lambda: gitlab_fake.triggered("nakama/pipelines")[1:],
                timeout=30,
                what="the build of the dependency change",
            )[0]
            finish(second)
            assert api.get(f"/projects/{NAME}").json()["deployed_commit"] == head
            assert newest_tag()[1] == deps_hash
            # One roll-out, by the new tag, and it runs the pushed commit (review D10): Nakama
            # no longer restarts the app on the commit before the image is there.
            assert restarted_on(kube_fake) is None
            pod, started = rolled_out(standin)
            assert (pod.commit, started) == (head, 1)
            assert pod.image.endswith(newest_tag()[0])

            # The rollback: a build pipeline in GitLab on the starter commit.
            [target] = api.get(f"/projects/{NAME}/rollback-targets").json()
            assert target["commit"] == starter
            answer = api.post(f"/projects/{NAME}/rollback", json={"pipeline_id": target["id"]})
            assert answer.status_code == 202, answer.text
            rollback = answer.json()
            assert (rollback["kind"], rollback["commit"]) == ("build", starter)
            reason = f"rollback to pipeline #{target['id']} (commit {starter[:7]})"
            assert rollback["reason"] == reason
            [third] = gitlab_fake.triggered("nakama/pipelines")[2:]
            assert third.variables == {
                **first.variables,
                "NAKAMA_COMMIT": starter,
                "NAKAMA_DEP_HASH": starter_hash,
            }
            trace = finish(third)
            assert "retag: " in trace and not re.search("^build: ", trace, re.M)  # no build
            tag, labels_hash = newest_tag()
            assert tag.startswith(f"main-{starter[:8]}-") and labels_hash == starter_hash
            project = api.get(f"/projects/{NAME}").json()
            assert project["deployed_commit"] == starter
            assert project["last_push"] == {"action": "rollback", "reason": reason}
            pod, started = rolled_out(standin)  # the old image under a new tag, the old commit
            assert (pod.commit, started) == (starter, 1)
            assert pod.image.endswith(tag)

            # The replaced head is no missed push.
            reconciler.step()
            reconciler.step()
            assert len(gitlab_fake.triggered("nakama/pipelines")) == 3
            assert api.get(f"/projects/{NAME}").json()["deployed_commit"] == starter
            assert rolled_out(standin) == (pod, 0)  # nothing moved

            # The next push, code only on top of the old head, needs the head's dependencies:
            # a BUILD (the image is re-tagged), not a reload onto the starter's image.
            code_commit = push(work, {"app.py": "import streamlit as st\nst.write('v3')\n"}, "v3")
            fourth = wait_for(
                lambda: gitlab_fake.triggered("nakama/pipelines")[3:],
                timeout=30,
                what="the build of the push after the rollback",
            )[0]
            assert fourth.variables["NAKAMA_COMMIT"] == code_commit
            assert fourth.variables["NAKAMA_DEP_HASH"] == deps_hash
            newest = api.get(f"/projects/{NAME}/pipelines").json()[0]
            assert newest["kind"] == "build"
            assert newest["reason"] == (
                f"dependency files changed: requirements.txt (since the rollback to {starter[:7]})"
            )
            assert "retag: " in finish(fourth)
            assert newest_tag()[1] == deps_hash
            assert api.get(f"/projects/{NAME}").json()["deployed_commit"] == code_commit
            pod, started = rolled_out(standin)
            assert (pod.commit, started) == (code_commit, 1)
            reconciler.step()
            assert len(gitlab_fake.triggered("nakama/pipelines")) == 4
