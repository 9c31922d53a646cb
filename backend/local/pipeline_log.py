"""A local pipeline's log file, capped on write.

A build prints what its packages print; one that prints gigabytes must not fill the disk, nor
make every later read of its log costly. :func:`open_pipeline_log` gives the text file a job
writes into: past ``max_bytes`` it writes one line saying the log was truncated, drops what
follows, and keeps only the last few KiB in memory, written at close, so the end of the
pipeline (its error and status) is still in the log. The file never exceeds ``max_bytes``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

MAX_BYTES_SETTING = "logs.pipeline_log_max_bytes, NAKAMA_LOGS__PIPELINE_LOG_MAX_BYTES"
_TAIL_BYTES = 16 * 1024  # of the output after the cap, kept for the end of the log


def open_pipeline_log(path: Path, *, max_bytes: int) -> TextIO:
    """``path`` opened for appending text (UTF-8, line-buffered), capped at ``max_bytes``."""
    raw = _CappedFile(path, max_bytes=max_bytes)
    return io.TextIOWrapper(
        io.BufferedWriter(raw), encoding="utf-8", errors="replace", line_buffering=True
    )


class _CappedFile(io.RawIOBase):
    def __init__(self, path: Path, *, max_bytes: int) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._size = os.fstat(self._fd).st_size
        self._max = max_bytes
        # Room kept at the end for the note and the last lines.
        self._tail_room = min(_TAIL_BYTES, max_bytes // 4)
        self._body_limit = max(0, max_bytes - self._tail_room - 400)
        self._truncated = self._size >= self._body_limit
        self._dropped = 0
        self._tail = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        chunk = bytes(data)
        count = len(chunk)
        if not self._truncated:
            room = self._body_limit - self._size
            self._append(chunk[:room])
            if count <= room:
                return count
            self._truncated = True
            self._append(
                (
                    f"\n--- log truncated: a pipeline log is kept to {self._max} bytes (setting "
                    f"{MAX_BYTES_SETTING}); what follows is dropped but for its last lines ---\n"
                ).encode()
            )
            chunk = chunk[room:]
        self._dropped += len(chunk)
        self._tail += chunk
        if len(self._tail) > 2 * self._tail_room:
            del self._tail[: len(self._tail) - self._tail_room]
        return count

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._dropped:
                self._write_tail()
        finally:
            os.close(self._fd)
            super().close()

    def _write_tail(self) -> None:
        tail = bytes(self._tail[-self._tail_room :]) if self._tail_room else b""
        if len(tail) < self._dropped:  # start at a line, if one starts in what is kept
            newline = tail.find(b"\n")
            tail = tail[newline + 1 :] if 0 <= newline < len(tail) - 1 else tail
        shown = len(tail)
        note = f"--- {self._dropped - shown} bytes dropped; the last {shown} follow ---\n"
        room = max(0, self._max - self._size)
        self._append((note.encode() + tail)[:room])

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            self._size += written
            view = view[written:]
