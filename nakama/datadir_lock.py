"""One ``nakama up`` per data dir.

A second server on the same data dir would take the first one's apps for leftovers of a crashed
run and stop them, run the same jobs twice and race it on the database. ``nakama up`` therefore
holds an exclusive ``flock`` on ``<data_dir>/nakama.lock`` for its whole life, taken before it
touches anything else in the data dir. The kernel drops the lock when the process ends however it
ends (``kill -9`` included), so a lock file left behind by a dead server locks nothing. The file
names the holder (its pid and the URL it serves) for the refusal message of the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from nakama.errors import Conflict

LOCK_FILE = "nakama.lock"
# The holder's description is two short lines; more is not read.
_READ_BYTES = 4096


class DataDirInUse(Conflict):
    """Another live process holds the data dir's lock."""

    def __init__(self, message: str, *, pid: int | None, url: str | None) -> None:
        super().__init__(message)
        self.pid = pid
        self.url = url


@dataclass(frozen=True)
class Holder:
    """Who holds the lock, as its file says (either part may be unknown)."""

    pid: int | None
    url: str | None


def describe(pid: int, url: str) -> str:
    """The lock file's content: the holder's pid and the URL it serves, one line each."""
    return f"pid {pid}\nurl {url}\n"


def parse(text: str) -> Holder:
    """The holder named by a lock file's ``text``; unknown parts are None (a file being written,
    or one from a future version)."""
    pid: int | None = None
    url: str | None = None
    for line in text.splitlines()[:2]:
        key, _, value = line.partition(" ")
        if key == "pid" and value.isdigit():
            pid = int(value)
        elif key == "url" and value:
            url = value
    return Holder(pid=pid, url=url)


def in_use_message(data_dir: Path, holder: Holder) -> str:
    who = f"process {holder.pid}" if holder.pid is not None else "another process"
    serving = f", which serves {holder.url}" if holder.url else ""
    return (
        f"the data dir {data_dir} is in use by nakama {who}{serving}. "
        "Use that server, stop it first, or give this one another --data-dir."
    )


class DataDirLock:
    """The held lock: released by ``release()`` or when the process ends (then the file
    still names the process, which no longer holds it)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        """Unlock; the file is emptied first (it names no holder any more). The file itself
        stays: removing it could split the lock between two processes, one holding the
        removed file and one a new one."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


def lock_data_dir(data_dir: Path, *, url: str) -> DataDirLock:
    """Take ``data_dir``'s lock for this process, which serves ``url``; DataDirInUse if a live
    process holds it. Creates the data dir (0700) if it does not exist yet."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    # Not inherited by the app processes started later (Python opens descriptors close-on-exec):
    # an app outliving a killed server must not keep its lock.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = parse(os.pread(fd, _READ_BYTES, 0).decode(errors="replace"))
        finally:
            os.close(fd)
        raise DataDirInUse(
            in_use_message(data_dir, holder), pid=holder.pid, url=holder.url
        ) from None
    except BaseException:
        os.close(fd)
        raise
    content = describe(os.getpid(), url).encode()
    # Written over the old content, then cut to length: a reader never sees an empty file, and
    # reads the first two lines only.
    with contextlib.suppress(OSError):  # a full disk: the lock holds all the same
        os.pwrite(fd, content, 0)
        os.ftruncate(fd, len(content))
    return DataDirLock(path, fd)
