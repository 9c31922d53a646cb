"""``packages.txt``: the Debian packages an app needs, one a line (Streamlit Community Cloud's
convention), decided without I/O.

Cluster builds install them with ``apt-get`` in the generated Dockerfile. Every name is checked
against Debian's rule for package names (lower-case letters, digits, ``+``, ``-`` and ``.``, at
least two characters, starting with a letter or digit), so that what reaches the Dockerfile's
``RUN`` line is a list of names and nothing else: no option, no shell. Local mode installs no
system package; it says so (:func:`local_mode_note`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nakama.errors import InvalidInput

PACKAGES_FILE = "packages.txt"
DEBIAN_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_SHOWN = 10  # names a message lists before "and N more"


@dataclass(frozen=True)
class SystemPackages:
    """The names ``packages.txt`` lists, in order without repeats, and its lines that are not
    package names (``packages.txt:<line>: '<text>'``)."""

    names: tuple[str, ...]
    problems: tuple[str, ...]


def read_packages(text: str) -> SystemPackages:
    """The package names of ``packages.txt``: blank lines and ``#`` comments are skipped, and
    names on one line may be separated by spaces."""
    names: list[str] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        for word in line.split("#", 1)[0].split():
            if not DEBIAN_NAME.match(word):
                problems.append(f"{PACKAGES_FILE}:{number}: {word[:80]!r}")
            elif word not in names:
                names.append(word)
    return SystemPackages(tuple(names), tuple(problems))


def package_names(text: str) -> tuple[str, ...]:
    """The names to install; :class:`InvalidInput` naming the line of the first word that is
    not a Debian package name."""
    found = read_packages(text)
    if found.problems:
        more = f" (and {len(found.problems) - 1} more)" if len(found.problems) > 1 else ""
        raise InvalidInput(
            f"{found.problems[0]} is not a Debian package name (lower-case letters, digits, "
            f"'+', '-' and '.', starting with a letter or digit){more}"
        )
    return found.names


def shown(names: tuple[str, ...] | list[str]) -> str:
    listed = ", ".join(names[:_SHOWN])
    return listed + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def local_mode_note(text: str) -> str | None:
    """What local mode says about a ``packages.txt``: that it installs none of them."""
    found = read_packages(text)
    if not found.names and not found.problems:
        return None
    listed = shown(list(found.names)) if found.names else "nothing installable"
    note = (
        f"{PACKAGES_FILE} lists {listed}: system packages are not installed in local mode; "
        "install them on the machine that runs Nakama, or deploy in cluster mode, whose image "
        "build installs them"
    )
    if found.problems:
        note += f" (not package names: {', '.join(found.problems[:3])})"
    return note
