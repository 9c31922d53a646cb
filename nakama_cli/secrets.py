"""``nakama secrets …``: the key that encrypts secret variables in the database.

Unlike the client commands these work on Nakama's own database and data dir (the settings of
``nakama up``: ``NAKAMA_*`` and ``--data-dir``), so they run where Nakama runs, with Nakama
stopped (a running Nakama keeps the keys it started with). No key is ever taken from argv; the
only key printed is a new one for ``NAKAMA_SECRETS_KEY``, alone on stdout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nakama_cli.commands import _exit_codes, _note

secrets_app = typer.Typer(
    help=(
        "The key of secret variables at rest: rotate-key makes a new one and re-encrypts every "
        "secret with it; --drop-old then removes the old keys. Run with Nakama stopped."
    ),
    no_args_is_help=True,
)


@secrets_app.command("rotate-key")
def rotate_key(
    drop_old: Annotated[
        bool,
        typer.Option(
            "--drop-old",
            help="make no new key: re-encrypt every secret with the newest key, then remove "
            "the older ones",
        ),
    ] = False,
    data_dir: Annotated[
        Path | None, typer.Option(help="Nakama's data dir (default: NAKAMA_DATA_DIR, ~/.nakama)")
    ] = None,
) -> None:
    """Make a new key and re-encrypt every secret variable with it (the old keys are kept, so
    backups stay readable, until --drop-old). Safe to interrupt and run again."""
    from backend.key_rotation import drop_old_keys
    from backend.key_rotation import rotate_key as rotate
    from nakama.settings import Settings

    overrides: dict[str, object] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir.expanduser().resolve()
    with _exit_codes():
        settings = Settings(**overrides)  # type: ignore[arg-type]
        done = drop_old_keys(settings) if drop_old else rotate(settings)
    if done.new_key is not None:
        _note(
            "NAKAMA_SECRETS_KEY is set, so Nakama cannot change the key itself. Here is a new "
            "key (on stdout): put it in front, NAKAMA_SECRETS_KEY=<new key>,<its value now>, "
            "wherever Nakama runs, restart Nakama, then run `nakama secrets rotate-key` again "
            "to re-encrypt every secret with it."
        )
        typer.echo(done.new_key)
        return
    _note(
        f"{done.reencrypted} secrets (variables and notification targets) are encrypted with"
        " the newest key."
    )
    if done.key_file is not None:
        kept = "the newest key alone" if done.keys == 1 else f"{done.keys} keys, newest first"
        _note(f"{done.key_file} holds {kept}. Start (or restart) Nakama to use it.")
        if done.keys > 1:
            _note(
                "The old keys still open backups made before; once none is needed, run "
                "`nakama secrets rotate-key --drop-old`."
            )
    elif drop_old and done.keys > 1:
        _note(
            "Now keep only the first key in NAKAMA_SECRETS_KEY wherever Nakama runs, and "
            "restart it."
        )
    elif done.keys > 1:
        _note(
            "Once no backup needs the older keys, run `nakama secrets rotate-key --drop-old` "
            "and keep only the first key in NAKAMA_SECRETS_KEY."
        )
