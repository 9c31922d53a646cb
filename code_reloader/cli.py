"""``nakama reload sync``: one git-sync style sync from the command line, for an init container.

Exit codes: 0 synced (the worktree path on stdout), 2 bad arguments, 1 the sync failed (one line
on stderr, credentials masked).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from code_reloader.sync import sync_commit
from nakama.build_record import choose_commit, read_builds
from nakama.clients.git import mask_credentials
from nakama.errors import InvalidInput

_PROG = "nakama reload sync"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Check out one commit under ROOT and point ROOT/LINK at it, atomically.",
    )
    parser.add_argument("--repo", required=True, help="repository URL or path")
    parser.add_argument("--commit", required=True, help="full commit hash to deploy")
    parser.add_argument(
        "--pipeline", default="", help="pipeline id of the restart that named COMMIT (annotation)"
    )
    parser.add_argument("--image-tag", default="", help="the tag of the image the pod runs")
    parser.add_argument(
        "--builds",
        type=Path,
        help="folder of the app's build record: a newer build's commit wins over COMMIT",
    )
    parser.add_argument("--root", required=True, type=Path, help="git-sync root directory")
    parser.add_argument("--link", default="current", help="symlink name under ROOT")
    parser.add_argument(
        "--password-file", type=Path, help="file holding the HTTPS password or token"
    )
    parser.add_argument("--username", default="nakama", help="HTTPS user name")
    parser.add_argument("--depth", type=int, default=1, help="commits to fetch; 0 = all")
    parser.add_argument("--keep", type=int, default=1, help="previous worktrees to keep")
    return parser


def sync_main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), sync, and return the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage and the problem
        return exc.code if isinstance(exc.code, int) else 2
    commit = args.commit
    if args.builds is not None:
        commit = choose_commit(
            commit=commit,
            pipeline=args.pipeline,
            image_tag=args.image_tag,
            builds=read_builds(args.builds),
        )
        if commit != args.commit:
            print(f"{_PROG}: the image {args.image_tag} was built from {commit}", file=sys.stderr)
    try:
        worktree = sync_commit(
            repo_url=args.repo,
            commit=commit,
            root=args.root,
            link=args.link,
            password_file=args.password_file,
            username=args.username,
            depth=args.depth,
            keep=args.keep,
        )
    except InvalidInput as exc:
        _fail(str(exc))
        return 2
    except Exception as exc:  # an init container wants one line and an exit code, not a trace
        _fail(str(exc) or type(exc).__name__)
        return 1
    print(worktree)
    return 0


def _fail(message: str) -> None:
    one_line = " ".join(mask_credentials(message).split())
    print(f"{_PROG}: error: {one_line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(sync_main())
