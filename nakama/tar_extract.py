"""Extract a tar stream of a commit's files (``git archive``) with nothing outside the target.

Python's own ``filter="data"`` (PEP 706) does this, but it came in 3.11.4 and 3.12: the system
Python of Debian 12 (3.11.2) has no filters. There the same rules are applied here, for the
member types ``git archive`` writes: regular files, directories and symbolic links. Anything
else, a name outside the target, or a link that leads out of it is refused."""

from __future__ import annotations

import os
import posixpath
import tarfile
from pathlib import Path

HAS_DATA_FILTER = hasattr(tarfile, "data_filter")


class UnsafeArchive(ValueError):
    """A member would land, or lead, outside the target directory."""


def extract_data(tar: tarfile.TarFile, dest: Path, *, use_filter: bool = HAS_DATA_FILTER) -> None:
    """Extract every member of ``tar`` (streamed: read in order, once) below ``dest``."""
    if use_filter:
        try:
            tar.extractall(dest, filter="data")
        except tarfile.FilterError as exc:  # type: ignore[attr-defined,unused-ignore]
            raise UnsafeArchive(str(exc)) from exc
        return
    for member in tar:
        _check(member)
        # as the data filter: no owners, no special bits, read-only for others
        member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
        if member.isdir():
            member.mode = 0o755
        elif member.isfile():
            member.mode = 0o755 if member.mode & 0o100 else 0o644
        tar.extract(member, dest, set_attrs=not member.issym())


def _inside(name: str) -> bool:
    normal = posixpath.normpath(name)
    return not (posixpath.isabs(name) or normal == ".." or normal.startswith("../"))


def _check(member: tarfile.TarInfo) -> None:
    if not (member.isfile() or member.isdir() or member.issym()):
        raise UnsafeArchive(f"{member.name!r} is not a regular file, a directory or a link")
    if not _inside(member.name):
        raise UnsafeArchive(f"{member.name!r} is outside the destination directory")
    if member.issym():
        target = posixpath.join(posixpath.dirname(member.name), member.linkname)
        if posixpath.isabs(member.linkname) or not _inside(target):
            raise UnsafeArchive(
                f"{member.name!r} is a link to {member.linkname!r}, outside the destination"
            )
