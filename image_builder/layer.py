"""One directory written as an OCI image layer: a gzip-compressed tar, the same bytes for the
same files.

The layer path of ``nakama build`` (:mod:`image_builder.layer_build`) installs an app's
environment into a directory laid out as it will be in the image and writes it here, as ko and
Jib write theirs: no container runtime, nothing run from the base image. What makes two builds of
the same files give the same digest (so that a registry keeps the blob once):

* entries in byte order of their paths, the parents of ``prefix`` first;
* owner and group 0 without names, mtime :data:`LAYER_MTIME`;
* modes normalised: directories 0755, files 0755 if anyone may run them else 0644, links 0777;
* regular files, directories and symbolic links only (a hard link is written as a file again:
  the tar must not depend on which name was walked first); anything else is refused;
* the PAX format, no gzip file name, gzip mtime 0, blocks deflated the same way whatever the
  number of cores.

The ``diff_id`` (what the image config lists) is the sha256 of the tar, the ``digest`` (what the
manifest lists) that of the gzip; both are computed while writing.
"""

from __future__ import annotations

import collections
import hashlib
import os
import stat
import struct
import tarfile
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, cast

from nakama.errors import PermanentError

# 1970-01-01T00:00:01Z: a fixed time (Jib's choice; 0 makes some tools think the time unset).
LAYER_MTIME = 1
_COPY_BYTES = 1024 * 1024
_BLOCK_BYTES = 1024 * 1024  # deflated apart, on several threads (pigz's way)
_WINDOW_BYTES = 32 * 1024  # deflate's window: each block is primed with this much before it


@dataclass(frozen=True)
class Layer:
    """A written layer: the gzip file, its digests and sizes."""

    path: Path
    digest: str  # sha256 of the compressed blob: the manifest's layer digest
    diff_id: str  # sha256 of the uncompressed tar: the config's rootfs.diff_ids entry
    size: int  # bytes of the compressed blob
    tar_size: int  # bytes of the uncompressed tar
    entries: int


class _ParallelGzip:
    """A gzip writer that deflates blocks of :data:`_BLOCK_BYTES` on several threads (zlib lets
    go of the GIL), as pigz does: each block is primed with the 32 KiB of input before it, ends
    on a sync flush, and the last one finishes the stream, so the output is one ordinary gzip
    member, nearly as small as a serial one and the same for the same input."""

    def __init__(self, target: BinaryIO, *, level: int, workers: int) -> None:
        self._target = target
        self._level = level
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers))
        self._window = max(2, 2 * workers)
        self._pending: collections.deque[Future[bytes]] = collections.deque()
        self._buffer = bytearray()
        self._tail = b""
        self._crc = 0
        self._size = 0
        # Magic, deflate, no flags, mtime 0, no extra flags, OS unknown (as gzip.compress).
        target.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")

    def write(self, data: bytes) -> int:
        self._buffer += data
        while len(self._buffer) >= _BLOCK_BYTES:
            block = bytes(self._buffer[:_BLOCK_BYTES])
            del self._buffer[:_BLOCK_BYTES]
            self._submit(block, last=False)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._submit(bytes(self._buffer), last=True)
        self._buffer.clear()
        while self._pending:
            self._target.write(self._pending.popleft().result())
        self._pool.shutdown()
        self._target.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))

    def _submit(self, block: bytes, *, last: bool) -> None:
        self._crc = zlib.crc32(block, self._crc)
        self._size += len(block)
        primer, self._tail = self._tail, block[-_WINDOW_BYTES:]
        self._pending.append(self._pool.submit(_deflate, block, primer, self._level, last))
        while len(self._pending) > self._window:
            self._target.write(self._pending.popleft().result())


def _deflate(block: bytes, primer: bytes, level: int, last: bool) -> bytes:
    if primer:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, primer)
    else:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY)
    return compressor.compress(block) + compressor.flush(
        zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH
    )


class _Hashing:
    """A write-only file that hashes and counts what passes through it to ``target``."""

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._target.write(data)

    def flush(self) -> None:
        self._target.flush()


def write_layer(source: Path, *, prefix: str, target: Path, compresslevel: int = 6) -> Layer:
    """Write the tree ``source`` as the layer file ``target``, its contents under ``prefix``
    (``opt/nakama/venv``: ``source/bin/python`` becomes ``opt/nakama/venv/bin/python``)."""
    root = PurePosixPath(prefix.strip("/"))
    if not root.parts or ".." in root.parts:
        raise ValueError(f"layer prefix must be a relative path without '..', got {prefix!r}")
    entries = 0
    with target.open("wb") as raw:
        compressed = _Hashing(raw)
        zipped = _ParallelGzip(cast(BinaryIO, compressed), level=compresslevel,
                               workers=os.cpu_count() or 1)  # fmt: skip
        try:
            plain = _Hashing(cast(BinaryIO, zipped))
            with tarfile.open(
                fileobj=cast(BinaryIO, plain),  # only write() and flush() are used
                mode="w|",
                format=tarfile.PAX_FORMAT,
                bufsize=_COPY_BYTES,
            ) as tar:
                for depth in range(1, len(root.parts)):
                    tar.addfile(_directory(str(PurePosixPath(*root.parts[:depth]))))
                    entries += 1
                for path, name in _walk(source, root):
                    entries += _add(tar, path, name)
        finally:
            zipped.close()
    return Layer(
        path=target,
        digest=f"sha256:{compressed.sha256.hexdigest()}",
        diff_id=f"sha256:{plain.sha256.hexdigest()}",
        size=compressed.size,
        tar_size=plain.size,
        entries=entries,
    )


def _walk(source: Path, root: PurePosixPath) -> list[tuple[Path, str]]:
    """Every path under ``source`` (itself first) with its name in the layer, in byte order
    of the names (so ``a/b`` comes before ``a-b``, as a sorted tar listing has it)."""
    found: list[tuple[Path, str]] = [(source, str(root))]
    for dirpath, dirnames, filenames in os.walk(source):
        base = Path(dirpath)
        for name in (*dirnames, *filenames):
            path = base / name
            found.append((path, str(root / path.relative_to(source).as_posix())))
    found.sort(key=lambda item: item[1].encode("utf-8", "surrogateescape"))
    return found


def _add(tar: tarfile.TarFile, path: Path, name: str) -> int:
    info = os.lstat(path)
    if stat.S_ISDIR(info.st_mode):
        tar.addfile(_directory(name))
    elif stat.S_ISLNK(info.st_mode):
        entry = _entry(name, tarfile.SYMTYPE, 0o777)
        entry.linkname = os.readlink(path)
        tar.addfile(entry)
    elif stat.S_ISREG(info.st_mode):
        entry = _entry(name, tarfile.REGTYPE, 0o755 if info.st_mode & 0o111 else 0o644)
        entry.size = info.st_size
        with path.open("rb") as f:
            tar.addfile(entry, f)
    else:
        raise PermanentError(f"{name}: not a file, directory or link; a layer cannot hold it")
    return 1


def _directory(name: str) -> tarfile.TarInfo:
    return _entry(name, tarfile.DIRTYPE, 0o755)


def _entry(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    entry = tarfile.TarInfo(name)
    entry.type = kind
    entry.mode = mode
    entry.uid = entry.gid = 0
    entry.uname = entry.gname = ""
    entry.mtime = LAYER_MTIME
    return entry
