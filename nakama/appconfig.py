"""How a local-mode app is started: the optional ``nakama.toml`` at the repository root.

Most apps are plain Streamlit apps and need no configuration; an app that is something else (a
FastAPI service, a Dash app, a Streamlit app whose entry point is not ``app.py``) says how to run it
in one line. Parsing is pure: the caller reads the file (or passes ``None`` when there is none) and
gets back a value that renders the command for a given interpreter and port.

    run = "python -m streamlit run main.py --server.port $PORT"
    health_path = "/_stcore/health"

No shell is involved: ``run`` is split with :mod:`shlex` and only ``$PORT`` / ``${PORT}`` are
expanded (the process also gets ``PORT`` in its environment). A bare ``python`` or ``streamlit``
resolves to the app's environment because its ``bin`` directory comes first on ``PATH``.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nakama.errors import InvalidInput

CONFIG_FILE = "nakama.toml"

# ``{python}`` and ``{port}`` are filled in by ``AppConfig.command``. Bound to loopback: in local
# mode Nakama is the only way in. Headless and without usage statistics: nobody is at a browser on
# this machine and an app must not phone home on the operator's behalf.
DEFAULT_COMMAND: tuple[str, ...] = (
    "{python}", "-m", "streamlit", "run", "app.py",
    "--server.port", "{port}",
    "--server.address", "127.0.0.1",
    "--server.headless", "true",
    "--browser.gatherUsageStats", "false",
)  # fmt: skip
DEFAULT_HEALTH_PATH = "/"

_PORT_VARIABLE = re.compile(r"\$(?:\{PORT\}|PORT(?![A-Za-z0-9_]))")


@dataclass(frozen=True)
class AppConfig:
    """What ``nakama.toml`` says; ``run`` is ``None`` for the default Streamlit command."""

    run: tuple[str, ...] | None = None
    health_path: str = DEFAULT_HEALTH_PATH

    def command(self, *, python: str, port: int | str, main_file: str | None = None) -> list[str]:
        """The argument vector that starts the app with ``python`` listening on ``port``
        (``"$PORT"`` keeps the port to fill in later with :func:`expand_port`). ``main_file``
        is the project's recorded script for the default Streamlit command (None: app.py);
        ``run`` wins over it."""
        if self.run is None:
            args = [arg.format(python=python, port=port) for arg in DEFAULT_COMMAND]
            return [main_file if arg == "app.py" and main_file else arg for arg in args]
        return expand_port(self.run, port=port)


def expand_port(args: tuple[str, ...] | list[str], *, port: int | str) -> list[str]:
    """Replace ``$PORT`` and ``${PORT}`` in each argument, as a shell would for that one name."""
    return [_PORT_VARIABLE.sub(str(port), arg) for arg in args]


def load_app_config(toml_text: str | None) -> AppConfig:
    """Parse ``nakama.toml``'s text; ``None`` (no file) gives the defaults.

    Raises ``InvalidInput`` naming the file and the key for malformed TOML or a wrong value.
    Unknown keys are ignored so that later versions can add keys without breaking older apps.
    """
    if toml_text is None:
        return AppConfig()
    try:
        data = tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{CONFIG_FILE} is not valid TOML: {exc}") from exc
    return AppConfig(run=_parse_run(data), health_path=_parse_health_path(data))


def _parse_run(data: Mapping[str, Any]) -> tuple[str, ...] | None:
    if "run" not in data:
        return None
    value = data["run"]
    if not isinstance(value, str):
        raise InvalidInput(
            f"{CONFIG_FILE}: 'run' must be a string such as "
            f'"python -m streamlit run app.py --server.port $PORT", not {_kind(value)}'
        )
    try:
        args = tuple(shlex.split(value))
    except ValueError as exc:
        raise InvalidInput(f"{CONFIG_FILE}: 'run' cannot be split into arguments: {exc}") from exc
    if not args:
        raise InvalidInput(f"{CONFIG_FILE}: 'run' is empty")
    return args


def _parse_health_path(data: Mapping[str, Any]) -> str:
    value = data.get("health_path", DEFAULT_HEALTH_PATH)
    if not isinstance(value, str):
        raise InvalidInput(f"{CONFIG_FILE}: 'health_path' must be a string, not {_kind(value)}")
    if not value.startswith("/") or any(ch.isspace() for ch in value):
        raise InvalidInput(
            f"{CONFIG_FILE}: 'health_path' must be a URL path starting with '/' and without "
            f"spaces, not {value!r}"
        )
    return value


def _kind(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", list: "an array",
             dict: "a table"}  # fmt: skip
    return names.get(type(value), f"a {type(value).__name__}")
