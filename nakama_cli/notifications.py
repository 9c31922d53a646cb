"""``nakama notifications list|add|remove``: where a project's pipeline failures (and, if asked,
deploys) are sent. The target's URL may be its secret (a Slack webhook's is), so ``add`` reads
it from standard input or a hidden prompt, never from the command line; a webhook target's
signing secret is printed once, when it is added."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from nakama_cli.commands import JsonOpt, _client, _console, _note, _print_json
from nakama_cli.variables import _from_prompt, _from_stdin

notifications_app = typer.Typer(
    help="List, add and remove a project's notification targets: a signed JSON webhook or a "
    "Slack-compatible incoming webhook, told when a pipeline fails (and, with --on-deploy, "
    "when a deploy goes live).",
    no_args_is_help=True,
)


@notifications_app.command("list")
def notifications_list(project: str, json_out: JsonOpt = False) -> None:
    """List the targets: id, kind, scheme and host of the URL, whether deploys are sent."""
    with _client() as client:
        rows = client.notification_targets(project)
    if json_out:
        _print_json(rows)
        return
    if not rows:
        _note(f"{project}: no notification targets")
        return
    table = Table("id", "kind", "url", "deploys", box=None)
    for t in rows:
        table.add_row(
            Text(str(t["id"])),
            Text(t["kind"]),
            Text(t["url"]),
            Text("yes" if t["on_deploy"] else "no"),
        )
    _console(stderr=False).print(table)


@notifications_app.command("add")
def notifications_add(
    project: str,
    kind: Annotated[
        str, typer.Option(help="webhook (JSON signed with HMAC-SHA256) or slack")
    ] = "webhook",
    on_deploy: Annotated[
        bool, typer.Option("--on-deploy", help="also when a deploy goes live")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Add a target (owners). Its URL is read from standard input when piped, else asked for
    without echo. A webhook target's signing secret is printed this once."""
    if sys.stdin is None or not sys.stdin.isatty():
        url = _from_stdin().strip()
    else:
        url = _from_prompt("the target's URL", secret=False).strip()
    with _client() as client:
        made = client.add_notification_target(project, kind=kind, url=url, on_deploy=on_deploy)
    if json_out:
        _print_json(made)
        return
    out = _console(stderr=False)
    out.print(Text(f"{project}: {made['kind']} target {made['id']} added ({made['url']})"))
    if made.get("secret"):
        out.print(Text(f"signing secret (shown once): {made['secret']}"))


@notifications_app.command("remove")
def notifications_remove(project: str, target_id: int) -> None:
    """Remove a target (owners)."""
    with _client() as client:
        client.remove_notification_target(project, target_id)
    _console(stderr=False).print(Text(f"{project}: notification target {target_id} removed"))
