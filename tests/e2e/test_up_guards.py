"""What stops ``nakama up`` before it starts, against the real command: a wildcard address with
no public URL, a data dir another server uses, a busy port; and ``nakama --version``.

Each refusal comes before the data dir's state is touched: the other server's apps keep running
and serving, no app is started, nothing says "nakama is up"."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from tests.e2e.nakama_server import ADMIN_TOKEN, NakamaProcess, fetch_text, wait_for
from tests.support import free_port


def nakama_up(*args: str, data_dir: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``nakama up --data-dir data_dir *args`` run to its end: exit code and all it printed."""
    exe = shutil.which("nakama")
    assert exe, "the `nakama` console script is not installed"
    full_env = {k: v for k, v in os.environ.items() if k != "NAKAMA_PUBLIC_URL"}
    full_env.update({"NAKAMA_ADMIN_TOKEN": ADMIN_TOKEN, **(env or {})})
    done = subprocess.run(
        [exe, "up", "--data-dir", str(data_dir), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,  # a refusal comes within a second; a start that is not refused never ends
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def create(nakama: NakamaProcess, name: str) -> str:
    """A project made through the API, deployed; its app's URL."""
    assert nakama.api.post("/api/v1/projects", json={"name": name}).status_code == 201
    first = nakama.pipelines(name)[0]["commit"]
    url = str(nakama.wait_deployed(name, first)["app_url"])
    wait_for(lambda: fetch_text(url) == "v1", timeout=30, what="the app to answer")
    return url


def app_pid(nakama: NakamaProcess, name: str) -> int:
    return int((nakama.data_dir / "apps" / name / "app.pid").read_text())


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_version_prints_the_installed_package_version() -> None:
    exe = shutil.which("nakama")
    assert exe
    done = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (0, f"nakama {version('nakama')}\n"), done.stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])  # noqa: S104 - the addresses refused
def test_a_wildcard_host_without_a_public_url_refuses_to_start(tmp_path: Path, host: str) -> None:
    port = free_port()
    data = tmp_path / "data"
    code, out = nakama_up("--host", host, "--port", str(port), data_dir=data)
    assert code == 2, out
    assert "NAKAMA_PUBLIC_URL" in out
    # The suggestion is this machine's name with the port, never the wildcard itself.
    names = {socket.getfqdn(), socket.gethostname()} - {"localhost"}
    assert any(f"NAKAMA_PUBLIC_URL=http://{name}:{port}" in out for name in names), out
    assert f"http://{host}:" not in out and f"http://[{host}]" not in out
    assert "nakama is up" not in out
    assert not data.exists(), "refused before the data dir is made"
    with socket.socket() as probe:  # and it never listened
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_a_wildcard_host_with_a_public_url_hands_out_that_url(
    tmp_path: Path, tiny_kit: Path, uv_cache: Path
) -> None:
    port = free_port()
    # 127.0.0.2 is this machine too (all of 127/8 is loopback), and a URL no default would make.
    public = f"http://127.0.0.2:{port}"
    nakama = NakamaProcess(
        data_dir=tmp_path / "data",
        starter_kit=tiny_kit,
        uv_cache=uv_cache,
        port=port,
        extra_env={"NAKAMA_PUBLIC_URL": public},
        extra_args=["--host", "0.0.0.0"],  # noqa: S104 - what this test is about
    )
    try:
        nakama.start()
        printed = nakama.log()
        assert f"Nakama {public}  (API docs: {public}/docs)" in printed
        assert f"web UI: {public}/" in printed
        assert "0.0.0.0" not in printed  # noqa: S104 - the address that must not be handed out
        created = nakama.api.post("/api/v1/projects", json={"name": "shared-one"})
        assert created.status_code == 201, created.text
        assert created.json()["clone_url"] == f"{public}/git/shared-one.git"
        hook = json.loads(
            (nakama.data_dir / "git" / "shared-one.git" / "nakama" / "hook.json").read_text()
        )
        assert hook["urls"] == [
            f"{public}/build-image/shared-one",
            f"{public}/code-reload/shared-one",
        ]
        assert httpx.get(f"{public}/healthz", timeout=5).status_code == 200
    finally:
        nakama.close()
        nakama.kill_apps()


def test_a_second_up_on_a_data_dir_in_use_refuses_and_leaves_the_first_alone(
    tmp_path: Path, tiny_kit: Path, uv_cache: Path
) -> None:
    first = NakamaProcess(data_dir=tmp_path / "data", starter_kit=tiny_kit, uv_cache=uv_cache)
    try:
        first.start()
        url = create(first, "keeper")
        pid = app_pid(first, "keeper")
        assert first.proc is not None
        other_port = free_port()
        code, out = nakama_up("--port", str(other_port), data_dir=first.data_dir)
        assert code == 5, out
        assert f"is in use by nakama process {first.proc.pid}, which serves {first.url}" in out
        assert "nakama is up" not in out and "admin token" not in out
        assert ADMIN_TOKEN not in out
        # The first server's app was not taken for a leftover: same process, still serving.
        assert app_pid(first, "keeper") == pid and alive(pid)
        assert fetch_text(url) == "v1"
        assert first.project("keeper")["status"] == "running"
        assert "left by an earlier run" not in first.log()
        with socket.socket() as probe:  # the refused one never listened
            assert probe.connect_ex(("127.0.0.1", other_port)) != 0
    finally:
        first.close()
        first.kill_apps()


def test_after_kill_9_a_busy_port_stops_the_start_and_a_free_one_restarts(
    tmp_path: Path, tiny_kit: Path, uv_cache: Path
) -> None:
    nakama = NakamaProcess(data_dir=tmp_path / "data", starter_kit=tiny_kit, uv_cache=uv_cache)
    try:
        nakama.start()
        url = create(nakama, "phoenix")
        old_pid = app_pid(nakama, "phoenix")
        assert nakama.proc is not None
        killed_pid, killed_url = nakama.proc.pid, nakama.url
        nakama.stop(signal.SIGKILL)
        wait_for(lambda: not alive(old_pid), timeout=30, what="the app to end with nakama")
        # The killed server's lock file is still there, naming it; the lock died with it.
        assert (
            nakama.data_dir / "nakama.lock"
        ).read_text() == f"pid {killed_pid}\nurl {killed_url}\n"
        with socket.socket() as squatter:
            # As a server restarted on the port would: its connections' TIME_WAIT is no obstacle.
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", nakama.port))
            squatter.listen()
            code, out = nakama_up("--port", str(nakama.port), data_dir=nakama.data_dir)
        assert code == 5, out
        assert f"port {nakama.port} on 127.0.0.1 is already in use" in out
        assert "--port" in out  # what to do
        assert "nakama is up" not in out and "Nakama http" not in out
        # No app was started for the failed start.
        assert app_pid(nakama, "phoenix") == old_pid
        nakama.start()  # same data dir, same port, free now
        wait_for(lambda: fetch_text(url) == "v1", timeout=60, what="the app to come back")
        assert app_pid(nakama, "phoenix") != old_pid
        assert nakama.project("phoenix")["status"] == "running"
    finally:
        nakama.close()
        nakama.kill_apps()


def test_a_busy_port_fails_before_anything_is_made(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        code, out = nakama_up("--port", str(port), data_dir=data)
    assert code == 5, out
    assert f"port {port} on 127.0.0.1 is already in use" in out
    assert "nakama is up" not in out and "admin token" not in out
    # Only the lock file: no database, no repositories, no admin token.
    assert sorted(p.name for p in data.iterdir()) == ["nakama.lock"]
