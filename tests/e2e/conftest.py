"""Fixtures for whole-flow tests: a tiny app kit and a shared uv cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.nakama_server import write_tiny_kit


@pytest.fixture(scope="session")
def uv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uv-cache")


@pytest.fixture
def tiny_kit(tmp_path: Path) -> Path:
    kit = write_tiny_kit(tmp_path / "kit")
    return kit
