"""Retention against a real Nakama app (backend.app's factory, local mode) on SQLite and
PostgreSQL: thousands of pushes, each delivered by the real post-receive hook to the real
receiver, planned, run or superseded by the job runner; a prune keeps rows, logs and environments
bounded, and every rollback target, the deployed pipeline and the other user's rows survive.
And a project's delete never removes an environment another project is about to deploy on
(review finding L6)."""

from __future__ import annotations

import itertools
import re
import subprocess
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select, text

from backend.local import post_receive
from backend.retention import hashes_needed_elsewhere
from image_builder.environments import find_environment, list_environments
from nakama.db.outcomes import record_pending
from nakama.db.session import Database
from nakama.db.tables import Pipeline, Project, PushPlan, WebhookEvent, utcnow
from nakama.ports import PipelineRequest
from nakama.settings import RetentionSettings
from tests.e2e.nakama_server import wait_for
from tests.integration.test_quotas import World, git, local_settings, served

PUSHES = 1500  # two deliveries each (build-image and code-reload): 3000 deliveries
RETENTION = RetentionSettings(
    events_per_project=200,
    push_plans_per_project=100,
    pipelines_per_project=50,
    rollback_window=5,
)


def make_commits(repo: Path, *, count: int, deps_at: dict[int, str]) -> list[str]:
    """``count`` commits on top of ``main`` in the bare ``repo``, each a new VERSION of the
    app, and at the indices of ``deps_at`` a new requirements.txt; their shas, oldest first.
    Written by git fast-import to a ref of their own: ``main`` moves as each is "pushed"."""
    head = git("rev-parse", "main", cwd=repo)
    app = git("show", "main:app.py", cwd=repo) + "\n"
    lines = []
    for i in range(1, count + 1):
        body = re.sub(r'VERSION = "[^"]*"', f'VERSION = "p{i}"', app).encode()
        lines.append(b"commit refs/test/all\n")
        lines.append(f"mark :{i}\n".encode())
        lines.append(f"committer Test <t@example.com> {1700000000 + i} +0000\n".encode())
        message = f"push {i}"
        lines.append(f"data {len(message)}\n{message}\n".encode())
        lines.append((f"from {head}\n" if i == 1 else f"from :{i - 1}\n").encode())
        lines.append(f"M 100644 inline app.py\ndata {len(body)}\n".encode() + body + b"\n")
        if i in deps_at:
            req = deps_at[i].encode()
            lines.append(
                f"M 100644 inline requirements.txt\ndata {len(req)}\n".encode() + req + b"\n"
            )
    subprocess.run(
        ["git", "fast-import", "--quiet"],
        input=b"".join(lines),
        cwd=repo,
        check=True,
        capture_output=True,
    )
    shas = git("rev-list", "--reverse", f"{head}..refs/test/all", cwd=repo).split()
    assert len(shas) == count
    return shas


def push_one(repo: Path, before: str, after: str) -> None:
    """What a push does: move ``main``, then the post-receive hook delivers to both hooks."""
    git("update-ref", "refs/heads/main", after, before, cwd=repo)
    lines = post_receive.handle(repo, [f"{before} {after} refs/heads/main"])
    assert all("NOT delivered" not in line for line in lines), lines


def counts(db: Database, project: str) -> dict[str, int]:
    with db.session() as s:
        return {
            table.__tablename__: int(
                s.scalar(select(func.count()).select_from(table).where(table.project == project))
                or 0
            )
            for table in (WebhookEvent, PushPlan, Pipeline)
        }


def pending_events(db: Database) -> int:
    with db.session() as s:
        pending = WebhookEvent.status == "pending"
        return int(s.scalar(select(func.count()).select_from(WebhookEvent).where(pending)) or 0)


def db_bytes(db: Database) -> int:
    """Bytes the database's live data takes: SQLite's used pages; PostgreSQL's row sizes."""
    with db.transaction() as conn:
        if db.engine.dialect.name == "sqlite":
            pages = conn.execute(text("PRAGMA page_count")).scalar_one()
            free = conn.execute(text("PRAGMA freelist_count")).scalar_one()
            size = conn.execute(text("PRAGMA page_size")).scalar_one()
            return int((pages - free) * size)
        return sum(
            int(
                conn.execute(
                    text(f"SELECT coalesce(sum(pg_column_size(t.*)), 0) FROM {t} t")  # noqa: S608
                ).scalar_one()
            )
            for t in ("webhook_events", "push_plans", "pipelines")
        )


def log_files(world: World, project: str) -> int:
    logs = world.platform.settings.data_dir / "logs" / "pipelines" / project
    return len(list(logs.glob("*.log*"))) if logs.is_dir() else 0


def targets(world: World, project: str) -> list[int]:
    r = world.apis["admin"].get(f"/api/v1/projects/{project}/rollback-targets")
    r.raise_for_status()
    return [int(p["id"]) for p in r.json()]


def test_thousands_of_pushes_stay_bounded(database_url: str, tmp_path: Path) -> None:
    settings = local_settings(tmp_path, database_url, retention=RETENTION)
    with served(settings, tmp_path) as world:
        db = world.platform.db
        world.user("bob"), world.user("alice")
        for who in ("alice", "bob"):
            assert world.create(who, f"{who}-app").status_code == 201
            world.settle(f"{who}-app")
        for n in (2, 3):  # alice has two versions to roll back to
            commit = world.push("alice", "alice-app", version=f"a{n}")
            world.settle("alice-app", commit=commit)
        alice_before = counts(db, "alice-app"), targets(world, "alice-app")

        repo = settings.data_dir / "git" / "bob-app.git"
        shas = make_commits(repo, count=PUSHES, deps_at={10: "# deps one\n", 20: "# deps two\n"})
        chain = [git("rev-parse", "main", cwd=repo), *shas]
        # Small batches first (so that the environments of both dependency changes are built),
        # then the rest in ten; each batch's newest push deploys.
        bounds = [0, 10, 20, *range(150, PUSHES + 1, 148)]
        bounds[-1] = PUSHES
        started = time.monotonic()
        for lo, hi in itertools.pairwise(bounds):
            for i in range(lo, hi):
                push_one(repo, chain[i], chain[i + 1])
            world.settle("bob-app", commit=chain[hi], timeout=300)
        seconds = time.monotonic() - started
        assert world.project("bob-app")["deployed_commit"] == chain[-1]
        wait_for(lambda: not pending_events(db), timeout=30, what="every event processed")

        before = counts(db, "bob-app")
        logs_before, size_before = log_files(world, "bob-app"), db_bytes(db)
        envs_dir = settings.data_dir / "envs"
        envs_before = len(list_environments(envs_dir))
        targets_before = targets(world, "bob-app")
        assert before["webhook_events"] == 2 * PUSHES and before["pipelines"] > 1000
        assert len(targets_before) >= RETENTION.rollback_window

        pruned = world.platform.retention.prune()
        after = counts(db, "bob-app")
        logs_after, size_after = log_files(world, "bob-app"), db_bytes(db)
        print(
            f"\n{db.engine.dialect.name}: {PUSHES} pushes ({2 * PUSHES} deliveries) in "
            f"{seconds:.1f} s; bob's rows before {before}, after {after}; pipeline logs "
            f"{logs_before} -> {logs_after}; database {size_before / 2**20:.2f} MiB -> "
            f"{size_after / 2**20:.2f} MiB; pruned {pruned}"
        )
        assert after["webhook_events"] == RETENTION.events_per_project
        assert after["push_plans"] == RETENTION.push_plans_per_project
        assert (
            RETENTION.pipelines_per_project
            <= after["pipelines"]
            <= (RETENTION.pipelines_per_project + RETENTION.rollback_window + 2)
        )
        assert logs_after <= after["pipelines"]
        assert size_after < size_before
        # What one rolls back to is kept, and so is what runs; alice's rows are untouched.
        assert (
            targets(world, "bob-app")[: RETENTION.rollback_window]
            == (targets_before[: RETENTION.rollback_window])
        )
        assert world.project("bob-app")["deployed_commit"] == chain[-1]
        assert (counts(db, "alice-app"), targets(world, "alice-app")) == alice_before

        # A month later: only what is needed is left; the environment of bob's first
        # dependency change (needed by nothing) goes, the starter kit's (alice runs on it) and
        # bob's current one stay.
        later = world.platform.retention.prune(now=utcnow() + timedelta(days=31))
        final = counts(db, "bob-app")
        print(f"a month later: bob's rows {final}; pruned {later}")
        assert final["webhook_events"] == final["push_plans"] == 0
        assert final["pipelines"] <= RETENTION.rollback_window + 3
        assert (
            targets(world, "bob-app")[: RETENTION.rollback_window]
            == (targets_before[: RETENTION.rollback_window])
        )
        assert later.environments == 1
        assert len(list_environments(envs_dir)) == envs_before - 1
        assert world.project("alice-app")["status"] == "running"
        assert len(targets(world, "alice-app")) == len(alice_before[1])
        # Both apps still answer after the prunes: a push to each deploys as usual.
        for who in ("alice", "bob"):
            commit = world.push(who, f"{who}-app", version="after-prune")
            assert world.settle(f"{who}-app", commit=commit)["deployed_commit"] == commit


# --- L6 ---------------------------------------------------------------------------------------
def env_hash(world: World, project: str) -> str:
    with world.platform.db.session() as s:
        seq = s.scalar(select(Project.deployed_seq).where(Project.name == project))
        dep_hash = s.scalar(select(Pipeline.dep_hash).where(Pipeline.id == seq))
    assert dep_hash
    return str(dep_hash)


def test_a_delete_keeps_the_environment_another_first_build_is_about_to_use(
    database_url: str, tmp_path: Path
) -> None:
    """alice's project is the only one that ran on the starter kit's environment; bob's new
    project's first build waits for a worker. Deleting alice's project must not remove the
    environment bob's build is about to deploy on (before: his pending row had no hash yet, so
    the environment counted as alice's alone and went)."""
    settings = local_settings(tmp_path, database_url)
    with served(settings, tmp_path) as world:
        world.user("bob"), world.user("alice")
        assert world.create("alice", "alice-app").status_code == 201
        world.settle("alice-app")
        starter = env_hash(world, "alice-app")
        envs_dir = settings.data_dir / "envs"
        world.platform.pipelines.stop()  # bob's build waits, as behind a busy worker
        assert world.create("bob", "bob-app").status_code == 201
        assert world.apis["alice"].delete("/api/v1/projects/alice-app").status_code == 202
        deadline = time.monotonic() + 30
        while world.apis["admin"].get("/api/v1/projects/alice-app").status_code != 404:
            assert time.monotonic() < deadline, "alice's project was not deleted"
            time.sleep(0.1)
        assert find_environment(envs_dir, starter) is not None
        with world.platform.db.session() as s:
            row = s.scalar(select(Pipeline).where(Pipeline.project == "bob-app"))
            assert row is not None and row.status == "pending" and row.dep_hash == starter


def test_a_pending_pipeline_of_unknown_hash_keeps_every_shared_environment(
    database_url: str,
) -> None:
    """The delete rule on the real database: another project's rows keep their hashes; a
    pending pipeline of another project without a hash yet (a restore's "environment missing
    at start", or a row from before hashes were recorded at submit) keeps them all."""
    db = Database(database_url)
    db.migrate()
    try:
        with db.session() as s:
            for name in ("alice-app", "bob-app", "carol-app"):
                s.add(Project(name=name, status="running", branch="main", hook_token="t"))

        def pending(project: str, dep_hash: str | None) -> int:
            request = PipelineRequest(
                project=project, kind="build", commit="a" * 40, branch="main", reason="test"
            )
            return record_pending(db, request, dep_hash=dep_hash)

        pending("alice-app", "aaaa")
        pending("bob-app", "bbbb")
        with db.session() as s:
            assert hashes_needed_elsewhere(s, "alice-app") == {"bbbb"}
        carol = pending("carol-app", None)
        with db.session() as s:
            assert hashes_needed_elsewhere(s, "alice-app") is None
            assert hashes_needed_elsewhere(s, "carol-app") == {"aaaa", "bbbb"}
            s.get(Pipeline, carol).status = "failed"  # type: ignore[union-attr]
        with db.session() as s:  # a finished row without a hash needs nothing
            assert hashes_needed_elsewhere(s, "alice-app") == {"bbbb"}
    finally:
        db.dispose()
