"""Local mode's import: fetch every branch and tag of a source repository into a new bare one.

The token reaches git only through its environment: a credential helper (a shell function in
``GIT_CONFIG_*`` variables, not on the command line) prints it from a variable, and only for the
source's own host, so a redirect elsewhere gets nothing. The URL git is given has no credentials,
and ``--no-write-fetch-head`` keeps even that out of the repository; ``GIT_ALLOW_PROTOCOL`` allows
the source's scheme alone (no ``file``, ``ext`` or a downgrade to plain HTTP after a redirect).
What git prints is scrubbed of the token before anyone sees it.

An import is bounded like a push: the fetch is stopped once the repository holds more than
``max_bytes`` (``receive.maxInputSize`` of the pushes, by default) or after ``timeout_s``. The
fetch runs under a watch of its own rather than through :func:`nakama.clients.git.run_git`,
which cannot stop a command by the size of what it writes; it uses the same environment
(:func:`nakama.clients.git.git_env`: nothing of Nakama's own settings reaches git).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nakama.clients.git import git_env, run_git
from nakama.errors import InvalidInput
from nakama.importing import ImportSource, fetch_problem, scrub

_USERNAME_ENV = "NAKAMA_IMPORT_USERNAME"
_TOKEN_ENV = "NAKAMA_IMPORT_TOKEN"  # noqa: S105 - a variable's name
_HOST_ENV = "NAKAMA_IMPORT_HOST"
# Reads git's request (protocol, host, path lines) and answers only for the source's host.
_CREDENTIAL_HELPER = (
    '!f() { test "$1" = get || exit 0; h=; '
    'while IFS= read -r l && test -n "$l"; do case "$l" in host=*) h=${l#host=};; esac; done; '
    f'test "$h" = "${_HOST_ENV}" || exit 0; '
    f'printf "username=%s\\npassword=%s\\n" "${_USERNAME_ENV}" "${_TOKEN_ENV}"; }}; f'
)
_POLL_S = 0.2
_MESSAGE_BYTES = 8000


@dataclass(frozen=True)
class RemoteRefs:
    """What ``git ls-remote --symref`` says of a source: its HEAD branch and its branches."""

    head: str | None
    branches: dict[str, str]  # name -> sha


def parse_ls_remote(text: str) -> RemoteRefs:
    head = None
    branches: dict[str, str] = {}
    for line in text.splitlines():
        left, _, ref = line.partition("\t")
        if left.startswith("ref: ") and ref == "HEAD":
            target = left[5:].strip()
            head = target.removeprefix("refs/heads/") if target.startswith("refs/heads/") else None
        elif ref.startswith("refs/heads/"):
            branches[ref.removeprefix("refs/heads/")] = left.strip()
    return RemoteRefs(head=head, branches=branches)


def _env(source: ImportSource) -> dict[str, str]:
    config = [("credential.helper", ""), ("transfer.fsckObjects", "true")]
    if source.url.scheme == "http":  # this machine only: nothing to redirect to
        config.append(("http.followRedirects", "false"))
    extra = {"GIT_ALLOW_PROTOCOL": source.url.allowed_protocols}
    if source.token is not None:
        config.append(("credential.helper", _CREDENTIAL_HELPER))
        extra |= {
            _USERNAME_ENV: source.username,
            _TOKEN_ENV: source.token,
            _HOST_ENV: source.url.netloc,
        }
    extra["GIT_CONFIG_COUNT"] = str(len(config))
    for i, (key, value) in enumerate(config):
        extra[f"GIT_CONFIG_KEY_{i}"], extra[f"GIT_CONFIG_VALUE_{i}"] = key, value
    return git_env(extra)


def _size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # gone meanwhile (a temporary file)
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _run(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    source: ImportSource,
    timeout_s: float,
    watch: Path | None = None,
    max_bytes: int | None = None,
) -> str:
    """Run git; its stdout. A failure is InvalidInput with git's message, scrubbed and
    explained; past ``timeout_s`` or past ``max_bytes`` under ``watch``, git is stopped."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            ["git", *args], stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=dict(env)
        )
        deadline = time.monotonic() + timeout_s
        too_large = (
            f"the repository is larger than {max_bytes} bytes, the most a push may send "
            "(planning.max_push_bytes, NAKAMA_PLANNING__MAX_PUSH_BYTES)"
        )

        def over() -> bool:
            return watch is not None and max_bytes is not None and _size(watch) > max_bytes

        while True:
            try:
                proc.wait(timeout=_POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            stopped = (
                f"the import took longer than {timeout_s:.0f} s and was stopped"
                if time.monotonic() > deadline
                else too_large
                if over()
                else None
            )
            if stopped is not None:
                proc.kill()
                proc.wait()
                raise InvalidInput(f"{source.url.url} was not imported: {stopped}")
        if proc.returncode == 0 and over():
            raise InvalidInput(f"{source.url.url} was not imported: {too_large}")
        err.seek(0)
        message = scrub(err.read(_MESSAGE_BYTES).decode(errors="replace"), source.secrets)
        if proc.returncode != 0:
            raise InvalidInput(
                fetch_problem(message, url=source.url.url, with_token=source.token is not None)
            )
        out.seek(0)
        return out.read().decode(errors="replace")


def fetch_source(
    git_dir: Path,
    source: ImportSource,
    *,
    branch: str | None,
    timeout_s: float,
    max_bytes: int,
) -> tuple[str, str, str]:
    """Fetch every branch and tag of ``source`` into the bare repository ``git_dir`` and point
    its HEAD at the deploy branch: ``branch``, or the source's HEAD branch. Returns (branch,
    its head commit, where the branch came from). InvalidInput for an unreachable source,
    wrong credentials, an empty repository or a missing branch."""
    env = _env(source)
    listing = parse_ls_remote(
        _run(["ls-remote", "--symref", source.url.url], env=env, source=source, timeout_s=timeout_s)
    )
    if not listing.branches:
        raise InvalidInput(f"the source {source.url.url} has no branches (an empty repository)")
    if branch is not None:
        if branch not in listing.branches:
            shown = ", ".join(sorted(listing.branches)[:20])
            raise InvalidInput(
                f"branch {branch!r} is not in the source {source.url.url}; its branches: {shown}"
            )
        chosen, chosen_from = branch, "chosen"
    elif listing.head is not None and listing.head in listing.branches:
        chosen, chosen_from = listing.head, "the source's default branch (its HEAD)"
    else:
        raise InvalidInput(
            f"the source {source.url.url} names no default branch: choose the branch"
        )
    _run(
        [
            f"--git-dir={git_dir}",
            "fetch",
            "--quiet",
            "--no-write-fetch-head",
            "--no-auto-gc",
            source.url.url,
            "+refs/heads/*:refs/heads/*",
            "+refs/tags/*:refs/tags/*",
        ],
        env=env,
        source=source,
        timeout_s=timeout_s,
        watch=git_dir,
        max_bytes=max_bytes,
    )
    run_git(["symbolic-ref", "HEAD", f"refs/heads/{chosen}"], git_dir=git_dir)
    sha = (
        run_git(["rev-parse", "--verify", f"refs/heads/{chosen}^{{commit}}"], git_dir=git_dir)
        .stdout.decode()
        .strip()
    )
    return chosen, sha, chosen_from
