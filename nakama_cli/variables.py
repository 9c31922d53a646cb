"""``nakama variables list|set|unset``: a project's environment variables from the command line.

A secret's value never travels on the command line: every user of the machine can read a
process's arguments (``ps``, ``/proc/<pid>/cmdline``) and the shell keeps them in its history.
``set`` reads the value from standard input when that is not a terminal (a pipe, a file) and
otherwise asks for it without echo; a value that is no secret may also be given with
``--value`` or as ``KEY=value``. The value goes into the request's body only, and ``list``
shows a secret masked (at most its last 2 characters, as the API gives them).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from nakama_cli.commands import (
    EXIT_USAGE,
    JsonOpt,
    _client,
    _console,
    _err,
    _note,
    _print_json,
    local_time,
)

variables_app = typer.Typer(
    help="List, set and unset a project's environment variables (the app restarts with a "
    "change). A secret's value is read from stdin or a hidden prompt, never from the "
    "command line.",
    no_args_is_help=True,
)

MASK = "********"
# What `set` reads from standard input at most: far more than a value may hold (32 KiB, the
# server says so), little enough that a wrong file piped in is not read whole.
STDIN_MAX_CHARS = 1 << 20


def shown_value(variable: dict[str, Any]) -> str:
    """A variable's value as ``list`` shows it: a secret masked, with the API's preview."""
    if not variable.get("secret"):
        return str(variable.get("value") or "")
    return MASK + (variable.get("preview") or "")


def _refuse(message: str) -> typer.Exit:
    _err(message)
    return typer.Exit(EXIT_USAGE)


def _from_stdin() -> str:
    """The value piped in, without one trailing line ending (``echo`` adds one)."""
    text = sys.stdin.read(STDIN_MAX_CHARS + 1) if sys.stdin is not None else ""
    if len(text) > STDIN_MAX_CHARS:
        raise _refuse(f"more than {STDIN_MAX_CHARS} characters on standard input; nothing set")
    if not text:
        raise _refuse(
            "nothing on standard input: pipe the value in, or run this in a terminal to be "
            "asked for it; nothing set"
        )
    return text.removesuffix("\n").removesuffix("\r")


def _from_prompt(key: str, *, secret: bool) -> str:
    """Asked without echo (a secret twice); exit 2 if the two differ or nothing was typed."""
    try:
        value = str(typer.prompt(f"Value of {key}", hide_input=True, err=True))
        if secret and str(typer.prompt("Repeat it", hide_input=True, err=True)) != value:
            raise _refuse("the two values differ; nothing set")
    except typer.Abort:
        raise _refuse("no value given; nothing set") from None
    return value


def _value_to_set(project: str, key: str, *, value: str | None, secret: bool) -> tuple[str, str]:
    """(key, value) from the arguments, stdin or a hidden prompt; refuses a secret's value on
    the command line without repeating it."""
    given = value
    if "=" in key:
        key, inline = key.split("=", 1)
        if given is not None:
            raise _refuse(f"give the value of {key} once: as {key}=..., or with --value")
        given = inline
    if given is not None and secret:
        raise _refuse(
            f"a secret's value is not taken from the command line (others on this machine "
            f"can read it there, and it stays in your shell's history): pipe it in on "
            f"standard input (`nakama variables set {project} {key} --secret < file`) or "
            f"leave it out to be asked for it without echo; nothing set"
        )
    if given is not None:
        return key, given
    if sys.stdin is None or not sys.stdin.isatty():
        return key, _from_stdin()
    return key, _from_prompt(key, secret=secret)


@variables_app.command("list")
def variables_list(project: str, json_out: JsonOpt = False) -> None:
    """List the app's variables: key, whether secret, the value of those that are not."""
    with _client() as client:
        rows = client.variables(project)
    if json_out:
        _print_json(rows)
        return
    if not rows:
        _note(f"{project}: no variables")
        return
    table = Table("key", "secret", "value", "updated", box=None)
    for v in rows:
        table.add_row(
            Text(v["key"]),
            Text("yes" if v["secret"] else "no"),
            Text(shown_value(v)),
            Text(local_time(v.get("updated_at"))),
        )
    _console(stderr=False).print(table)


@variables_app.command("set")
def variables_set(
    project: str,
    key: Annotated[
        str,
        typer.Argument(help="the variable's name, e.g. API_URL (KEY=value: a value, no secret)"),
    ],
    secret: Annotated[
        bool, typer.Option("--secret", help="never shown back; its value only from stdin/prompt")
    ] = False,
    value: Annotated[
        str | None,
        typer.Option(help="the value of a variable that is no secret (else: stdin, or a prompt)"),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create or replace a variable; the app restarts with it.

    The value comes from standard input when it is piped (one trailing newline is dropped),
    else from a prompt without echo; a variable that is no secret may take it from --value
    or KEY=value. A secret's value on the command line is refused."""
    key, final = _value_to_set(project, key, value=value, secret=secret)
    with _client() as client:
        current = {v["key"]: v for v in client.variables(project)}
        if current.get(key, {}).get("secret") and not secret:
            raise _refuse(
                f"{key} is a secret of {project}: give --secret to replace it, or "
                f"`nakama variables unset {project} {key}` first; nothing set"
            )
        answer = client.set_variable(project, key, final, secret=secret)
    if json_out:
        _print_json(answer)
        return
    kind = "secret" if answer.get("secret") else "not secret"
    _console(stderr=False).print(Text(f"{project}: {key} set ({kind}); the app restarts with it"))


@variables_app.command("unset")
def variables_unset(project: str, key: str) -> None:
    """Remove a variable; the app restarts without it."""
    with _client() as client:
        client.delete_variable(project, key)
    _console(stderr=False).print(Text(f"{project}: {key} removed; the app restarts without it"))
