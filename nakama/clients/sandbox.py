"""The sandbox every app process and every build step that runs project code starts in.

It is made with bubblewrap (``bwrap``): a new mount namespace in which only the system's
read-only directories, the paths a :class:`Jail` names and a private ``/tmp`` exist, its own PID
namespace (``/proc`` shows the sandbox's processes only, and when its first process ends the
kernel ends every process left in it, ``setsid()`` or not: ``--die-with-parent``), and its own
IPC and UTS namespaces. The sandbox also ends with the thread that started it, so a caller
starts sandboxes from a thread that lives as long as Nakama.
The network is the host's: apps listen on loopback for the gateway and may call out.

As root, the command runs as the jail's uid with every capability dropped and
``no_new_privs`` set (util-linux ``setpriv`` inside the sandbox, after bubblewrap made the
mounts). Otherwise bubblewrap makes an unprivileged user namespace and the process runs as
Nakama's uid mapped into it.

bubblewrap's own processes (the monitor outside and the reaper that is the sandbox's PID 1)
ignore SIGTERM, so that stopping an app sends SIGTERM to the app alone and it can finish its
requests; the app gets SIGTERM back at its default (coreutils ``env --default-signal``).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nakama.errors import NakamaError

# Read-only in every sandbox: programs, libraries, certificates, time zones, locales.
_SYSTEM_DIRS = ("/usr", "/etc", "/opt")
_SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SANDBOX_SETTING = "NAKAMA_RUNTIME__SANDBOX"


class SandboxUnavailable(NakamaError):
    """The sandbox cannot be made on this machine; the message names what is missing."""


@dataclass(frozen=True)
class Jail:
    """What one sandboxed process sees besides the system: ``ro`` read-only, ``rw`` writable
    (both at the same paths as outside), and where it starts."""

    ro: tuple[Path, ...] = ()
    rw: tuple[Path, ...] = ()
    cwd: Path | None = None
    uid: int | None = None  # as root: the uid (and gid) it runs as; ignored otherwise
    hostname: str = "nakama-app"
    # Read-only files that exist only in the sandbox, with their content (kept in memory, never
    # on disk): the app's ``.streamlit/secrets.toml``. Their directories must exist.
    files: tuple[tuple[Path, bytes], ...] = ()


class Sandbox:
    """Turns a command into its sandboxed form; ``off`` returns it as it is."""

    def __init__(self, mode: str = "bwrap") -> None:
        self.mode = mode
        self._bwrap = shutil.which("bwrap") if mode == "bwrap" else None

    @property
    def enabled(self) -> bool:
        return self.mode == "bwrap"

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    def describe(self) -> str:
        """One line for the start-up log and the project page."""
        if not self.enabled:
            return (
                "apps run UNSANDBOXED as Nakama's own user with the whole machine in view "
                f"({SANDBOX_SETTING}=off): only for a single-user machine"
            )
        who = "one uid per app" if self.as_root else "Nakama's uid in a user namespace"
        return f"apps and builds run in a bubblewrap sandbox ({who})"

    def check(self) -> None:
        """Raise :class:`SandboxUnavailable` unless a sandbox can be made here (it runs one)."""
        if not self.enabled:
            return
        if self._bwrap is None:
            raise SandboxUnavailable(
                "bubblewrap (bwrap) is not installed: install it (Debian and Ubuntu: "
                f"apt-get install bubblewrap), or set {SANDBOX_SETTING}=off on a single-user "
                "machine to run apps unsandboxed"
            )
        for tool in ("setpriv", "env"):
            if self.as_root and shutil.which(tool) is None:
                raise SandboxUnavailable(f"{tool} is missing (Debian: util-linux, coreutils)")
        probe = self.wrap(["/bin/true"], Jail(uid=_probe_uid()))
        try:
            result = subprocess.run(
                probe, capture_output=True, timeout=30, preexec_fn=ignore_sigterm, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxUnavailable(f"bubblewrap could not start: {exc}") from exc
        if result.returncode != 0:
            why = result.stderr.decode(errors="replace").strip()[-300:]
            hint = (
                ""
                if self.as_root
                else " (without root it needs unprivileged user namespaces: "
                "sysctl kernel.unprivileged_userns_clone=1)"
            )
            raise SandboxUnavailable(
                f"bubblewrap cannot make a sandbox here{hint}: {why}; or set "
                f"{SANDBOX_SETTING}=off on a single-user machine"
            )

    def wrap(self, argv: Sequence[str], jail: Jail, *, file_fds: Sequence[int] = ()) -> list[str]:
        """``argv`` as it runs in ``jail``; ``file_fds`` are readable descriptors holding the
        content of ``jail.files`` (see :func:`memory_files`), passed to the child."""
        if not self.enabled:
            return list(argv)
        args = [self._bwrap or "bwrap", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        # bubblewrap's PID 1 waits for every process in the sandbox, so one that called
        # setsid() would keep it alive past the command: with this, the sandbox ends (the kernel
        # kills what is left) once the command has ended, and when its caller's thread ends.
        args.append("--die-with-parent")
        args += ["--hostname", jail.hostname]
        if not self.as_root:
            args += ["--unshare-user", "--disable-userns"]
        args += _system_mounts()
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108
        args += _mounts(jail)
        for (dest, _content), fd in zip(jail.files, file_fds, strict=True):
            args += ["--perms", "0444", "--ro-bind-data", str(fd), str(dest)]
        if jail.cwd is not None:
            args += ["--chdir", str(jail.cwd)]
        args.append("--")
        if self.as_root:
            uid = str(jail.uid if jail.uid is not None else _probe_uid())
            args += ["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups"]
            args += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        args += ["env", "--default-signal=TERM", *argv]
        return args


def memory_files(jail: Jail) -> list[int]:
    """A descriptor per file of ``jail``, holding its content in memory (a memfd at offset 0);
    the caller closes them once the sandbox started."""
    fds = []
    for dest, content in jail.files:
        fd = os.memfd_create(f"nakama-{dest.name}", 0)
        os.write(fd, content)
        os.lseek(fd, 0, os.SEEK_SET)
        fds.append(fd)
    return fds


def ignore_sigterm() -> None:
    """``preexec_fn`` for a sandbox: bubblewrap's processes inherit SIGTERM ignored."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _probe_uid() -> int:
    return 65534  # nobody: the check needs no uid of its own


@functools.cache
def _system_mounts() -> tuple[str, ...]:
    args: list[str] = []
    for path in _SYSTEM_DIRS:
        if os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in _SYSTEM_LINKS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return tuple(args)


def _covered(path: Path, mounts: Sequence[Path]) -> bool:
    return any(path == m or path.is_relative_to(m) for m in mounts)


def _mounts(jail: Jail) -> list[str]:
    """The jail's binds, parents first; missing parent directories are made traversable."""
    system = [Path(p) for p in (*_SYSTEM_DIRS, *_SYSTEM_LINKS)]
    binds = sorted(
        [(p, "--ro-bind") for p in jail.ro] + [(p, "--bind") for p in jail.rw],
        key=lambda item: len(item[0].parts),
    )
    args: list[str] = []
    made: set[Path] = set()
    mounted: list[Path] = []
    for path, kind in binds:
        for parent in reversed(path.parents):
            if parent == Path("/") or parent in made or _covered(parent, system):
                continue
            if _covered(parent, mounted):
                continue  # inside an earlier bind: it exists there
            args += ["--perms", "0755", "--dir", str(parent)]
            made.add(parent)
        args += [kind, str(path), str(path)]
        mounted.append(path)
    return args


def python_roots(python: Path) -> list[Path]:
    """Where the interpreter behind a virtualenv's ``bin/python`` lives, if outside /usr:
    the installation's prefix, to be bound read-only."""
    real = Path(os.path.realpath(python))
    prefix = real.parent.parent
    if _covered(prefix, [Path(p) for p in _SYSTEM_DIRS]):
        return []
    return [prefix]
