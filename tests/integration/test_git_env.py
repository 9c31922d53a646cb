"""What Nakama's git commands inherit: never Nakama's own settings (review L4: the admin token
reached every git subprocess, and so anything git runs)."""

from __future__ import annotations

import pytest

from nakama.clients.git import run_git


def test_git_and_what_it_runs_see_none_of_nakamas_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NAKAMA_ADMIN_TOKEN", "nkm_" + "a" * 40)
    monkeypatch.setenv("NAKAMA_SECRETS_KEY", "k" * 44)
    monkeypatch.setenv("GIT_DIR", "/nonexistent")
    monkeypatch.setenv("LANG", "C.UTF-8")
    # An alias starting with "!" is run by a shell with git's environment.
    shown = run_git(["-c", "alias.showenv=!env", "showenv"]).stdout.decode()
    names = {line.split("=", 1)[0] for line in shown.splitlines() if "=" in line}
    assert not {n for n in names if n.startswith("NAKAMA_")}, names
    assert "GIT_DIR" not in names  # the caller's git settings do not leak in either
    assert "LANG" in names  # the rest of the environment is kept
    assert "GIT_TERMINAL_PROMPT" in names
