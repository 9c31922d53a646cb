"""The local-mode supervisor against real processes: a tiny HTTP app written by the test."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.local.applog import read_tail
from backend.local.supervisor import (
    AppSpec,
    AppState,
    Supervisor,
    allocate_port,
    next_backoff,
    port_is_free,
)
from nakama.errors import Conflict, PermanentError
from nakama.settings import RuntimeSettings

APP = r"""
import http.server, json, os, subprocess, sys, time

version, mode = sys.argv[1], sys.argv[2]
print(f"app {version} starting pid {os.getpid()}")
if mode == "exit":
    print("boom: cannot start", file=sys.stderr)
    sys.exit(3)
if mode == "sleep":
    time.sleep(3600)
if mode == "child":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    print(f"child pid {child.pid}")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"version": version, "pid": os.getpid(), "env": dict(os.environ)})
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

SETTINGS = RuntimeSettings(
    health_timeout_s=10.0, restart_backoff_initial_s=0.2, restart_backoff_max_s=1.0,
    stop_timeout_s=2.0,
)  # fmt: skip

SpecFactory = Callable[..., AppSpec]


@pytest.fixture
def supervisor() -> Iterator[Supervisor]:
    sup = Supervisor(settings=SETTINGS)
    yield sup
    sup.stop_all()


@pytest.fixture
def make_spec(tmp_path: Path) -> SpecFactory:
    (tmp_path / "app.py").write_text(APP)
    port = _free_port()

    def make(version: str = "v1", mode: str = "serve", **overrides: object) -> AppSpec:
        fields: dict[str, Any] = {
            "name": "demo", "cwd": tmp_path, "port": port, "env": {},
            "command": [sys.executable, "app.py", version, mode],
            "log_path": tmp_path / "logs" / "demo.log",
        }  # fmt: skip
        fields.update(overrides)
        return AppSpec(**fields)

    return make


def test_run_starts_a_healthy_app_and_logs_its_output(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    spec = make_spec("v1")
    supervisor.run(spec)

    state = supervisor.state("demo")
    assert (state.status, state.restarts, state.last_exit_code) == ("running", 0, None)
    answer = _get(spec.port)
    assert (answer["version"], answer["pid"]) == ("v1", state.pid)
    log = supervisor.log_tail("demo")
    assert f"--- started pid {state.pid} at " in log
    assert f"app v1 starting pid {state.pid}" in log
    assert log.index("--- started pid") < log.index("app v1 starting")


def test_run_again_replaces_the_old_process_quickly(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    supervisor.run(make_spec("v1"))
    old_pid = supervisor.state("demo").pid
    assert old_pid is not None

    started = time.perf_counter()
    supervisor.run(make_spec("v2"))
    elapsed = time.perf_counter() - started

    print(f"restart-to-healthy: {elapsed * 1000:.0f} ms")
    assert not _alive(old_pid)
    state = supervisor.state("demo")
    answer = _get(make_spec().port)
    assert (answer["version"], answer["pid"]) == ("v2", state.pid)
    assert (state.status, state.restarts) == ("running", 0)
    assert elapsed < 1.0  # typically 0.1-0.2 s; generous for loaded CI machines


def test_a_killed_app_is_restarted_by_the_monitor(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    spec = make_spec("v1")
    supervisor.run(spec)
    old_pid = supervisor.state("demo").pid
    assert old_pid is not None

    os.kill(old_pid, signal.SIGKILL)
    backoff = _wait_for(supervisor, "demo", lambda s: s.status == "backoff", within_s=2.0)
    assert (backoff.pid, backoff.last_exit_code) == (None, -signal.SIGKILL)
    state = _wait_for(supervisor, "demo", lambda s: s.status == "running", within_s=3.0)

    assert state.restarts == 1
    assert state.pid not in (None, old_pid)
    assert _get(spec.port)["pid"] == state.pid
    assert (state.since - backoff.since).total_seconds() >= SETTINGS.restart_backoff_initial_s


def test_an_app_that_exits_at_once_fails_run_with_its_log(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    with pytest.raises(PermanentError, match="exited with code 3") as caught:
        supervisor.run(make_spec("v1", "exit"))

    assert "boom: cannot start" in str(caught.value)
    assert "app v1 starting" in str(caught.value)
    time.sleep(SETTINGS.restart_backoff_initial_s * 2)
    state = supervisor.state("demo")
    assert (state.status, state.pid, state.restarts, state.last_exit_code) == (
        "crashed", None, 0, 3,
    )  # fmt: skip


def test_an_app_that_never_listens_fails_after_the_health_timeout(
    make_spec: SpecFactory,
) -> None:
    supervisor = Supervisor(settings=SETTINGS.model_copy(update={"health_timeout_s": 0.5}))
    started = time.perf_counter()
    try:
        with pytest.raises(PermanentError, match=r"did not answer HTTP within 0\.5 s") as caught:
            supervisor.run(make_spec("v1", "sleep"))
        elapsed = time.perf_counter() - started
        assert "app v1 starting" in str(caught.value)
        assert 0.5 <= elapsed < 2.0
        pid = int(str(caught.value).split("--- started pid ")[1].split()[0])
        assert not _alive(pid)
        assert supervisor.state("demo").status == "crashed"
    finally:
        supervisor.stop_all()


def test_stop_ends_the_process_group_and_nothing_restarts_it(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    spec = make_spec("v1", "child")
    supervisor.run(spec)
    pid = supervisor.state("demo").pid
    assert pid is not None
    child = int(read_tail(spec.log_path, lines=200).split("child pid ")[1].split()[0])
    assert _alive(child) and os.getpgid(child) == pid

    supervisor.stop("demo")
    supervisor.stop("demo")  # idempotent

    _eventually(lambda: not _group_members(pid), within_s=2.0)
    time.sleep(SETTINGS.restart_backoff_initial_s * 2)
    state = supervisor.state("demo")
    assert (state.status, state.pid, state.restarts) == ("stopped", None, 0)
    assert port_is_free(spec.port)


def test_stop_during_back_off_cancels_the_restart(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    supervisor.run(make_spec("v1"))
    pid = supervisor.state("demo").pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _wait_for(supervisor, "demo", lambda s: s.status == "backoff", within_s=2.0)

    supervisor.stop("demo")

    time.sleep(SETTINGS.restart_backoff_initial_s * 2)
    state = supervisor.state("demo")
    assert (state.status, state.pid, state.restarts) == ("stopped", None, 0)


def test_the_app_sees_its_environment_and_none_of_nakamas(
    supervisor: Supervisor, make_spec: SpecFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NAKAMA_ADMIN_TOKEN", "s3cret-admin-token")
    monkeypatch.setenv("NAKAMA_DATABASE_URL", "postgresql://u:s3cret@db/nakama")
    bin_dir = tmp_path / "venv" / "bin"
    spec = make_spec(env={"GREETING": "hello", "PORT": "1"}, bin_dir=bin_dir)

    supervisor.run(spec)
    env = _get(spec.port)["env"]

    assert not [key for key in env if key.startswith("NAKAMA_")]
    assert not [key for key, value in env.items() if "s3cret" in value]
    assert env["GREETING"] == "hello"
    assert env["PORT"] == str(spec.port)
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].split(os.pathsep)[0] == str(bin_dir)
    assert env["VIRTUAL_ENV"] == str(bin_dir.parent)
    assert env["HOME"] == os.environ["HOME"]


def test_run_refuses_a_port_another_process_listens_on(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    spec = make_spec()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", spec.port))
        squatter.listen()
        assert not port_is_free(spec.port)
        with pytest.raises(PermanentError, match=f"port {spec.port} is taken"):
            supervisor.run(spec)
    assert port_is_free(spec.port)


def test_back_off_doubles_up_to_the_cap() -> None:
    delays = [SETTINGS.restart_backoff_initial_s]
    for _ in range(4):
        delays.append(next_backoff(delays[-1], SETTINGS))
    assert delays == [0.2, 0.4, 0.8, 1.0, 1.0]


def test_allocate_port_takes_the_lowest_unused_port() -> None:
    settings = RuntimeSettings(port_range_start=9000, port_range_end=9002)
    assert allocate_port(set(), settings) == 9000
    assert allocate_port({9000, 9002}, settings) == 9001
    with pytest.raises(Conflict, match="9000-9002"):
        allocate_port({9000, 9001, 9002}, settings)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def _proc_stat(pid: int) -> list[str] | None:
    """Fields after the command name: state, ppid, pgrp, ..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def _group_members(pgid: int) -> list[int]:
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return [
        pid for pid in pids if (stat := _proc_stat(pid)) and stat[0] != "Z" and int(stat[2]) == pgid
    ]


def _eventually(check: Callable[[], bool], *, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def _wait_for(
    supervisor: Supervisor, name: str, check: Callable[[AppState], bool], *, within_s: float
) -> AppState:
    deadline = time.monotonic() + within_s
    while not check(state := supervisor.state(name)):
        assert time.monotonic() < deadline, f"{name} never got there; last state {state}"
        time.sleep(0.005)
    return state
