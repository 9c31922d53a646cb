"""Cluster mode's adapters, each against a real server or a stateful loopback fake: HarborRegistry
against a real registry (docker-registry) and, for Harbor's REST API, respx routes; GitLabPipelines
and KubernetesRuntime against the GitLab fake (real bare repositories, driven by python-gitlab)
and the Kubernetes API fake (driven by the kubernetes client)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
import respx
import structlog
from pydantic import SecretStr
from ruamel.yaml import YAML
from sqlalchemy import select

from backend.cluster.gitlab_forge import GitLabForge
from backend.cluster.gitops import GitOpsRepository
from backend.cluster.pipelines import GitLabPipelines
from backend.cluster.registry import HarborRegistry, newest_first
from backend.cluster.runtime import KubernetesRuntime
from code_reloader.restart import COMMIT_ANNOTATION, RESTARTED_AT, restart_app
from flux.manifests import GitOpsLayout
from flux.validate import validate_documents
from nakama.clients.gitlab import GitLabClient
from nakama.clients.harbor import HarborClient
from nakama.clients.kubernetes import api_client
from nakama.clients.oci import OciClient
from nakama.db.session import Database
from nakama.db.tables import Pipeline
from nakama.errors import InvalidInput, NotFound, TemporaryError
from nakama.limits import AppLimits
from nakama.ports import BuildRef, PipelineRequest
from nakama.settings import (
    FluxSettings,
    GitLabSettings,
    HarborSettings,
    KubernetesSettings,
    Settings,
)
from nakama.tagging import DEPENDENCY_HASH_LABEL, dependency_hash
from tests.fakes import gitlab_git
from tests.fakes.gitlab import TOKEN, TRIGGER_TOKEN, FakeProject, GitLabFake
from tests.fakes.kubernetes import KubeFake, kube_fake
from tests.registry import Registry, push_test_image, registry_server
from tests.support import free_port

__all__ = ["kube_fake"]  # the fixture, until tests/conftest.py lists tests.fakes.kubernetes

NAME = "demo"
HARBOR_URL = "https://harbor.test"
APP_FILES = {
    "app.py": b"import streamlit as st\nst.write('hi')\n",
    "requirements.txt": b"streamlit==1.40.0\n",
}
GITOPS = "nakama/gitops"


# --- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with registry_server(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


def make_settings(
    tmp_path: Path, gitlab: GitLabFake, *, flux: FluxSettings | None = None, **kube: Any
) -> Settings:
    return Settings(
        mode="cluster",
        data_dir=tmp_path / "data",
        gitlab=GitLabSettings(
            url=gitlab.url,
            token=SecretStr(TOKEN),
            trigger_token=SecretStr(TRIGGER_TOKEN),
            max_attempts=2,
        ),
        harbor=HarborSettings(url=HARBOR_URL, password=SecretStr("harbor-password-1")),
        kubernetes=KubernetesSettings(**kube),
        flux=flux or FluxSettings(app_domain="apps.test"),
    )


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'nakama.db'}")
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def app_project(gitlab_fake: GitLabFake) -> tuple[FakeProject, str]:
    """The app's repository in the fake, made directly (no hooks); its head commit."""
    project = gitlab_fake.create_project(f"nakama-apps/{NAME}", files=APP_FILES)
    head = gitlab_git.branch_head(project.repo, "main")
    assert head is not None
    return project, head


def make_pipelines(
    tmp_path: Path,
    db: Database,
    gitlab_fake: GitLabFake,
    gitlab_client: GitLabClient,
    kube: KubeFake,
    **kube_settings: Any,
) -> GitLabPipelines:
    settings = make_settings(tmp_path, gitlab_fake, **kube_settings)
    forge = GitLabForge(gitlab_client, hook_base_url="http://127.0.0.1:9")
    return GitLabPipelines(
        db=db, gitlab=gitlab_client, forge=forge, kube=kube.api_client(), settings=settings
    )


@pytest.fixture
def pipelines(
    tmp_path: Path,
    db: Database,
    gitlab_fake: GitLabFake,
    gitlab_client: GitLabClient,
    kube_fake: KubeFake,
) -> GitLabPipelines:
    """Cluster mode's pipelines with the default settings: reloads through Kubernetes."""
    return make_pipelines(tmp_path, db, gitlab_fake, gitlab_client, kube_fake)


def rows(db: Database) -> list[Pipeline]:
    with db.session() as s:
        return list(s.scalars(select(Pipeline).order_by(Pipeline.id)).all())


def log_text(pipelines: GitLabPipelines, pipeline_id: int) -> str:
    return pipelines.log(NAME, pipeline_id, max_bytes=1024 * 1024).data.decode()


# --- HarborRegistry ---------------------------------------------------------------------------


def test_newest_first_orders_timestamp_tags_and_drops_others() -> None:
    tags = ["latest", "main-00000001-20260101000009", "dev-00000002-20260101000010", "x"]
    assert newest_first(tags) == ["dev-00000002-20260101000010", "main-00000001-20260101000009"]


def test_harbor_registry_finds_the_newest_image_with_the_dependency_hash(
    registry: Registry,
) -> None:
    repo = f"nakama-apps/{NAME}"
    for tag, dep_hash in (
        ("main-00000001-20260101000001", "aaaa"),
        ("main-00000002-20260101000002", "bbbb"),
        ("main-00000003-20260101000003", "aaaa"),
        ("latest", "aaaa"),
    ):
        push_test_image(registry, repo, tag, labels={DEPENDENCY_HASH_LABEL: dep_hash})
    settings = HarborSettings(url=registry.url, project="nakama-apps")
    with OciClient.from_settings(settings) as oci:
        harbor = HarborClient(settings)
        found = HarborRegistry(harbor=harbor, oci=oci, project="nakama-apps")
        assert found.find(NAME, "aaaa") == BuildRef(
            dep_hash="aaaa",
            tag="main-00000003-20260101000003",
            created_at=datetime(2026, 1, 1, 0, 0, 3, tzinfo=UTC),
        )
        assert found.find(NAME, "bbbb") is not None
        assert found.find(NAME, "cccc") is None
        assert found.find("never-pushed", "aaaa") is None  # no repository: nothing built
        harbor.close()


def test_harbor_registry_deletes_the_repository_once_and_again_without_error() -> None:
    settings = HarborSettings(url=HARBOR_URL, password=SecretStr("pw-123456"), max_attempts=1)
    url = f"{HARBOR_URL}/api/v2.0/projects/nakama-apps/repositories/{NAME}"
    with respx.mock(assert_all_called=True) as router:
        route = router.delete(url).mock(
            side_effect=[
                httpx.Response(200),
                httpx.Response(404, json={"errors": [{"code": "NOT_FOUND", "message": "gone"}]}),
            ]
        )
        harbor = HarborClient(settings)
        with OciClient.from_settings(settings) as oci:
            found = HarborRegistry(harbor=harbor, oci=oci, project="nakama-apps")
            found.delete_project(NAME, dep_hashes={"aaaa"}, shared=set())
            found.delete_project(NAME, dep_hashes={"aaaa"}, shared=set())
        harbor.close()
    assert route.call_count == 2


# --- GitLabPipelines --------------------------------------------------------------------------
def test_a_build_triggers_the_pipelines_project_with_exactly_the_string_variables(
    db: Database,
    gitlab_fake: GitLabFake,
    kube_fake: KubeFake,
    app_project: tuple[FakeProject, str],
    pipelines: GitLabPipelines,
) -> None:
    _, head = app_project
    kube_fake.add_deployment(NAME)
    pipeline_id = pipelines.submit(
        PipelineRequest(project=NAME, kind="build", commit=head, branch="main", reason="first")
    )
    [triggered] = gitlab_fake.triggered("nakama/pipelines")
    dep_hash = dependency_hash({"requirements.txt": APP_FILES["requirements.txt"]})
    assert triggered.variables == {
        "NAKAMA_KIND": "build",
        "NAKAMA_PROJECT": NAME,
        "NAKAMA_REPO": f"{gitlab_fake.url}/nakama-apps/{NAME}.git",
        "NAKAMA_COMMIT": head,
        "NAKAMA_REF": "main",
        "NAKAMA_IMAGE": f"harbor.test/nakama-apps/{NAME}",
        "NAKAMA_DEP_HASH": dep_hash,
    }
    assert triggered.ref == "main"
    assert [job.name for job in triggered.jobs] == ["build-image"]
    [row] = rows(db)
    assert (row.id, row.status, row.external_id, row.dep_hash) == (
        pipeline_id,
        "pending",
        str(triggered.id),
        dep_hash,
    )

    # GitLab's status reaches the row when the project's pipelines are refreshed.
    gitlab_fake.set_pipeline_status(triggered.id, "running")
    pipelines.refresh(NAME)
    [row] = rows(db)
    assert row.status == "running" and row.started_at is not None
    assert kube_fake.calls("PATCH") == []
    gitlab_fake.set_pipeline_status(triggered.id, "success", trace="build: done\n")
    pipelines.refresh_active()
    [row] = rows(db)
    assert row.status == "success" and row.finished_at is not None and row.error is None
    # The built commit reaches the pods: Flux swaps the image, the annotation names the code.
    template = kube_fake.deployment(NAME)["spec"]["template"]["metadata"]["annotations"]
    assert template[COMMIT_ANNOTATION] == head
    assert log_text(pipelines, pipeline_id) == "build: done\n"
    # A long trace is read in chunks of which only the wanted piece is kept: its tail, a page.
    trace = "".join(f"line {i}\n" for i in range(20_000))
    gitlab_fake.set_pipeline_status(triggered.id, "success", trace=trace)
    tail = pipelines.log(NAME, pipeline_id, max_bytes=100)
    size = len(trace.encode())
    assert (tail.data, tail.start, tail.size) == (trace.encode()[-100:], size - 100, size)
    page = pipelines.log(NAME, pipeline_id, offset=7, max_bytes=20)
    assert (page.data, page.start, page.size) == (trace.encode()[7:27], 7, size)
    with pytest.raises(InvalidInput, match="NAKAMA_LOGS__PIPELINE_LOG_READ_BYTES"):
        pipelines.log(NAME, pipeline_id, max_bytes=2 * 1024 * 1024)
    calls = len(gitlab_fake.requests)
    pipelines.refresh(NAME)  # nothing unfinished: GitLab is not asked
    assert len(gitlab_fake.requests) == calls


def test_a_failed_gitlab_pipeline_fails_the_row(
    db: Database,
    gitlab_fake: GitLabFake,
    app_project: tuple[FakeProject, str],
    pipelines: GitLabPipelines,
) -> None:
    _, head = app_project
    request = PipelineRequest(NAME, "build", head, "main", "deps", dep_hash="0123456789abcdef")
    pipelines.submit(request)
    [triggered] = gitlab_fake.triggered("nakama/pipelines")
    assert triggered.variables["NAKAMA_DEP_HASH"] == "0123456789abcdef"
    gitlab_fake.set_pipeline_status(triggered.id, "failed")
    pipelines.refresh(NAME)
    [row] = rows(db)
    assert row.status == "failed"
    assert row.error is not None and f"GitLab pipeline {triggered.id} failed" in row.error


def test_a_reload_through_a_gitlab_pipeline(
    tmp_path: Path,
    db: Database,
    gitlab_fake: GitLabFake,
    gitlab_client: GitLabClient,
    kube_fake: KubeFake,
    app_project: tuple[FakeProject, str],
) -> None:
    _, head = app_project
    pipelines = make_pipelines(
        tmp_path, db, gitlab_fake, gitlab_client, kube_fake, reload_via="gitlab-pipeline"
    )
    pid = pipelines.submit(PipelineRequest(NAME, "reload", head, "main", "code", dep_hash="abcd"))
    [triggered] = gitlab_fake.triggered("nakama/pipelines")
    assert triggered.variables == {
        "NAKAMA_KIND": "reload",
        "NAKAMA_PROJECT": NAME,
        "NAKAMA_COMMIT": head,
        "NAKAMA_PIPELINE": str(pid),  # the job's restart annotates it (nakama.build_record)
    }
    assert [job.name for job in triggered.jobs] == ["reload-code"]
    assert kube_fake.calls("PATCH") == []


def test_a_reload_through_kubernetes_restarts_the_deployment_on_the_commit(
    db: Database,
    gitlab_fake: GitLabFake,
    kube_fake: KubeFake,
    app_project: tuple[FakeProject, str],
    pipelines: GitLabPipelines,
) -> None:
    _, head = app_project
    kube_fake.add_deployment(NAME)
    pipeline_id = pipelines.submit(
        PipelineRequest(NAME, "reload", head, "main", "only code changed", dep_hash="abcd")
    )
    [patch] = kube_fake.calls("PATCH", f"/deployments/{NAME}")
    assert patch.content_type == "application/strategic-merge-patch+json"
    template = kube_fake.deployment(NAME)["spec"]["template"]["metadata"]["annotations"]
    assert template[COMMIT_ANNOTATION] == head
    assert RESTARTED_AT in template
    [row] = rows(db)
    assert (row.status, row.external_id, row.error) == ("success", None, None)
    assert row.started_at is not None and row.finished_at is not None
    log = log_text(pipelines, pipeline_id)
    assert f"restarted deployment nakama-apps/{NAME} on commit {head}" in log
    assert "pipeline success" in log
    assert gitlab_fake.triggered("nakama/pipelines") == []


def test_a_reload_of_an_app_without_deployment_is_recorded_as_failed(
    db: Database,
    app_project: tuple[FakeProject, str],
    pipelines: GitLabPipelines,
) -> None:
    _, head = app_project
    with pytest.raises(NotFound):
        pipelines.submit(PipelineRequest(NAME, "reload", head, "main", "code", dep_hash="abcd"))
    [row] = rows(db)
    assert row.status == "failed" and row.error is not None and "not found" in row.error
    assert "pipeline failed: " in log_text(pipelines, row.id)


def test_gitlab_unreachable_on_trigger_leaves_no_row_and_is_temporary(
    db: Database,
    gitlab_fake: GitLabFake,
    app_project: tuple[FakeProject, str],
    pipelines: GitLabPipelines,
) -> None:
    _, head = app_project
    gitlab_fake.fail_next(503, count=5, path="/trigger/pipeline")
    request = PipelineRequest(NAME, "build", head, "main", "deps", dep_hash="abcd")
    with pytest.raises(TemporaryError) as caught:
        pipelines.submit(request)
    assert TRIGGER_TOKEN not in str(caught.value) and TOKEN not in str(caught.value)
    assert rows(db) == []
    assert gitlab_fake.triggered("nakama/pipelines") == []


def test_cancel_and_purge_reach_gitlab(
    db: Database,
    gitlab_fake: GitLabFake,
    app_project: tuple[FakeProject, str],
    pipelines: GitLabPipelines,
) -> None:
    _, head = app_project
    pipelines.submit(PipelineRequest(NAME, "build", head, "main", "deps", dep_hash="abcd"))
    [triggered] = gitlab_fake.triggered("nakama/pipelines")
    pipelines.cancel_project(NAME)
    assert triggered.status == "canceled"
    [row] = rows(db)
    assert row.status == "canceled"
    pipelines.purge_project(NAME)
    assert gitlab_fake.triggered("nakama/pipelines") == []
    pipelines.purge_project(NAME)  # again: already gone


# --- KubernetesRuntime ------------------------------------------------------------------------
def commits(project: FakeProject, branch: str = "main") -> list[str]:
    out = subprocess.run(
        ["git", "--git-dir", str(project.repo), "rev-list", branch],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()


def files_at(project: FakeProject, rev: str) -> dict[str, str]:
    return {
        path: gitlab_git.read_blob(project.repo, blob).decode()
        for path, (_mode, blob) in gitlab_git.list_tree(project.repo, rev).items()
    }


def make_runtime(
    tmp_path: Path,
    gitlab_fake: GitLabFake,
    gitlab_client: GitLabClient,
    kube: Any,
    *,
    flux: FluxSettings | None = None,
    limits: Callable[[str], AppLimits] | None = None,
) -> KubernetesRuntime:
    settings = make_settings(tmp_path, gitlab_fake, flux=flux)
    layout = GitOpsLayout()
    gitops = GitOpsRepository(
        gitlab_client,
        project_path=GITOPS,
        branch="main",
        author_name=layout.author_name,
        author_email=layout.author_email,
    )
    forge = GitLabForge(gitlab_client, hook_base_url="http://127.0.0.1:9")
    return KubernetesRuntime(
        gitops=gitops,
        kube=kube,
        forge=forge,
        gitlab=gitlab_client,
        settings=settings,
        limits=limits,
    )


@pytest.fixture
def runtime(
    tmp_path: Path, gitlab_fake: GitLabFake, gitlab_client: GitLabClient, kube_fake: KubeFake
) -> KubernetesRuntime:
    return make_runtime(tmp_path, gitlab_fake, gitlab_client, kube_fake.api_client())


def test_prepare_commits_every_app_file_once_and_remove_deletes_them_once(
    gitlab_fake: GitLabFake,
    app_project: tuple[FakeProject, str],
    runtime: KubernetesRuntime,
) -> None:
    _, head = app_project
    gitops = gitlab_fake.create_project(GITOPS, files={"README.md": b"the cluster\n"})
    before = commits(gitops)
    expected = runtime.manifests(NAME, commit=head)
    assert f"apps/{NAME}/deployment.yaml" in expected
    assert f"clusters/nakama/apps/{NAME}.yaml" in expected

    runtime.prepare(NAME, commit=head)
    after = commits(gitops)
    assert len(after) == len(before) + 1  # one commit with every file
    files = files_at(gitops, after[0])
    assert {p: t for p, t in files.items() if p != "README.md"} == expected
    docs = [doc for text in expected.values() for doc in YAML(typ="safe").load_all(text) if doc]
    assert validate_documents(docs) == []
    deployment = expected[f"apps/{NAME}/deployment.yaml"]
    assert head in deployment and f"{gitlab_fake.url}/nakama-apps/{NAME}.git" in deployment
    message = subprocess.run(
        ["git", "--git-dir", str(gitops.repo), "log", "-1", "--format=%an|%s"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert message == f"Nakama|nakama: add app {NAME}"

    runtime.prepare(NAME, commit=head)  # idempotent: nothing missing, no commit
    assert commits(gitops) == after

    runtime.remove(NAME)
    removed = commits(gitops)
    assert len(removed) == len(after) + 1
    assert files_at(gitops, removed[0]) == {"README.md": "the cluster\n"}
    runtime.remove(NAME)  # nothing left: no commit
    assert commits(gitops) == removed
    assert runtime.app_url(NAME) == f"https://{NAME}.apps.test/"


def clone(url: str, username: str, token: str, dest: Path) -> subprocess.CompletedProcess[str]:
    parts = urlsplit(url)
    netloc = f"{quote(username, safe='')}:{quote(token, safe='')}@{parts.netloc}"
    return git_run("clone", "-q", parts._replace(netloc=netloc).geturl(), str(dest))


def git_run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/bin:/bin", "HOME": str(cwd or "/tmp")}
    return subprocess.run(
        ["git", "-c", "credential.helper=", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_prepare_stores_a_read_only_deploy_token_in_the_git_secret_and_remove_deletes_it(
    tmp_path: Path,
    gitlab_fake: GitLabFake,
    gitlab_client: GitLabClient,
    kube_fake: KubeFake,
    app_project: tuple[FakeProject, str],
    runtime: KubernetesRuntime,
) -> None:
    project, head = app_project
    gitops = gitlab_fake.create_project(GITOPS, files={"README.md": b"the cluster\n"})
    with structlog.testing.capture_logs() as logs:
        runtime.prepare(NAME, commit=head)
    secret = kube_fake.secret(f"{NAME}-git")
    assert secret is not None and set(secret) == {"username", "token"}
    [token] = project.deploy_tokens
    assert (secret["username"], secret["token"]) == (token.username, token.token)
    assert (token.name, token.scopes) == ("nakama-sync", ["read_repository"])
    assert any(e["event"] == "app git credentials stored" for e in logs)
    assert token.token not in repr(logs)
    # The API shows the token's shape, never the token.
    shown = gitlab_client.api.projects.get(project.id, lazy=True).deploytokens.get(token.id)
    assert shown.username == token.username and "token" not in shown.attributes
    # The Deployment reads both keys of that Secret.
    deployment = YAML(typ="safe").load(files_at(gitops, "main")[f"apps/{NAME}/deployment.yaml"])
    pod = deployment["spec"]["template"]["spec"]
    [sync] = pod["initContainers"]
    env = {e["name"]: e for e in sync["env"]}
    assert env["NAKAMA_GIT_USERNAME"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{NAME}-git",
        "key": "username",
    }
    assert '--username "$NAKAMA_GIT_USERNAME"' in sync["command"][-1]
    [volume] = [v for v in pod["volumes"] if v["name"] == "git-token"]
    assert volume["secret"]["secretName"] == f"{NAME}-git"
    assert volume["secret"]["items"] == [{"key": "token", "path": "git-token"}]

    # The credentials clone the app's repository and nothing else, and cannot push.
    url = gitlab_fake.git_url(NAME, with_token=False)
    work = tmp_path / "work"
    cloned = clone(url, token.username, token.token, work)
    assert cloned.returncode == 0, cloned.stderr
    assert git_run("rev-parse", "HEAD", cwd=work).stdout.strip() == head
    (work / "app.py").write_text("print('pushed with a deploy token')\n")
    git_run("-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qam", "no", cwd=work)
    pushed = git_run("push", "-q", "origin", "HEAD:main", cwd=work)
    assert pushed.returncode != 0
    assert "not allowed to push" in pushed.stderr and token.token not in pushed.stderr
    assert gitlab_git.branch_head(project.repo, "main") == head
    other = clone(gitlab_fake.git_url(GITOPS, with_token=False), token.username, token.token,
                  tmp_path / "other")  # fmt: skip
    assert other.returncode != 0
    wrong_user = clone(url, "someone", token.token, tmp_path / "wrong-user")
    assert wrong_user.returncode != 0

    runtime.prepare(NAME, commit=head)  # the Secret is complete: no new token
    assert len(project.deploy_tokens) == 1
    assert len(gitlab_fake.requests_to("POST", "/deploy_tokens")) == 1
    assert kube_fake.secret(f"{NAME}-git") == secret

    runtime.remove(NAME)
    assert kube_fake.secret(f"{NAME}-git") is None
    runtime.remove(NAME)  # already gone: fine
    assert kube_fake.secret(f"{NAME}-git") is None


def test_prepare_completes_an_incomplete_git_secret(
    gitlab_fake: GitLabFake,
    kube_fake: KubeFake,
    app_project: tuple[FakeProject, str],
    runtime: KubernetesRuntime,
) -> None:
    project, head = app_project
    gitlab_fake.create_project(GITOPS, files={"README.md": b"the cluster\n"})
    kube_fake.add_secret(f"{NAME}-git", {"token": "made-by-hand"})  # the old manual step
    runtime.prepare(NAME, commit=head)
    [token] = project.deploy_tokens
    assert kube_fake.secret(f"{NAME}-git") == {"username": token.username, "token": token.token}


def test_prepare_into_a_missing_gitops_project_says_so(
    app_project: tuple[FakeProject, str], runtime: KubernetesRuntime
) -> None:
    _, head = app_project
    with pytest.raises(NotFound, match="GitOps project 'nakama/gitops'"):
        runtime.prepare(NAME, commit=head)
    with pytest.raises(NotFound, match="GitOps project"):
        runtime.remove(NAME)


def test_status_reads_the_deployment_and_never_raises(
    tmp_path: Path,
    gitlab_fake: GitLabFake,
    gitlab_client: GitLabClient,
    kube_fake: KubeFake,
    runtime: KubernetesRuntime,
) -> None:
    assert runtime.status(NAME).state == "stopped"  # Flux has not applied it yet
    assert runtime.logs(NAME, tail=10) == ""  # no pod
    kube_fake.add_deployment(NAME)
    assert runtime.status(NAME).state == "running"
    restart = kube_fake.api_client()
    kube_fake.rollout_delay_s = 60.0
    restart_app(restart, namespace=kube_fake.namespace, name=NAME, commit="1" * 40,
                method="patch", now=datetime.now(UTC))  # fmt: skip
    assert runtime.status(NAME).state == "starting"
    kube_fake.rollout_delay_s = 0.0
    kube_fake.stall_next_rollout(NAME)
    restart_app(restart, namespace=kube_fake.namespace, name=NAME, commit="2" * 40,
                method="patch", now=datetime.now(UTC))  # fmt: skip
    crashed = runtime.status(NAME)
    assert crashed.state == "crashed" and "progress deadline" in crashed.detail

    with api_client(host=f"http://127.0.0.1:{free_port()}", token="unused") as dead:
        unreachable = make_runtime(tmp_path, gitlab_fake, gitlab_client, dead)
        status = unreachable.status(NAME)
    assert status.state == "unknown"
    assert "unreachable" in status.detail
