"""The README's first command: `nakama up` on an empty data dir prints its URL and a working admin
token, keeps it across restarts, and never writes it to its log lines."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.e2e.nakama_server import wait_for
from tests.support import free_port


def start(data_dir: Path, port: int, output: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "NAKAMA_ADMIN_TOKEN"}
    exe = shutil.which("nakama")
    assert exe
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [exe, "up", "--data-dir", str(data_dir), "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(output.read_text())
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, timeout=60, what="nakama up")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def test_first_start_prints_a_working_admin_token(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    first = start(data, port, tmp_path / "first.txt")
    try:
        text = (tmp_path / "first.txt").read_text()
        assert f"http://127.0.0.1:{port}" in text
        match = re.search(r"admin token: (nkm_\S+)", text)
        assert match, text
        token = match.group(1)
        api = f"http://127.0.0.1:{port}/api/v1/projects"
        assert httpx.get(api, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert (data / "admin-token").read_text().strip() == token
        assert oct((data / "admin-token").stat().st_mode & 0o777) == "0o600"
        # the token is printed once on the console, never inside a log line
        assert text.count(token) == 1
    finally:
        stop(first)
    time.sleep(0.2)
    second = start(data, port, tmp_path / "second.txt")
    try:
        again = (tmp_path / "second.txt").read_text()
        assert token not in again and "admin-token" in again
        assert httpx.get(api, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        stop(second)
