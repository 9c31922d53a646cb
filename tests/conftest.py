"""Shared fixtures: reference payloads, a migrated database, environment hygiene."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["tests.fakes.gitlab"]

REPO_ROOT = Path(__file__).resolve().parent.parent
REFERENCE = Path(os.environ.get("NAKAMA_REFERENCE_DIR", REPO_ROOT.parent / "shared" / "reference"))
WEBHOOKS = REFERENCE / "gitlab" / "webhooks"


def load_reference(name: str) -> Any:
    data = json.loads((WEBHOOKS / name).read_text())
    if isinstance(data, dict):
        data.pop("_comment", None)
    return data


@pytest.fixture(autouse=True)
def _git_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests' own git commands must not read the developer's config."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test Author")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "author@example.com")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test Author")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "author@example.com")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private PostgreSQL server for the whole test session."""
    from tests.postgres import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each supported kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nakama.db'}"
    from tests.postgres import fresh_database

    return fresh_database(request.getfixturevalue("postgres_url"))
