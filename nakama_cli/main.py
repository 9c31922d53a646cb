"""The ``nakama`` command: ``up`` runs the platform; ``reload sync`` is the init-container step;
``secrets rotate-key`` replaces the key of secret variables; ``login``, ``projects``,
``pipelines``, ``logs`` and ``users`` are the client of a running Nakama."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer

from nakama_cli.auth import register as register_auth
from nakama_cli.commands import EXIT_CODES_HELP, projects_app, register
from nakama_cli.databases import database_app
from nakama_cli.limits import register_limits
from nakama_cli.notifications import notifications_app
from nakama_cli.secrets import secrets_app
from nakama_cli.sharing import register_sharing
from nakama_cli.users import users_app
from nakama_cli.variables import variables_app

app = typer.Typer(
    help=(
        "Nakama: push-to-deploy for Streamlit and other Python web apps. `nakama up` runs it; "
        "login, projects (create, list, show, rollback, delete, share, unshare, members, "
        "visibility, sleep, limits), pipelines, logs and users are its client, on the REST API."
    ),
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
)
reload_app = typer.Typer(help="Code reloader steps.", no_args_is_help=True)
app.add_typer(reload_app, name="reload")
flux_app = typer.Typer(help="Flux manifests for apps.", no_args_is_help=True)
app.add_typer(flux_app, name="flux")
cluster_app = typer.Typer(help="Cluster-mode installation steps.", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")
_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"nakama {package_version()}")
        raise typer.Exit()


def package_version() -> str:
    """The installed package's version (the source tree's, when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nakama")
    except PackageNotFoundError:
        from nakama import __version__

        return __version__


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Options of the command itself (its help is the Typer's)."""


@app.command()
def up(
    data_dir: Annotated[
        Path | None, typer.Option(help="where repositories, apps and the database live")
    ] = None,
    host: Annotated[str | None, typer.Option(help="address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="port for the API, git and webhooks")] = None,
) -> None:
    """Run Nakama in local mode: API, webhook receiver, git server, job runner and apps."""
    import socket

    import uvicorn
    from pydantic import ValidationError

    from backend.app import build_platform, create_app
    from nakama.datadir_lock import DataDirInUse, lock_data_dir
    from nakama.listening import CannotListen, PortInUse, bind, machine_name, wildcard_problem
    from nakama.logs import configure_logging
    from nakama.settings import Settings

    overrides: dict[str, object] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir.expanduser().resolve()
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:  # a wrong setting: say which and why (never its value)
        for error in exc.errors():
            where = "__".join(str(part) for part in error["loc"]).upper()
            message = str(error["msg"]).removeprefix("Value error, ")
            typer.echo(f"error: NAKAMA_{where}: {message}", err=True)
        raise typer.Exit(2) from None
    problem = wildcard_problem(
        host=settings.host,
        port=settings.port,
        public_url=settings.public_url,
        machine=machine_name(socket.getfqdn(), socket.gethostname()),
    )
    if problem is not None:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    # Both before anything in the data dir is read or changed (database, apps, firewall rules):
    # the data dir's lock, so that a second server never takes the first one's apps over, then
    # the port, so that a busy one stops the start before any app is started.
    try:
        lock = lock_data_dir(settings.data_dir, url=settings.base_url)
    except DataDirInUse as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(5) from None
    try:
        sockets = bind(settings.host, settings.port)
    except CannotListen as exc:
        lock.release()
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(5 if isinstance(exc, PortInUse) else 2) from None
    try:
        configure_logging(level=settings.log_level, fmt=settings.log_format)
        platform = build_platform(settings)
        token = platform.bootstrap_admin()
        typer.echo(f"Nakama {settings.base_url}  (API docs: {settings.base_url}/docs)")
        typer.echo(f"web UI: {settings.base_url}/  (sign in as admin with the admin token)")
        typer.echo(f"data dir: {settings.data_dir}")
        if token is not None:
            typer.echo(f"admin token: {token}   (also saved to {platform.admin_token_file})")
        elif settings.admin_token is not None:
            typer.echo("admin token: the value of NAKAMA_ADMIN_TOKEN")
        else:
            typer.echo(f"admin token: in {platform.admin_token_file}")
        config = uvicorn.Config(
            create_app(platform),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=15,
            # Seconds an idle keep-alive connection stays open. uvicorn's 5 s closes
            # connections that browsers, scripts and a proxy in front still mean to reuse (a
            # request sent as the server closes gets no answer); proxies keep theirs about a
            # minute, so a little longer here.
            timeout_keep_alive=75,
            **proxy_options(settings.web.trusted_proxies),
        )
        server = uvicorn.Server(config)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn raises it once stopped
            server.run(sockets=sockets)
        if not server.started:
            raise typer.Exit(3)  # uvicorn's exit code for a failed start
    finally:
        for sock in sockets:
            sock.close()
        lock.release()


def proxy_options(trusted_proxies: str) -> dict[str, Any]:
    """uvicorn's options for a reverse proxy in front: X-Forwarded-For and -Proto are believed
    only from the addresses named (uvicorn alone believes any loopback peer, so anyone on this
    machine could name their own client address); none named, they are not read at all."""
    proxies = [p.strip() for p in trusted_proxies.split(",") if p.strip()]
    if not proxies:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": proxies}


@reload_app.command(
    "sync", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def reload_sync(ctx: typer.Context) -> None:
    """Fetch one commit into a git-sync style directory and swap the link to it."""
    from code_reloader.cli import sync_main

    raise typer.Exit(sync_main(list(ctx.args)))


@reload_app.command(
    "restart", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def reload_restart(ctx: typer.Context) -> None:
    """Restart an app's Deployment so that its pods sync and run a commit."""
    from code_reloader.restart_cli import restart_main

    raise typer.Exit(restart_main(list(ctx.args)))


@app.command("build", context_settings=_PASS_THROUGH)
def build(ctx: typer.Context) -> None:
    """Build and push an app's image unless one with its dependencies exists (the CI job)."""
    from image_builder.build import build_main

    raise typer.Exit(build_main(list(ctx.args)))


@flux_app.command("render", context_settings=_PASS_THROUGH, add_help_option=False)
def flux_render(ctx: typer.Context) -> None:
    """Write an app's manifests (Deployment, Service, Ingress, Flux image automation …)."""
    from flux.cli import render_main

    raise typer.Exit(render_main(list(ctx.args)))


@flux_app.command("validate", context_settings=_PASS_THROUGH, add_help_option=False)
def flux_validate(ctx: typer.Context) -> None:
    """Check YAML files against the Flux CRDs and Kubernetes' own schemas."""
    from flux.cli import validate_main

    raise typer.Exit(validate_main(list(ctx.args)))


@cluster_app.command("setup", context_settings=_PASS_THROUGH)
def cluster_setup(ctx: typer.Context) -> None:
    """Ensure the Harbor project, its tag retention, a pull robot and a push robot; with
    ``gitlab``: the GitOps and pipelines projects, the trigger token, and check GitLab."""
    args = list(ctx.args)
    if args[:1] == ["gitlab"]:
        from nakama_cli.gitlab_setup import gitlab_setup_main

        raise typer.Exit(gitlab_setup_main(args[1:]))
    from nakama_cli.cluster_setup import setup_main

    raise typer.Exit(setup_main(args))


register(app)  # login, projects, pipelines, logs: the client of a running Nakama
register_sharing(projects_app)  # projects share, unshare, members, visibility, sleep
register_limits(projects_app)  # projects limits
projects_app.add_typer(database_app, name="database")  # projects database create, show, ...
app.add_typer(users_app, name="users")
app.add_typer(secrets_app, name="secrets")  # on this machine's database and data dir
app.add_typer(variables_app, name="variables")  # variables list, set, unset
app.add_typer(notifications_app, name="notifications")  # notifications list, add, remove
register_auth(app)  # auth git-credential, auth setup-git, logout


# The modules of pyproject.toml's optional dependencies, by extra: a base install
# (`pip install nakama`) runs local mode on SQLite, and a command that needs one of these
# says which extra to install instead of ending in a traceback.
EXTRA_MODULES = {
    "gitlab": "cluster",
    "kubernetes": "cluster",
    "authlib": "cluster",
    "jsonschema": "cluster",
    "kubernetes_validate": "cluster",
    "psycopg": "postgres",
}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The extra whose module ``exc`` did not find; None for any other missing module."""
    return EXTRA_MODULES.get((exc.name or "").partition(".")[0])


def main() -> None:
    try:
        app()
    except ModuleNotFoundError as exc:
        extra = missing_extra(exc)
        if extra is None:
            raise
        what = "cluster mode's libraries are" if extra == "cluster" else "the PostgreSQL driver is"
        typer.echo(
            f"error: {what} not installed (no module named {exc.name!r}):"
            f" pip install 'nakama[{extra}]'",
            err=True,
        )
        raise SystemExit(2) from None
