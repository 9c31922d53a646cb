"""Bounded reads against real git, real files and real processes (review findings M1, M2): a
huge dependency file is never loaded, a push has a size limit, a build printing without end
neither fills the disk nor memory, and one project's hanging forge call holds only its own
events, never another user's."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from backend.local.forge import LocalForge, size_problem
from backend.local.jobs import LocalPipelines
from backend.local.pipeline_log import open_pipeline_log
from backend.local.registry import LocalRegistry
from backend.local.routes import Routes
from backend.local.runtime import LocalRuntime
from backend.local.supervisor import Supervisor
from image_builder.process import run_step
from nakama.db.session import Database
from nakama.db.tables import Project, WebhookEvent
from nakama.settings import DEFAULT_DEPENDENCY_FILES, Settings
from nakama.tagging import dependency_hash
from tests.conftest import load_reference
from tests.e2e.nakama_server import wait_for
from webhook_receiver.processing import EventProcessor

MiB = 1024 * 1024


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, check=check, capture_output=True, text=True)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture
def forge(tmp_path: Path) -> LocalForge:
    return LocalForge(
        repos_dir=tmp_path / "repos",
        base_url="http://127.0.0.1:1/",
        max_file_bytes=MiB,
        max_push_bytes=4 * MiB,
    )


def new_repo(forge: LocalForge, name: str, tmp_path: Path) -> Path:
    """A repository and a clone of it (its hook dropped: no server is listening)."""
    forge.create_repository(
        name, files={"app.py": b"print(1)\n", "requirements.txt": b"six\n"}, branch="main",
        hook_token="t" * 20,
    )  # fmt: skip
    (forge.repo_path(name) / "hooks" / "post-receive").unlink()
    work = tmp_path / f"work-{name}"
    git(tmp_path, "clone", "-q", str(forge.repo_path(name)), str(work))
    git(work, "config", "user.name", "bob")
    git(work, "config", "user.email", "bob@example.com")
    return work


def commit(work: Path, message: str) -> str:
    git(work, "add", "-A")
    git(work, "commit", "-qm", message)
    return git(work, "rev-parse", "HEAD").stdout.strip()


# --- dependency files ------------------------------------------------------------------------
def test_a_huge_dependency_file_is_never_loaded_but_still_changes_the_hash(
    forge: LocalForge, tmp_path: Path
) -> None:
    work = new_repo(forge, "bob-app", tmp_path)
    data = work / "requirements-data.txt"
    with data.open("wb") as f:  # 200 MiB of zeros: 200 KiB packed
        f.truncate(200 * MiB)
    first = commit(work, "data named like a requirements file")
    assert git(work, "push", "-q", "origin", "HEAD:main", check=False).returncode == 0

    before = peak_rss_mib()
    files = forge.read_files("bob-app", first, DEFAULT_DEPENDENCY_FILES)
    grown = peak_rss_mib() - before
    print(f"\nread_files of a 200 MiB dependency file: peak RSS +{grown:.0f} MiB")
    assert grown < 50, "the file was loaded"
    assert files["requirements.txt"] == b"six\n"  # a normal file is read as it is
    stand_in = files["requirements-data.txt"]
    assert len(stand_in) < 200 and b"209715200 bytes" in stand_in

    # Changed (same size, one byte): the hash changes, so a build is planned for it.
    with data.open("r+b") as f:
        f.seek(100 * MiB)
        f.write(b"x")
    second = commit(work, "one byte more")
    assert git(work, "push", "-q", "origin", "HEAD:main", check=False).returncode == 0
    again = forge.read_files("bob-app", second, DEFAULT_DEPENDENCY_FILES)
    assert dependency_hash(again) != dependency_hash(files)

    # And the build says why it cannot use it: the file, its size, the limit, the setting.
    problem = size_problem(
        forge.files("bob-app", second, DEFAULT_DEPENDENCY_FILES), max_file_bytes=MiB
    )
    assert problem is not None
    for words in ("requirements-data.txt", "209715200 bytes", "200.0 MiB", "1048576"):
        assert words in problem
    assert "NAKAMA_PLANNING__MAX_DEPENDENCY_FILE_BYTES" in problem


def test_many_dependency_files_just_under_the_bound_do_not_add_up(tmp_path: Path) -> None:
    forge = LocalForge(repos_dir=tmp_path / "repos", base_url="http://127.0.0.1:1/")
    work = new_repo(forge, "bob-many", tmp_path)
    for i in range(20):  # 20 files of 1 MiB: more than 16 MiB together
        (work / f"requirements-{i:02}.txt").write_bytes(os.urandom(MiB // 2).hex().encode())
    sha = commit(work, "many")
    assert git(work, "push", "-q", "origin", "HEAD:main", check=False).returncode == 0
    files = forge.read_files("bob-many", sha, DEFAULT_DEPENDENCY_FILES)
    read = [p for p, content in files.items() if len(content) == MiB]
    assert len(read) == 16  # the rest stand in by their blob ids
    problem = size_problem(forge.files("bob-many", sha, ["requirements*"]), max_file_bytes=MiB)
    assert problem is not None and "16 times" in problem


# --- push size -------------------------------------------------------------------------------
def test_a_push_over_the_limit_is_refused_on_new_and_existing_repositories(
    forge: LocalForge, tmp_path: Path
) -> None:
    work = new_repo(forge, "alice-app", tmp_path)
    config = git(tmp_path, "--git-dir", str(forge.repo_path("alice-app")), "config", "--get",
                 "receive.maxInputSize").stdout.strip()  # fmt: skip
    assert config == str(4 * MiB)
    (work / "data.bin").write_bytes(os.urandom(6 * MiB))  # random: packs to 6 MiB
    commit(work, "6 MiB of data")
    pushed = git(work, "push", "origin", "HEAD:main", check=False)
    assert pushed.returncode != 0
    assert "pack exceeds maximum allowed size" in pushed.stderr

    # A repository from before the limit gets it at start-up (once).
    git(tmp_path, "--git-dir", str(forge.repo_path("alice-app")), "config", "--unset",
        "receive.maxInputSize")  # fmt: skip
    assert git(work, "push", "-q", "origin", "HEAD:main", check=False).returncode == 0
    assert forge.apply_push_limit() == 1
    assert forge.apply_push_limit() == 0
    (work / "more.bin").write_bytes(os.urandom(6 * MiB))
    commit(work, "6 MiB more")
    assert git(work, "push", "-q", "origin", "HEAD:main", check=False).returncode != 0


# --- pipeline logs ---------------------------------------------------------------------------
def test_a_build_printing_without_end_fills_neither_the_disk_nor_memory(tmp_path: Path) -> None:
    """200 MB on one line, then the end of the build: the log stops at its bound, says so and
    names the setting, keeps the last lines; the reading costs a line of 64 KiB at most."""
    path = tmp_path / "7.log"
    script = (
        "import sys\n"
        "for _ in range(200): sys.stdout.write('x' * 1000000)\n"
        "print()\nprint('error: the real reason the build failed')\n"
    )
    before = peak_rss_mib()
    with open_pipeline_log(path, max_bytes=MiB) as out:
        out.write("pipeline 7: build of 0123456789ab on main\n")
        result = run_step([sys.executable, "-c", script], out=out, deadline=time.monotonic() + 60)
        out.write("pipeline failed: uv pip install failed (1)\n")
    grown = peak_rss_mib() - before
    size = path.stat().st_size
    print(f"\n200 MB of build output: log {size} bytes, peak RSS +{grown:.0f} MiB")
    assert result.returncode == 0
    assert size <= MiB
    assert grown < 60, "a line was read whole"
    text = path.read_text()
    assert text.startswith("pipeline 7: build")
    assert "log truncated" in text and "NAKAMA_LOGS__PIPELINE_LOG_MAX_BYTES" in text
    assert text.endswith(
        "error: the real reason the build failed\npipeline failed: uv pip install failed (1)\n"
    )
    assert sum(len(line) for line in result.tail) < 64 * 1024


# --- the event processor ---------------------------------------------------------------------
class Hang:
    """Makes every git command on a repository block, as a slow disk or a huge repository
    would: its ``objects/info/alternates`` is a FIFO that git opens and waits on."""

    def __init__(self, git_dir: Path) -> None:
        self.path = git_dir / "objects" / "info" / "alternates"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(self.path)

    def release(self) -> None:
        writer = None
        deadline = time.monotonic() + 5
        while writer is None and time.monotonic() < deadline:
            try:  # wakes the git that waits in open()
                writer = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.05)
        empty = self.path.with_name("alternates.new")
        empty.write_text("")
        os.replace(empty, self.path)
        if writer is not None:
            os.close(writer)


def store_push(db: Database, project: str, work: Path, before: str, after: str) -> None:
    body = load_reference("push_hook.json")
    body.update(before=before, after=after, ref="refs/heads/main", checkout_sha=after)
    body["project"]["path_with_namespace"] = f"local/{project}"
    with db.session() as s:
        for endpoint in ("build-image", "code-reload"):
            s.add(
                WebhookEvent(
                    endpoint=endpoint,
                    dedup_key=f"{endpoint}:{project}:{after}",
                    event_kind="Push Hook",
                    project=project,
                    body=json.dumps(body),
                )
            )


@pytest.fixture
def two_users(tmp_path: Path, database_url: str) -> Iterator[tuple[Database, LocalForge, dict]]:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    settings.data_dir.mkdir()
    db = Database(settings.db_url)
    db.migrate()
    forge = LocalForge(repos_dir=tmp_path / "git", base_url="http://127.0.0.1:1")
    works = {}
    for name in ("bob-app", "alice-app"):
        works[name] = new_repo(forge, name, tmp_path)
        with db.session() as s:
            s.add(Project(name=name, status="running", branch="main", hook_token="t"))
    runtime = LocalRuntime(
        apps_dir=tmp_path / "apps",
        forge=forge,
        supervisor=Supervisor(settings=settings.runtime),
        settings=settings.runtime,
        routes=Routes(),
        address=lambda project: f"http://{project}.localhost:8000/",
    )
    pipelines = LocalPipelines(db=db, forge=forge, runtime=runtime, settings=settings)
    processor = EventProcessor(
        db=db,
        forge=forge,
        registry=LocalRegistry(envs_dir=tmp_path / "envs"),
        pipelines=pipelines,
        settings=settings.planning,
    )
    yield db, forge, {"works": works, "processor": processor}
    processor.stop()
    db.dispose()


def statuses(db: Database, project: str) -> set[str]:
    with db.session() as s:
        return set(
            s.scalars(select(WebhookEvent.status).where(WebhookEvent.project == project)).all()
        )


def test_a_project_whose_forge_calls_hang_holds_only_its_own_events(
    two_users: tuple[Database, LocalForge, dict],
) -> None:
    db, forge, parts = two_users
    works, processor = parts["works"], parts["processor"]
    pushed = {}
    for name, work in works.items():  # bob's push is stored first
        before = git(work, "rev-parse", "HEAD").stdout.strip()
        (work / "app.py").write_text(f"print('{name} 2')\n")
        after = commit(work, "code only")
        assert git(work, "push", "-q", "origin", "HEAD:main", check=False).returncode == 0
        pushed[name] = (before, after)
    hang = Hang(forge.repo_path("bob-app"))
    for name, (before, after) in pushed.items():
        store_push(db, name, works[name], before, after)
    processor.start()
    try:
        started = time.monotonic()
        wait_for(lambda: statuses(db, "alice-app") == {"done"}, timeout=20, what="alice's push")
        took = time.monotonic() - started
        print(f"\nalice's push planned {took:.2f}s after the start, bob's forge hanging")
        assert took < 5
        assert statuses(db, "bob-app") == {"pending"}
    finally:
        hang.release()
    wait_for(lambda: statuses(db, "bob-app") == {"done"}, timeout=20, what="bob's push")
