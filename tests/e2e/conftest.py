"""Fixtures for whole-flow tests: a tiny app kit and a shared uv cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.nakama_server import TINY_APP


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
