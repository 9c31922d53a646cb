"""Nakama installed as a user installs it: from a fresh clone of HEAD into a virtual environment
of its own (not editable), run from outside the clone with a clean environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.e2e.nakama_server import wait_for

# How this machine reaches the package index (its CA bundle, proxy, index), kept as a user's
# login shell would have them; nothing else of the test run's environment is (no PYTHONPATH).
NETWORK = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
NETWORK_PREFIXES = ("PIP_", "UV_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy",
                    "https_proxy", "no_proxy")  # fmt: skip
# The modules of pyproject.toml's cluster extra, which a base install does not have.
CLUSTER_MODULES = ("gitlab", "kubernetes", "authlib", "jsonschema", "kubernetes_validate")


def clone_head(dest: Path) -> Path:
    """A fresh clone of the HEAD of the repository these tests run in, at ``dest``."""
    top = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"],
        cwd=Path(__file__).resolve().parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run(["git", "clone", "-q", top, str(dest)], check=True, capture_output=True)
    return dest


def clean_env(home: Path, *, venv: Path | None = None, **extra: str) -> dict[str, str]:
    """What ``env -i PATH=/usr/bin:/bin HOME=home`` leaves, with ``venv``'s bin/ first on PATH
    (as after ``. venv/bin/activate``), and the machine's network settings."""
    path = "/usr/bin:/bin" if venv is None else f"{venv / 'bin'}:/usr/bin:/bin"
    network = {
        k: v for k, v in os.environ.items() if k in NETWORK or k.startswith(NETWORK_PREFIXES)
    }
    return {**network, "PATH": path, "HOME": str(home), "LANG": "C.UTF-8", **extra}


def run(
    cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def make_venv(path: Path, *, home: Path) -> Path:
    """A virtual environment made from the Python running the tests."""
    done = run([sys.executable, "-m", "venv", str(path)], cwd=home, env=clean_env(home))
    assert done.returncode == 0, done.stderr
    return path


def imported_from(venv: Path, module: str, *, cwd: Path, home: Path) -> str:
    """The folder from which ``venv``'s Python imports the package ``module`` (run in
    ``cwd``)."""
    done = run(
        [str(venv / "bin" / "python"), "-c", f"import {module} as m; print(list(m.__path__)[0])"],
        cwd=cwd,
        env=clean_env(home, venv=venv),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def missing_modules(venv: Path, modules: tuple[str, ...], *, home: Path) -> list[str]:
    """Which of ``modules`` ``venv``'s Python cannot import."""
    probe = (
        "import importlib.util, sys;"
        " print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))"
    )
    done = run(
        [str(venv / "bin" / "python"), "-c", probe, *modules],
        cwd=home,
        env=clean_env(home, venv=venv),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"nakama up exited {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=90, what="nakama up to answer /healthz")


@contextmanager
def serving(
    nakama: str, *, data: Path, port: int, cwd: Path, env: dict[str, str], log: Path
) -> Iterator[str]:
    """``nakama up`` of an installed ``nakama`` on ``data`` and ``port``, from /healthz
    answering to its stop (Ctrl-C, then SIGKILL); yields its URL."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [nakama, "up", "--data-dir", str(data), "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
