"""Per-user quotas against a real Nakama app (backend.app's factory, local mode, real git, uv
builds and app processes) on SQLite and PostgreSQL (review finding M4: bob's projects took the
whole port range and alice got "no free app port").

bob hits each quota and gets a 409 (or a pipeline's status) naming the quota, what he holds and
the setting; alice, under the same quotas, is not affected; the admin is not bounded. A create
that fails for a real reason leaves its name free."""

from __future__ import annotations

import concurrent.futures
import random
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.app import Platform, build_platform, create_app
from nakama.errors import QuotaExceeded
from nakama.settings import (
    BuilderSettings,
    QuotaSettings,
    RetentionSettings,
    RuntimeSettings,
    Settings,
)
from tests.e2e.nakama_server import set_version, wait_for, write_tiny_kit
from tests.support import free_port, serve

FINISHED = {"success", "failed", "canceled", "superseded"}
ADMIN_TOKEN = "nkm_quota_test_admin_token_0123456789abcdef"


@dataclass
class World:
    """A served platform and an API client per user (``admin``, and those made)."""

    platform: Platform
    url: str
    root: Path
    apis: dict[str, httpx.Client] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def user(self, name: str) -> httpx.Client:
        r = self.apis["admin"].post("/api/v1/users", json={"username": name})
        assert r.status_code == 201, r.text
        self.tokens[name] = r.json()["token"]
        self.apis[name] = client(self.url, self.tokens[name])
        return self.apis[name]

    def create(self, who: str, name: str) -> httpx.Response:
        return self.apis[who].post("/api/v1/projects", json={"name": name})

    def project(self, name: str) -> dict[str, Any]:
        r = self.apis["admin"].get(f"/api/v1/projects/{name}")
        r.raise_for_status()
        return dict(r.json())

    def pipelines(self, name: str) -> list[dict[str, Any]]:
        r = self.apis["admin"].get(f"/api/v1/projects/{name}/pipelines")
        r.raise_for_status()
        return list(r.json())

    def settle(
        self, name: str, *, commit: str | None = None, timeout: float = 120
    ) -> dict[str, Any]:
        """The project once no pipeline of it is pending or running (and, with ``commit``, one
        of that commit was made: a push's hook is handled after the push returns)."""

        def done() -> bool:
            ps = self.pipelines(name)
            if commit is not None and all(p["commit"] != commit for p in ps):
                return False
            return bool(ps) and all(p["status"] in FINISHED for p in ps)

        wait_for(done, timeout=timeout, interval=0.1, what=f"{name}'s pipelines to finish")
        return self.project(name)

    def push(self, who: str, name: str, *, version: str, requirements: str | None = None) -> str:
        """Clone ``name`` as ``who``, change the app (and requirements.txt), push; the commit."""
        work = self.root / f"work-{name}-{random.randrange(10**9)}"
        url = f"{self.url}/git/{name}.git".replace("http://", f"http://{who}:{self.tokens[who]}@")
        git("clone", "-q", url, str(work), cwd=self.root)
        set_version(work, version)
        if requirements is not None:
            (work / "requirements.txt").write_text(requirements)
        git("commit", "-qam", version, cwd=work)
        git("push", "-q", "origin", "HEAD:main", cwd=work)
        return git("rev-parse", "HEAD", cwd=work)


def git(*args: str, cwd: Path) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"git {' '.join(args)} failed: {out.stderr}"
    return out.stdout.strip()


def client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"})


def local_settings(
    root: Path,
    database_url: str,
    *,
    quotas: QuotaSettings | None = None,
    retention: RetentionSettings | None = None,
) -> Settings:
    """Local mode on a free port, apps on a port range of their own, without the sandbox (the
    quotas do not depend on it; the sandbox has its own tests)."""
    start = random.randrange(20000, 40000, 100)
    return Settings(
        data_dir=root / "data",
        database_url=database_url,
        port=free_port(),
        admin_token=ADMIN_TOKEN,
        starter_kit_dir=write_tiny_kit(root / "kit"),
        runtime=RuntimeSettings(
            sandbox="off", port_range_start=start, port_range_end=start + 99, stop_timeout_s=2
        ),
        builder=BuilderSettings(uv_cache_dir=root / "uv-cache"),
        quotas=quotas or QuotaSettings(),
        retention=retention or RetentionSettings(),
    )


@contextmanager
def served(settings: Settings, root: Path) -> Iterator[World]:
    platform = build_platform(settings)
    platform.bootstrap_admin()
    with serve(create_app(platform), port=settings.port) as url:
        world = World(platform=platform, url=url, root=root)
        world.apis["admin"] = client(url, ADMIN_TOKEN)
        world.tokens["admin"] = ADMIN_TOKEN
        try:
            yield world
        finally:
            for api in world.apis.values():
                api.close()


def quota_message(quota: str, setting: str, *, who: str = "bob") -> str:
    return f"{who} {quota}, the most one user may (NAKAMA_QUOTAS__{setting})"


# --- projects per user ------------------------------------------------------------------------
def test_projects_per_user(database_url: str, tmp_path: Path) -> None:
    settings = local_settings(tmp_path, database_url, quotas=QuotaSettings(projects_per_user=2))
    with served(settings, tmp_path) as world:
        world.user("bob"), world.user("alice"), world.user("carol")
        assert world.create("bob", "bob-1").status_code == 201
        assert world.create("bob", "bob-2").status_code == 201
        refused = world.create("bob", "bob-3")
        assert refused.status_code == 409, refused.text
        assert refused.json()["detail"] == (
            "project not created: "
            + quota_message("owns 2 projects", "PROJECTS_PER_USER=2")
            + "; delete one first"
        )
        assert world.apis["admin"].get("/api/v1/projects/bob-3").status_code == 404
        # alice has her own two; the admin is not bounded.
        for name in ("alice-1", "alice-2"):
            assert world.create("alice", name).status_code == 201
        for name in ("admin-1", "admin-2", "admin-3"):
            assert world.create("admin", name).status_code == 201
        # Concurrent creates by one user cannot get past the quota together.
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda i: world.create("carol", f"carol-{i}"), range(6)))
        assert sorted(a.status_code for a in answers) == [201, 201, 409, 409, 409, 409]
        # A deleted project frees its place.
        world.settle("bob-1")
        assert world.apis["bob"].delete("/api/v1/projects/bob-1").status_code in (202, 204)
        wait_for(
            lambda: world.create("bob", "bob-3").status_code == 201,
            timeout=30,
            interval=0.2,
            what="bob's place to be free",
        )
        for name in ("bob-2", "bob-3", "alice-1", "alice-2", "admin-1", "admin-2", "admin-3"):
            world.settle(name)


# --- a failed create --------------------------------------------------------------------------
def test_a_failed_create_frees_its_name(database_url: str, tmp_path: Path) -> None:
    """A repository left in the data dir (by hand, or by an older Nakama) makes bob's create
    fail; the failed create leaves no row holding the name (before: a "failed" project, and the
    retry got "already exists"), and the repository that was there is not touched."""
    settings = local_settings(tmp_path, database_url)
    with served(settings, tmp_path) as world:
        world.user("bob")
        stray = settings.data_dir / "git" / "bob-app.git"
        stray.mkdir(parents=True)
        (stray / "keep-me").write_text("not Nakama's\n")
        failed = world.create("bob", "bob-app")
        assert failed.status_code == 409, failed.text
        assert "a repository for project 'bob-app' already exists" in failed.json()["detail"]
        assert world.apis["bob"].get("/api/v1/projects/bob-app").status_code == 404
        assert world.apis["bob"].get("/api/v1/projects").json() == []
        assert (stray / "keep-me").read_text() == "not Nakama's\n"
        # The operator moves it away; the retry makes the project.
        stray.rename(tmp_path / "moved.git")
        retried = world.create("bob", "bob-app")
        assert retried.status_code == 201, retried.text
        assert world.settle("bob-app")["status"] == "running"


# --- running apps per user --------------------------------------------------------------------
def test_running_apps_per_user(database_url: str, tmp_path: Path) -> None:
    settings = local_settings(tmp_path, database_url, quotas=QuotaSettings(running_apps_per_user=1))
    with served(settings, tmp_path) as world:
        world.user("bob"), world.user("alice")
        runtime = world.platform.runtime
        assert world.create("bob", "bob-1").status_code == 201
        assert world.settle("bob-1")["app_state"] == "running"
        # bob's second app is built but not started: its status says why.
        assert world.create("bob", "bob-2").status_code == 201
        second = world.settle("bob-2")
        why = quota_message("runs 1 apps", "RUNNING_APPS_PER_USER=1")
        assert second["status"] == "failed"
        assert f"not started: {why}; stop or delete one of them" in second["status_message"]
        assert second["app_state"] == "stopped"
        assert why in second["app_detail"]
        # alice's app starts; so do the admin's.
        assert world.create("alice", "alice-1").status_code == 201
        assert world.settle("alice-1")["app_state"] == "running"
        for name in ("admin-1", "admin-2"):
            assert world.create("admin", name).status_code == 201
            assert world.settle(name)["app_state"] == "running"
        # An app asleep holds no port: bob's other one may run, then the first does not wake.
        assert runtime.sleep("bob-1")
        commit = world.push("bob", "bob-2", version="v2")
        assert world.settle("bob-2", commit=commit)["deployed_commit"] == commit
        assert world.project("bob-2")["app_state"] == "running"
        with pytest.raises(QuotaExceeded, match="RUNNING_APPS_PER_USER"):
            runtime.wake("bob-1")
        asleep = world.project("bob-1")
        assert asleep["app_state"] == "sleeping"
        assert why in asleep["app_detail"]
        # Once bob deletes his running one, the sleeping one wakes.
        assert world.apis["bob"].delete("/api/v1/projects/bob-2").status_code in (202, 204)
        wait_for(lambda: "bob-2" not in runtime.running_apps(), timeout=30, what="bob-2 gone")
        runtime.wake("bob-1")
        assert world.project("bob-1")["app_state"] == "running"


# --- environments and disk per user -----------------------------------------------------------
def test_environments_and_disk_per_user(database_url: str, tmp_path: Path) -> None:
    """Checked before a build: a push that needs a new environment is refused (the app keeps
    running what it ran) once bob's projects hold their quota of environments or of disk."""
    settings = local_settings(
        tmp_path,
        database_url,
        quotas=QuotaSettings(environments_per_user=2, disk_mib_per_user=8),
    )
    with served(settings, tmp_path) as world:
        world.user("bob"), world.user("alice")
        for who in ("bob", "alice", "admin"):
            assert world.create(who, f"{who}-1").status_code == 201
            assert world.settle(f"{who}-1")["status"] == "running"

        def push_new_deps(who: str, n: int) -> dict[str, Any]:
            commit = world.push(who, f"{who}-1", version=f"v{n}", requirements=f"# set {n}\n")
            project = world.settle(f"{who}-1", commit=commit)
            return {"commit": commit, **project}

        # Disk: bob's app data (written where the app writes it) puts him past 8 MiB.
        bob_data = world.platform.runtime.data_dir("bob-1")
        (bob_data / "big.bin").write_bytes(b"\1" * (9 * 2**20))
        refused = push_new_deps("bob", 2)
        assert refused["deployed_commit"] != refused["commit"]
        assert refused["status"] == "running"  # the old version still serves
        assert "not built: bob uses 9." in refused["status_message"]
        assert (
            "MiB of disk, the most one user may (NAKAMA_QUOTAS__DISK_MIB_PER_USER=8)"
            in (refused["status_message"])
        )
        (bob_data / "big.bin").unlink()
        # Environments: the starter kit's and one more; the third is refused.
        assert push_new_deps("bob", 3)["deployed_commit"] is not None
        refused = push_new_deps("bob", 4)
        assert refused["deployed_commit"] != refused["commit"]
        why = quota_message("holds 2 environments", "ENVIRONMENTS_PER_USER=2")
        assert f"not built: {why}" in refused["status_message"]
        # alice and the admin are not held back by bob; the admin by no quota at all.
        pushed = push_new_deps("alice", 2)
        assert pushed["deployed_commit"] == pushed["commit"]
        for n in (2, 3, 4):
            pushed = push_new_deps("admin", n)
            assert pushed["deployed_commit"] == pushed["commit"]
