"""App addresses: ``<name>.<apps_domain>``, and reading the app's name back from a Host header.

Pure functions: the gateway asks here which app a request is for, and the runtimes and the UI
build the address users open from the same rule.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from nakama.errors import InvalidInput

_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_LABEL = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")


class BadHost(InvalidInput):
    """A Host header that is not a host name (a path, credentials, a second port, garbage)."""


def split_host(host: str) -> tuple[str, int | None]:
    """``host[:port]`` as (lower-case host name, port); BadHost for anything else."""
    name, sep, port_text = host.strip().lower().rpartition(":")
    if not sep:
        name, port_text = port_text, ""
    elif not port_text.isdigit() or not 0 < int(port_text) < 65536 or len(port_text) > 5:
        raise BadHost("the Host header's port is not a port number")
    name = name.removesuffix(".")
    if not _HOSTNAME.match(name) or ".." in name:
        raise BadHost("the Host header is not a host name")
    return name, int(port_text) if port_text else None


def app_of_host(host: str, *, apps_domain: str) -> str | None:
    """The app a request for ``host`` is for, or None when it is not under ``apps_domain``
    (then it is for Nakama itself). BadHost for a malformed header."""
    name, _port = split_host(host)
    suffix = "." + apps_domain.lower().strip(".")
    if not name.endswith(suffix):
        return None
    label = name[: -len(suffix)]
    if not _LABEL.match(label):
        return None  # a deeper name (a.b.<domain>) or one no project can have
    return label


def app_address(name: str, *, apps_domain: str, base_url: str) -> str:
    """The URL users open for app ``name``: the scheme and port of ``base_url`` (Nakama's
    public URL), the host ``<name>.<apps_domain>``."""
    parts = urlsplit(base_url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{name}.{apps_domain.strip('.')}{port}/"


def same_host_path(target: str | None, *, default: str) -> str:
    """``target`` if it is a path on the same host (no open redirect: not ``//host``, not a
    URL, no backslash), else ``default``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target
