"""Git credentials without a token in any repository, with the real git CLI against a real
`nakama up`: `nakama login` makes a git token and registers `nakama auth git-credential` as the
credential helper for the server in the (temporary) home's global git config; a plain clone URL
then clones and pushes, and neither `.git/config` nor the remote URL holds a token. Bob's helper
gets him nowhere in alice's private project; a revoked git token stops git at once; `nakama auth
setup-git` makes a new one; `nakama logout` takes the helper out and revokes the token."""

from __future__ import annotations

import html
import json
import os
import re
import shlex
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.nakama_server import NakamaProcess, write_tiny_kit
from tests.e2e.test_cli import NAKAMA
from tests.integration.test_web_security import csrf_of

PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22"}
GIT_TOKEN_NAME = f"git@{socket.gethostname()}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, uv_cache: Path) -> Iterator[NakamaProcess]:
    root = tmp_path_factory.mktemp("git-credentials")
    nakama = NakamaProcess(
        data_dir=root / "data", starter_kit=write_tiny_kit(root / "kit"), uv_cache=uv_cache
    )
    nakama.start()
    tokens = {}
    for name, password in PASSWORDS.items():
        r = nakama.api.post("/api/v1/users", json={"username": name, "password": password})
        assert r.status_code == 201, r.text
        tokens[name] = r.json()["token"]
    nakama.tokens = tokens  # type: ignore[attr-defined]
    r = httpx.post(
        f"{nakama.url}/api/v1/projects",
        json={"name": "alices-app"},
        headers={"Authorization": f"Bearer {tokens['alice']}"},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    assert r.json()["visibility"] == "private"
    yield nakama
    nakama.close()
    nakama.kill_apps()


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """A person's shell: their own home (and global git config there), no Nakama variables,
    and git that never asks on a terminal (so missing credentials fail at once)."""
    dropped = ("NAKAMA_", "GIT_CONFIG", "XDG_CONFIG_HOME", "GIT_ASKPASS", "SSH_ASKPASS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update({"HOME": str(home), "GIT_TERMINAL_PROMPT": "0", "COLUMNS": "200", **extra})
    return env


def run(env: dict[str, str], *args: str, cwd: Path | None = None, input: str | None = None) -> Any:
    return subprocess.run(
        list(args),
        env=env,
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        start_new_session=True,  # no terminal: the hidden prompt reads stdin
    )


def login(
    server: NakamaProcess, env: dict[str, str], token: str
) -> subprocess.CompletedProcess[str]:
    done = run(env, NAKAMA, "login", "--url", server.url, input=token + "\n")
    assert done.returncode == 0, done.stderr
    assert token not in done.stdout + done.stderr
    return done  # type: ignore[no-any-return]


def helpers(env: dict[str, str], url: str) -> list[str]:
    done = run(env, "git", "config", "--global", "--get-all", f"credential.{url}.helper")
    return done.stdout.splitlines() if done.returncode == 0 else []


def git_tokens(server: NakamaProcess, username: str) -> list[dict[str, Any]]:
    listed = server.api.get(f"/api/v1/users/{username}/tokens").json()
    return [t for t in listed if t["name"] == GIT_TOKEN_NAME]


def page_commands(server: NakamaProcess, username: str, project: str) -> list[str]:
    """The clone commands the project's page shows ``username`` (signed in with a password)."""
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        form = browser.get("/login")
        signed_in = browser.post(
            "/login",
            data={
                "username": username,
                "password": PASSWORDS[username],
                "csrf_token": csrf_of(form.text),
            },
        )
        assert signed_in.status_code == 303, signed_in.text
        page = browser.get(f"/projects/{project}")
        assert page.status_code == 200
    found = re.search(r'<pre id="clone-commands">(.*?)</pre>', page.text, re.S)
    assert found, "no clone commands on the project page"
    return html.unescape(found.group(1)).splitlines()


def everything_under(path: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(path.rglob("*")) if p.is_file())


def test_login_lets_git_clone_and_push_with_no_token_in_the_repository(
    server: NakamaProcess, tmp_path: Path
) -> None:
    tokens = server.tokens  # type: ignore[attr-defined]
    home = tmp_path / "alice"
    home.mkdir()
    env = user_env(home)
    clone_url = server.project("alices-app")["clone_url"]
    assert "@" not in clone_url
    # The project page's commands, as alice copies them: log in once, then a plain clone.
    login_line, clone_line, *_ = page_commands(server, "alice", "alices-app")
    assert shlex.split(login_line, comments=True) == ["nakama", "login", "--url", server.url]
    assert shlex.split(clone_line) == ["git", "clone", clone_url]

    # Without a login, git has no credentials (and does not ask: no terminal).
    refused = run(env, *shlex.split(clone_line), str(home / "before"), cwd=home)
    assert refused.returncode != 0
    assert "terminal prompts disabled" in refused.stderr

    done = run(
        env, NAKAMA, *shlex.split(login_line, comments=True)[1:], input=tokens["alice"] + "\n"
    )
    assert done.returncode == 0, done.stderr
    assert tokens["alice"] not in done.stdout + done.stderr
    config_dir = home / ".config" / "nakama"
    stored = json.loads((config_dir / "git-credential.json").read_text())
    assert stat.S_IMODE((config_dir / "git-credential.json").stat().st_mode) == 0o600
    assert stored["url"] == server.url and stored["username"] == "alice"
    git_token = stored["token"]
    assert git_token != tokens["alice"]
    [made] = git_tokens(server, "alice")
    assert made["id"] == stored["token_id"]
    # Earlier helpers are cleared for this server (the empty entry), then ours, by path.
    reset, ours = helpers(env, server.url)
    assert reset == ""
    assert ours.startswith("!/") and ours.endswith(" auth git-credential")
    assert git_token not in (home / ".gitconfig").read_text()

    work = home / "alices-app"
    cloned = run(env, *shlex.split(clone_line), str(work), cwd=home)
    assert cloned.returncode == 0, cloned.stderr
    remote = run(env, "git", "remote", "get-url", "origin", cwd=work).stdout.strip()
    assert remote == clone_url
    repository_files = everything_under(work / ".git")
    for secret in (git_token, tokens["alice"]):
        assert secret not in repository_files
    assert not (home / ".git-credentials").exists()  # no other helper kept it either

    (work / "NOTES.md").write_text("pushed with the credential helper\n")
    run(env, "git", "add", "NOTES.md", cwd=work)
    committed = run(
        env,
        "git",
        "-c",
        "user.name=Alice",
        "-c",
        "user.email=alice@example.com",
        "commit",
        "-qm",
        "notes",
        cwd=work,
    )
    assert committed.returncode == 0, committed.stderr
    pushed = run(env, "git", "push", "-q", "origin", "HEAD:main", cwd=work)
    assert pushed.returncode == 0, pushed.stderr

    # bob, logged in on his own account (and config dir), gets no further than a stranger.
    bob_home = tmp_path / "bob"
    bob_home.mkdir()
    bob_env = user_env(bob_home, NAKAMA_CONFIG_DIR=str(bob_home / "nakama-cfg"))
    login(server, bob_env, tokens["bob"])
    assert "--config-dir" in helpers(bob_env, server.url)[1]
    bobs = run(bob_env, "git", "clone", "-q", clone_url, str(bob_home / "x"), cwd=bob_home)
    assert bobs.returncode != 0
    assert "not found" in bobs.stderr
    assert "terminal prompts disabled" not in bobs.stderr  # his helper did answer
    for secret in (git_token, tokens["alice"]):
        assert secret not in everything_under(bob_home)

    # alice's git token revoked (here with the CLI, as herself): git stops at once; her
    # CLI login goes on working.
    revoked = run(env, NAKAMA, "users", "revoke", "alice", str(stored["token_id"]))
    assert revoked.returncode == 0, revoked.stderr
    fetch = run(env, "git", "fetch", "-q", "origin", cwd=work)
    assert fetch.returncode != 0
    assert "Authentication failed" in fetch.stderr
    assert run(env, NAKAMA, "projects", "list").returncode == 0

    # setup-git makes a new git token; git works again.
    again = run(env, NAKAMA, "auth", "setup-git")
    assert again.returncode == 0, again.stderr
    [renewed] = git_tokens(server, "alice")
    assert renewed["id"] != stored["token_id"]
    assert run(env, "git", "fetch", "-q", "origin", cwd=work).returncode == 0

    # logout: the helper is gone from git's config, the git token revoked, the login forgotten.
    out = run(env, NAKAMA, "logout")
    assert out.returncode == 0, out.stderr
    assert helpers(env, server.url) == []
    assert git_tokens(server, "alice") == []
    assert not (config_dir / "git-credential.json").exists()
    assert not (config_dir / "cli.json").exists()
    after = run(env, "git", "fetch", "-q", "origin", cwd=work)
    assert after.returncode != 0 and "terminal prompts disabled" in after.stderr
    # alice's own token (the one she logged in with) is untouched.
    bearer = {"Authorization": f"Bearer {tokens['alice']}"}
    assert httpx.get(f"{server.url}/api/v1/projects", headers=bearer).status_code == 200


def test_the_helper_answers_only_for_its_own_server(server: NakamaProcess, tmp_path: Path) -> None:
    tokens = server.tokens  # type: ignore[attr-defined]
    env = user_env(tmp_path)
    login(server, env, tokens["bob"])
    bobs_git_tokens = len(git_tokens(server, "bob"))
    host = server.url.removeprefix("http://")
    ask = (NAKAMA, "auth", "git-credential", "get")
    mine = run(env, *ask, input=f"protocol=http\nhost={host}\npath=git/x.git\n\n")
    assert mine.returncode == 0
    assert mine.stdout.startswith("username=bob\npassword=nkm_")
    for other in (
        f"protocol=https\nhost={host}\n\n",
        "protocol=http\nhost=127.0.0.1:1\n\n",
        "protocol=http\nhost=gitlab.example.com\n\n",
        f"protocol=http\nhost={host}\nusername=someone-else\n\n",
    ):
        answered = run(env, *ask, input=other)
        assert answered.returncode == 0 and answered.stdout == ""
    for operation in ("store", "erase"):
        done = run(env, NAKAMA, "auth", "git-credential", operation, input="protocol=http\n\n")
        assert done.returncode == 0 and done.stdout == ""
    assert len(git_tokens(server, "bob")) == bobs_git_tokens  # store/erase change nothing
    # A git that cannot write its global config (GIT_CONFIG_GLOBAL=/dev/null): login still
    # works, says why git was not set up, and makes no token.
    alices_git_tokens = len(git_tokens(server, "alice"))
    no_git = {**env, "GIT_CONFIG_GLOBAL": os.devnull, "NAKAMA_CONFIG_DIR": str(tmp_path / "cfg")}
    plain = login(server, no_git, tokens["alice"])
    assert "git credentials not set up" in plain.stderr
    assert len(git_tokens(server, "alice")) == alices_git_tokens
    assert os.path.exists(os.devnull) and not os.path.isfile(os.devnull)
