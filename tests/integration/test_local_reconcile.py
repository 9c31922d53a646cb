"""Local mode's reconciler (backend.local.reconcile) against real bare repositories, a real
environment and SQLite or PostgreSQL, one step() at a time (review M8): a push whose hook never
arrived is caught up, at once at start-up and after catch_up_after_s on the timer; nothing
deployed, queued, rolled back or failed is deployed again; a late hook does not deploy twice;
Bob's broken repository does not stop Alice's catch-up."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select, update
from structlog.testing import capture_logs

from backend.local.forge import LocalForge
from backend.local.jobs import LocalPipelines
from backend.local.reconcile import LocalReconciler
from backend.local.registry import LocalRegistry
from backend.local.routes import Routes
from backend.local.runtime import LocalRuntime
from backend.local.supervisor import Supervisor
from image_builder.environments import build_environment
from nakama.db.session import Database
from nakama.db.tables import Pipeline, Project, WebhookEvent
from nakama.rollback import rollback_reason
from nakama.settings import Settings
from nakama.tagging import dependency_hash
from tests.conftest import load_reference
from webhook_receiver.processing import EventProcessor

ALICE, BOB = "alice-app", "bob-app"
WAIT_S = 30.0


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    db: Database
    forge: LocalForge
    registry: LocalRegistry
    pipelines: LocalPipelines
    settings: Settings
    root: Path
    clock: Clock = field(default_factory=Clock)

    def reconciler(self) -> LocalReconciler:
        return LocalReconciler(
            db=self.db,
            forge=self.forge,
            registry=self.registry,
            pipelines=self.pipelines,
            planning=self.settings.planning,
            catch_up_after_s=WAIT_S,
            clock=self.clock,
        )

    def create(self, name: str) -> str:
        """A running project deployed at its first commit, whose pushes reach no receiver."""
        first = self.forge.create_repository(
            name,
            files={"app.py": b"print(1)\n", "requirements.txt": b"\n"},
            branch="main",
            hook_token="t",
        )
        (self.forge.repo_path(name) / "hooks" / "post-receive").unlink()
        with self.db.session() as s:
            s.add(
                Project(
                    name=name,
                    status="running",
                    branch="main",
                    hook_token="t",
                    deployed_commit=first,
                )
            )
            s.add(self._pipeline(name, first, "success", "first deploy"))
        git(self.root, "clone", "-q", str(self.forge.repo_path(name)), str(self.work(name)))
        self.build_env_for(name, first)
        return first

    def work(self, name: str) -> Path:
        return self.root / "work" / name

    def push(self, name: str, files: dict[str, str]) -> str:
        """Commit and push ``files`` (no hook delivers it); the new head."""
        work = self.work(name)
        for path, content in files.items():
            (work / path).write_text(content)
        git(work, "add", "-A")
        git(work, "commit", "-qm", "change")
        git(work, "push", "-q", "origin", "HEAD:main")
        return git(work, "rev-parse", "HEAD")

    def _pipeline(self, name: str, commit: str, status: str, reason: str) -> Pipeline:
        return Pipeline(
            project=name,
            kind="reload",
            status=status,
            commit_sha=commit,
            branch="main",
            reason=reason,
        )

    def add_pipeline(self, name: str, commit: str, status: str, reason: str = "push") -> int:
        with self.db.session() as s:
            row = self._pipeline(name, commit, status, reason)
            s.add(row)
            s.flush()
            if status == "success":
                s.execute(
                    update(Project).where(Project.name == name).values(deployed_commit=commit)
                )
            return row.id

    def rows(self, name: str) -> list[Pipeline]:
        with self.db.session() as s:
            return list(
                s.scalars(select(Pipeline).where(Pipeline.project == name).order_by(Pipeline.id))
            )

    def build_env_for(self, name: str, commit: str) -> None:
        files = self.forge.read_files(name, commit, self.settings.planning.dependency_files)
        src = self.root / "src"
        src.mkdir(exist_ok=True)
        build_environment(
            envs_dir=self.registry.envs_dir,
            dep_hash=dependency_hash(files),
            tag="main-00000000-20260101000000",
            source_dir=src,
            settings=self.settings.builder,
            log=io.StringIO(),
        )


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def world(tmp_path: Path, database_url: str) -> Iterator[World]:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    settings.data_dir.mkdir()
    db = Database(settings.db_url)
    db.migrate()
    forge = LocalForge(repos_dir=tmp_path / "git", base_url="http://127.0.0.1:1")
    (tmp_path / "git").mkdir()
    (tmp_path / "work").mkdir()
    runtime = LocalRuntime(
        apps_dir=tmp_path / "apps",
        forge=forge,
        supervisor=Supervisor(settings=settings.runtime),
        settings=settings.runtime,
        routes=Routes(),
        address=lambda project: f"http://{project}.localhost:8000/",
    )
    # Never started: submitted pipelines stay pending rows, which is what is checked here.
    pipelines = LocalPipelines(db=db, forge=forge, runtime=runtime, settings=settings)
    registry = LocalRegistry(envs_dir=tmp_path / "envs")
    yield World(db, forge, registry, pipelines, settings, tmp_path)
    db.dispose()


def test_a_missed_code_push_is_reloaded_at_start_up_at_once(world: World) -> None:
    world.create(ALICE)
    world.create(BOB)
    head = world.push(ALICE, {"app.py": "print(2)\n"})
    [pipeline_id] = world.reconciler().step(wait=False)
    newest = world.rows(ALICE)[-1]
    assert (newest.id, newest.kind, newest.commit_sha, newest.status) == (
        pipeline_id,
        "reload",
        head,
        "pending",
    )
    assert newest.reason == "reconcile: missed push; only code changed (1 file)"
    assert len(world.rows(BOB)) == 1, "Bob's project had nothing to catch up"
    assert world.reconciler().step(wait=False) == [], "a queued head is not submitted again"


def test_on_the_timer_a_head_waits_catch_up_after_s_for_its_hook(world: World) -> None:
    world.create(ALICE)
    reconciler = world.reconciler()
    head = world.push(ALICE, {"requirements.txt": "six\n"})
    assert reconciler.step() == []
    world.clock.now += WAIT_S - 1
    assert reconciler.step() == []
    world.clock.now += 1
    [pipeline_id] = reconciler.step()
    newest = world.rows(ALICE)[-1]
    assert (newest.id, newest.kind, newest.commit_sha) == (pipeline_id, "build", head)
    assert "dependency files changed: requirements.txt" in newest.reason


def test_a_late_hook_after_the_catch_up_deploys_nothing_twice(world: World) -> None:
    first = world.create(ALICE)
    head = world.push(ALICE, {"app.py": "print(2)\n"})
    world.reconciler().step(wait=False)
    body = load_reference("push_hook.json")
    body.update(before=first, after=head, ref="refs/heads/main", checkout_sha=head)
    body["project"]["path_with_namespace"] = f"local/{ALICE}"
    with world.db.session() as s:
        for endpoint in ("build-image", "code-reload"):
            s.add(
                WebhookEvent(
                    endpoint=endpoint,
                    dedup_key=f"{endpoint}:{ALICE}:late",
                    event_kind="Push Hook",
                    project=ALICE,
                    body=json.dumps(body),
                )
            )
    EventProcessor(
        db=world.db,
        forge=world.forge,
        registry=world.registry,
        pipelines=world.pipelines,
        settings=world.settings.planning,
    ).process_pending()
    assert [p.commit_sha for p in world.rows(ALICE)] == [first, head]
    with world.db.session() as s:
        results = [e.result or "" for e in s.scalars(select(WebhookEvent))]
    assert any("is being deployed by pipeline" in r for r in results), results


@pytest.mark.parametrize("status", ["pending", "running", "failed", "success"])
def test_a_head_with_a_pipeline_of_its_own_is_left_alone(world: World, status: str) -> None:
    world.create(ALICE)
    head = world.push(ALICE, {"app.py": "print(2)\n"})
    world.add_pipeline(ALICE, head, status)
    assert world.reconciler().step(wait=False) == []
    assert len(world.rows(ALICE)) == 2


def test_a_stored_event_not_yet_processed_holds_the_catch_up(world: World) -> None:
    world.create(ALICE)
    world.push(ALICE, {"app.py": "print(2)\n"})
    with world.db.session() as s:
        s.add(
            WebhookEvent(
                endpoint="code-reload",
                dedup_key="code-reload:alice-app:k",
                event_kind="Push Hook",
                project=ALICE,
                body="{}",
            )
        )
    assert world.reconciler().step(wait=False) == []


def test_a_rollback_is_not_undone_and_a_push_after_it_counts_from_it(world: World) -> None:
    first = world.create(ALICE)
    second = world.push(ALICE, {"requirements.txt": "six\n"})
    second_id = world.add_pipeline(ALICE, second, "success")
    world.add_pipeline(ALICE, first, "success", rollback_reason(1, first))
    assert world.reconciler().step(wait=False) == [], "the replaced head is not redeployed"
    third = world.push(ALICE, {"app.py": "print(3)\n"})
    world.reconciler().step(wait=False)
    newest = world.rows(ALICE)[-1]
    assert newest.commit_sha == third and newest.id > second_id
    # Counted from the rolled-back commit that runs: requirements.txt differs from it.
    assert (newest.kind, newest.reason) == (
        "build",
        "reconcile: missed push; dependency files changed: requirements.txt",
    )


def test_bobs_broken_repository_does_not_hold_alices_catch_up(world: World) -> None:
    world.create(BOB)
    world.create(ALICE)
    shutil.rmtree(world.forge.repo_path(BOB))
    head = world.push(ALICE, {"app.py": "print(2)\n"})
    reconciler = world.reconciler()
    with capture_logs() as logs:
        assert len(reconciler.step(wait=False)) == 1
        assert world.rows(ALICE)[-1].commit_sha == head
        reconciler.step(wait=False)
    failures = [e for e in logs if e["event"] == "reconcile failed"]
    assert [e["project"] for e in failures] == [BOB], "an error is logged once while it lasts"
