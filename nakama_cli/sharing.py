"""``nakama projects share|unshare|members|visibility|sleep``: who may do what with a project, who
may open its app, and when the app sleeps.

Thin commands on the REST API's members routes and ``PATCH /projects/{name}``: the server decides
(owners only; the last owner stays), and a refusal is printed in the server's own words with the
CLI's exit code (:data:`nakama_cli.commands.EXIT_CODES_HELP`). Roles and visibilities are checked
here only against their names, so that a typo is a usage error before anything is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from nakama.access import ROLES, VISIBILITIES
from nakama_cli.commands import JsonOpt, _client, _console, _print_json

# The server's bound on idle_timeout_s (30 days), in the minutes --after takes.
MAX_IDLE_MINUTES = 30 * 24 * 60

# What each visibility means for the app's address, for the confirmation line.
_WHO_OPENS = {
    "private": "members only",
    "internal": "anyone signed in",
    "public": "anyone, no sign-in",
}

_ROLES_HELP = (
    "viewer: open the app and see the project; developer: also push, pipelines, logs, "
    "variables, rollback; owner: also sharing, visibility, sleep and delete"
)


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    """A parameter check: ``choices`` only (a usage error, exit 2, before anything is sent)."""

    def check(value: str) -> str:
        if value not in choices:
            raise typer.BadParameter(f"{value[:40]!r} is not one of {', '.join(choices)}")
        return value

    return check


def _say(text: str) -> None:
    _console(stderr=False).print(Text(text))


def sleep_text(name: str, idle_timeout_s: int | None) -> str:
    """How ``name``'s app sleeps, as the confirmation line says it."""
    if not idle_timeout_s:
        return f"{name}: never sleeps"
    minutes, seconds = divmod(idle_timeout_s, 60)
    after = f"{minutes} minutes" if not seconds else f"{idle_timeout_s} seconds"
    return f"{name}: sleeps after {after} without a request"


def share(
    name: Annotated[str, typer.Argument(help="the project")],
    username: Annotated[str, typer.Argument(help="the user to share it with")],
    role: Annotated[
        str,
        typer.Option(
            metavar="|".join(ROLES),
            callback=_one_of(ROLES),
            help=_ROLES_HELP,
            show_default=True,
        ),
    ] = "viewer",
    json_out: JsonOpt = False,
) -> None:
    """Give a user a role in a project (owners), or change the role they have.

    Demoting the project's last owner is refused (exit 5): make someone else owner first."""
    with _client() as client:
        member = client.set_member(name, username, role)
    if json_out:
        _print_json(member)
        return
    _say(f"{member['username']} is now {member['role']} of {name}")


def unshare(
    name: Annotated[str, typer.Argument(help="the project")],
    username: Annotated[str, typer.Argument(help="the member to take out")],
    json_out: JsonOpt = False,
) -> None:
    """Take a member out of a project (owners); the last owner stays (exit 5)."""
    with _client() as client:
        client.remove_member(name, username)
    if json_out:
        _print_json({"project": name, "username": username, "role": None})
        return
    _say(f"{username} no longer has access to {name}")


def members(name: str, json_out: JsonOpt = False) -> None:
    """List a project's members and their roles (any member may)."""
    with _client() as client:
        rows: list[dict[str, Any]] = client.members(name)
    if json_out:
        _print_json(rows)
        return
    table = Table("username", "role", box=None)
    for m in rows:
        table.add_row(Text(m["username"]), Text(m["role"]))
    _console(stderr=False).print(table)


def visibility(
    name: Annotated[str, typer.Argument(help="the project")],
    level: Annotated[
        str,
        typer.Argument(
            metavar="|".join(VISIBILITIES),
            callback=_one_of(VISIBILITIES),
            help="private: members only; internal: anyone signed in; public: anyone",
        ),
    ],
    json_out: JsonOpt = False,
) -> None:
    """Set who may open the project's app (owners)."""
    with _client() as client:
        project = client.update_project(name, visibility=level)
    if json_out:
        _print_json(project)
        return
    shown = project["visibility"]
    _say(f"{name}: {shown} ({_WHO_OPENS.get(shown, shown)} may open its app)")


def sleep(
    name: Annotated[str, typer.Argument(help="the project")],
    after: Annotated[
        int,
        typer.Option(
            "--after",
            metavar="MINUTES",
            min=0,
            max=MAX_IDLE_MINUTES,
            help="minutes without a request before the app sleeps (0: never)",
        ),
    ],
    json_out: JsonOpt = False,
) -> None:
    """Set when the project's app sleeps (owners)."""
    with _client() as client:
        project = client.update_project(name, idle_timeout_s=after * 60)
    if json_out:
        _print_json(project)
        return
    _say(sleep_text(name, project.get("idle_timeout_s")))


def register_sharing(projects_app: typer.Typer) -> None:
    projects_app.command("share")(share)
    projects_app.command("unshare")(unshare)
    projects_app.command("members")(members)
    projects_app.command("visibility")(visibility)
    projects_app.command("sleep")(sleep)
