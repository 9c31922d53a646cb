"""``nakama projects limits``: what a project's app may use, and (admins) changing that.

A thin command on ``/projects/{name}/limits``: developers and up may look, admins alone may
change. The API's PUT replaces every override at once, so a change is read-merge-write here:
GET the overrides, put the options given on top (:func:`nakama.limits_text.merge_overrides`),
PUT the result. Values are checked by the server only, and a refusal is printed in its words.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from nakama.limits_text import FIELDS, limit_rows, merge_overrides
from nakama_cli.commands import JsonOpt, _client, _console, _print_json

HELP = (
    "Show what the project's app may use (developers and up), or change it (admins).\n\n"
    "Without options: the limits in force, which of them an admin set (override) and which are "
    "the platform's (default), how they are enforced and what $DATA_DIR holds now.\n\n"
    "With options (admins): those limits are set and the other overrides are kept. The server "
    "replaces all overrides at once, so this reads them first and sends the merged set (two "
    "admins changing limits at the same moment: the last one wins). --unset FIELD takes one "
    "limit back to its default, --reset all of them. The app restarts with its new limits."
)

_UNSET_NAMES = tuple(field.replace("_", "-") for field in FIELDS)


def _field_names(values: list[str] | None) -> list[str]:
    """``--unset`` names (``memory-mib`` or ``memory_mib``) as API fields; a usage error else."""
    fields = []
    for value in values or []:
        name = value.replace("_", "-")
        if name not in _UNSET_NAMES:
            raise typer.BadParameter(
                f"{value[:40]!r} is not one of {', '.join(_UNSET_NAMES)}", param_hint="--unset"
            )
        fields.append(name.replace("-", "_"))
    return fields


def _show(name: str, answer: dict[str, Any]) -> None:
    grid = Table.grid(padding=(0, 2))
    for row in limit_rows(answer, cluster=None):
        grid.add_row(
            Text(row.label, style="bold"),
            Text(row.value),
            Text("override" if row.overridden else "default", style="dim"),
        )
    grid.add_row(Text("enforced by", style="bold"), Text(answer["enforced_by"]), Text(""))
    console = _console(stderr=False)
    console.print(Text(f"limits of {name}"))
    console.print(grid)


def limits(
    name: Annotated[str, typer.Argument(help="the project")],
    memory_mib: Annotated[
        int | None, typer.Option("--memory-mib", help="memory the app may use, in MiB")
    ] = None,
    cpu: Annotated[
        float | None, typer.Option("--cpu", help="CPU cores the app may use (0.5: half a core)")
    ] = None,
    processes: Annotated[
        int | None, typer.Option("--processes", help="processes and threads the app may run")
    ] = None,
    disk_mib: Annotated[
        int | None, typer.Option("--disk-mib", help="what its $DATA_DIR may hold, in MiB")
    ] = None,
    log_mib: Annotated[int | None, typer.Option("--log-mib", help="app log kept, in MiB")] = None,
    replicas: Annotated[
        int | None, typer.Option("--replicas", help="pods of the app (cluster mode)")
    ] = None,
    autoscale_max: Annotated[
        int | None,
        typer.Option("--autoscale-max", help="at most this many pods, by CPU (cluster mode)"),
    ] = None,
    autoscale_cpu_percent: Annotated[
        int | None,
        typer.Option(
            "--autoscale-cpu-percent", help="the autoscaler's CPU target, percent of a request"
        ),
    ] = None,
    unset: Annotated[
        list[str] | None,
        typer.Option(
            "--unset",
            metavar="FIELD",
            help="take this one back to the default (repeatable; e.g. memory-mib)",
        ),
    ] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="back to the defaults: drop every override")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Show what the project's app may use (developers and up), or change it (admins)."""
    changes: dict[str, Any] = {
        field: value
        for field, value in (
            ("memory_mib", memory_mib),
            ("cpu", cpu),
            ("processes", processes),
            ("disk_mib", disk_mib),
            ("log_mib", log_mib),
            ("replicas", replicas),
            ("autoscale_max", autoscale_max),
            ("autoscale_cpu_percent", autoscale_cpu_percent),
        )
        if value is not None
    }
    dropped = _field_names(unset)
    if reset and (changes or dropped):
        raise typer.BadParameter(
            "--reset drops every override: give it alone", param_hint="--reset"
        )
    if set(changes) & set(dropped):
        raise typer.BadParameter("a limit is both set and unset", param_hint="--unset")
    changes |= dict.fromkeys(dropped)
    with _client() as client:
        if reset:
            answer = client.reset_limits(name)
        elif changes:
            current = client.limits(name)["overrides"]
            answer = client.set_limits(name, merge_overrides(current, changes))
        else:
            answer = client.limits(name)
    if json_out:
        _print_json(answer)
        return
    if reset or changes:
        what = "back to the defaults" if reset else "limits changed"
        _console(stderr=False).print(Text(f"{name}: {what}; the app restarts with them"))
    _show(name, answer)


def register_limits(projects_app: typer.Typer) -> None:
    projects_app.command("limits", help=HELP)(limits)
