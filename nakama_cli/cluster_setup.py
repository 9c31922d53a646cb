"""``nakama cluster setup``: make Harbor ready for cluster mode, idempotently.

It ensures the apps' (private) Harbor project, its tag-retention policy keeping
``NAKAMA_HARBOR__KEEP_BUILDS`` builds per app, a pull-only robot for the cluster's ``harbor-pull``
Secret and a push robot for CI. Harbor shows a robot's secret only when it is created, so a robot
created here has its secret printed once, on stdout; an existing robot is left alone unless
``--rotate-robots`` asks for a new secret. With ``--push-robot-file PATH`` the push robot's name
and secret are also written (0600) into PATH as the content for the pipelines project's File
variable ``NAKAMA_REGISTRY_PASSWORD_FILE`` (:func:`nakama.clients.harbor.robot_file`: JSON whose
``$`` GitLab's variable expansion cannot reach). Errors are one line on stderr without
credentials.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import ValidationError

from nakama.clients.harbor import HarborClient, Robot, robot_file
from nakama.errors import NakamaError, NotFound, Unauthorized
from nakama.settings import HarborSettings, Settings

PROG = "nakama cluster setup"


class _Usage(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _robots(settings: Settings) -> list[tuple[str, Literal["pull", "push"], str]]:
    """(robot name, access, where its secret goes) for the two robots."""
    registry = urlsplit(settings.harbor.url).netloc or settings.harbor.url
    namespace = settings.kubernetes.namespace
    return [
        (
            "pull",
            "pull",
            f"the docker-registry Secret harbor-pull in namespace {namespace} "
            f"(server {registry}; docs/cluster-install.md, step 4)",
        ),
        (
            "push",
            "push",
            "the pipelines project's File variable NAKAMA_REGISTRY_PASSWORD_FILE, as "
            "--push-robot-file writes it (docs/cluster-install.md, step 2)",
        ),
    ]


def setup_main(
    argv: list[str] | None = None, *, sleep: Callable[[float], None] = time.sleep
) -> int:
    """Ensure the Harbor project, its tag-retention policy, a pull robot and a push robot."""
    parser = argparse.ArgumentParser(prog=PROG, description=setup_main.__doc__)
    parser.add_argument(
        "--rotate-robots",
        action="store_true",
        help="give robots that exist already a new secret (the old one stops working) and print it",
    )
    parser.add_argument(
        "--push-robot-file",
        type=Path,
        metavar="PATH",
        help="also write the push robot's name and secret, when shown, into PATH (a new file, "
        "0600): the content of the File variable NAKAMA_REGISTRY_PASSWORD_FILE",
    )
    try:
        args = _parse(parser, argv)
        settings = Settings()
    except _Usage as exc:
        return exc.code
    except ValidationError as exc:
        where = ".".join(str(part) for part in exc.errors()[0]["loc"])
        return _fail(f"invalid settings: {where}: {exc.errors()[0]['msg']}", 2)
    harbor = settings.harbor
    if harbor.password is None or not harbor.password.get_secret_value():
        return _fail("NAKAMA_HARBOR__PASSWORD is not set", 2)
    if args.push_robot_file is not None and args.push_robot_file.exists():
        return _fail(f"--push-robot-file {args.push_robot_file} exists already: give a new path", 2)
    if harbor.keep_builds < 1:
        return _fail(f"NAKAMA_HARBOR__KEEP_BUILDS must be at least 1, not {harbor.keep_builds}", 2)

    step = "connecting"
    try:
        with closing(HarborClient(harbor, sleep=sleep)) as client:
            print(f"Harbor {harbor.url}, project {harbor.project}, as {harbor.username}")
            step = f"project {harbor.project}"
            # ensure_retention reads the project first, so a 404 there means "no project yet";
            # this way a second run sends no POST at all.
            try:
                client.ensure_retention(keep=harbor.keep_builds)
                print(f"{step}: exists")
            except NotFound:
                client.ensure_project()
                print(f"{step}: created (private)")
                step = "tag retention"
                client.ensure_retention(keep=harbor.keep_builds)
            print(f"tag retention: keeps the {harbor.keep_builds} newest builds per app (daily)")
            for name, access, where in _robots(settings):
                step = f"{access} robot"
                robot_file = args.push_robot_file if access == "push" else None
                _robot(client, name, access, where, rotate=args.rotate_robots, file=robot_file)
    except Unauthorized as exc:
        return _fail(
            f"{step}: Harbor refused user {harbor.username!r} ({_safe(exc, harbor)}); check "
            "NAKAMA_HARBOR__USERNAME and NAKAMA_HARBOR__PASSWORD, and that the user may create "
            "projects and manage the project's robots and retention",
            1,
        )
    except (NakamaError, OSError, ValueError) as exc:
        return _fail(f"{step}: {_safe(exc, harbor)}", 1)
    print("Harbor is set up.")
    return 0


def _robot(
    client: HarborClient,
    name: str,
    access: Literal["pull", "push"],
    where: str,
    *,
    rotate: bool,
    file: Path | None,
) -> None:
    robot: Robot | None = client.ensure_robot(name=name, access=access)
    full_name = client.robot_name(name)
    if robot is not None:
        print(f"{access} robot {robot.name}: created")
    elif rotate:
        robot = client.refresh_robot_secret(name=name)
        print(
            f"{access} robot {robot.name}: exists, new secret issued (the old one stopped working)"
        )
    else:
        print(
            f"{access} robot {full_name}: exists, left alone "
            "(its secret is not shown again; --rotate-robots issues a new one)"
        )
        return
    print(f"  name:   {robot.name}")
    print(f"  secret: {robot.secret.get_secret_value()}")
    print(f"  Store this secret now, it is not shown again: in {where}.")
    if file is not None:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(robot_file(robot.name, robot.secret.get_secret_value()))
        print(f"  Written to {file} as well: its content is the File variable's whole value, "
              "and NAKAMA_REGISTRY_USERNAME is then not needed.")  # fmt: skip


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage (or the help)
        raise _Usage(exc.code if isinstance(exc.code, int) else 2) from None


def _safe(exc: BaseException, harbor: HarborSettings) -> str:
    """The error's message on one line; the Harbor client redacts already, this is a backstop."""
    message = str(exc) or type(exc).__name__
    if harbor.password is not None and harbor.password.get_secret_value():
        message = message.replace(harbor.password.get_secret_value(), "***")
    return " ".join(message.split())


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(setup_main())
