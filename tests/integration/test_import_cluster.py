"""Cluster mode's import: GitLab's "Repository by URL" import (``import_url``), driven by the real
python-gitlab client against the stateful GitLab fake, which clones a source served by ``git
http-backend`` on 127.0.0.1 asynchronously (scheduled, started, finished or failed); then the
whole create through the composition root and the API: the first build triggered for the
imported head, the app's manifests on its branch and main file, the token kept nowhere, and bob
seeing nothing."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from ruamel.yaml import YAML
from sqlalchemy import MetaData, select

from backend.app import build_platform, create_app
from backend.cluster.gitlab_forge import GitLabForge
from flux.validate import validate_documents
from nakama.clients.gitlab import GitLabClient
from nakama.errors import Conflict, InvalidInput, TemporaryError
from nakama.importing import ImportSource, parse_source_url
from nakama.settings import FluxSettings, GitLabSettings, HarborSettings, Settings
from tests.fakes import gitlab_git
from tests.fakes.gitlab import TOKEN, TRIGGER_TOKEN, GitLabFake
from tests.fakes.kubernetes import KubeFake, kube_fake, kubeconfig
from tests.git_http_source import GitSource, serving
from tests.support import free_port, serve

__all__ = ["kube_fake", "kubeconfig"]  # fixtures, until tests/conftest.py lists the module
pytest_plugins = ["tests.fakes.gitlab"]

SOURCE_TOKEN = "glpat-source-Hq4mX8vR2kPz"  # the private source's token
WRONG = "glpat-wrong-111111111111"
HOOK_TOKEN = "hook-secret-" + "h" * 20
ADMIN = "nkm_import-cluster-admin-token-0123456789"
GITOPS = "nakama/gitops"
FILES = {
    "streamlit_app.py": "import streamlit as st\nst.title('imported')\n",
    "requirements.txt": "streamlit==1.35.0\n",
    ".python-version": "3.12\n",
}


@pytest.fixture
def client(gitlab_fake: GitLabFake) -> Iterator[GitLabClient]:
    settings = GitLabSettings(
        url=gitlab_fake.url, token=SecretStr(TOKEN), group=gitlab_fake.group, max_attempts=2
    )
    client = GitLabClient(settings, sleep=lambda _s: None)
    yield client
    client.close()


@pytest.fixture
def forge(client: GitLabClient) -> GitLabForge:
    return GitLabForge(client, hook_base_url="http://127.0.0.1:9/nakama", import_poll_s=0.02)


@pytest.fixture
def private(tmp_path: Path) -> Iterator[GitSource]:
    with serving(tmp_path / "src", username="reader", password=SOURCE_TOKEN) as source:
        source.create("dash", FILES, branch="trunk")
        yield source


@pytest.fixture
def public(tmp_path: Path) -> Iterator[GitSource]:
    with serving(tmp_path / "public-src") as source:
        source.create("dash", FILES, branch="trunk")
        yield source


def source_of(repo: GitSource, name: str = "dash", token: str | None = None) -> ImportSource:
    return ImportSource(url=parse_source_url(repo.repo_url(name)), token=token, username="reader")


def head_of(repo: GitSource, branch: str = "trunk") -> str:
    sha = gitlab_git.branch_head(repo.root / "dash.git", branch)
    assert sha is not None
    return sha


# --- the forge ----------------------------------------------------------------------------------
def test_import_is_asynchronous_and_takes_the_source_head(
    forge: GitLabForge, gitlab_fake: GitLabFake, public: GitSource
) -> None:
    feature = public.commit("dash", {**FILES, "x.py": "x = 1\n"}, branch="feature", message="f")
    imported = forge.import_repository(
        "dash", source=source_of(public), branch=None, hook_token=HOOK_TOKEN
    )
    project = gitlab_fake.project("dash")
    # Answered "scheduled", then started and finished in the background; Nakama polled it.
    assert project.import_history == ["scheduled", "started", "finished"]
    assert gitlab_fake.requests_to("GET", f"/projects/{project.id}/import")
    assert (imported.branch, imported.commit) == ("trunk", head_of(public))
    assert imported.branch_from == "the source's default branch (its HEAD)"
    assert project.default_branch == "trunk"
    assert gitlab_git.branch_head(project.repo, "feature") == feature
    hooks = gitlab_fake.hooks("dash")
    assert sorted(h.url for h in hooks) == [
        "http://127.0.0.1:9/nakama/build-image/dash",
        "http://127.0.0.1:9/nakama/code-reload/dash",
    ]
    assert {h.branch_filter for h in hooks} == {"trunk"} and {h.token for h in hooks} == {
        HOOK_TOKEN
    }
    assert forge.read_files("dash", imported.commit, ["streamlit_app.py"]) == {
        "streamlit_app.py": FILES["streamlit_app.py"].encode()
    }


def test_a_private_import_leaves_gitlab_no_credentials(
    forge: GitLabForge, gitlab_fake: GitLabFake, private: GitSource
) -> None:
    imported = forge.import_repository(
        "dash", source=source_of(private, token=SOURCE_TOKEN), branch="trunk", hook_token=HOOK_TOKEN
    )
    assert imported.commit == head_of(private)
    assert {r.user for r in private.requests if r.status == 200} == {"reader"}
    project = gitlab_fake.project("dash")
    # GitLab kept the URL's credentials for the import; Nakama gave it the URL without them.
    assert project.import_credentials is None
    assert project.import_url == private.repo_url("dash")
    assert gitlab_fake.requests_to("PUT", f"/projects/{project.id}")


@pytest.mark.parametrize(
    ("token", "says"),
    [(WRONG, "Authentication failed"), (None, "could not read Username")],
)
def test_a_failed_import_says_gitlabs_error_and_leaves_nothing(
    forge: GitLabForge, gitlab_fake: GitLabFake, private: GitSource, token: str | None, says: str
) -> None:
    with pytest.raises(InvalidInput, match="GitLab could not import") as caught:
        forge.import_repository(
            "dash", source=source_of(private, token=token), branch=None, hook_token=HOOK_TOKEN
        )
    message = str(caught.value)
    assert says in message and "Error importing repository" in message
    assert WRONG not in message
    assert gitlab_fake.find_project("nakama-apps/dash") is None


def test_a_missing_branch_or_repository_leaves_nothing(
    forge: GitLabForge, gitlab_fake: GitLabFake, public: GitSource
) -> None:
    with pytest.raises(InvalidInput, match=r"branch 'nope' is not in the source .*trunk"):
        forge.import_repository(
            "dash", source=source_of(public), branch="nope", hook_token=HOOK_TOKEN
        )
    assert gitlab_fake.find_project("nakama-apps/dash") is None
    with pytest.raises(InvalidInput, match=r"GitLab could not import .* not found"):
        forge.import_repository(
            "dash", source=source_of(public, "missing"), branch=None, hook_token=HOOK_TOKEN
        )
    assert gitlab_fake.find_project("nakama-apps/dash") is None


def test_an_import_that_does_not_finish_in_time_is_given_up(
    client: GitLabClient, gitlab_fake: GitLabFake, public: GitSource
) -> None:
    gitlab_fake.import_delay_s = 30  # type: ignore[attr-defined]  # a busy import queue
    forge = GitLabForge(
        client, hook_base_url="http://127.0.0.1:9", import_timeout_s=0.3, import_poll_s=0.05
    )
    with pytest.raises(
        TemporaryError,
        match=r"did not finish importing .* within 0\.3 s \(import status: scheduled\)",
    ):
        forge.import_repository("dash", source=source_of(public), branch=None, hook_token="t")
    assert gitlab_fake.find_project("nakama-apps/dash") is None


def test_gitlabs_refusal_of_the_url_and_a_taken_name_are_clear(
    forge: GitLabForge, gitlab_fake: GitLabFake, public: GitSource
) -> None:
    gitlab_fake.import_allow_local = False  # type: ignore[attr-defined]  # GitLab's default
    with pytest.raises(InvalidInput, match=r"GitLab refused to import .*localhost"):
        forge.import_repository("dash", source=source_of(public), branch=None, hook_token="t")
    assert gitlab_fake.find_project("nakama-apps/dash") is None
    gitlab_fake.import_allow_local = True  # type: ignore[attr-defined]
    forge.create_repository("dash", files={"app.py": b"x\n"}, branch="main", hook_token="t")
    with pytest.raises(Conflict, match="already exists"):
        forge.import_repository("dash", source=source_of(public), branch=None, hook_token="t")
    assert gitlab_fake.project("dash").import_url is None  # the first one is untouched


# --- the whole create, through the API ------------------------------------------------------
def cluster_settings(tmp_path: Path, *, port: int, gitlab_url: str) -> Settings:
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
        # Harbor is not asked during a create; nothing listens here.
        harbor=HarborSettings(url=f"http://127.0.0.1:{free_port()}", password=SecretStr("x")),
        flux=FluxSettings(app_domain="apps.test", gitops_project=GITOPS),
    )


def gitops_file(gitlab_fake: GitLabFake, path: str) -> str:
    repo = gitlab_fake.project(GITOPS).repo
    return subprocess.run(
        ["git", "--git-dir", str(repo), "show", f"main:{path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_create_by_import_through_the_api(
    gitlab_fake: GitLabFake,
    kube_fake: KubeFake,
    kubeconfig: Path,
    private: GitSource,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    gitlab_fake.create_project(GITOPS, files={"README.md": b"the cluster\n"})
    port = free_port()
    platform = build_platform(cluster_settings(tmp_path, port=port, gitlab_url=gitlab_fake.url))
    assert platform.bootstrap_admin() is None  # the admin token of the settings
    url = private.repo_url("dash")
    source = {"url": url, "username": "reader"}
    try:
        with (
            serve(create_app(platform), port=port) as base,
            httpx.Client(
                base_url=f"{base}/api/v1", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60
            ) as api,
        ):
            alice_token = api.post("/users", json={"username": "alice"}).json()["token"]
            bob_token = api.post("/users", json={"username": "bob"}).json()["token"]
            alice = {"Authorization": f"Bearer {alice_token}"}

            wrong = api.post(
                "/projects",
                json={"name": "dash", "source": {**source, "token": WRONG}},
                headers=alice,
            )
            assert wrong.status_code == 422, wrong.text
            assert "Authentication failed" in wrong.text and WRONG not in wrong.text
            assert gitlab_fake.find_project("nakama-apps/dash") is None
            assert api.get("/projects/dash").status_code == 404

            r = api.post(
                "/projects",
                json={"name": "dash", "source": {**source, "token": SOURCE_TOKEN}},
                headers=alice,
            )
            assert r.status_code == 201, r.text
            assert SOURCE_TOKEN not in r.text
            detected = r.json()["detected"]
            commit = head_of(private)
            assert (detected["branch"], detected["commit"]) == ("trunk", commit)
            assert (detected["main_file"], detected["python_version"]) == (
                "streamlit_app.py",
                "3.12",
            )
            assert detected["from"]["python_version"] == "from .python-version"
            assert "Python 3.12 (from .python-version)" in detected["summary"]
            assert "main file: streamlit_app.py (found at the root)" in detected["summary"]

            # The first build is the imported head, on its branch, as a push's would be.
            [pipeline] = gitlab_fake.triggered()
            assert pipeline.variables["NAKAMA_COMMIT"] == commit
            assert pipeline.variables["NAKAMA_REF"] == "trunk"
            assert pipeline.variables["NAKAMA_REPO"] == f"{gitlab_fake.url}/nakama-apps/dash.git"

            # The app runs the detected main file; its images are the imported branch's. Its
            # Deployment is committed with the first image (none exists yet), as rendered here.
            assert "deployment.yaml" not in gitops_file(gitlab_fake, "apps/dash/kustomization.yaml")
            rendered = platform.runtime.manifests("dash", commit=commit)[
                "apps/dash/deployment.yaml"
            ]
            deployment = YAML(typ="safe").load(rendered)
            [app] = [
                c
                for c in deployment["spec"]["template"]["spec"]["containers"]
                if c["name"] == "app"
            ]
            assert app["command"][:5] == ["python", "-m", "streamlit", "run", "streamlit_app.py"]
            policy = YAML(typ="safe").load(gitops_file(gitlab_fake, "apps/dash/imagepolicy.yaml"))
            assert policy["spec"]["filterTags"]["pattern"].startswith("^trunk-")
            documents = [deployment, policy]
            assert validate_documents(documents) == []

            bob = {"Authorization": f"Bearer {bob_token}"}
            assert api.get("/projects/dash", headers=bob).status_code == 404
            assert api.get("/projects", headers=bob).json() == []
            assert api.get("/projects/dash", headers=alice).json()["role"] == "owner"

        # The token is kept nowhere: not in any row, not at GitLab, not in the log.
        meta = MetaData()
        meta.reflect(platform.db.engine)
        with platform.db.engine.connect() as conn:
            dump = "\n".join(
                repr(tuple(row)) for t in meta.sorted_tables for row in conn.execute(select(t))
            )
        assert url in dump
        basic = base64.b64encode(f"reader:{SOURCE_TOKEN}".encode()).decode()
        assert SOURCE_TOKEN not in dump and basic not in dump
        assert gitlab_fake.project("dash").import_credentials is None
        logged = capfd.readouterr()
        assert "project imported" in logged.out + logged.err
        assert SOURCE_TOKEN not in logged.out + logged.err and WRONG not in logged.out + logged.err
    finally:
        platform.stop()
