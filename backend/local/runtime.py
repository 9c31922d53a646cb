"""Local runtime: each app is a supervised process on a loopback port, running the commit that
code_reloader put into ``apps/<name>/code/current`` with the environment of its dependencies,
reached by users through the gateway at ``<name>.<apps_domain>``.

A restart starts the new version on a fresh port beside the old one; the gateway's route
(:class:`backend.local.routes.Routes`) switches once it is healthy, and the old one drains and
stops. An app idle past its project's timeout is put to sleep (stopped, marked ``sleeping`` on
disk, so it stays asleep across a restart of Nakama) and woken by its next request.

The app's own environment variables come from ``variables(project)`` whenever the process starts
(a deploy, a restore after ``nakama up`` restarts), so a change stored while the app is down is
not lost; :meth:`LocalRuntime.set_environment` restarts a running app with a new set."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import tomli_w

from backend.local.applog import read_tail
from backend.local.build_quota import disk_usage
from backend.local.forge import LocalForge
from backend.local.routes import Routes
from backend.local.supervisor import (
    AppSpec,
    Supervisor,
    allocate_port,
    port_is_free,
    probe_http,
)
from code_reloader.live import (
    live_command,
    live_commit,
    live_dir,
    live_eligible,
    main_script,
    publish_live,
)
from code_reloader.sync import sync_commit
from image_builder.environments import Environment
from nakama.appconfig import expand_port, load_app_config
from nakama.clients.sandbox import Jail, Sandbox, python_roots
from nakama.errors import NakamaError, PermanentError, QuotaExceeded
from nakama.limits import AppLimits, effective_limits, format_mib
from nakama.logs import get_logger
from nakama.ports import AppStatus
from nakama.settings import LimitsSettings, RuntimeSettings

log = get_logger(__name__)

APP_CONFIG_FILE = "nakama.toml"
# Bytes of nakama.toml read at most: a few lines of settings.
_CONFIG_MAX_BYTES = 64 * 1024


def read_config_file(path: Path) -> str | None:
    """The text of a worktree's ``nakama.toml`` (None: there is none). Nakama reads it with its
    own rights, so a symbolic link (which could point at any of Nakama's files) is refused, and
    so is a file too big to be settings."""
    if path.is_symlink():
        raise PermanentError(f"{APP_CONFIG_FILE} is a symbolic link; commit it as a regular file")
    if not path.is_file():
        return None
    with path.open("rb") as f:
        data = f.read(_CONFIG_MAX_BYTES + 1)
    if len(data) > _CONFIG_MAX_BYTES:
        raise PermanentError(
            f"{APP_CONFIG_FILE} is larger than {_CONFIG_MAX_BYTES // 1024} KiB; "
            "it holds a few settings only"
        )
    return data.decode(errors="replace")


_UID_FILE = "sandbox-uid"
_DATA_USAGE_TTL_S = 30.0


class _Noted(dict[str, str]):
    """A dict that says when it changes (the runtime's halted apps)."""

    def __init__(self, changed: Callable[[], None]) -> None:
        super().__init__()
        self._note = changed

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key, value)
        self._note()

    def pop(self, key: str, default: Any = None) -> Any:
        found = super().pop(key, default)
        self._note()
        return found


class LocalRuntime:
    def __init__(
        self,
        *,
        apps_dir: Path,
        forge: LocalForge,
        supervisor: Supervisor,
        settings: RuntimeSettings,
        routes: Routes,
        address: Callable[[str], str],
        variables: Callable[[str], Mapping[str, str]] | None = None,
        sandbox: Sandbox | None = None,
        limits: Callable[[str], AppLimits] | None = None,
        may_start: Callable[[str, Collection[str]], None] | None = None,
        main_file: Callable[[str], str | None] | None = None,
    ) -> None:
        """``variables(project)``: the app's environment variables, read at every start;
        ``address(project)``: the URL users open it at (the gateway's); ``limits(project)``:
        what the app may use, read at every start (default: the settings' defaults);
        ``may_start(project, running)`` raises (:class:`QuotaExceeded`) if the app may not
        start while the apps ``running`` hold ports (its owner's quota); ``main_file(project)``
        the script the default Streamlit command runs (None: app.py), read at every start."""
        self._main_file = main_file or (lambda _project: None)
        self.apps_dir = apps_dir
        self.sandbox = sandbox or Sandbox(settings.sandbox)
        defaults = effective_limits(LimitsSettings())
        self._limits = limits or (lambda _project: defaults)
        self._uids_lock = threading.Lock()
        self._usage: dict[str, tuple[float, int]] = {}  # project -> (monotonic, bytes)
        # project -> why Nakama stopped it (disk limit, quota); a change moves state_version on
        self._halted: _Noted = _Noted(self._changed)
        self._version, self._version_lock = 0, threading.Lock()
        self.routes = routes
        self._address = address
        self._forge = forge
        self._supervisor = supervisor
        self._settings = settings
        self._claimed: set[int] = set()  # ports handed to versions that are still starting
        self._variables = variables or (lambda _project: {})
        self._ports_lock = threading.Lock()
        self._running: dict[str, AppSpec] = {}
        # One per app: a deploy, a change of variables and a remove do not interleave.
        self._app_locks: dict[str, threading.RLock] = {}
        self._app_locks_lock = threading.Lock()
        self._may_start = may_start
        self._starting: set[str] = set()  # apps past the quota check, not yet running
        self._starting_lock = threading.Lock()

    def _lock(self, project: str) -> threading.RLock:
        with self._app_locks_lock:
            return self._app_locks.setdefault(project, threading.RLock())

    def _app_dir(self, project: str) -> Path:
        return self.apps_dir / project

    def check_can_create(self) -> None:
        """Nothing outside this machine to reach: a local app can always be deployed."""

    def prepare(self, project: str, *, commit: str) -> None:
        """Make the app's directory (``commit`` is deployed by the first job)."""
        self._app_dir(project).mkdir(parents=True, exist_ok=True)

    def app_url(self, project: str) -> str | None:
        return self._address(project)

    def _new_port(self) -> int:
        """A free loopback port that no app holds or is starting on."""
        with self._ports_lock:
            used = self.routes.ports() | self._claimed
            port = allocate_port(used, self._settings)
            while not port_is_free(port):  # taken by a program that is not ours
                used.add(port)
                port = allocate_port(used, self._settings)
            self._claimed.add(port)
            return port

    def _release(self, port: int) -> None:
        with self._ports_lock:
            self._claimed.discard(port)

    def deploy(
        self,
        project: str,
        *,
        commit: str,
        env: Environment,
        fallback: tuple[str, Environment] | None = None,
    ) -> str:
        """Put ``commit`` into the app's directory and (re)start the app on ``env``; return how
        the app took it ("restarted", or updated in place by the live strategy).

        If the new version does not come up and ``fallback`` (the commit and environment that
        ran before) is given, that version is started again before the error is raised, so a
        broken push leaves the previous version serving.
        """
        with self._lock(project):
            self._set_sleeping(project, False)  # a deploy wakes it
            try:
                return self._start(project, commit=commit, env=env)
            except NakamaError:
                if self.routes.port(project) is not None:
                    raise  # the previous version never stopped serving
                if fallback is not None and fallback[0] != commit:
                    try:
                        self._start(project, commit=fallback[0], env=fallback[1])
                    except NakamaError as exc:
                        log.error(
                            "previous version did not come back either",
                            project=project,
                            error=str(exc)[:500],
                        )
                raise

    def set_environment(self, project: str, variables: Mapping[str, str]) -> None:
        """Restart the running app with ``variables``; an app that is not running gets them
        (from ``variables(project)``) when it is next deployed or restored."""
        with self._lock(project):
            spec = self._running.get(project)
            if spec is None:
                return
            spec = dataclasses.replace(spec, env=dict(variables))
            # Kept even if it does not come up, so that the next change restarts it again.
            self._running[project] = spec
            if self.is_sleeping(project):
                return  # it gets them when it wakes
            self._run(spec)
        log.info("app restarted with new variables", project=project, count=len(variables))

    def _start(self, project: str, *, commit: str, env: Environment, start: bool = True) -> str:
        """Sync ``commit`` and (re)start the app on it; with ``start`` false only make it ready
        (its spec is kept for when it wakes)."""
        code_root = self._app_dir(project) / "code"
        worktree = sync_commit(
            repo_url=str(self._forge.repo_path(project)), commit=commit, root=code_root
        )
        config_file = worktree / APP_CONFIG_FILE
        config = load_app_config(read_config_file(config_file))
        # The port is filled in when the process starts: each start takes a fresh one.
        command = config.command(
            python=str(env.python), port="$PORT", main_file=self._main_file(project)
        )
        cwd = code_root / "current"
        live = live_command(command) if self._settings.reload_strategy == "live" else None
        if live is not None:  # Streamlit runs in a stable copy and reruns what changes in it
            command, cwd = live, live_dir(code_root)
        spec = AppSpec(
            name=project,
            cwd=cwd,
            command=command,
            port=0,
            env=dict(self._variables(project)),
            log_path=self._app_dir(project) / "app.log",
            health_path=config.health_path,
            bin_dir=env.python.parent,
        )
        script = main_script(command) or "app.py"
        if not start:
            if live is not None:
                publish_live(code_root, worktree, commit=commit, main_script=script)
            self._running[project] = spec
            return "asleep: it starts on its next request"
        if live is not None:
            if self._can_go_live(project, spec, code_root, commit):
                publish_live(code_root, worktree, commit=commit, main_script=script)
                port = self.routes.port(project)
                if port is None or not probe_http(port, spec.health_path):
                    raise PermanentError(f"app {project!r} stopped answering after a live update")
                return "updated in place (live): Streamlit reruns the changed script"
            self._supervisor.stop(project)  # never let the old process rerun a half-new tree
            self.routes.clear(project)
            publish_live(code_root, worktree, commit=commit, main_script=script)
        self._kill_orphan(project)
        self._running.pop(project, None)
        self._run(spec)
        return "restarted"

    def _run(self, spec: AppSpec) -> None:
        """(Re)start the app on ``spec`` with a fresh port, in its sandbox and within its
        limits (both as they are now); it is the running spec, and the gateway's route goes
        to it, once it answers (the old process serves until then). An app that is not
        running yet starts only within its owner's quota."""
        with self._quota_slot(spec.name):
            self._run_process(spec)

    def running_apps(self) -> set[str]:
        """The apps that hold a port now: running, starting, or waiting to restart."""
        return {
            name
            for name in list(self._running)
            if self._supervisor.state(name).status in ("starting", "running", "backoff")
        }

    @contextlib.contextmanager
    def _quota_slot(self, project: str) -> Iterator[None]:
        """Hold a place among the running apps while ``project`` starts (two of one user's
        apps starting at once both count); a refusal is the app's stop reason."""
        if self._may_start is None:
            yield
            return
        with self._starting_lock:
            running = self.running_apps() | self._starting
            if project not in running:
                try:
                    self._may_start(project, running)
                except QuotaExceeded as exc:
                    self._halted[project] = str(exc)
                    log.warning("app not started: over its owner's quota", project=project)
                    raise
            self._starting.add(project)
        try:
            yield
        finally:
            with self._starting_lock:
                self._starting.discard(project)

    def _run_process(self, spec: AppSpec) -> None:
        port = self._new_port()
        self._halted.pop(spec.name, None)
        data = self.data_dir(spec.name)
        env = {**spec.env, "DATA_DIR": str(data), "HOME": str(data / "home")}
        started = dataclasses.replace(
            spec,
            port=port,
            command=expand_port(spec.command, port=port),
            env=env,
            jail=self._jail(spec),
            limits=self._limits(spec.name),
        )
        try:
            self._supervisor.run(started, on_healthy=self._switch)
        finally:
            self._release(port)
            pid = self._supervisor.state(spec.name).pid
            if pid is not None:
                self._pid_file(spec.name).write_text(str(pid))
        self._running[spec.name] = spec

    # --- sandbox ---------------------------------------------------------------------------
    def data_dir(self, project: str) -> Path:
        """The app's ``$DATA_DIR``: kept across deploys, rollbacks and restarts, deleted with
        the project; ``$HOME`` is its ``home``. Made (and, as root, given to the app's uid)
        when missing."""
        data = self._app_dir(project) / "data"
        home = data / "home"
        if not (home / ".streamlit").is_dir():
            (home / ".streamlit").mkdir(parents=True, exist_ok=True)
            if self.sandbox.enabled and self.sandbox.as_root:
                uid = self.uid(project)
                for path in (data, home, home / ".streamlit"):
                    os.chown(path, uid, uid)
            data.chmod(0o700)
        return data

    def uid(self, project: str) -> int:
        """The app's own uid (as root), kept in its directory; the lowest free one in the
        configured range."""
        path = self._app_dir(project) / _UID_FILE
        with self._uids_lock:
            with contextlib.suppress(FileNotFoundError, ValueError):
                return int(path.read_text())
            taken = set()
            for other in self.apps_dir.glob(f"*/{_UID_FILE}"):
                with contextlib.suppress(OSError, ValueError):
                    taken.add(int(other.read_text()))
            base, count = self._settings.sandbox_uid_base, self._settings.sandbox_uid_count
            uid = next((u for u in range(base + 1, base + count) if u not in taken), None)
            if uid is None:
                raise PermanentError(f"no free sandbox uid in {base + 1}-{base + count - 1}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{uid}\n")
            return uid

    def _jail(self, spec: AppSpec) -> Jail | None:
        """What the app sees: its code and environment read-only, its data read-write, its
        variables also as ``~/.streamlit/secrets.toml`` (in memory only)."""
        if not self.sandbox.enabled:
            return None
        code_root = self._app_dir(spec.name) / "code"
        ro = [code_root]
        if spec.bin_dir is not None:
            ro += [spec.bin_dir.parent, *python_roots(spec.bin_dir / "python")]
        data = self.data_dir(spec.name)
        files: tuple[tuple[Path, bytes], ...] = ()
        if spec.env:
            secrets_toml = data / "home" / ".streamlit" / "secrets.toml"
            files = ((secrets_toml, tomli_w.dumps(dict(spec.env)).encode()),)
        uid = self.uid(spec.name) if self.sandbox.as_root else None
        return Jail(ro=tuple(ro), rw=(data,), cwd=spec.cwd, uid=uid, files=files)

    def limits(self, project: str) -> AppLimits:
        return self._limits(project)

    def set_limits(self, project: str, limits: AppLimits) -> None:
        """Restart the running app with its new limits (they are read at every start)."""
        with self._lock(project):
            spec = self._running.get(project)
            if spec is None or self.is_sleeping(project):
                return
            self._run(spec)
        log.info("app restarted with new limits", project=project)

    def data_usage(self, project: str) -> int | None:
        """Bytes in the app's ``$DATA_DIR`` (what its blocks take on disk); measured at most
        every 30 s."""
        now = time.monotonic()
        cached = self._usage.get(project)
        if cached is not None and now - cached[0] < _DATA_USAGE_TTL_S:
            return cached[1]
        path = self._app_dir(project) / "data"
        if not path.is_dir():
            return None
        used = disk_usage(path)
        self._usage[project] = (now, used)
        return used

    def enforce_disk_limit(self, project: str) -> str | None:
        """Stop the app if its ``$DATA_DIR`` holds more than its limit; returns why it was
        stopped, or None. (A single file can never outgrow the limit: an rlimit stops it.)"""
        with self._lock(project):
            if project not in self._running or self.is_sleeping(project):
                return None
            self._usage.pop(project, None)
            used, limit = self.data_usage(project), self._limits(project).disk_bytes
            if used is None or used <= limit:
                return None
            reason = (
                f"data directory over its limit ({format_mib(used / 2**20)} of "
                f"{format_mib(limit / 2**20)}): free space in $DATA_DIR and redeploy"
            )
            self.routes.clear(project)
            self._supervisor.stop(project)
            self._halted[project] = reason
        log.warning("app stopped: data directory over its limit", project=project)
        return reason

    def _switch(self, spec: AppSpec) -> None:
        """The new process answers: the gateway sends the app's requests to it from now on."""
        self.routes.switch(spec.name, spec.port)

    def _can_go_live(self, project: str, spec: AppSpec, code_root: Path, commit: str) -> bool:
        """True if the running process can take ``commit`` without a restart."""
        if self._running.get(project) != spec:
            return False  # another command or environment: restart
        if self._supervisor.state(project).status != "running":
            return False
        previous = live_commit(code_root)
        if previous is None:
            return False
        if previous == commit:
            return True
        changed = self._forge.changed_paths(project, previous, commit)
        return changed is not None and live_eligible(changed, command=spec.command)

    def _pid_file(self, project: str) -> Path:
        return self._app_dir(project) / "app.pid"

    def _kill_orphan(self, project: str) -> None:
        """Stop an app process left behind by a Nakama that died without stopping its apps."""
        if self._supervisor.state(project).pid is not None:
            return  # ours: the supervisor replaces it
        try:
            pid = int(self._pid_file(project).read_text())
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except (FileNotFoundError, ValueError, OSError):
            return
        if Path(cwd).is_relative_to(self._app_dir(project)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            log.warning("stopped an app process left by an earlier run", project=project, pid=pid)
            deadline = time.monotonic() + 5
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.02)

    def status(self, project: str) -> AppStatus:
        halted = self._halted.get(project)
        if self.is_sleeping(project):
            detail = "starts on its next request" + (f"; {halted}" if halted else "")
            return AppStatus(state="sleeping", detail=detail)
        if halted is not None:
            return AppStatus(state="stopped", detail=f"stopped: {halted}")
        state = self._supervisor.state(project)
        parts = [f"restarts={state.restarts}"] if state.restarts else []
        if state.stop_reason and state.status in ("backoff", "crashed"):
            parts.insert(0, f"stopped: {state.stop_reason}")
        elif state.stop_reason and state.restarts:
            parts.append(f"last stop: {state.stop_reason}")
        return AppStatus(state=state.status, detail="; ".join(parts), restarts=state.restarts)

    def set_visibility(self, project: str, visibility: str) -> None:
        """Nothing to do: the gateway reads the project's visibility at every request."""

    # --- sleep -----------------------------------------------------------------------------
    def _sleeping_file(self, project: str) -> Path:
        return self._app_dir(project) / "sleeping"

    def _set_sleeping(self, project: str, asleep: bool) -> None:
        if asleep:
            self._sleeping_file(project).write_text("")
        else:
            self._sleeping_file(project).unlink(missing_ok=True)
        self._changed()

    def _changed(self) -> None:
        with self._version_lock:
            self._version += 1

    def state_version(self) -> tuple[int, ...]:
        """Changes whenever a :meth:`status` answer may have: an app's process state, its
        sleep, or a stop by Nakama (all of which go through this runtime and its supervisor)."""
        return (self._supervisor.version, self._version)

    def is_sleeping(self, project: str) -> bool:
        return self._sleeping_file(project).exists()

    def restore(self, project: str, *, commit: str, env: Environment) -> str:
        """Bring the app back after Nakama restarted: running, or asleep if it was."""
        with self._lock(project):
            asleep = self.is_sleeping(project)
            return self._start(project, commit=commit, env=env, start=not asleep)

    def sleep(self, project: str, *, idle_s: float = 0.0) -> bool:
        """Stop the app until its next request, if it has been idle for more than ``idle_s``
        (checked under the app's lock: a wake-up or a deploy just before counts); False if it
        was not put to sleep."""
        with self._lock(project):
            if project not in self._running or self.is_sleeping(project):
                return False
            if self.routes.idle_s(project) <= idle_s:
                return False
            if self._supervisor.state(project).status != "running":
                return False
            self._set_sleeping(project, True)
            self.routes.clear(project)
            self._supervisor.stop(project)
        log.info("app asleep", project=project)
        return True

    def wake(self, project: str) -> None:
        """Start a sleeping app again (a no-op for one that is awake or has no deploy yet)."""
        with self._lock(project):
            spec = self._running.get(project)
            if spec is None or not self.is_sleeping(project):
                return
            self._set_sleeping(project, False)
            started = time.monotonic()
            try:
                self._run(spec)
            except QuotaExceeded:
                self._set_sleeping(project, True)  # wakes once its owner has room
                raise
        log.info("app woken", project=project, seconds=round(time.monotonic() - started, 3))

    def logs(self, project: str, *, tail: int) -> str:
        """The last ``tail`` lines of the app's log, read from its end (never the whole)."""
        return read_tail(self._app_dir(project) / "app.log", lines=tail, terminated=True)

    def remove(self, project: str) -> None:
        """Stop the app and delete everything it had: code, ``$DATA_DIR``, log, uid."""
        with self._lock(project):
            self._running.pop(project, None)
            self._halted.pop(project, None)
            self._usage.pop(project, None)
            self.routes.forget(project)
            self._supervisor.stop(project)
            self._kill_orphan(project)
            shutil.rmtree(self._app_dir(project), ignore_errors=True)

    def stop_all(self) -> None:
        self._supervisor.stop_all()
