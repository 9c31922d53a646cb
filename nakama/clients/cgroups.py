"""Limits for one app's processes: a control group per app where Nakama can make one, rlimits
where it cannot.

Three ways, picked once at start-up by :func:`detect` and reported by name:

- ``cgroup v2``: the unified hierarchy with the memory, pids and cpu controllers; Nakama moves
  itself into a leaf (``<own>/server``) so that it may enable them for ``<own>/apps/<app>``.
- ``cgroup v1``: the memory, pids and cpu hierarchies, each with ``<own>/nakama-apps/<app>``.
- ``rlimits``: per-process limits set before the sandbox starts: data size for memory, the
  process count per uid (one uid per app as root), file size for ``$DATA_DIR``; CPU time cannot
  be rate-limited this way and is not.

A group also tells when the kernel killed the app for memory (``oom_kill`` counts), so the
supervisor can say "out of memory" instead of "exited with code -9".
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nakama.limits import AppLimits
from nakama.logs import get_logger

log = get_logger(__name__)

_ROOT = Path("/sys/fs/cgroup")
_V1_CONTROLLERS = ("memory", "pids", "cpu")
_CPU_PERIOD_US = 100_000


@dataclass
class Group:
    """One app's control group (a directory per hierarchy)."""

    kind: str
    dirs: dict[str, Path] = field(default_factory=dict)  # controller (or "unified") -> dir

    def add(self, pid: int) -> None:
        for path in self.dirs.values():
            (path / "cgroup.procs").write_text(f"{pid}\n")

    def pids(self) -> list[int]:
        found: set[int] = set()
        for path in self.dirs.values():
            with contextlib.suppress(OSError, ValueError):
                found |= {int(x) for x in (path / "cgroup.procs").read_text().split()}
        return sorted(found)

    def oom_kills(self) -> int:
        """How many processes the kernel killed for memory in this group so far."""
        name = "memory.events" if self.kind == "cgroup v2" else "memory.oom_control"
        path = self.dirs.get("unified" if self.kind == "cgroup v2" else "memory")
        if path is None:
            return 0
        with contextlib.suppress(OSError, ValueError):
            for line in (path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def memory_bytes(self) -> int | None:
        path = self.dirs.get("unified" if self.kind == "cgroup v2" else "memory")
        name = "memory.current" if self.kind == "cgroup v2" else "memory.usage_in_bytes"
        with contextlib.suppress(OSError, ValueError, TypeError):
            return int((path / name).read_text()) if path else None
        return None

    def kill(self) -> None:
        """SIGKILL every process in the group, until none is left (new forks included)."""
        unified = self.dirs.get("unified")
        if unified is not None and (unified / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (unified / "cgroup.kill").write_text("1\n")
        deadline = time.monotonic() + 5
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self) -> None:
        self.kill()
        for path in self.dirs.values():
            for _ in range(50):  # the last processes may take a moment to leave
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


class Limiter:
    """Makes each app's group with its limits, or hands out rlimits."""

    def __init__(self, kind: str, bases: dict[str, Path] | None = None) -> None:
        self.kind = kind
        self._bases = bases or {}

    def describe(self) -> str:
        if self.kind == "rlimits":
            return (
                "limits by rlimits (no cgroup could be made: memory is a per-process data "
                "limit, CPU is not limited)"
            )
        return f"limits by {self.kind}"

    def group(self, app: str, limits: AppLimits) -> Group | None:
        """The app's group, made (or reused) with ``limits`` written; None with rlimits."""
        if self.kind == "rlimits":
            return None
        group = Group(self.kind, {key: base / app for key, base in self._bases.items()})
        for path in group.dirs.values():
            path.mkdir(exist_ok=True)
        if self.kind == "cgroup v2":
            path = group.dirs["unified"]
            _write(path / "memory.max", str(limits.memory_bytes))
            _write(path / "memory.swap.max", "0", optional=True)
            _write(path / "pids.max", str(limits.processes))
            _write(path / "cpu.max", f"{int(limits.cpu * _CPU_PERIOD_US)} {_CPU_PERIOD_US}")
        else:
            memory = group.dirs["memory"]
            # With swap accounting, swap counts too: the limit is the app's whole memory. The
            # kernel keeps memory <= memory+swap at every step: raise the outer one first.
            value = str(limits.memory_bytes)
            plain, memsw = memory / "memory.limit_in_bytes", memory / "memory.memsw.limit_in_bytes"
            raising = limits.memory_bytes > int(plain.read_text())
            for path in (memsw, plain) if raising else (plain, memsw):
                _write(path, value, optional=path == memsw)
            _write(group.dirs["pids"] / "pids.max", str(limits.processes))
            cpu = group.dirs["cpu"]
            _write(cpu / "cpu.cfs_period_us", str(_CPU_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(int(limits.cpu * _CPU_PERIOD_US)))
        return group

    def preexec(
        self, limits: AppLimits | None, group: Group | None, *, ignore_sigterm: bool
    ) -> Callable[[], None]:
        """The ``preexec_fn`` of an app or build: join ``group`` (before anything forks), set
        the rlimits, and with ``ignore_sigterm`` (a sandbox) leave SIGTERM to the app alone:
        bubblewrap's own processes ignore it."""
        files = [
            os.fsencode(path / "cgroup.procs") for path in (group.dirs.values() if group else ())
        ]
        rlimits = _rlimits(limits, cgroups=group is not None) if limits is not None else []

        def preexec() -> None:
            pid = str(os.getpid()).encode()
            for name in files:
                fd = os.open(name, os.O_WRONLY)
                try:
                    os.write(fd, pid)
                finally:
                    os.close(fd)
            for which, value in rlimits:
                resource.setrlimit(which, (value, value))
            if ignore_sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)

        return preexec


def _rlimits(limits: AppLimits, *, cgroups: bool) -> list[tuple[int, int]]:
    """Always: no core dumps, no file bigger than ``$DATA_DIR`` may hold. Without cgroups: the
    memory (data segment) and process count limits too."""
    found = [(resource.RLIMIT_CORE, 0), (resource.RLIMIT_FSIZE, limits.disk_bytes)]
    if not cgroups:
        found += [
            (resource.RLIMIT_DATA, limits.memory_bytes),
            (resource.RLIMIT_NPROC, limits.processes),
        ]
    return found


def _write(path: Path, value: str, *, optional: bool = False) -> None:
    try:
        path.write_text(value + "\n")
    except FileNotFoundError:
        if not optional:
            raise


def detect(instance: str, *, enabled: bool = True) -> Limiter:
    """The best way this machine offers; ``rlimits`` when no group can be made. ``instance``
    names this Nakama's groups apart from another's on the same machine."""
    if not enabled:
        return Limiter("rlimits")
    for attempt in (_try_v2, _try_v1):
        try:
            limiter = attempt(instance)
        except OSError as exc:
            log.info("cgroup not usable", way=attempt.__name__, error=str(exc)[:200])
            continue
        if limiter is not None:
            return limiter
    return Limiter("rlimits")


def _own_cgroups() -> dict[str, str]:
    """Controller (or "" for v2) -> our group's path, from /proc/self/cgroup."""
    found: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            found[name] = path
    return found


def _try_v2(instance: str) -> Limiter | None:
    if not (_ROOT / "cgroup.controllers").exists():
        return None  # no pure v2 hierarchy here (v1 or hybrid)
    own = _ROOT / _own_cgroups()[""].lstrip("/")
    wanted = {"memory", "pids", "cpu"}
    if not wanted <= set((own / "cgroup.controllers").read_text().split()):
        return None
    # No process may sit in a group whose controllers are enabled for its children: Nakama
    # moves itself into a leaf first.
    server = own / "server"
    server.mkdir(exist_ok=True)
    for pid in (own / "cgroup.procs").read_text().split():
        with contextlib.suppress(OSError):
            (server / "cgroup.procs").write_text(pid)
    (own / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(wanted)))
    apps = own / "apps"
    apps.mkdir(exist_ok=True)
    (apps / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(wanted)))
    apps = apps / instance
    apps.mkdir(exist_ok=True)
    (apps / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(wanted)))
    return Limiter("cgroup v2", {"unified": apps})


def _try_v1(instance: str) -> Limiter | None:
    own = _own_cgroups()
    bases: dict[str, Path] = {}
    for name in _V1_CONTROLLERS:
        if name not in own:
            return None
        mount = _ROOT / name
        if not (mount / "cgroup.procs").exists():
            return None
        base = mount / own[name].lstrip("/") / "nakama-apps" / instance
        base.mkdir(parents=True, exist_ok=True)
        bases[name] = base
    return Limiter("cgroup v1", bases)
