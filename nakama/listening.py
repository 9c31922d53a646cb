"""Where ``nakama up`` listens, and what it tells people its address is.

The listening sockets are bound before anything else happens (before the data dir's database,
apps or jobs are touched), so a port in use stops the start at once with a message naming it,
and no other program can take the port between a check and its use: the bound sockets are the
ones the server then serves on.

A server listening on every address (``0.0.0.0``, ``::``) cannot derive the URL people reach it
at: ``http://0.0.0.0:8000`` in a clone URL or a push hook leads nowhere. Such a start needs
``NAKAMA_PUBLIC_URL``.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

from nakama.errors import NakamaError

# Connections that may wait for an accept (uvicorn's default).
BACKLOG = 2048


class CannotListen(NakamaError):
    """The address or port cannot be listened on; the message says why and what to do."""


class PortInUse(CannotListen):
    """Another program listens on the port already."""


def is_wildcard(host: str) -> bool:
    """True for an address that means "every address of this machine"."""
    if host.strip() in ("", "*"):
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_unspecified
    except ValueError:
        return False


def machine_name(fqdn: str, hostname: str) -> str:
    """This machine's name as others would know it: its fully qualified name
    (``socket.getfqdn()``), unless that is only the loopback's name (a host name listed for
    127.0.0.1 in /etc/hosts), then the plain host name (``socket.gethostname()``)."""
    for name in (fqdn, hostname):
        name = name.strip().rstrip(".").lower()
        if name and name != "localhost" and not name.startswith("localhost."):
            return name
    return "this-machine.example.com"


def suggested_public_url(name: str, port: int) -> str:
    """The URL colleagues would likely use: this machine's name and Nakama's port."""
    return f"http://{name}:{port}"


def wildcard_problem(*, host: str, port: int, public_url: str | None, machine: str) -> str | None:
    """Why a start on ``host`` cannot derive its public URL, or None if it can; ``machine`` is
    this machine's name (machine_name)."""
    if public_url or not is_wildcard(host):
        return None
    return (
        f"--host {host} listens on every address of this machine, so Nakama cannot tell the "
        "URL people reach it at (clone URLs, push hooks and app addresses are built from it). "
        "Set NAKAMA_PUBLIC_URL to the address your colleagues use, e.g. "
        f"NAKAMA_PUBLIC_URL={suggested_public_url(machine, port)}"
    )


def bind(host: str, port: int) -> list[socket.socket]:
    """Listening TCP sockets on ``host``:``port``, one per address the name has (as asyncio's
    ``create_server`` would make them: an IPv6 socket is IPv6 only). CannotListen if any of them
    cannot be bound; then none is left open."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise CannotListen(
            f"cannot listen on {host!r}: not an address or host name of this machine "
            f"({exc.strerror}); pass an address with --host or NAKAMA_HOST"
        ) from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _name, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
                # Listening now claims the port: another program can no longer bind it.
                sock.listen(BACKLOG)
            except OSError as exc:
                error = PortInUse if exc.errno == errno.EADDRINUSE else CannotListen
                raise error(bind_error(host, port, exc)) from None
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def bind_error(host: str, port: int, exc: OSError) -> str:
    """What a failed bind of ``host``:``port`` means and what to do about it."""
    where = f"port {port} on {host or 'every address'}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{where} is already in use by another program (another nakama up?). "
            "Stop that program, or start Nakama on a free port with --port or NAKAMA_PORT."
        )
    if exc.errno == errno.EACCES:
        return (
            f"not allowed to listen on {where} (ports below 1024 need privileges); "
            "choose a port above 1023 with --port or NAKAMA_PORT"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot listen on {where}: {host} is not an address of this machine; "
            "pass one of its addresses with --host or NAKAMA_HOST"
        )
    return f"cannot listen on {where}: {exc.strerror or exc}"
