"""Fixtures for whole-flow tests: a tiny app kit and a shared uv cache."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_APP = """\
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "v1"


def extra():
    try:
        import six
        return f" six={six.__version__}"
    except ImportError:
        return ""


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{VERSION}{extra()}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


print("tiny app starting", VERSION, flush=True)
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


@pytest.fixture(scope="session")
def uv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uv-cache")


@pytest.fixture
def tiny_kit(tmp_path: Path) -> Path:
    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / "app.py").write_text(TINY_APP)
    (kit / "nakama.toml").write_text('run = "python app.py"\n')
    (kit / "requirements.txt").write_text("# no dependencies yet\n")
    return kit
