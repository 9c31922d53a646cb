"""The reconciler (backend.cluster.reconcile) against the GitLab fake, the Kubernetes fake and a
SQLite database, one step() at a time: missed pushes are caught up, stuck pipelines failed and
canceled, disabled hooks reported, and one project's errors do not stop another's catch-up."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

from backend.cluster.gitlab_forge import GitLabForge
from backend.cluster.pipelines import GitLabPipelines
from backend.cluster.reconcile import Reconciler
from code_reloader.restart import COMMIT_ANNOTATION
from nakama.clients.gitlab import GitLabClient
from nakama.db.session import Database
from nakama.db.tables import Pipeline, Project
from nakama.ports import BuildRef, PipelineRequest
from nakama.rollback import rollback_reason
from nakama.settings import GitLabSettings, HarborSettings, Settings
from nakama.tagging import dependency_hash
from tests.fakes.gitlab import TOKEN, TRIGGER_TOKEN, GitLabFake
from tests.fakes.kubernetes import KubeFake, kube_fake
from tests.support import free_port

__all__ = ["kube_fake"]  # the fixture, until tests/conftest.py lists tests.fakes.kubernetes

REQUIREMENTS = b"streamlit==1.40.0\n"
APP_FILES = {
    "app.py": b"import streamlit as st\nst.write('hi')\n",
    "requirements.txt": REQUIREMENTS,
}
INTERVAL_S = 10.0


@dataclass
class Builds:
    """The registry port: builds exist for these dependency hashes."""

    hashes: set[str] = field(default_factory=set)

    def find(self, project: str, dep_hash: str) -> BuildRef | None:
        if dep_hash not in self.hashes:
            return None
        return BuildRef(dep_hash, "main-00000001-20260101000000", datetime(2026, 1, 1, tzinfo=UTC))

    def delete_project(self, project: str, *, dep_hashes: set[str], shared: set[str]) -> None:
        pass


@dataclass
class Env:
    db: Database
    gitlab: GitLabFake
    client: GitLabClient
    kube: KubeFake
    forge: GitLabForge
    pipelines: GitLabPipelines
    builds: Builds

    def reconciler(self, **kwargs: object) -> Reconciler:
        options: dict[str, object] = {"catch_up_after": timedelta(0), **kwargs}
        return Reconciler(
            db=self.db,
            forge=self.forge,
            registry=self.builds,
            pipelines=self.pipelines,
            planning=Settings().planning,
            interval_s=INTERVAL_S,
            **options,  # type: ignore[arg-type]
        )

    def create(self, name: str) -> str:
        """A live project deployed at its first commit, with hooks that cannot be delivered."""
        head = self.forge.create_repository(
            name, files=APP_FILES, branch="main", hook_token="hook-token-0123456789"
        )
        self.kube.add_deployment(name)
        with self.db.session() as s:
            s.add(
                Project(
                    name=name,
                    status="running",
                    branch="main",
                    hook_token="hook-token-0123456789",
                    deployed_commit=head,
                )
            )
        return head

    def push(self, name: str, files: dict[str, bytes]) -> str:
        """A commit through GitLab's API: GitLab fires the hooks, which fail."""
        project = self.client.api.projects.get(f"nakama-apps/{name}")
        actions = [
            {
                "action": "update",
                "file_path": path,
                "content": base64.b64encode(content).decode(),
                "encoding": "base64",
            }
            for path, content in files.items()
        ]
        commit = project.commits.create(
            {"branch": "main", "commit_message": "change", "actions": actions}
        )
        deliveries = [
            d for d in self.gitlab.wait_for_deliveries() if d.body.get("after") == commit.id
        ]
        assert len(deliveries) == 2 and all(d.error for d in deliveries)  # nobody listens
        return str(commit.id)

    def rows(self, name: str | None = None) -> list[Pipeline]:
        query = select(Pipeline).order_by(Pipeline.id)
        if name is not None:
            query = query.where(Pipeline.project == name)
        with self.db.session() as s:
            return list(s.scalars(query).all())

    def project(self, name: str) -> Project:
        with self.db.session() as s:
            row = s.scalar(select(Project).where(Project.name == name))
        assert row is not None
        return row


@pytest.fixture
def env(tmp_path: Path, gitlab_fake: GitLabFake, kube_fake: KubeFake) -> Iterator[Env]:
    db = Database(f"sqlite:///{tmp_path / 'nakama.db'}")
    db.migrate()
    gitlab_settings = GitLabSettings(
        url=gitlab_fake.url,
        token=SecretStr(TOKEN),
        trigger_token=SecretStr(TRIGGER_TOKEN),
        max_attempts=2,
    )
    settings = Settings(
        mode="cluster",
        data_dir=tmp_path / "data",
        gitlab=gitlab_settings,
        harbor=HarborSettings(url="https://harbor.test", password=SecretStr("harbor-pw-123456")),
    )
    client = GitLabClient(gitlab_settings, sleep=lambda _s: None)
    # The receiver is down: every hook delivery fails.
    forge = GitLabForge(client, hook_base_url=f"http://127.0.0.1:{free_port()}")
    pipelines = GitLabPipelines(
        db=db, gitlab=client, forge=forge, kube=kube_fake.api_client(), settings=settings
    )
    yield Env(db, gitlab_fake, client, kube_fake, forge, pipelines, Builds())
    client.close()
    db.dispose()


def test_a_code_push_whose_hooks_failed_is_reloaded_by_one_step(env: Env) -> None:
    env.create("demo")
    env.builds.hashes.add(dependency_hash({"requirements.txt": REQUIREMENTS}))
    head = env.push("demo", {"app.py": b"print('changed')\n"})
    reconciler = env.reconciler()

    reconciler.step()

    [row] = env.rows()
    assert (row.kind, row.commit_sha, row.status) == ("reload", head, "success")
    assert row.reason == "reconcile: missed push; only code changed (1 file)"
    project = env.project("demo")
    assert project.deployed_commit == head
    assert (project.last_action, project.last_reason) == ("reload", row.reason)

    reconciler.step()  # caught up: nothing new
    assert len(env.rows()) == 1


def test_a_dependency_push_whose_hooks_failed_is_built_once(env: Env) -> None:
    env.create("demo")
    head = env.push("demo", {"requirements.txt": b"streamlit==1.41.0\n"})
    reconciler = env.reconciler()

    reconciler.step()

    [row] = env.rows()
    assert (row.kind, row.commit_sha, row.status) == ("build", head, "pending")
    assert row.reason == "reconcile: missed push; dependency files changed: requirements.txt"
    [triggered] = env.gitlab.triggered("nakama/pipelines")
    assert triggered.variables["NAKAMA_COMMIT"] == head
    assert row.external_id == str(triggered.id)

    reconciler.step()  # the build is under way: nothing new
    env.gitlab.set_pipeline_status(triggered.id, "failed")
    reconciler.step()  # it failed: the head is not retried
    assert [r.status for r in env.rows()] == ["failed"]
    assert len(env.gitlab.triggered("nakama/pipelines")) == 1


def test_a_new_head_waits_for_its_hook_before_it_is_caught_up(env: Env) -> None:
    env.create("demo")
    head = env.push("demo", {"requirements.txt": b"streamlit==1.41.0\n"})
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    reconciler = env.reconciler(catch_up_after=timedelta(seconds=60), now=lambda: now[0])

    reconciler.step()
    now[0] += timedelta(seconds=30)
    reconciler.step()
    assert env.rows() == []  # the hook may still be on its way
    now[0] += timedelta(seconds=31)
    reconciler.step()
    assert [(r.kind, r.commit_sha) for r in env.rows()] == [("build", head)]


def test_a_stuck_pipeline_is_failed_and_canceled_in_gitlab(env: Env) -> None:
    env.create("demo")
    env.push("demo", {"requirements.txt": b"streamlit==1.41.0\n"})
    reconciler = env.reconciler()
    reconciler.step()
    [row] = env.rows()
    [triggered] = env.gitlab.triggered("nakama/pipelines")
    env.gitlab.set_pipeline_status(triggered.id, "running")
    reconciler.step()
    assert env.rows()[0].status == "running"
    assert triggered.status == "running"

    past = datetime.now(UTC) - timedelta(hours=3)
    with env.db.session() as s:
        s.execute(update(Pipeline).values(created_at=past, started_at=past))
    reconciler.step()

    [row] = env.rows()
    assert row.status == "failed" and row.finished_at is not None
    assert row.error is not None and row.error.startswith("no status from GitLab for 2 h")
    assert env.gitlab.pipelines[triggered.id].status == "canceled"
    message = env.project("demo").status_message
    assert message is not None and "no status from GitLab for 2 h" in message
    reconciler.step()  # the failed head is not retried
    assert len(env.rows()) == 1


def test_a_disabled_hook_shows_in_the_status_message_until_it_delivers_again(env: Env) -> None:
    env.create("demo")
    reconciler = env.reconciler()
    reconciler.step()
    assert env.project("demo").status_message is None

    [hook, _] = env.gitlab.hooks("demo")
    hook.alert_status = "temporarily_disabled"
    hook.disabled_until = datetime.now(UTC) + timedelta(minutes=5)
    reconciler.step()
    message = env.project("demo").status_message
    assert message is not None
    assert message.startswith(
        "GitLab disabled the push hook /build-image/demo (temporarily_disabled"
    )
    assert message.endswith(f"pushes are caught up every {int(INTERVAL_S)} s by the reconciler")

    hook.alert_status, hook.disabled_until = "executable", None
    reconciler.step()
    assert env.project("demo").status_message is None


def test_one_projects_gitlab_errors_do_not_stop_anothers_catch_up(env: Env) -> None:
    env.create("alpha")
    env.create("beta")
    env.builds.hashes.add(dependency_hash({"requirements.txt": REQUIREMENTS}))
    alpha_head = env.push("alpha", {"app.py": b"print('a')\n"})
    beta_head = env.push("beta", {"app.py": b"print('b')\n"})
    alpha = env.gitlab.project("alpha")
    # alpha's branch read and hook list fail (2 attempts each): 500s on every try.
    env.gitlab.fail_next(500, count=4, path=f"/projects/{alpha.id}/")
    reconciler = env.reconciler()

    reconciler.step()

    assert [(r.project, r.commit_sha) for r in env.rows()] == [("beta", beta_head)]
    reconciler.step()  # GitLab answers again: alpha is caught up
    assert [(r.project, r.commit_sha) for r in env.rows()] == [
        ("beta", beta_head),
        ("alpha", alpha_head),
    ]


def test_the_head_a_rollback_replaced_is_no_missed_push(env: Env) -> None:
    start = env.create("demo")
    head = env.push("demo", {"requirements.txt": b"streamlit==1.41.0\n"})
    reconciler = env.reconciler()
    reconciler.step()  # the missed push: a build of the head
    [caught_up] = env.gitlab.triggered("nakama/pipelines")
    env.gitlab.set_pipeline_status(caught_up.id, "success")
    reconciler.step()
    assert env.project("demo").deployed_commit == head

    # A rollback to the first commit, as ProjectService.rollback submits it.
    env.pipelines.submit(
        PipelineRequest(
            project="demo",
            kind="build",
            commit=start,
            branch="main",
            reason=rollback_reason(1, start),
        )
    )
    [_, rollback] = env.gitlab.triggered("nakama/pipelines")
    assert rollback.variables["NAKAMA_COMMIT"] == start
    env.gitlab.set_pipeline_status(rollback.id, "success")
    reconciler.step()
    reconciler.step()
    assert env.project("demo").deployed_commit == start
    assert len(env.rows()) == 2  # the head stays rolled back
    assert (
        env.kube.deployment("demo")["spec"]["template"]["metadata"]["annotations"][
            COMMIT_ANNOTATION
        ]
        == start
    )

    # A later missed push is caught up, planned from what runs: the rolled-back commit, whose
    # dependencies differ from the push's, so a code-only change on top of the head is a BUILD.
    later = env.push("demo", {"app.py": b"print('later')\n"})
    reconciler.step()
    newest = env.rows()[-1]
    assert (newest.kind, newest.commit_sha) == ("build", later)
    assert newest.reason == "reconcile: missed push; dependency files changed: requirements.txt"
