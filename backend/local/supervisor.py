"""Local mode's runtime: one supervised process (group) per app on a loopback port.

``Supervisor.run`` is on the push-to-live path: stop the old process group, start the new one in
its own session, probe loopback HTTP every ``health_interval_s`` until it answers (status < 500);
if it exits or times out instead, raise ``PermanentError`` with the log's tail. A healthy app is
supervised: a watcher thread per process reaps it and restarts it after exponential back-off.
``run`` and ``stop`` cancel pending restarts. One lock per app; health waits happen outside it.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from backend.local.applog import RotatingLog, read_tail, start_pump
from nakama.clients.cgroups import Group, Limiter
from nakama.clients.sandbox import Jail, Sandbox, memory_files
from nakama.errors import Conflict, PermanentError
from nakama.limits import AppLimits, format_mib
from nakama.settings import RuntimeSettings

Status = Literal["running", "starting", "crashed", "backoff", "stopped"]
# Inherited from Nakama's own environment; everything else (NAKAMA_* secrets above all) is not.
_INHERITED = ("HOME", "PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME")
_SANDBOX_INHERITED = ("PATH", "LANG", "LANGUAGE", "TZ")
_TAIL_LINES_IN_ERRORS = 20
_DEFAULT_LOG_MIB = 10


@dataclass(frozen=True)
class AppSpec:
    """How to run one app; ``bin_dir`` (the app's virtualenv ``bin``) goes first on ``PATH``."""

    name: str
    cwd: Path
    command: list[str]
    port: int
    env: Mapping[str, str]
    log_path: Path
    health_path: str = "/"
    bin_dir: Path | None = None
    # Where it runs: a sandbox with these paths in view (None: unsandboxed), within limits.
    jail: Jail | None = None
    limits: AppLimits | None = None


@dataclass(frozen=True)
class AppState:
    status: Status
    pid: int | None
    restarts: int
    last_exit_code: int | None
    since: datetime
    # Why the last process ended when it was not asked to, e.g. "out of memory (limit 1 GiB)".
    stop_reason: str | None = None


@dataclass(eq=False)
class _Proc:
    popen: subprocess.Popen[bytes]
    port: int
    exited: threading.Event = field(default_factory=threading.Event)
    healthy_at: float | None = None  # time.monotonic() when it first answered
    group: Group | None = None
    oom_kills_at_start: int = 0


@dataclass(eq=False)
class _App:
    spec: AppSpec | None = None
    proc: _Proc | None = None
    supervised: bool = False  # restart on crash; only after run() has seen it healthy
    status: Status = "stopped"
    restarts: int = 0
    last_exit_code: int | None = None
    since: datetime = field(default_factory=lambda: datetime.now(UTC))
    backoff_s: float = 0.0
    cancel: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # A new version starting beside the running one; old versions finishing their requests.
    pending: _Proc | None = None
    retiring: set[_Proc] = field(default_factory=set)
    stop_reason: str | None = None
    on_healthy: Callable[[AppSpec], None] | None = None  # also after a crash restart
    log: RotatingLog | None = None  # one for all of the app's processes (they rotate it together)
    log_bytes: int = 0
    changed: Callable[[], None] = lambda: None  # the supervisor's version moves on

    def set_status(self, status: Status) -> None:
        self.status, self.since = status, datetime.now(UTC)
        self.changed()


class Supervisor:
    """Starts, replaces, restarts and stops app processes; thread-safe, one lock per app."""

    def __init__(
        self,
        *,
        settings: RuntimeSettings,
        backoff_reset_s: float = 60.0,
        drain: Callable[[str, int, float], object] | None = None,
        on_down: Callable[[str, int], object] | None = None,
        sandbox: Sandbox | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        """``drain(name, port, timeout_s)`` waits (at most ``timeout_s``) until no request to
        app ``name`` on ``port`` is in flight: the gateway's :meth:`Routes.drain`.
        ``on_down(name, port)``: the app's process on ``port`` ended by itself (the gateway
        stops sending requests there: another program could take the port).
        Specs with a jail run in ``sandbox``; ``limiter`` makes each app's control group."""
        self._settings = settings
        self._on_down = on_down or (lambda _name, _port: None)
        self._sandbox = sandbox or Sandbox(settings.sandbox)
        self._limiter = limiter or Limiter("rlimits")
        self._backoff_reset_s = backoff_reset_s
        self._drain = drain or (lambda _name, _port, _timeout_s: None)
        self._apps: dict[str, _App] = {}
        self._apps_lock = threading.Lock()
        self._version, self._version_lock = 0, threading.Lock()
        # Every process starts from this one thread: a sandbox ends with the thread that
        # started it (and so, with Nakama), never with a short-lived request or watcher thread.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nakama-spawn")

    def run(self, spec: AppSpec, *, on_healthy: Callable[[AppSpec], None] | None = None) -> None:
        """Start ``spec`` and return once it answers HTTP.

        A process of that name that is running keeps serving meanwhile (when ``spec`` has
        another port): once the new one is healthy, ``on_healthy(spec)`` is called (the
        gateway's route switches to it) and the old one is retired: its requests drain
        (``drain(name, port, timeout_s)`` given to the constructor), then it is stopped, in the
        background. A new process that never becomes healthy is stopped and the old one goes on
        as before.
        """
        app = self._app(spec.name)
        with app.lock:
            old = app.proc if app.proc is not None and not app.proc.exited.is_set() else None
            if old is not None and app.spec is not None and app.spec.port == spec.port:
                old = None  # same port: the old process must go first
            self._stop_pending_locked(app)
            if old is None:
                self._stop_locked(app)
            else:
                app.cancel.set()  # a pending crash restart of the old process is off
                app.supervised = False  # until the new one is up, a crash is not restarted
            app.cancel = threading.Event()
            deadline = time.monotonic() + 1.0  # killed leftovers of the old app may still hold it
            while not port_is_free(spec.port):
                if time.monotonic() > deadline:
                    if old is None:
                        app.set_status("crashed")
                    raise PermanentError(f"app {spec.name!r}: port {spec.port} is taken by others")
                time.sleep(0.01)
            try:
                proc = self._spawn_locked(app, spec, current=old is None)
            except OSError as exc:
                if old is None:
                    app.set_status("crashed")
                raise PermanentError(f"app {spec.name!r} cannot start: {exc}") from exc
        problem = self._wait_healthy(proc, spec)
        with app.lock:
            if problem is None and proc.exited.is_set():
                problem = f"exited with code {proc.popen.returncode} right after answering"
            if app.proc is not proc and app.pending is not proc:
                raise PermanentError(f"app {spec.name!r} was stopped or replaced while starting")
            if problem is None:
                previous = app.proc if app.pending is proc else None
                app.pending, app.proc, app.spec = None, proc, spec
                app.restarts, app.stop_reason, app.on_healthy = 0, None, on_healthy
                app.backoff_s = self._settings.restart_backoff_initial_s
                proc.healthy_at, app.supervised = time.monotonic(), True
                app.set_status("running")
                if on_healthy is not None:
                    on_healthy(spec)
                if previous is not None:
                    self._retire_locked(app, previous, name=spec.name)
                return
            _terminate(proc, timeout_s=0.0)
            if app.pending is proc:
                app.pending = None
                if app.proc is not None and not app.proc.exited.is_set():
                    app.supervised = True  # the old version goes on serving, supervised again
            else:
                app.last_exit_code = proc.popen.returncode
                app.set_status("crashed")
        tail = read_tail(spec.log_path, lines=_TAIL_LINES_IN_ERRORS)
        raise PermanentError(f"app {spec.name!r} {problem}; last log lines:\n{tail}")

    def _retire_locked(self, app: _App, proc: _Proc, *, name: str) -> None:
        """Stop ``proc`` once its requests have drained (or the drain timed out), in the
        background; :meth:`stop` ends it at once."""
        app.retiring.add(proc)

        def retire() -> None:
            self._drain(name, proc.port, self._settings.drain_timeout_s)
            _terminate(proc, timeout_s=self._settings.stop_timeout_s)
            with app.lock:
                app.retiring.discard(proc)

        threading.Thread(target=retire, name=f"nakama-retire-{name}", daemon=True).start()

    def _stop_pending_locked(self, app: _App) -> None:
        if app.pending is not None:
            _terminate(app.pending, timeout_s=0.0)
            app.pending = None

    def stop(self, name: str) -> None:
        """SIGTERM the app's process group, SIGKILL after ``stop_timeout_s``; idempotent."""
        app = self._app(name)
        with app.lock:
            self._stop_locked(app)

    def stop_all(self) -> None:
        """Stop every app at once (each waits out its own grace period)."""
        with self._apps_lock:
            names = list(self._apps)
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            list(pool.map(self.stop, names))

    def state(self, name: str) -> AppState:
        """A snapshot; an app never run reads as stopped."""
        app = self._app(name)
        with app.lock:
            live = app.proc is not None and app.status in ("running", "starting")
            pid = app.proc.popen.pid if live and app.proc else None
            return AppState(
                app.status, pid, app.restarts, app.last_exit_code, app.since, app.stop_reason
            )

    def memory_bytes(self, name: str) -> int | None:
        """What the app's processes use now, if its control group tells."""
        app = self._app(name)
        with app.lock:
            group = app.proc.group if app.proc is not None else None
        return group.memory_bytes() if group is not None else None

    def log_tail(self, name: str, *, lines: int = 200) -> str:
        spec = self._app(name).spec
        return read_tail(spec.log_path, lines=lines) if spec else ""

    @property
    def version(self) -> int:
        """A number that changes whenever any app's :meth:`state` may have: a cache of states
        keyed on it is fresh."""
        return self._version

    def _changed(self) -> None:
        with self._version_lock:
            self._version += 1

    def _app(self, name: str) -> _App:
        with self._apps_lock:
            app = self._apps.get(name)
            if app is None:
                app = self._apps[name] = _App(changed=self._changed)
            return app

    def _stop_locked(self, app: _App) -> None:
        app.cancel.set()
        app.supervised = False
        self._stop_pending_locked(app)
        for old in list(app.retiring):
            _terminate(old, timeout_s=0.0)
        app.retiring.clear()
        proc, app.proc = app.proc, None
        if proc is not None:
            _terminate(proc, timeout_s=self._settings.stop_timeout_s)
            app.last_exit_code = proc.popen.returncode
            if proc.group is not None:
                proc.group.remove()  # no version of the app is left: nor may anything it started
        if app.log is not None:
            app.log.close()  # what the pumps still have after this is dropped: the app is gone
            app.log = None
        if app.status != "stopped":
            app.set_status("stopped")

    def _spawn_locked(self, app: _App, spec: AppSpec, *, current: bool = True) -> _Proc:
        """Start ``spec``: as the app's process (``current``), or as the pending new version
        beside it."""
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = app_environment(
            spec.env, port=spec.port, bin_dir=spec.bin_dir, sandboxed=spec.jail is not None
        )
        command, fds = list(spec.command), []
        if spec.jail is not None and self._sandbox.enabled:
            fds = memory_files(spec.jail)
            command = self._sandbox.wrap(command, spec.jail, file_fds=fds)
        group = self._limiter.group(spec.name, spec.limits) if spec.limits is not None else None
        sandboxed = spec.jail is not None and self._sandbox.enabled
        preexec = None
        if spec.limits is not None or sandboxed:
            preexec = self._limiter.preexec(spec.limits, group, ignore_sigterm=sandboxed)
        log = self._log_locked(app, spec)
        try:
            popen = self._spawner.submit(
                subprocess.Popen,
                command, cwd=spec.cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                preexec_fn=preexec, pass_fds=fds,
            ).result()  # fmt: skip
        finally:
            for fd in fds:
                os.close(fd)
        # The child is still starting its interpreter: this line lands before its output.
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log.write_line(f"--- started pid {popen.pid} at {stamp} ---")
        assert popen.stdout is not None
        start_pump(popen.stdout, log, spec.name)
        proc = _Proc(popen, spec.port, group=group)
        proc.oom_kills_at_start = group.oom_kills() if group is not None else 0
        if current:
            app.proc = proc
            app.set_status("starting")
        else:
            app.pending = proc
        threading.Thread(
            target=self._watch, args=(app, proc), name=f"nakama-app-{spec.name}", daemon=True
        ).start()
        return proc

    def _log_locked(self, app: _App, spec: AppSpec) -> RotatingLog:
        """The app's log, kept to the newest ``log_mib`` MiB (older output rotates away)."""
        size = (spec.limits.log_mib if spec.limits else _DEFAULT_LOG_MIB) << 20
        if app.log is None or app.log.path != spec.log_path or app.log_bytes != size:
            if app.log is not None:
                app.log.close()
            app.log, app.log_bytes = RotatingLog(spec.log_path, max_bytes=size), size
        return app.log

    def _wait_healthy(self, proc: _Proc, spec: AppSpec) -> str | None:
        """``None`` once the app answers HTTP, else why it never did."""
        deadline = time.monotonic() + self._settings.health_timeout_s
        while True:
            if proc.exited.is_set():
                return f"exited with code {proc.popen.returncode} while starting"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return f"did not answer HTTP within {self._settings.health_timeout_s:g} s"
            answered = probe_http(spec.port, spec.health_path, timeout_s=min(2.0, remaining))
            if answered and not proc.exited.is_set():
                return self._check_listener(spec)
            proc.exited.wait(self._settings.health_interval_s)

    def _watch(self, app: _App, proc: _Proc) -> None:
        """Reap ``proc``; restart it after back-off if it was a supervised app's current one."""
        proc.popen.wait()
        proc.exited.set()
        with app.lock:
            if app.proc is not proc:
                return  # stopped, replaced on purpose, or a pending one run() waits for
            _kill_group(proc.popen.pid)  # leftovers of a crashed app would hold its port
            app.last_exit_code = proc.popen.returncode
            app.stop_reason = self._stop_reason(proc, app.spec)
            self._on_down(app.spec.name if app.spec else "", proc.port)
            if not app.supervised:
                app.set_status("crashed")  # run() is waiting and reports it
                return
            app.set_status("backoff")
            healthy_for = time.monotonic() - (proc.healthy_at or time.monotonic())
            if healthy_for >= self._backoff_reset_s:
                app.backoff_s = self._settings.restart_backoff_initial_s
            delay, app.backoff_s = app.backoff_s, next_backoff(app.backoff_s, self._settings)
            cancel, spec = app.cancel, app.spec
        if cancel.wait(delay) or spec is None:
            return
        with app.lock:
            if app.cancel is not cancel or cancel.is_set() or app.proc is not proc:
                return
            try:
                new = self._spawn_locked(app, spec)
            except OSError:
                app.supervised = False
                app.set_status("crashed")
                return
            app.restarts += 1
            app.changed()
        problem = self._wait_healthy(new, spec)
        with app.lock:
            if app.proc is new and problem is None and not new.exited.is_set():
                new.healthy_at = time.monotonic()
                app.set_status("running")
                if app.on_healthy is not None:
                    app.on_healthy(spec)  # the gateway routes to it again
            elif app.proc is new and not new.exited.is_set():
                _kill_group(new.popen.pid)  # its watcher sees a crash and backs off again

    def _check_listener(self, spec: AppSpec) -> str | None:
        """None if what answers on the app's port is the app; ports are not first come, first
        served: as root each app has its own uid, and the socket must be that uid's."""
        jail = spec.jail
        if jail is None or jail.uid is None or not self._sandbox.enabled:
            return None
        if not self._sandbox.as_root:
            return None
        owners = listener_uids(spec.port)
        if owners == {jail.uid}:
            return None
        return f"port {spec.port} is held by another program (uids {sorted(owners)}), not the app"

    @staticmethod
    def _stop_reason(proc: _Proc, spec: AppSpec | None) -> str:
        """Why ``proc`` ended, in words for the project page."""
        code = proc.popen.returncode
        group = proc.group
        if group is not None and group.oom_kills() > proc.oom_kills_at_start:
            limit = spec.limits.memory_mib if spec and spec.limits else None
            return "out of memory" + (f" (limit {format_mib(limit)})" if limit else "")
        if code is not None and code < 0:
            return f"killed by signal {signal.Signals(-code).name}"
        return f"exited with code {code}"


def next_backoff(current_s: float, settings: RuntimeSettings) -> float:
    """The delay after the one just used: doubled, capped at ``restart_backoff_max_s``."""
    doubled = max(current_s, settings.restart_backoff_initial_s) * 2
    return min(doubled, settings.restart_backoff_max_s)


def app_environment(
    extra: Mapping[str, str], *, port: int, bin_dir: Path | None, sandboxed: bool = False
) -> dict[str, str]:
    """An app's environment: a few harmless inherited variables, ``extra``, then ours on top.
    A sandboxed app has its own ``/tmp`` and user: Nakama's TMPDIR and user names stay out."""
    inherited = _SANDBOX_INHERITED if sandboxed else _INHERITED
    env = {k: v for k, v in os.environ.items() if k in inherited or k.startswith("LC_")}
    env.update(extra)
    env["PORT"] = str(port)
    env["PYTHONUNBUFFERED"] = "1"
    if bin_dir is not None:
        env["PATH"] = os.pathsep.join([str(bin_dir), *filter(None, [env.get("PATH")])])
        env["VIRTUAL_ENV"] = str(bin_dir.parent)
    return env


def allocate_port(used: set[int], settings: RuntimeSettings) -> int:
    """The lowest port of the configured range (both ends included) not in ``used``."""
    for port in range(settings.port_range_start, settings.port_range_end + 1):
        if port not in used:
            return port
    raise Conflict(f"no free app port in {settings.port_range_start}-{settings.port_range_end}")


def listener_uids(port: int) -> set[int]:
    """The uids owning sockets that listen on ``port`` for 127.0.0.1 (or every address), from
    the kernel's socket tables."""
    found: set[int] = set()
    wanted = {"0100007F", "00000000"}  # 127.0.0.1 and 0.0.0.0, as /proc/net/tcp writes them
    wanted6 = {"00000000000000000000000000000000", "0000000000000000FFFF00000100007F"}
    for table, addresses in (("/proc/net/tcp", wanted), ("/proc/net/tcp6", wanted6)):
        with contextlib.suppress(OSError), open(table) as f:
            next(f, None)
            for line in f:
                fields = line.split()
                address, _, hex_port = fields[1].partition(":")
                if fields[3] == "0A" and int(hex_port, 16) == port and address in addresses:
                    found.add(int(fields[7]))
    return found


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``host:port`` (bound as servers do, with SO_REUSEADDR)."""
    with socket.socket() as sock, contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        return True
    return False


def probe_http(port: int, path: str = "/", *, timeout_s: float = 1.0) -> bool:
    """Whether ``127.0.0.1:port`` answers ``GET path`` with a status below 500."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        return conn.getresponse().status < 500
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _terminate(proc: _Proc, *, timeout_s: float) -> None:
    """SIGTERM the process group, SIGKILL it after ``timeout_s``; return once it is reaped."""
    if not proc.exited.is_set():
        _kill_group(proc.popen.pid, signal.SIGTERM if timeout_s > 0 else signal.SIGKILL)
        if not proc.exited.wait(timeout_s):
            _kill_group(proc.popen.pid)
        proc.exited.wait()
    _kill_group(proc.popen.pid)  # children that outlived the leader


def _kill_group(pgid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
