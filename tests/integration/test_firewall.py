"""The loopback rule against the real iptables: an app (a sandbox uid) cannot connect to the
app port range, and Nakama's own connections to an app are answered whatever source port the
kernel gives them, including one inside that range."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nakama.clients.firewall import LoopbackGuard
from tests.support import free_port

UID = 399_995
# A Python the sandbox uid can run (this suite's own may live under a private home).
PYTHON = "/usr/bin/python3"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("iptables") is None or not Path(PYTHON).exists(),
    reason="the rule needs root, iptables and a system Python for the app's uid",
)

SERVE = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"hello from the app")
    c.close()
"""

CONNECT = """
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3).recv(100)
    print("connected")
except OSError as exc:
    print(type(exc).__name__)
"""


def _range_of_free_ports(size: int) -> int:
    for _ in range(50):
        start = free_port()
        if start + size > 65535:
            continue
        try:
            for port in range(start, start + size):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return start
    raise AssertionError("no range of free ports")


@pytest.fixture
def guarded() -> Iterator[tuple[int, LoopbackGuard]]:
    start = _range_of_free_ports(10)
    guard = LoopbackGuard(
        instance=uuid.uuid4().hex, uids=(UID, UID), ports=(start, start + 9), enabled=True
    )
    guard.install()
    try:
        assert guard.active, "the rule was not installed"
        yield start, guard
    finally:
        guard.remove()


@pytest.fixture
def app(guarded: tuple[int, LoopbackGuard]) -> Iterator[int]:
    start, _ = guarded
    proc = subprocess.Popen(
        [PYTHON, "-I", "-c", SERVE, str(start)],
        user=UID,
        group=UID,
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield start
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()  # type: ignore[union-attr]


def test_nakama_reaches_an_app_from_a_source_port_inside_the_range(app: int) -> None:
    # The gateway's ephemeral port is the kernel's choice: here it is forced into the range.
    for source in (app + 5, app + 9):
        with socket.socket() as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            client.bind(("127.0.0.1", source))
            client.settimeout(3)
            client.connect(("127.0.0.1", app))
            assert client.recv(100) == b"hello from the app"


def test_an_app_cannot_connect_into_the_range(app: int) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [PYTHON, "-I", "-c", CONNECT, str(app)],
        user=UID,
        group=UID,
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        check=False,
    )
    assert result.stdout.strip() == "ConnectionRefusedError", result.stdout + result.stderr
    assert time.monotonic() - started < 3, "refused with a reset, not left to time out"
    # root (Nakama) still gets in
    with socket.create_connection(("127.0.0.1", app), timeout=3) as client:
        assert client.recv(100) == b"hello from the app"
