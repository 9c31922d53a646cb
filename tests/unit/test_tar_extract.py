"""A commit's tar stream is extracted below its target and nowhere else, with Python's data
filter where it has one and with the same rules where it has none (Debian 12's 3.11.2)."""

from __future__ import annotations

import contextlib
import copy
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from nakama.tar_extract import HAS_DATA_FILTER, UnsafeArchive, extract_data

REPO = Path(__file__).resolve().parents[2]
MODES = [pytest.param(False, id="own-rules")] + (
    [pytest.param(True, id="data-filter")] if HAS_DATA_FILTER else []
)


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buffer.seek(0)
    return buffer


def _file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data


def _link(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


def _extract(buffer: io.BytesIO, dest: Path, use_filter: bool) -> None:
    with tarfile.open(fileobj=buffer, mode="r|") as tar:
        extract_data(tar, dest, use_filter=use_filter)


@pytest.mark.parametrize("use_filter", MODES)
def test_a_commits_files_are_extracted(tmp_path: Path, use_filter: bool) -> None:
    dir_info = tarfile.TarInfo("pkg")
    dir_info.type, dir_info.mode = tarfile.DIRTYPE, 0o777
    buffer = _tar(
        _file("requirements.txt", b"six\n"),
        (dir_info, None),
        _file("pkg/run.sh", b"#!/bin/sh\n", mode=0o4755),  # setuid dropped
        _link("pkg/req.txt", "../requirements.txt"),
    )
    dest = tmp_path / "out"
    dest.mkdir()
    _extract(buffer, dest, use_filter)
    assert (dest / "requirements.txt").read_bytes() == b"six\n"
    assert (dest / "pkg" / "req.txt").read_bytes() == b"six\n"
    mode = (dest / "pkg" / "run.sh").stat().st_mode
    assert mode & 0o100 and not mode & 0o4000 and not mode & 0o002


@pytest.mark.parametrize("use_filter", MODES)
@pytest.mark.parametrize(
    "member",
    [
        _file("ABS"),
        _file("../evil"),
        _file("a/../../evil"),
        _link("out", "/etc/passwd"),
        _link("a/out", "../../etc/passwd"),
    ],
    ids=["absolute", "dotdot", "nested-dotdot", "absolute-link", "link-out"],
)
def test_nothing_lands_or_leads_outside(
    tmp_path: Path, use_filter: bool, member: tuple[tarfile.TarInfo, bytes | None]
) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    info, data = member
    if info.name == "ABS":  # an absolute name: refused, or (data filter) made relative
        absolute = copy.copy(info)
        absolute.name = str(tmp_path / "evil")
        with contextlib.suppress(UnsafeArchive):
            _extract(_tar((absolute, data)), dest, use_filter)
    else:
        with pytest.raises(UnsafeArchive):
            _extract(_tar(member), dest, use_filter)
    assert not (tmp_path / "evil").exists()
    assert not (dest / "out").is_symlink() and not (dest / "a" / "out").is_symlink()


def test_devices_and_fifos_are_refused(tmp_path: Path) -> None:
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    with pytest.raises(UnsafeArchive, match="not a regular file"):
        _extract(_tar((fifo, None)), tmp_path, False)
    assert not (tmp_path / "pipe").exists()


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="no system Python here")
def test_the_system_python_extracts_too(tmp_path: Path) -> None:
    """Debian 12's /usr/bin/python3 (3.11.2, no data filter) extracts a real ``git archive``."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
    (repo / "requirements.txt").write_text("six\n")
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True, env=env)
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "c"],
        check=True,
        env=env,
    )
    code = (
        "import subprocess, sys, tarfile\n"
        "from pathlib import Path\n"
        "from nakama.tar_extract import HAS_DATA_FILTER, extract_data\n"
        f"git = subprocess.Popen(['git', '-C', {str(repo)!r}, 'archive', '--format=tar', 'HEAD'],"
        " stdout=subprocess.PIPE)\n"
        "with tarfile.open(fileobj=git.stdout, mode='r|') as tar:\n"
        f"    extract_data(tar, Path({str(tmp_path / 'out')!r}))\n"
        "print(sys.version_info[:3], HAS_DATA_FILTER)\n"
    )
    (tmp_path / "out").mkdir()
    result = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", f"import sys; sys.path.insert(0, {str(REPO)!r})\n{code}"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "requirements.txt").read_text() == "six\n"
