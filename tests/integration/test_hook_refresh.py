"""Post-receive hooks made by an earlier install (another interpreter, another module path) are
rewritten at start-up, so pushes to old repositories keep reaching the receiver after an upgrade.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from backend.local.forge import LocalForge

OLD_HOOK = (
    "#!/bin/sh\n"
    "# Installed by Nakama: sends a GitLab-format Push Hook for each pushed ref.\n"
    "PYTHONPATH=/opt/old-nakama/lib/python3.11/site-packages\n"
    "export PYTHONPATH\n"
    "exec /opt/old-nakama/bin/python -S -m nakama.old.post_receive\n"
)


def make(forge: LocalForge, name: str) -> Path:
    forge.create_repository(name, files={"app.py": b"print(1)\n"}, branch="main", hook_token="t")
    return forge.repo_path(name) / "hooks" / "post-receive"


def test_an_earlier_installs_hook_is_rewritten_once_and_runs(tmp_path: Path) -> None:
    forge = LocalForge(repos_dir=tmp_path / "repos", base_url="http://127.0.0.1:1")
    alice, bob = make(forge, "alice-app"), make(forge, "bob-app")
    current = bob.read_text()
    alice.write_text(OLD_HOOK)

    assert forge.refresh_hooks() == 1
    assert forge.refresh_hooks() == 0  # idempotent: only a stale hook is touched
    assert alice.read_text() == current and bob.read_text() == current
    assert os.access(alice, os.X_OK)
    assert not list(alice.parent.glob(".post-receive*"))  # no temporary file left behind

    # The hook's interpreter imports the module the hook names, with nothing but its PYTHONPATH
    # (and -S, as the hook runs it).
    path = re.search(r"^PYTHONPATH=(.+)$", current, re.M)
    run = re.search(r"^exec (\S+) -S -m (\S+)$", current, re.M)
    assert path is not None and run is not None, current
    imported = subprocess.run(
        [run[1], "-S", "-c", f"import {run[2]}"],
        env={"PYTHONPATH": path[1].strip("'"), "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
