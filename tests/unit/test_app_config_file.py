"""Reading a worktree's nakama.toml with Nakama's rights (review L7: a pushed symbolic link can
point at any of Nakama's own files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.local.runtime import read_config_file
from nakama.errors import PermanentError


def test_a_symlinked_config_is_refused_without_reading_its_target(tmp_path: Path) -> None:
    secret = tmp_path / "session-secret"
    secret.write_text('run = "python steal.py"\nkey = "s3cr3t-value"\n')
    worktree = tmp_path / "worktree"
    worktree.mkdir()
    (worktree / "nakama.toml").symlink_to("../session-secret")
    with pytest.raises(PermanentError) as err:
        read_config_file(worktree / "nakama.toml")
    assert "symbolic link" in str(err.value)
    assert "s3cr3t" not in str(err.value)


def test_a_regular_config_is_read_and_a_missing_one_is_none(tmp_path: Path) -> None:
    config = tmp_path / "nakama.toml"
    assert read_config_file(config) is None
    config.write_text('run = "python app.py"\n')
    assert read_config_file(config) == 'run = "python app.py"\n'


def test_a_config_too_big_to_be_settings_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "nakama.toml"
    config.write_bytes(b"# " + b"x" * (1024 * 1024) + b"\n")
    with pytest.raises(PermanentError, match="larger than 64 KiB"):
        read_config_file(config)
