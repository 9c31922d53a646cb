"""The installed ``nakama`` CLI run as two users, alice and bob, that the admin made on a real
``nakama up``: each with their own config directory and token."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from tests.e2e.nakama_server import ADMIN_TOKEN, TINY_APP, NakamaProcess, write_tiny_kit
from tests.e2e.test_cli import NAKAMA, cli_env


class Run(Protocol):
    """``nakama ARGS`` as one user: stdin from ``input`` (None: none at all), more env vars."""

    def __call__(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]: ...


def runner(server: NakamaProcess, config_dir: Path, token: str) -> Run:
    base = cli_env(config_dir, NAKAMA_URL=server.url, NAKAMA_TOKEN=token)

    def run(
        *args: str, input: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [NAKAMA, *args],
            env={**base, **(env or {})},
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )

    run.env = base  # type: ignore[attr-defined]
    return run


def make_users(
    server: NakamaProcess, tmp_path_factory: pytest.TempPathFactory, *names: str
) -> dict[str, Run]:
    """``admin`` and a CLI for each user of ``names``, made with `nakama users create`."""
    admin = runner(server, tmp_path_factory.mktemp("admin-cfg"), ADMIN_TOKEN)
    made = {"admin": admin}
    for username in names:
        out = admin("users", "create", username, "--json")
        assert out.returncode == 0, out.stderr
        token = json.loads(out.stdout)["token"]
        made[username] = runner(server, tmp_path_factory.mktemp(f"{username}-cfg"), token)
    return made


def serve_tiny_kit(root: Path, uv_cache: Path, *, app: str = TINY_APP) -> Iterator[NakamaProcess]:
    """A module's ``nakama up`` in ``root`` whose starter kit is ``app``, to ``yield from`` in
    a fixture; its apps are stopped afterwards."""
    kit = write_tiny_kit(root / "kit", app=app)
    nakama = NakamaProcess(data_dir=root / "data", starter_kit=kit, uv_cache=uv_cache)
    nakama.start()
    yield nakama
    nakama.close()
    nakama.kill_apps()


def tiny_server(root: Path, uv_cache: Path, extra_env: dict[str, str]) -> Iterator[NakamaProcess]:
    """A module's ``nakama up`` of the tiny kit with ``extra_env``, to ``yield from``."""
    nakama = NakamaProcess(
        data_dir=root / "data",
        starter_kit=write_tiny_kit(root / "kit"),
        uv_cache=uv_cache,
        extra_env=extra_env,
    )
    nakama.start()
    yield nakama
    nakama.close()
    nakama.kill_apps()


def alice_and_bob_with_a_project(
    server: NakamaProcess, tmp_path_factory: pytest.TempPathFactory, project: str
) -> dict[str, Run]:
    """alice and bob (and the admin), alice owning the new project ``project``."""
    made = make_users(server, tmp_path_factory, "alice", "bob")
    out = made["alice"]("projects", "create", project, "--json")
    assert out.returncode == 0, out.stderr
    return made
