"""The import direction is one way (pyproject.toml's ``[tool.importlinter]``): the CLI on top,
then the backend (composition root, HTTP, services, mode adapters), then the components
(webhook_receiver, image_builder, code_reloader, flux), then the core package ``nakama``; local
and cluster adapters apart; the post-receive hook on the standard library.

The contracts are checked on the real tree, and on a copy with one import against them, so a
broken contract is seen to fail the check."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "nakama",
    "webhook_receiver",
    "image_builder",
    "code_reloader",
    "flux",
    "backend",
    "nakama_cli",
)


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "lint-imports"
    assert exe.exists(), "import-linter is not installed (pip install -e '.[test]')"
    return subprocess.run(
        [str(exe), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packages' Python files and pyproject.toml, nothing else."""
    root = tmp_path_factory.mktemp("tree")
    shutil.copy(ROOT / "pyproject.toml", root)
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__", "static")
        )
    return root


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # The core reaching up to the composition root.
        ("nakama/planning.py", "import backend.app", "Floors"),
        # A component reaching into a mode adapter (review L1, the old appconfig import).
        ("image_builder/dockerfile.py", "from backend.local import runtime", "Floors"),
        ("backend/local/jobs.py", "import backend.cluster.runtime", "Local and cluster"),
        ("backend/projects.py", "import backend.local.forge", "Services and the API"),
        ("backend/cluster/runtime.py", "import backend.projects", "Mode adapters do not"),
        ("nakama_cli/commands.py", "import sqlalchemy", "The client commands"),
        ("backend/local/post_receive.py", "import httpx", "The post-receive hook"),
    ],
)
def test_an_import_against_a_contract_fails_the_check(
    copy: Path, module: str, line: str, contract: str
) -> None:
    path = copy / module
    original = path.read_text()
    path.write_text(original + f"\n{line}  # against the contract\n")
    try:
        result = lint_imports(copy)
    finally:
        path.write_text(original)
    assert result.returncode != 0, result.stdout
    assert contract in broken_contracts(result.stdout), result.stdout


def broken_contracts(report: str) -> str:
    """The names of the broken contracts in lint-imports' summary (where names wrap)."""
    summary = " ".join(report.split("Contracts\n")[1].split("Contracts:")[0].split())
    parts = re.split(r" (KEPT|BROKEN)\b", summary)
    pairs = zip(parts[::2], parts[1::2], strict=False)  # the text after the last status is left
    return " | ".join(name for name, status in pairs if status == "BROKEN")
