"""The git client: every git command Nakama runs goes through :func:`run_git`.

Errors become :class:`GitError` with git's message cut short; credentials in URLs are masked.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from nakama.errors import PermanentError

# A full commit id: SHA-1 (40 hex digits) or SHA-256 (64).
FULL_SHA = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")

_URL_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")
_MAX_MESSAGE = 2000
_DRAIN_CHUNK = 64 * 1024


class GitError(PermanentError):
    """A git command failed."""


def mask_credentials(text: str) -> str:
    """Hide ``user:password@`` in any URL inside ``text``."""
    return _URL_CREDENTIALS.sub(r"\1***@", text)


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for git that never prompts and ignores the user's global config. None of
    Nakama's own settings (its tokens and keys among them) reach git or what git runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "NAKAMA_"))}
    env.update(
        {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_AUTHOR_NAME": env.get("GIT_AUTHOR_NAME", "Nakama"),
            "GIT_AUTHOR_EMAIL": env.get("GIT_AUTHOR_EMAIL", "nakama@localhost"),
            "GIT_COMMITTER_NAME": "Nakama",
            "GIT_COMMITTER_EMAIL": "nakama@localhost",
        }
    )
    if extra:
        env.update(extra)
    return env


def run_git(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    git_dir: Path | None = None,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``git <args>`` and return the completed process (stdout as bytes)."""
    cmd = ["git"]
    if git_dir is not None:
        cmd.append(f"--git-dir={git_dir}")
    cmd.extend(args)
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            input=input,
            env=git_env(env),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise GitError(f"git {args[0]} timed out after {timeout:.0f}s") from exc
    if check and proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip()[:_MAX_MESSAGE]
        raise GitError(f"git {args[0]} failed ({proc.returncode}): {mask_credentials(message)}")
    return proc


def git_text(args: Sequence[str], **kwargs: object) -> str:
    """Run git and return its stdout as stripped text."""
    return run_git(args, **kwargs).stdout.decode(errors="replace").strip()  # type: ignore[arg-type]


@contextmanager
def git_stream(
    args: Sequence[str], *, git_dir: Path | None = None, timeout: float = 600.0
) -> Iterator[IO[bytes]]:
    """``git <args>`` with its stdout as a stream, for output too large to hold (an archive).

    Raises :class:`GitError` at the end if git failed or ran past ``timeout`` seconds; git is
    killed if the reader stops early."""
    import tempfile  # here: the post-receive hook imports this module and never streams

    cmd = ["git", *([f"--git-dir={git_dir}"] if git_dir is not None else []), *args]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, env=git_env()
        )
        timer = threading.Timer(timeout, proc.kill)
        timer.daemon = True
        timer.start()
        assert proc.stdout is not None
        try:
            yield proc.stdout
            while proc.stdout.read(_DRAIN_CHUNK):  # what the reader left (a tar's padding)
                pass
        except BaseException:
            proc.kill()
            raise
        finally:
            timer.cancel()
            proc.stdout.close()
            returncode = proc.wait()
        if returncode != 0:
            errors.seek(0)
            message = errors.read(_MAX_MESSAGE).decode(errors="replace").strip()
            why = (
                f"timed out after {timeout:.0f}s" if returncode == -9 else f"failed ({returncode})"
            )
            raise GitError(f"git {args[0]} {why}: {mask_credentials(message)}")
