"""Reading a bounded piece of a pipeline's log, in both modes.

A log can be large (a build that prints a lot), and is read at every view and every look of a
live stream, so no reader holds more of it than it returns: :func:`read_file_piece` reads a byte
range of a file with ``pread``, and :class:`PieceCollector` keeps only the wanted range of a log
that arrives in chunks (a GitLab job trace). What to read is decided by :func:`window`.
"""

from __future__ import annotations

import os
from pathlib import Path

from nakama.errors import InvalidInput
from nakama.ports import LogPiece

READ_BYTES_SETTING = "logs.pipeline_log_read_bytes, NAKAMA_LOGS__PIPELINE_LOG_READ_BYTES"


def check_read_bytes(max_bytes: int, *, bound: int) -> None:
    """Refuse a read of more than ``bound`` bytes (or of none), naming the setting."""
    if not 1 <= max_bytes <= bound:
        raise InvalidInput(
            f"max_bytes must be from 1 to {bound}: a log is read {bound} bytes at most at a "
            f"time (setting {READ_BYTES_SETTING}); page through it with offset"
        )


def window(size: int, *, offset: int | None, max_bytes: int) -> tuple[int, int]:
    """The byte range ``[start, end)`` to read of a log of ``size`` bytes: from ``offset`` on,
    or the last ``max_bytes`` when ``offset`` is None."""
    start = max(0, size - max_bytes) if offset is None else min(max(0, offset), size)
    return start, min(size, start + max_bytes)


def read_file_piece(path: Path, *, offset: int | None, max_bytes: int) -> LogPiece:
    """A piece of the file at ``path`` (see :func:`window`); a missing file reads as empty."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return LogPiece(data=b"", start=0, size=0)
    try:
        size = os.fstat(fd).st_size
        start, end = window(size, offset=offset, max_bytes=max_bytes)
        parts, pos = [], start
        while pos < end:
            part = os.pread(fd, end - pos, pos)
            if not part:  # cut shorter under us
                break
            parts.append(part)
            pos += len(part)
        return LogPiece(data=b"".join(parts), start=start, size=size)
    finally:
        os.close(fd)


class PieceCollector:
    """Keeps the wanted piece of a log fed to it chunk by chunk (see :func:`window`), counting
    its whole size; holds at most about twice ``max_bytes``."""

    def __init__(self, *, offset: int | None, max_bytes: int) -> None:
        self._offset = offset
        self._max = max_bytes
        self.reset()

    def reset(self) -> None:
        """Start again from the log's first byte (a retried download)."""
        self._buf = bytearray()
        self._pos = 0

    def feed(self, chunk: bytes) -> None:
        if self._offset is None:
            self._buf += chunk
            if len(self._buf) > 2 * self._max:
                del self._buf[: len(self._buf) - self._max]
        else:
            lo = max(self._offset, self._pos)
            hi = min(self._offset + self._max, self._pos + len(chunk))
            if lo < hi:
                self._buf += chunk[lo - self._pos : hi - self._pos]
        self._pos += len(chunk)

    def piece(self) -> LogPiece:
        if self._offset is None:
            data = bytes(self._buf[-self._max :]) if self._max else b""
            return LogPiece(data=data, start=self._pos - len(data), size=self._pos)
        return LogPiece(data=bytes(self._buf), start=min(self._offset, self._pos), size=self._pos)


def complete_utf8(data: bytes) -> int:
    """How many bytes of ``data`` end on a character boundary: a UTF-8 sequence cut at the end
    (the rest is still to come) is left for the next piece."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # a continuation byte: look further back for its lead
            continue
        if byte < 0xC0:  # ASCII: complete
            return len(data)
        needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
        return len(data) - back if needed > back else len(data)
    return len(data)


def cut_note(piece: LogPiece) -> str:
    """The first line shown when a log's start was left out, or ``""``."""
    if piece.start == 0:
        return ""
    return (
        f"--- the first {piece.start} bytes of this log are left out (it has {piece.size}); "
        "read them with ?offset=0 ---\n"
    )
