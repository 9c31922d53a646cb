"""Which file a build installs the Python dependencies from, and lock files made into pinned
requirements, decided without I/O.

A repository may bring several of them; the first present wins (:data:`PRECEDENCE`):

1. ``uv.lock``: exported by uv itself (:func:`uv_export_args`: ``uv export --frozen``, the
   project's main dependencies without its dev group and without the project's own packages);
2. ``poetry.lock``: :func:`poetry_requirements` reads Poetry's lock file (``lock-version`` 2.1,
   Poetry 2) and pins every package of the ``main`` group with its hashes and markers, so no
   Poetry is needed;
3. ``Pipfile.lock``: :func:`pipfile_requirements` pins its ``default`` section with its hashes
   and markers;
4. ``requirements.txt``, then 5. ``pyproject.toml``, installed as they are.

What a lock file made here cannot hold is refused with a :class:`LockFileError` naming the file
and the key (or TOML's or JSON's line and column): packages from git, a path or a URL (a build
has only the dependency files), and Poetry lock files older than 2.1, whose packages carry no
group, so the main group cannot be told from the dev group without Poetry's resolver.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from nakama.errors import PermanentError

UV_LOCK = "uv.lock"
POETRY_LOCK = "poetry.lock"
PIPFILE_LOCK = "Pipfile.lock"
REQUIREMENTS = "requirements.txt"
PYPROJECT = "pyproject.toml"
PRECEDENCE = (UV_LOCK, POETRY_LOCK, PIPFILE_LOCK, REQUIREMENTS, PYPROJECT)
LOCK_FILES = (UV_LOCK, POETRY_LOCK, PIPFILE_LOCK)
# The pinned requirements a lock file is made into: in the build context of a cluster build, in
# the environment of a local one (a record of what was installed).
LOCKED_REQUIREMENTS = "nakama-requirements.txt"

_HASH = re.compile(r"^[a-z0-9]+:[0-9a-fA-F]{32,128}$")
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_VERSION = re.compile(r"^[A-Za-z0-9.+!_-]+$")
_EXTRA = _NAME
_NAME_URL = ("name", "url")
# Index URLs that are PyPI's: the operator's configured index stands in for them (a mirror on a
# machine without the internet), so they are never written into the requirements.
_PYPI_INDEXES = ("https://pypi.org/simple", "https://pypi.python.org/simple")


class LockFileError(PermanentError):
    """A lock file that cannot be installed from; the message names the file and where."""


@dataclass(frozen=True)
class InstallSource:
    """The file a build installs from, and the candidates present that it leaves unused."""

    file: str
    ignored: tuple[str, ...] = ()

    @property
    def is_lock(self) -> bool:
        return self.file in LOCK_FILES

    def describe(self) -> str:
        """One line for the build log: what is installed, from which file."""
        how = {
            UV_LOCK: "uv.lock (uv export --frozen: the main dependencies, no dev group)",
            POETRY_LOCK: "poetry.lock (the main group, pinned with its hashes)",
            PIPFILE_LOCK: "Pipfile.lock (its default packages, pinned with their hashes)",
        }.get(self.file, self.file)
        line = f"installing the Python dependencies from {how}"
        if self.ignored:
            line += f"; not used: {', '.join(self.ignored)} ({self.file} comes first)"
        return line


def choose_source(paths: Collection[str]) -> InstallSource | None:
    """The first of :data:`PRECEDENCE` among the repository's root ``paths``, or None."""
    present = [name for name in PRECEDENCE if name in paths]
    if not present:
        return None
    # pyproject.toml goes with uv.lock and poetry.lock: it is not "left unused" by them.
    pairs = present[0] in (UV_LOCK, POETRY_LOCK)
    ignored = [n for n in present[1:] if not (n == PYPROJECT and pairs)]
    return InstallSource(present[0], tuple(ignored))


def uv_export_args(*, project_dir: str, output: str) -> list[str]:
    """The arguments after ``uv`` that write ``project_dir``'s ``uv.lock`` as requirements with
    hashes into ``output``: the lock as it is (``--frozen``: nothing is resolved again, no
    interpreter is needed), the project's main dependencies (no dev group), without the
    workspace's own packages (the app's code is not a package to install)."""
    return [
        "export", "--frozen", "--no-dev", "--no-emit-workspace", "--no-header", "--quiet",
        "--format", "requirements-txt", "--project", project_dir, "--output-file", output,
    ]  # fmt: skip


def count_requirements(text: str) -> int:
    """How many packages a requirements text pins (its lines that start a requirement)."""
    return sum(1 for line in text.splitlines() if line[:1].isalnum())


def locked_requirements(file: str, content: bytes) -> str:
    """The requirements text for ``poetry.lock`` or ``Pipfile.lock`` (``uv.lock`` is exported
    by uv: see :func:`uv_export_args`)."""
    if file == POETRY_LOCK:
        return poetry_requirements(content)
    if file == PIPFILE_LOCK:
        return pipfile_requirements(content)
    raise ValueError(f"not a lock file converted here: {file}")


# --- poetry.lock -----------------------------------------------------------------------------
def poetry_requirements(content: bytes, *, name: str = POETRY_LOCK) -> str:
    """Pinned requirements (``pkg==version ; marker`` with ``--hash`` lines) for every package of
    Poetry's ``main`` group, from a lock file of ``lock-version`` 2.1 (Poetry 2)."""
    data = _toml(content, name)
    metadata = data.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("lock-version"), str):
        raise LockFileError(f"{name}: no [metadata] lock-version: not a Poetry lock file")
    version = metadata["lock-version"]
    if _version_tuple(version) < (2, 1):
        raise LockFileError(
            f"{name}: lock-version {version} (Poetry 1) does not say which packages are the main "
            "group's; run `poetry lock` with Poetry 2 (it keeps the locked versions) and commit "
            "the new poetry.lock, or commit a requirements.txt (`poetry export`)"
        )
    packages = data.get("package", [])
    if not isinstance(packages, list):
        raise LockFileError(f"{name}: [[package]] must be a list of tables")
    indexes: list[str] = []
    lines: list[str] = []
    for number, package in enumerate(packages, 1):
        where = f"{name}: [[package]] #{number}"
        if not isinstance(package, dict):
            raise LockFileError(f"{where} is not a table")
        pkg = _field(package, "name", where)
        where = f"{name}: package {pkg!r}"
        groups = package.get("groups", [])
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise LockFileError(f"{where}: 'groups' must be a list of group names")
        if "main" not in groups or package.get("optional") is True:
            continue  # the dev group's, another group's, or an extra of the project's own
        version = _field(package, "version", where)
        marker = _poetry_marker(package.get("markers"), where)
        source = package.get("source")
        if source is not None:
            index = _poetry_source(source, where)
            if index is not None and index not in indexes:
                indexes.append(index)
        hashes = _poetry_hashes(package.get("files", []), where)
        lines.append(_requirement(pkg, version, marker=marker, hashes=hashes, where=where))
    return _requirements_text(lines, indexes, name)


def _poetry_marker(markers: Any, where: str) -> str | None:
    if markers is None:
        return None
    if isinstance(markers, str):
        return markers
    if isinstance(markers, dict):  # one marker per group
        marker = markers.get("main")
        if marker is None or isinstance(marker, str):
            return marker
    raise LockFileError(f"{where}: 'markers' must be a string or a table of strings per group")


def _poetry_source(source: Any, where: str) -> str | None:
    """The index a package comes from (None: the default one); other sources are refused."""
    if not isinstance(source, dict):
        raise LockFileError(f"{where}: [package.source] must be a table")
    kind = source.get("type")
    url = source.get("url")
    if kind == "legacy" and isinstance(url, str):
        return None if _is_pypi(url) else url
    shown = f" ({url})" if isinstance(url, str) and kind not in ("directory", "file") else ""
    raise LockFileError(
        f"{where} comes from a {kind} source{shown}, which a build cannot install from a lock "
        "file (it has only the dependency files); publish it to an index"
    )


def _poetry_hashes(files: Any, where: str) -> list[str]:
    if not isinstance(files, list):
        raise LockFileError(f"{where}: 'files' must be a list")
    hashes: list[str] = []
    for entry in files:
        digest = entry.get("hash") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or not _HASH.match(digest):
            raise LockFileError(f"{where}: a file's 'hash' is not of the form sha256:<hex>")
        hashes.append(digest)
    return hashes


# --- Pipfile.lock ----------------------------------------------------------------------------
def pipfile_requirements(content: bytes, *, name: str = PIPFILE_LOCK) -> str:
    """Pinned requirements for every package of a ``Pipfile.lock``'s ``default`` section (the
    ``develop`` section is the dev packages')."""
    try:
        data = json.loads(content.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise LockFileError(f"{name}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise LockFileError(
            f"{name}: {exc.msg} (at line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("default"), dict):
        raise LockFileError(f'{name}: no "default" section: not a Pipfile.lock')
    sources: dict[str, str] = {}
    meta = data.get("_meta", {})
    for source in meta.get("sources", []) if isinstance(meta, dict) else []:
        if isinstance(source, dict) and all(isinstance(source.get(k), str) for k in _NAME_URL):
            sources[source["name"]] = source["url"]
    indexes: list[str] = []
    lines: list[str] = []
    for pkg, entry in data["default"].items():
        where = f"{name}: default.{pkg}"
        if not isinstance(entry, dict):
            raise LockFileError(f"{where} must be an object")
        for key in ("git", "path", "file", "editable"):
            if key in entry:
                raise LockFileError(
                    f"{where} is a {key} dependency, which a build cannot install from a lock "
                    "file (it has only the dependency files); publish it to an index"
                )
        pinned = entry.get("version")
        if not isinstance(pinned, str) or not pinned.startswith("=="):
            raise LockFileError(f'{where}.version must be a pinned version ("==1.2.3")')
        extras = entry.get("extras", [])
        if not isinstance(extras, list) or not all(
            isinstance(e, str) and _EXTRA.match(e) for e in extras
        ):
            raise LockFileError(f"{where}.extras must be a list of extra names")
        marker = entry.get("markers")
        if marker is not None and not isinstance(marker, str):
            raise LockFileError(f"{where}.markers must be a string")
        hashes = entry.get("hashes", [])
        if not isinstance(hashes, list) or not all(
            isinstance(h, str) and _HASH.match(h) for h in hashes
        ):
            raise LockFileError(f"{where}.hashes must be a list of sha256:<hex> strings")
        index = entry.get("index")
        if isinstance(index, str):
            url = sources.get(index)
            if url is None:
                raise LockFileError(f"{where}.index names {index!r}, which _meta.sources lacks")
            if not _is_pypi(url) and url not in indexes:
                indexes.append(url)
        version = pinned.lstrip("=")
        named = f"{pkg}[{','.join(extras)}]" if extras else pkg
        lines.append(
            _requirement(named, version, marker=marker, hashes=hashes, where=where, check=pkg)
        )
    return _requirements_text(lines, indexes, name)


# --- shared ----------------------------------------------------------------------------------
def _toml(content: bytes, name: str) -> dict[str, Any]:
    try:
        return tomllib.loads(content.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise LockFileError(f"{name}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:  # its message has the line and column
        raise LockFileError(f"{name}: {exc}") from None


def _field(table: Mapping[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise LockFileError(f"{where} has no {key!r}")
    return value


def _requirement(
    name: str,
    version: str,
    *,
    marker: str | None,
    hashes: list[str],
    where: str,
    check: str | None = None,
) -> str:
    """One requirement line; names, versions and markers are checked so that nothing but a
    requirement can be written (no option, no second line)."""
    if not _NAME.match(check or name):
        raise LockFileError(f"{where}: {check or name!r} is not a package name")
    if not _VERSION.match(version):
        raise LockFileError(f"{where}: {version!r} is not a version")
    line = f"{name}=={version}"
    if marker:
        if "\n" in marker or "\r" in marker or "#" in marker:
            raise LockFileError(f"{where}: the marker {marker!r} is not one line")
        line += f" ; {marker}"
    return " \\\n    ".join([line, *(f"--hash={digest}" for digest in hashes)])


def _requirements_text(lines: list[str], indexes: list[str], name: str) -> str:
    for url in indexes:
        if not url.startswith(("https://", "http://")) or any(c.isspace() for c in url):
            raise LockFileError(f"{name}: the index {url!r} is not an http(s) URL")
    head = [f"--extra-index-url {url}" for url in indexes]
    return "".join(f"{line}\n" for line in [*head, *lines])


def _is_pypi(url: str) -> bool:
    return url.rstrip("/") in _PYPI_INDEXES


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)
