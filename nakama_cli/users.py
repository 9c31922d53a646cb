"""``nakama users …``: the client commands that manage users, their API tokens and passwords.

A new token is printed once, alone on stdout (so ``TOKEN=$(nakama users token bob)`` works), with
a note on stderr. Passwords are read without echo (asked twice) or from stdin with
``--password-stdin``, sent only in a request body, and never printed, not even in an error.
"""

from __future__ import annotations

import enum
import sys
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from nakama.errors import InvalidInput
from nakama.models import PASSWORD_MAX, PASSWORD_MIN
from nakama_cli.commands import (
    EXIT_USAGE,
    JsonOpt,
    _client,
    _console,
    _err,
    _exit_codes,
    _note,
    _print_json,
    local_time,
)

users_app = typer.Typer(
    help=(
        "Create, list and remove users (admin); make, list and revoke API tokens, and set "
        "passwords (admin, or the user)."
    ),
    no_args_is_help=True,
)

PasswordStdinOpt = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="read the password from the first line of stdin, not a prompt"
    ),
]


class ProjectsOption(enum.StrEnum):
    transfer = "transfer"
    delete = "delete"


def _checked(password: str) -> str:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise InvalidInput(f"a password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long")
    return password


def _password_from_stdin() -> str:
    """The first line of stdin without its line ending (the rest of the line is the password)."""
    return _checked(sys.stdin.readline().removesuffix("\n").removesuffix("\r"))


def _password_from_prompt(username: str) -> str:
    """Asked twice without echo; exit 2 if the two differ or nothing was typed."""
    try:
        first = typer.prompt(f"New password for {username}", hide_input=True, err=True)
        second = typer.prompt("Repeat it", hide_input=True, err=True)
    except typer.Abort:
        _err("no password given; nothing changed")
        raise typer.Exit(EXIT_USAGE) from None
    if first != second:
        _err("the two passwords differ; nothing changed")
        raise typer.Exit(EXIT_USAGE)
    return _checked(str(first))


def _print_token(answer: dict[str, Any], *, json_out: bool, what: str) -> None:
    if json_out:
        _print_json(answer)
        return
    _note(f"{what} for {answer['username']} (user id {answer['id']}); it is shown only once:")
    typer.echo(answer["token"])


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Argument(help="1-40 of a-z, 0-9, '-', '_'; a letter first")],
    password_stdin: PasswordStdinOpt = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="print the API's JSON (with the token), nothing else")
    ] = False,
) -> None:
    """Create a user (admin) and print their first API token.

    Without --password-stdin the user has no password (they sign in with a token)."""
    with _exit_codes():
        password = _password_from_stdin() if password_stdin else None
    with _client() as client:
        answer = client.create_user(username, password)
    _print_token(answer, json_out=json_out, what="user created; an API token")


@users_app.command("list")
def users_list(json_out: JsonOpt = False) -> None:
    """List users (admin): id, name, whether admin, when created."""
    with _client() as client:
        users = client.list_users()
    if json_out:
        _print_json(users)
        return
    table = Table("id", "username", "admin", "created", box=None)
    for u in users:
        table.add_row(
            Text(str(u["id"])),
            Text(u["username"]),
            Text("yes" if u["is_admin"] else "no"),
            Text(local_time(u["created_at"])),
        )
    _console(stderr=False).print(table)


@users_app.command("token")
def users_token(
    username: str,
    name: Annotated[
        str | None, typer.Option("--name", help="what the token is for (shown in `tokens`)")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="print the API's JSON (with the token), nothing else")
    ] = False,
) -> None:
    """Make a new API token for a user and print it (admin, or the user); older ones stay."""
    with _client() as client:
        answer = client.new_token(username, name)
    _print_token(answer, json_out=json_out, what="a new API token")


@users_app.command("tokens")
def users_tokens(username: str, json_out: JsonOpt = False) -> None:
    """List a user's API tokens (admin, or the user): id, name, made, last used; never the
    tokens themselves."""
    with _client() as client:
        tokens = client.list_tokens(username)
    if json_out:
        _print_json(tokens)
        return
    table = Table("id", "name", "created", "last used", "", box=None)
    for t in tokens:
        table.add_row(
            Text(str(t["id"])),
            Text(t["name"]),
            Text(local_time(t["created_at"])),
            Text(local_time(t["last_used_at"]) if t["last_used_at"] else "never"),
            Text("admin token (NAKAMA_ADMIN_TOKEN)" if t["bootstrap"] else ""),
        )
    _console(stderr=False).print(table)


@users_app.command("revoke")
def users_revoke(
    username: str,
    token_id: Annotated[int, typer.Argument(help="the token's id, from `nakama users tokens`")],
) -> None:
    """Revoke one of a user's API tokens (admin, or the user): it stops working at once."""
    with _client() as client:
        client.revoke_token(username, token_id)
    _console(stderr=False).print(Text(f"{username}: token {token_id} revoked"))


@users_app.command("remove")
def users_remove(
    username: str,
    projects: Annotated[
        ProjectsOption | None,
        typer.Option(
            "--projects",
            help=(
                "what happens to the projects the user alone owns: transfer (to you) or "
                "delete; needed when there are any"
            ),
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Remove a user (admin): their tokens, sessions and memberships go; never `admin`."""
    with _client() as client:
        answer = client.remove_user(username, projects.value if projects else None)
    if json_out:
        _print_json(answer)
        return
    lines = [f"{username}: removed"]
    for key, what in (("transferred", "now yours"), ("deleted", "being deleted")):
        if answer[key]:
            lines.append(f"  {what}: {', '.join(answer[key])}")
    if answer["left"]:
        lines.append(f"  left (shared with others): {', '.join(answer['left'])}")
    _console(stderr=False).print(Text("\n".join(lines)))


@users_app.command("password")
def users_password(username: str, password_stdin: PasswordStdinOpt = False) -> None:
    """Set a user's password (admin, or the user): asked twice without echo, or from stdin."""
    with _exit_codes():
        password = _password_from_stdin() if password_stdin else _password_from_prompt(username)
    with _client() as client:
        client.set_password(username, password)
    _console(stderr=False).print(Text(f"{username}: password set"))
