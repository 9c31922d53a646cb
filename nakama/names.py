"""Project names become GitLab paths, Kubernetes object names and hostnames: DNS-1123 labels.

What is said to users about a name is the same in either mode and names neither GitLab nor
Kubernetes: what the name may hold, and an example (:data:`NAME_EXAMPLE`)."""

from __future__ import annotations

import re

from nakama.errors import InvalidInput

MAX_PROJECT_NAME_LENGTH = 40
# What follows a problem with a name, in every message that tells one.
NAME_EXAMPLE = "a name such as 'sales-dashboard'"
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def name_problem(name: str) -> str | None:
    """Say what is wrong with ``name`` as a project name, or None if it is fine."""
    if not name:
        return "the name is empty"
    if len(name) > MAX_PROJECT_NAME_LENGTH:
        return f"the name has {len(name)} characters; at most {MAX_PROJECT_NAME_LENGTH} are allowed"
    if name != name.lower():
        return "the name has upper-case letters; use lower-case a-z, digits and '-'"
    if not _LABEL.match(name):
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c == "-"))})
        if bad:
            shown = " ".join(repr(c) for c in bad)
            return f"the name contains {shown}; only lower-case a-z, digits and '-' are allowed"
        return "the name must start and end with a letter or digit"
    if not name[0].isalpha():
        # Kubernetes Service names (DNS-1035 labels) must start with a letter.
        return "the name must start with a letter"
    return None


def validate_project_name(name: str) -> str:
    """Return ``name`` if it is a valid project name, else raise :class:`InvalidInput`."""
    problem = name_problem(name)
    if problem:
        raise InvalidInput(f"invalid project name {name[:60]!r}: {problem} ({NAME_EXAMPLE})")
    return name
