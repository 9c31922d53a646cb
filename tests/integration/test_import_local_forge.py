"""Local mode's import against a real git HTTP server: every branch and tag fetched, the chosen or
default branch as HEAD, the token only in git's environment, clear refusals that leave nothing."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.local.forge import LocalForge
from nakama.errors import Conflict, InvalidInput
from nakama.importing import ImportSource, parse_source_url
from tests.git_http_source import GitSource, serving

TOKEN = "src-token-Zq8vY2mK4pLx"
HOOK_TOKEN = "hook-" + "h" * 16
FILES = {"streamlit_app.py": "print('hi')\n", ".python-version": "3.11\n"}


@pytest.fixture
def forge(tmp_path: Path) -> LocalForge:
    return LocalForge(repos_dir=tmp_path / "repos", base_url="http://127.0.0.1:1/")


@pytest.fixture
def public(tmp_path: Path) -> Iterator[GitSource]:
    with serving(tmp_path / "public") as source:
        source.create("dash", FILES, branch="trunk")
        yield source


@pytest.fixture
def private(tmp_path: Path) -> Iterator[GitSource]:
    with serving(tmp_path / "private", username="reader", password=TOKEN) as source:
        source.create("secret-dash", FILES)
        yield source


def leftovers(forge: LocalForge) -> list[str]:
    return sorted(p.name for p in forge.repos_dir.iterdir()) if forge.repos_dir.exists() else []


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", f"--git-dir={repo}", *args], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_public_import_takes_every_branch_and_tag_and_the_source_head(
    forge: LocalForge, public: GitSource
) -> None:
    source_repo = public.root / "dash.git"
    feature = public.commit(
        "dash", {**FILES, "extra.py": "x = 1\n"}, branch="feature", message="feature"
    )
    git(source_repo, "tag", "v1", "trunk")
    imported = forge.import_repository(
        "dash",
        source=ImportSource(url=parse_source_url(public.repo_url("dash"))),
        branch=None,
        hook_token=HOOK_TOKEN,
    )
    repo = forge.repo_path("dash")
    assert imported.branch == "trunk"
    assert "HEAD" in imported.branch_from
    assert imported.commit == git(source_repo, "rev-parse", "trunk")
    assert git(repo, "symbolic-ref", "HEAD") == "refs/heads/trunk"
    assert git(repo, "rev-parse", "feature") == feature
    assert git(repo, "rev-parse", "v1^{commit}") == imported.commit
    # Pushes go on as for a new repository: the hook, its settings, the limit.
    assert (repo / "hooks" / "post-receive").is_file()
    assert git(repo, "config", "receive.maxInputSize") == str(forge.max_push_bytes)
    assert not (repo / "FETCH_HEAD").exists()
    assert public.repo_url("dash") not in (repo / "config").read_text()
    assert forge.head("dash", "trunk") == imported.commit


def test_a_chosen_branch_is_the_deploy_branch(forge: LocalForge, public: GitSource) -> None:
    feature = public.commit("dash", FILES, branch="feature", message="feature")
    imported = forge.import_repository(
        "dash",
        source=ImportSource(url=parse_source_url(public.repo_url("dash"))),
        branch="feature",
        hook_token=HOOK_TOKEN,
    )
    assert (imported.branch, imported.commit) == ("feature", feature)
    assert imported.branch_from == "chosen"
    assert git(forge.repo_path("dash"), "symbolic-ref", "HEAD") == "refs/heads/feature"


def test_a_missing_branch_names_the_branches_and_leaves_nothing(
    forge: LocalForge, public: GitSource
) -> None:
    with pytest.raises(InvalidInput, match=r"branch 'nope' is not in the source .*trunk"):
        forge.import_repository(
            "dash",
            source=ImportSource(url=parse_source_url(public.repo_url("dash"))),
            branch="nope",
            hook_token=HOOK_TOKEN,
        )
    assert leftovers(forge) == []


def test_private_import_with_the_token_keeps_it_nowhere(
    forge: LocalForge, private: GitSource
) -> None:
    imported = forge.import_repository(
        "secret-dash",
        source=ImportSource(
            url=parse_source_url(private.repo_url("secret-dash")), token=TOKEN, username="reader"
        ),
        branch=None,
        hook_token=HOOK_TOKEN,
    )
    assert imported.branch == "main"
    assert {r.user for r in private.requests if r.status == 200} == {"reader"}
    for path in forge.repos_dir.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_the_token_is_in_no_process_argv_while_git_runs(
    forge: LocalForge, private: GitSource
) -> None:
    """Every process's command line is read while the import runs: none carries the token."""
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    with contextlib.suppress(OSError):  # the process ended meanwhile
                        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                        seen.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        forge.import_repository(
            "secret-dash",
            source=ImportSource(
                url=parse_source_url(private.repo_url("secret-dash")),
                token=TOKEN,
                username="reader",
            ),
            branch=None,
            hook_token=HOOK_TOKEN,
        )
    finally:
        stop.set()
        watcher.join()
    git_lines = [line for line in seen if "secret-dash" in line and "git" in line]
    assert git_lines, "the watch saw no git process"
    assert not [line for line in seen if TOKEN in line]


@pytest.mark.parametrize(
    ("token", "username", "expected"),
    [
        (None, "oauth2", "needs credentials: give a token"),
        ("wrong-token-123456", "reader", "refused the token"),
        (TOKEN, "someone-else", "refused the token"),
    ],
)
def test_missing_or_wrong_credentials_are_clear_and_leave_nothing(
    forge: LocalForge, private: GitSource, token: str | None, username: str, expected: str
) -> None:
    with pytest.raises(InvalidInput, match=expected) as caught:
        forge.import_repository(
            "secret-dash",
            source=ImportSource(
                url=parse_source_url(private.repo_url("secret-dash")),
                token=token,
                username=username,
            ),
            branch=None,
            hook_token=HOOK_TOKEN,
        )
    assert (token or "\0") not in str(caught.value)
    assert leftovers(forge) == []


def test_an_unreachable_or_missing_repository_is_clear(
    forge: LocalForge, public: GitSource
) -> None:
    with pytest.raises(InvalidInput, match=r"no git repository at .*nope\.git"):
        forge.import_repository(
            "dash",
            source=ImportSource(url=parse_source_url(public.repo_url("nope"))),
            branch=None,
            hook_token=HOOK_TOKEN,
        )
    closed = public.url.rsplit(":", 1)[0] + ":1/dash.git"
    with pytest.raises(InvalidInput, match="cannot be reached"):
        forge.import_repository(
            "dash",
            source=ImportSource(url=parse_source_url(closed)),
            branch=None,
            hook_token=HOOK_TOKEN,
        )
    assert leftovers(forge) == []


def test_an_empty_source_repository_is_refused(forge: LocalForge, tmp_path: Path) -> None:
    with serving(tmp_path / "empty") as source:
        subprocess.run(["git", "init", "-q", "--bare", str(source.root / "empty.git")], check=True)
        with pytest.raises(InvalidInput, match="has no branches"):
            forge.import_repository(
                "empty",
                source=ImportSource(url=parse_source_url(source.repo_url("empty"))),
                branch=None,
                hook_token=HOOK_TOKEN,
            )
    assert leftovers(forge) == []


def test_a_source_larger_than_a_push_may_be_is_stopped(tmp_path: Path) -> None:
    forge = LocalForge(
        repos_dir=tmp_path / "repos", base_url="http://127.0.0.1:1/", max_push_bytes=64 * 1024
    )
    with serving(tmp_path / "big") as source:
        source.create("big", {"data.bin": os.urandom(512 * 1024), "app.py": "x = 1\n"})
        with pytest.raises(InvalidInput, match="larger than 65536 bytes"):
            forge.import_repository(
                "big",
                source=ImportSource(url=parse_source_url(source.repo_url("big"))),
                branch=None,
                hook_token=HOOK_TOKEN,
            )
    assert leftovers(forge) == []


def test_an_existing_repository_is_a_conflict(forge: LocalForge, public: GitSource) -> None:
    forge.create_repository("dash", files={"app.py": b"x\n"}, branch="main", hook_token=HOOK_TOKEN)
    with pytest.raises(Conflict):
        forge.import_repository(
            "dash",
            source=ImportSource(url=parse_source_url(public.repo_url("dash"))),
            branch=None,
            hook_token=HOOK_TOKEN,
        )
    assert leftovers(forge) == ["dash.git"]
