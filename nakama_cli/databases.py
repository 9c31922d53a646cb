"""``nakama projects database create|show|rotate|delete``: a project's PostgreSQL database on
the operator's server. The app reads it from ``DATABASE_URL``; its password is shown nowhere,
the CLI included."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.text import Text

from nakama_cli.commands import JsonOpt, _client, _console, _note, _print_json, confirm_name

YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="do not ask for the name")]

database_app = typer.Typer(
    help="A PostgreSQL database for the project's app: made on the server the operator "
    "configured (NAKAMA_ADDONS__POSTGRES_URL), handed to the app as DATABASE_URL.",
    no_args_is_help=True,
)


def _show(project: str, db: dict[str, Any]) -> None:
    out = _console(stderr=False)
    out.print(Text(f"{project}: database {db['database']} ({db['state']})"))
    out.print(Text(f"  server  {db['host']}:{db['port']}"))
    out.print(Text(f"  role    {db['role']}"))
    out.print(Text(f"  created {db['created_at']}"))
    if db.get("rotated_at"):
        out.print(Text(f"  rotated {db['rotated_at']}"))
    out.print(Text("  the app reads it from DATABASE_URL (a secret variable)"))


@database_app.command("show")
def database_show(project: str, json_out: JsonOpt = False) -> None:
    """The project's database: its name, server and role (never the password)."""
    with _client() as client:
        status = client.database(project)
    if json_out:
        _print_json(status)
        return
    if status["database"] is not None:
        _show(project, status["database"])
    elif not status["configured"]:
        _note(f"{project}: no database; {status['message']}")
    else:
        _note(f"{project}: no database (`nakama projects database create {project}` makes one)")


def _changed(project: str, made: dict[str, Any], json_out: bool) -> None:
    if json_out:
        _print_json(made)
    else:
        _show(project, made)


@database_app.command("create")
def database_create(project: str, json_out: JsonOpt = False) -> None:
    """Make the database (owners); the app restarts with DATABASE_URL."""
    with _client() as client:
        _changed(project, client.create_database(project), json_out)


@database_app.command("rotate")
def database_rotate(project: str, json_out: JsonOpt = False) -> None:
    """New credentials (owners): the app restarts with them, then the old ones stop working."""
    with _client() as client:
        _changed(project, client.rotate_database(project), json_out)


@database_app.command("delete")
def database_delete(project: str, yes: YesOpt = False) -> None:
    """Drop the database with its data (owners; asks for the project's name first)."""
    with _client() as client:
        client.database(project)
        if not yes:
            confirm_name(project, "to drop its database and all its data")
        client.delete_database(project)
    _console(stderr=False).print(Text(f"{project}: database dropped"))
