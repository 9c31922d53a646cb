"""The sandbox's parts against the real tools: bubblewrap, setpriv, cgroups, the kernel's socket
tables. What a jail shows and hides, who a process is in it, that nothing it starts outlives
it, that SIGTERM reaches the app and not bubblewrap, what a machine without bubblewrap is told,
and that cgroup limits hold."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from backend.local.supervisor import listener_uids
from nakama.clients.cgroups import Limiter, detect
from nakama.clients.sandbox import Jail, Sandbox, SandboxUnavailable, memory_files, python_roots
from nakama.limits import AppLimits

ROOT = os.geteuid() == 0
UID = 399_998  # below Nakama's range: no rule of a running Nakama applies to it
# The interpreter itself, not a virtualenv's link to it: a jail binds only the installation.
PYTHON = os.path.realpath(sys.executable)


def run_in(
    sandbox: Sandbox, jail: Jail, code: str, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    fds = memory_files(jail)
    try:
        argv = sandbox.wrap([PYTHON, "-c", code], jail, file_fds=fds)
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=60, pass_fds=fds, check=False, **kwargs
        )  # type: ignore[call-overload]
    finally:
        for fd in fds:
            os.close(fd)


@pytest.fixture
def jail(tmp_path: Path) -> Jail:
    code, data, hidden = tmp_path / "code", tmp_path / "data", tmp_path / "hidden"
    for path in (code, data, hidden):
        path.mkdir()
    (code / "app.py").write_text("print('hi')\n")
    (hidden / "secret").write_text("the data dir's secret")
    if ROOT:
        os.chown(data, UID, UID)
    roots = tuple(python_roots(Path(PYTHON)))
    return Jail(ro=(code, *roots), rw=(data,), cwd=code, uid=UID)


def test_a_jail_shows_its_own_paths_and_hides_the_rest(jail: Jail, tmp_path: Path) -> None:
    code = f"""
import os, pathlib
print(os.getuid())
print(open("app.py").read().strip())
pathlib.Path({str(tmp_path / "data")!r}, "out").write_text("written")
for path in [{str(tmp_path / "hidden" / "secret")!r}, "/proc/1/environ"]:
    try:
        print("READ", path, open(path).read()[:40])
    except OSError as exc:
        print("denied", path, type(exc).__name__)
try:
    open("app.py", "a").write("x")
    print("WROTE code")
except OSError as exc:
    print("code is read-only", type(exc).__name__)
print(sorted(os.listdir("/proc"))[:3], len([p for p in os.listdir("/proc") if p.isdigit()]))
"""
    result = run_in(Sandbox("bwrap"), jail, code, env={"SECRET_OF_NAKAMA": "x"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "hi" in out and "code is read-only" in out and "WROTE" not in out
    assert f"denied {tmp_path / 'hidden' / 'secret'} FileNotFoundError" in out
    assert "the data dir's secret" not in out
    assert (tmp_path / "data" / "out").read_text() == "written"
    if ROOT:
        assert out.splitlines()[0] == str(UID)
    # Its own PID namespace: a handful of processes (bubblewrap's reaper, python), not the host's.
    assert int(out.splitlines()[-1].split()[-1]) <= 3


def test_nothing_a_sandboxed_process_starts_outlives_it(jail: Jail, tmp_path: Path) -> None:
    marker = tmp_path / "data" / "child"
    code = f"""
import os, time
if os.fork() == 0:
    os.setsid()
    time.sleep(1.5)
    open({str(marker)!r}, "w").write("outlived")
    os._exit(0)
time.sleep(0.2)
"""
    assert run_in(Sandbox("bwrap"), jail, code).returncode == 0
    time.sleep(2.5)
    assert not marker.exists(), "a setsid() child lived on after the sandbox ended"


def test_sigterm_reaches_the_app_and_not_bubblewrap(jail: Jail, tmp_path: Path) -> None:
    done = tmp_path / "data" / "graceful"
    code = f"""
import signal, sys, time
def stop(*_):
    time.sleep(0.3)
    open({str(done)!r}, "w").write("finished its requests")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(60)
"""
    sandbox = Sandbox("bwrap")
    limiter = Limiter("rlimits")
    proc = subprocess.Popen(
        sandbox.wrap([PYTHON, "-c", code], jail),
        stdout=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=limiter.preexec(None, None, ignore_sigterm=True),
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=10) == 0  # bubblewrap waited for the app, which ended well
    proc.stdout.close()
    assert done.read_text() == "finished its requests"


def test_files_from_memory_exist_only_inside(jail: Jail, tmp_path: Path) -> None:
    dest = tmp_path / "data" / "secrets.toml"
    content = b'KEY = "va\\"lue"\n'
    with_file = Jail(ro=jail.ro, rw=jail.rw, cwd=jail.cwd, uid=jail.uid, files=((dest, content),))
    code = f"import tomllib; print(tomllib.load(open({str(dest)!r}, 'rb')))"
    result = run_in(Sandbox("bwrap"), with_file, code)
    assert result.returncode == 0, result.stderr
    assert "{'KEY': 'va\"lue'}" in result.stdout
    assert not dest.exists() or dest.read_bytes() == b""  # at most the empty mount point
    assert tomllib.loads(content.decode()) == {"KEY": 'va"lue'}


def test_a_machine_without_bubblewrap_is_told_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    with pytest.raises(SandboxUnavailable) as caught:
        Sandbox("bwrap").check()
    said = str(caught.value)
    assert "bubblewrap" in said and "apt-get install bubblewrap" in said
    assert "NAKAMA_RUNTIME__SANDBOX=off" in said
    Sandbox("off").check()  # the operator's choice: no sandbox, nothing to check
    assert "UNSANDBOXED" in Sandbox("off").describe()


def test_the_socket_tables_name_who_listens_on_a_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert listener_uids(port) == {os.geteuid()}
    assert listener_uids(port) == set()


@pytest.mark.skipif(not ROOT, reason="listening as another uid needs root")
def test_a_port_held_by_another_uid_is_seen_as_theirs(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        "import socket, time; s = socket.socket(); "
        f"s.bind(('127.0.0.1', {port})); s.listen(); print('up', flush=True); time.sleep(30)"
    )
    other = subprocess.Popen(
        ["setpriv", "--reuid", str(UID), "--regid", str(UID), "--clear-groups", PYTHON, "-c", code],
        stdout=subprocess.PIPE,
    )
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == b"up"
        assert listener_uids(port) == {UID}
    finally:
        other.kill()
        other.wait()
        if other.stdout is not None:
            other.stdout.close()


LIMITS = AppLimits(memory_mib=64, cpu=0.5, processes=24, disk_mib=4)


@pytest.fixture
def limiter() -> Limiter:
    found = detect(f"test-{os.getpid()}")
    if found.kind == "rlimits":
        pytest.skip("no cgroup can be made on this machine: the rlimit path is tested below")
    return found


def test_a_cgroup_stops_memory_and_processes_and_counts_the_kill(limiter: Limiter) -> None:
    group = limiter.group("hog", LIMITS)
    assert group is not None
    try:
        hog = subprocess.run(
            [PYTHON, "-c", "b = bytearray(256 << 20)"],
            preexec_fn=limiter.preexec(LIMITS, group, ignore_sigterm=False),
            capture_output=True,
            check=False,
        )
        assert hog.returncode == -signal.SIGKILL and group.oom_kills() >= 1
        bomb = subprocess.run(
            [
                PYTHON,
                "-c",
                "import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
                "            time.sleep(2); os._exit(0)\n        n += 1\n"
                "except OSError:\n    print(n)",
            ],
            preexec_fn=limiter.preexec(LIMITS, group, ignore_sigterm=False),
            capture_output=True,
            text=True,
            check=False,
        )
        assert int(bomb.stdout.strip()) < LIMITS.processes
    finally:
        group.remove()
    assert not any(path.exists() for path in group.dirs.values())


def test_without_cgroups_rlimits_still_bound_a_file_and_say_so() -> None:
    limiter = Limiter("rlimits")
    assert "rlimits" in limiter.describe() and "CPU is not limited" in limiter.describe()
    big = subprocess.run(
        [PYTHON, "-c", "open('/dev/null'); f = open('big', 'wb'); f.write(b'x' * (8 << 20))"],
        preexec_fn=limiter.preexec(LIMITS, None, ignore_sigterm=False),
        capture_output=True,
        text=True,
        cwd="/tmp",
        check=False,
    )
    Path("/tmp/big").unlink(missing_ok=True)
    assert big.returncode != 0  # the write past 4 MiB was stopped (SIGXFSZ or EFBIG)
