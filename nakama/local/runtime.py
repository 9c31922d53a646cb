"""Local runtime: each app is a supervised process on its own port, running the commit that
code_reloader put into ``apps/<name>/code/current`` with the environment of its dependencies.

The app's own environment variables come from ``variables(project)`` whenever the process starts
(a deploy, a restore after ``nakama up`` restarts), so a change stored while the app is down is
not lost; :meth:`LocalRuntime.set_environment` restarts a running app with a new set."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

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
from nakama.errors import NakamaError, PermanentError
from nakama.local.appconfig import load_app_config
from nakama.local.forge import LocalForge
from nakama.local.supervisor import (
    AppSpec,
    Supervisor,
    allocate_port,
    port_is_free,
    probe_http,
)
from nakama.logs import get_logger
from nakama.ports import AppStatus
from nakama.settings import RuntimeSettings

log = get_logger(__name__)

APP_CONFIG_FILE = "nakama.toml"


class LocalRuntime:
    def __init__(
        self,
        *,
        apps_dir: Path,
        forge: LocalForge,
        supervisor: Supervisor,
        settings: RuntimeSettings,
        variables: Callable[[str], Mapping[str, str]] | None = None,
    ) -> None:
        """``variables(project)``: the app's environment variables, read at every start."""
        self.apps_dir = apps_dir
        self._forge = forge
        self._supervisor = supervisor
        self._settings = settings
        self._variables = variables or (lambda _project: {})
        self._ports_lock = threading.Lock()
        self._running: dict[str, AppSpec] = {}
        # One per app: a deploy, a change of variables and a remove do not interleave.
        self._app_locks: dict[str, threading.RLock] = {}
        self._app_locks_lock = threading.Lock()

    def _lock(self, project: str) -> threading.RLock:
        with self._app_locks_lock:
            return self._app_locks.setdefault(project, threading.RLock())

    def _app_dir(self, project: str) -> Path:
        return self.apps_dir / project

    def _port_file(self, project: str) -> Path:
        return self._app_dir(project) / "port.json"

    def port(self, project: str) -> int | None:
        try:
            return int(json.loads(self._port_file(project).read_text())["port"])
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def prepare(self, project: str, *, commit: str) -> None:
        """Give the project a port for life (``commit`` is deployed by the first job)."""
        self._reserve_port(project)

    def app_url(self, project: str) -> str | None:
        port = self.port(project)
        return None if port is None else f"http://127.0.0.1:{port}/"

    def _reserve_port(self, project: str) -> int:
        with self._ports_lock:
            port = self.port(project)
            if port is None:
                used = {p for d in self.apps_dir.glob("*") if (p := self.port(d.name)) is not None}
                port = allocate_port(used, self._settings)
                while not port_is_free(port):  # taken by a program that is not ours
                    used.add(port)
                    port = allocate_port(used, self._settings)
                self._app_dir(project).mkdir(parents=True, exist_ok=True)
                self._port_file(project).write_text(json.dumps({"port": port}))
        return port

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
            try:
                return self._start(project, commit=commit, env=env)
            except NakamaError:
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
            self._run(spec)
        log.info("app restarted with new variables", project=project, count=len(variables))

    def _start(self, project: str, *, commit: str, env: Environment) -> str:
        port = self._reserve_port(project)
        code_root = self._app_dir(project) / "code"
        worktree = sync_commit(
            repo_url=str(self._forge.repo_path(project)), commit=commit, root=code_root
        )
        config_file = worktree / APP_CONFIG_FILE
        config = load_app_config(config_file.read_text() if config_file.is_file() else None)
        command = config.command(python=str(env.python), port=port)
        cwd = code_root / "current"
        live = live_command(command) if self._settings.reload_strategy == "live" else None
        if live is not None:  # Streamlit runs in a stable copy and reruns what changes in it
            command, cwd = live, live_dir(code_root)
        spec = AppSpec(
            name=project,
            cwd=cwd,
            command=command,
            port=port,
            env=dict(self._variables(project)),
            log_path=self._app_dir(project) / "app.log",
            health_path=config.health_path,
            bin_dir=env.python.parent,
        )
        if live is not None:
            script = main_script(command) or "app.py"
            if self._can_go_live(project, spec, code_root, commit):
                publish_live(code_root, worktree, commit=commit, main_script=script)
                if not probe_http(port, spec.health_path):
                    raise PermanentError(f"app {project!r} stopped answering after a live update")
                return "updated in place (live): Streamlit reruns the changed script"
            self._supervisor.stop(project)  # never let the old process rerun a half-new tree
            publish_live(code_root, worktree, commit=commit, main_script=script)
        self._kill_orphan(project)
        self._running.pop(project, None)
        self._run(spec)
        return "restarted"

    def _run(self, spec: AppSpec) -> None:
        """(Re)start the app on ``spec``; it is the running spec once it answers."""
        try:
            self._supervisor.run(spec)
        finally:
            pid = self._supervisor.state(spec.name).pid
            if pid is not None:
                self._pid_file(spec.name).write_text(str(pid))
        self._running[spec.name] = spec

    def _can_go_live(self, project: str, spec: AppSpec, code_root: Path, commit: str) -> bool:
        """True if the running process can take ``commit`` without a restart."""
        if self._running.get(project) != spec:
            return False  # another command, port or environment: restart
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
        state = self._supervisor.state(project)
        detail = f"restarts={state.restarts}" if state.restarts else ""
        return AppStatus(state=state.status, detail=detail)

    def logs(self, project: str, *, tail: int) -> str:
        path = self._app_dir(project) / "app.log"
        if not path.exists():
            return ""
        lines = path.read_text(errors="replace").splitlines()[-tail:]
        return "\n".join(lines) + ("\n" if lines else "")

    def remove(self, project: str) -> None:
        with self._lock(project):
            self._running.pop(project, None)
            self._supervisor.stop(project)
            self._kill_orphan(project)
            shutil.rmtree(self._app_dir(project), ignore_errors=True)

    def stop_all(self) -> None:
        self._supervisor.stop_all()
