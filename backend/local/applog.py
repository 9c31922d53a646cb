"""An app's output in local mode: a pipe pumped into a size-bounded log of two files.

A child that writes straight into a file can fill the disk, and reading that file whole to show
its tail can fill memory. So the child writes into a pipe; :func:`pump` copies it in raw reads of
at most 64 KiB (a gigabyte without a newline costs no more) into a :class:`RotatingLog`, which
keeps the newest ``max_bytes`` at most across ``app.log`` and ``app.log.1``; :func:`read_tail`
reads the newest lines of both from their ends. A failing disk never stops the pump: output is
dropped, counted and reported in the log once writing works again.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

_CHUNK = 64 * 1024  # one raw read from the pipe, one step when reading a tail backwards
_TAIL_OPEN_ATTEMPTS = 3  # opening both files again when a rotation came in between


def rotated_path(path: Path) -> Path:
    """Where the older half of ``path``'s output lives: ``app.log`` -> ``app.log.1``."""
    return path.with_name(path.name + ".1")


class RotatingLog:
    """Appends bytes to ``path``, keeping at most ``max_bytes`` of the newest across two files.

    A write that would take ``path`` past ``max_bytes // 2`` first renames it to ``path.1``
    (replacing the older one) and starts a new ``path``, so a reader finds either the old pair or
    the new one and files start where a write started (one larger than half a log is split).
    An existing ``path`` is appended to. Thread-safe; a write never raises: bytes that cannot be
    written are counted and reported by a line ``--- N bytes of output dropped: <reason> ---``
    once writing works again. Writes after :meth:`close` are ignored. Creating one raises
    ``OSError`` only if ``path`` cannot be opened at all.
    """

    def __init__(self, path: Path, *, max_bytes: int) -> None:
        if max_bytes < 2:
            raise ValueError(f"max_bytes must be at least 2, not {max_bytes}")
        self._path = Path(path)
        self._max_bytes = max_bytes
        self._half = max_bytes // 2
        self._lock = threading.Lock()
        self._file: io.FileIO | None = None
        self._size = 0
        self._at_line_start = True
        self._closed = False
        self._dropped = 0
        self._drop_reason = ""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._open_locked()

    @property
    def path(self) -> Path:
        return self._path

    def write(self, data: bytes) -> None:
        """Append ``data`` as one piece: no other write lands inside it."""
        if data:
            with self._lock:
                self._write_locked(data)

    def write_line(self, text: str) -> None:
        """Append ``text`` as a line of its own (Nakama's markers, such as
        ``--- started pid N at T ---``), after a newline if the output so far ended mid-line."""
        with self._lock:
            self._write_locked(self._line_locked(text))

    def close(self) -> None:
        """Report bytes still dropped if the disk allows, then close; idempotent."""
        with self._lock:
            if self._closed:
                return
            if self._dropped:
                self._report_dropped_locked()
            self._closed = True
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None

    def __enter__(self) -> RotatingLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line_locked(self, text: str) -> bytes:
        prefix = b"" if self._at_line_start else b"\n"
        return prefix + text.rstrip("\n").encode("utf-8", "replace") + b"\n"

    def _write_locked(self, data: bytes) -> None:
        if self._closed:
            return
        if self._dropped and not self._report_dropped_locked():
            self._dropped += len(data)
            return
        self._dropped += self._append_locked(data)

    def _report_dropped_locked(self) -> bool:
        line = f"--- {self._dropped} bytes of output dropped: {self._drop_reason} ---"
        if self._append_locked(self._line_locked(line)):
            return False
        self._dropped, self._drop_reason = 0, ""
        return True

    def _append_locked(self, data: bytes) -> int:
        """Write ``data``; return how many of its bytes could not be written, noting why."""
        # Of one write longer than the whole log, only its last max_bytes would be kept anyway.
        view = memoryview(data)[-self._max_bytes :]
        try:
            while view:
                piece = view[: self._half]
                log = self._file or self._open_locked()
                if self._size and self._size + len(piece) > self._half:
                    log = self._rotate_locked()
                if not (written := log.write(piece)):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self._size += written
                self._at_line_start = piece[written - 1] == ord("\n")
                view = view[written:]
        except OSError as exc:
            self._drop_reason = self._drop_reason or (
                os.strerror(exc.errno) if exc.errno else str(exc)
            )
            return len(view)
        return 0

    def _open_locked(self) -> io.FileIO:
        log = io.FileIO(self._path, "a+")  # unbuffered: each write reaches the file whole
        self._size = os.fstat(log.fileno()).st_size
        self._at_line_start = not self._size or os.pread(log.fileno(), 1, self._size - 1) == b"\n"
        self._file = log
        return log

    def _rotate_locked(self) -> io.FileIO:
        """Rename then open: a reader sees the old pair of files or the new one, never a mix."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        older = rotated_path(self._path)
        with contextlib.suppress(FileNotFoundError):  # removed under us: nothing to rotate
            os.replace(self._path, older)
            if self._size > self._half:  # a log written before it was bounded
                _keep_tail(older, keep=self._half)
        return self._open_locked()


def _keep_tail(path: Path, *, keep: int) -> None:
    """Replace ``path`` by its last ``keep`` bytes; on failure leave it for the next rotation."""
    part = path.with_name(path.name + ".part")
    try:
        with open(path, "rb") as src, open(part, "wb") as dst:
            src.seek(max(0, os.fstat(src.fileno()).st_size - keep))
            shutil.copyfileobj(src, dst, _CHUNK)
        os.replace(part, path)
    except OSError:
        part.unlink(missing_ok=True)


def pump(pipe: int | IO[bytes], log: RotatingLog) -> None:
    """Copy ``pipe`` (a file descriptor or a binary file) into ``log`` until end of file, then
    close it. Memory stays at one 64 KiB read whatever the output looks like."""
    read = _reader(pipe)
    try:
        while data := read():
            log.write(data)
    except OSError as exc:
        log.write_line(f"--- reading the app's output failed: {exc} ---")
    finally:
        with contextlib.suppress(OSError):
            if isinstance(pipe, int):
                os.close(pipe)
            else:
                pipe.close()


def _reader(pipe: int | IO[bytes]) -> Callable[[], bytes]:
    """One raw read of at most 64 KiB per call; b"" at end of file."""
    if isinstance(pipe, int):
        return lambda: os.read(pipe, _CHUNK)
    read1 = getattr(pipe, "read1", None)  # a buffered pipe: at most one raw read per call
    if read1 is not None:
        return lambda: bytes(read1(_CHUNK))
    return lambda: pipe.read(_CHUNK) or b""


def start_pump(pipe: int | IO[bytes], log: RotatingLog, name: str) -> threading.Thread:
    """:func:`pump` in a daemon thread named for the app; join it to wait for end of file."""
    thread = threading.Thread(target=pump, args=(pipe, log), name=f"nakama-log-{name}", daemon=True)
    thread.start()
    return thread


def read_tail(path: Path, *, lines: int, max_bytes: int = 1 << 20, terminated: bool = False) -> str:
    """The last ``lines`` lines across ``path.1`` and ``path`` (older first), joined with
    ``"\\n"`` and decoded with replacement, reading at most ``max_bytes`` from their ends;
    ``terminated`` adds a final ``"\\n"`` when there are lines. A missing log reads as ``""``."""
    if lines <= 0 or max_bytes <= 0:
        return ""
    chunks: list[bytes] = []  # newest first
    newlines, budget = 0, max_bytes
    for fd in _open_newest_first(Path(path)):
        try:
            pos = os.fstat(fd).st_size
            while pos > 0 and newlines <= lines and budget > 0:
                step = min(_CHUNK, pos, budget)
                pos -= step
                chunk = os.pread(fd, step, pos)
                chunks.append(chunk)
                newlines += chunk.count(b"\n")
                budget -= step
        finally:
            os.close(fd)
    text = b"".join(reversed(chunks)).decode("utf-8", "replace")
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) + ("\n" if terminated and tail else "")


def _open_newest_first(path: Path) -> list[int]:
    """Descriptors of ``path`` then ``path.1`` as one consistent pair: if ``path`` is another
    file after both opens, a rotation came in between (``path.1`` may be the file just opened
    as ``path``), so open them again; in the end the newest file alone is consistent."""
    for attempt in range(_TAIL_OPEN_ATTEMPTS):
        current = _open_if_present(path)
        older = _open_if_present(rotated_path(path))
        if current is None or older is None:
            return [fd for fd in (current, older) if fd is not None]
        if _still_at(path, current):
            return [current, older]
        os.close(older)
        if attempt == _TAIL_OPEN_ATTEMPTS - 1:
            return [current]
        os.close(current)
    return []


def _still_at(path: Path, fd: int) -> bool:
    try:
        return os.path.samestat(os.stat(path), os.fstat(fd))
    except FileNotFoundError:
        return False


def _open_if_present(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None


def remove_logs(path: Path) -> None:
    """Delete ``path`` and its rotated older half; missing files are fine."""
    path = Path(path)
    for file in (path, rotated_path(path), path.with_name(rotated_path(path).name + ".part")):
        file.unlink(missing_ok=True)
