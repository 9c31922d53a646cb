"""Event processing against a real bare repository: one plan per push, shared by both hooks;
the compare (not the payload's commit list) decides; stored events survive a restart."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from backend.local.forge import LocalForge
from backend.local.jobs import LocalPipelines
from backend.local.registry import LocalRegistry
from backend.local.routes import Routes
from backend.local.runtime import LocalRuntime
from backend.local.supervisor import Supervisor
from image_builder.environments import build_environment
from nakama.db.session import Database
from nakama.db.tables import Pipeline, Project, WebhookEvent
from nakama.planning import ZERO_SHA
from nakama.settings import Settings
from nakama.tagging import dependency_hash
from tests.conftest import load_reference
from tests.e2e.nakama_server import wait_for
from webhook_receiver.processing import EventProcessor

NAME = "demo"


@dataclass
class World:
    db: Database
    forge: LocalForge
    registry: LocalRegistry
    pipelines: LocalPipelines
    settings: Settings
    work: Path

    def processor(self) -> EventProcessor:
        return EventProcessor(
            db=self.db,
            forge=self.forge,
            registry=self.registry,
            pipelines=self.pipelines,
            settings=self.settings.planning,
        )

    def commit(self, files: dict[str, str], message: str = "change") -> str:
        for path, content in files.items():
            target = self.work / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-qm", message)
        return git(self.work, "rev-parse", "HEAD")

    def push(self, *, force: bool = False, ref: str = "main") -> None:
        git(self.work, "push", "-q", *(["-f"] if force else []), "origin", f"HEAD:{ref}")

    def store(
        self,
        endpoint: str,
        *,
        before: str,
        after: str,
        ref: str = "refs/heads/main",
        key: str | None = None,
        kind: str = "Push Hook",
    ) -> None:
        body = load_reference("push_hook.json")
        body.update(before=before, after=after, ref=ref, checkout_sha=after)
        body["project"]["path_with_namespace"] = f"local/{NAME}"
        if kind == "Tag Push Hook":
            body["object_kind"] = "tag_push"
        with self.db.session() as s:
            s.add(
                WebhookEvent(
                    endpoint=endpoint,
                    dedup_key=f"{endpoint}:{key or after + ref}",
                    event_kind=kind,
                    project=NAME,
                    body=json.dumps(body),
                )
            )

    def push_both(self, before: str, after: str, ref: str = "refs/heads/main") -> None:
        for endpoint in ("build-image", "code-reload"):
            self.store(endpoint, before=before, after=after, ref=ref)

    def push_change(self, files: dict[str, str]) -> tuple[str, str]:
        """Commit ``files``, push, and store both hooks' events; (before, after)."""
        before = git(self.work, "rev-parse", "HEAD")
        after = self.commit(files)
        self.push()
        self.push_both(before, after)
        return before, after

    def pipelines_rows(self) -> list[Pipeline]:
        with self.db.session() as s:
            return list(s.scalars(select(Pipeline).order_by(Pipeline.id)).all())

    def events(self) -> list[WebhookEvent]:
        with self.db.session() as s:
            return list(s.scalars(select(WebhookEvent).order_by(WebhookEvent.id)).all())

    def build_env_for(self, commit: str) -> None:
        files = self.forge.read_files(NAME, commit, self.settings.planning.dependency_files)
        src = self.work.parent / "src"
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
    db = Database(settings.db_url)
    settings.data_dir.mkdir()
    db.migrate()
    forge = LocalForge(repos_dir=tmp_path / "git", base_url="http://127.0.0.1:1")
    (tmp_path / "git").mkdir()
    first = forge.create_repository(
        NAME,
        files={"app.py": b"print(1)\n", "requirements.txt": b"\n"},
        branch="main",
        hook_token="t",
    )
    with db.session() as s:
        s.add(Project(name=NAME, status="running", branch="main", hook_token="t"))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(forge.repo_path(NAME)), str(work))
    # No pushes from the test clone may reach a server: drop the hook.
    (forge.repo_path(NAME) / "hooks" / "post-receive").unlink()
    registry = LocalRegistry(envs_dir=tmp_path / "envs")
    runtime = LocalRuntime(
        apps_dir=tmp_path / "apps",
        forge=forge,
        supervisor=Supervisor(settings=settings.runtime),
        settings=settings.runtime,
        routes=Routes(),
        address=lambda project: f"http://{project}.localhost:8000/",
    )
    pipelines = LocalPipelines(db=db, forge=forge, runtime=runtime, settings=settings)
    w = World(
        db=db, forge=forge, registry=registry, pipelines=pipelines, settings=settings, work=work
    )
    w.build_env_for(first)
    yield w
    db.dispose()


def test_code_only_push_reloads_once(world: World) -> None:
    _, after = world.push_change({"app.py": "print(2)\n"})
    world.processor().process_pending()
    [pipeline] = world.pipelines_rows()
    assert (pipeline.kind, pipeline.commit_sha) == ("reload", after)
    results = [e.result or "" for e in world.events()]
    assert "handled by the other hook" in results[0] and "reload pipeline" in results[1]


def test_dependency_push_builds_once_even_if_the_build_appears_in_between(world: World) -> None:
    before = git(world.work, "rev-parse", "HEAD")
    after = world.commit({"requirements.txt": "six\n"})
    world.push()
    world.store("build-image", before=before, after=after)
    world.processor().process_pending()
    # The build finishes before GitLab's second hook arrives: the shared plan still says BUILD.
    world.build_env_for(after)
    world.store("code-reload", before=before, after=after)
    world.processor().process_pending()
    assert [(p.kind, p.commit_sha) for p in world.pipelines_rows()] == [("build", after)]


def test_the_compare_decides_not_the_capped_commit_list(world: World) -> None:
    before = git(world.work, "rev-parse", "HEAD")
    world.commit({"requirements.txt": "six\n"}, "dependency change, 25 commits ago")
    for i in range(24):
        after = world.commit({"app.py": f"print({i})\n"})
    world.push()
    world.push_both(before, after)  # the payload's 'commits' name only app.py changes
    world.processor().process_pending()
    [pipeline] = world.pipelines_rows()
    assert pipeline.kind == "build" and "requirements.txt" in pipeline.reason


def test_force_push_deploys_the_new_head(world: World) -> None:
    base = git(world.work, "rev-parse", "HEAD")
    old = world.commit({"app.py": "print('old')\n"})
    world.push()
    git(world.work, "reset", "-q", "--hard", base)
    new = world.commit({"app.py": "print('new')\n"})
    world.push(force=True)
    world.push_both(old, new)
    world.processor().process_pending()
    [pipeline] = world.pipelines_rows()
    assert (pipeline.kind, pipeline.commit_sha) == ("reload", new)


@pytest.mark.parametrize(
    ("ref", "before", "after", "kind", "words"),
    [
        ("refs/heads/feature", "a" * 40, "b" * 40, "Push Hook", "not the deploy branch"),
        ("refs/tags/v1", ZERO_SHA, "b" * 40, "Tag Push Hook", "tag push"),
        ("refs/heads/main", "a" * 40, ZERO_SHA, "Push Hook", "deleted"),
    ],
)
def test_ignored_pushes(
    world: World, ref: str, before: str, after: str, kind: str, words: str
) -> None:
    world.store("code-reload", before=before, after=after, ref=ref, kind=kind)
    world.processor().process_pending()
    [event] = world.events()
    assert event.status == "ignored" and words in (event.result or "")
    assert world.pipelines_rows() == []


def test_events_stored_before_a_restart_are_processed_after_it(world: World) -> None:
    world.push_change({"app.py": "print(3)\n"})
    assert {e.status for e in world.events()} == {"pending"}
    processor = world.processor()  # a new process: nothing in memory
    processor.start()
    try:
        wait_for(
            lambda: {e.status for e in world.events()} == {"done"},
            timeout=30,
            what="stored events to be processed",
        )
    finally:
        processor.stop()
    assert [p.kind for p in world.pipelines_rows()] == ["reload"]


def test_events_of_a_project_being_deleted_are_ignored(world: World) -> None:
    with world.db.session() as s:
        row = s.scalar(select(Project).where(Project.name == NAME))
        assert row is not None
        row.status = "deleting"
    world.push_both("a" * 40, "b" * 40)
    world.processor().process_pending()
    assert {e.status for e in world.events()} == {"ignored"}


def test_a_late_hook_for_a_commit_already_under_way_starts_nothing(world: World) -> None:
    before, after = world.push_change({"app.py": "print(4)\n"})
    world.processor().process_pending()
    assert [p.commit_sha for p in world.pipelines_rows()] == [after]
    # The same push again, under new delivery ids (e.g. after a catch-up by the reconciler).
    for endpoint in ("build-image", "code-reload"):
        world.store(endpoint, before=before, after=after, key=f"late-{endpoint}")
    world.processor().process_pending()
    assert [p.commit_sha for p in world.pipelines_rows()] == [after]
    assert "is being deployed by pipeline" in (world.events()[-1].result or "")
