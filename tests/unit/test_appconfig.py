"""nakama.toml parsing: the default Streamlit command, custom run lines and rejected input."""

from __future__ import annotations

import pytest

from nakama.appconfig import AppConfig, expand_port, load_app_config
from nakama.errors import InvalidInput

PY = "/srv/envs/abc/bin/python"


def test_no_file_gives_the_streamlit_default() -> None:
    config = load_app_config(None)
    assert config == AppConfig()
    assert config.health_path == "/"
    assert config.command(python=PY, port=8601) == [
        PY, "-m", "streamlit", "run", "app.py",
        "--server.port", "8601",
        "--server.address", "127.0.0.1",
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
    ]  # fmt: skip


def test_an_empty_file_or_unknown_keys_give_the_default() -> None:
    assert load_app_config("") == AppConfig()
    assert load_app_config('future_key = "x"\n[tool]\na = 1\n') == AppConfig()


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        (
            "python -m streamlit run main.py --server.port $PORT",
            ["python", "-m", "streamlit", "run", "main.py", "--server.port", "9001"],
        ),
        ("uvicorn api:app --port=${PORT}", ["uvicorn", "api:app", "--port=9001"]),
        (
            "gunicorn -b 127.0.0.1:$PORT app:server",
            ["gunicorn", "-b", "127.0.0.1:9001", "app:server"],
        ),
        ("python serve.py 'two words' \"$PORT\"", ["python", "serve.py", "two words", "9001"]),
        # Only PORT is expanded, and only as a whole name.
        ("python x.py $PORTS $HOME ${PORT}x", ["python", "x.py", "$PORTS", "$HOME", "9001x"]),
    ],
)
def test_custom_run_is_split_and_port_expanded(run: str, expected: list[str]) -> None:
    text = f"run = {_toml_string(run)}\n"
    assert load_app_config(text).command(python=PY, port=9001) == expected


def test_health_path() -> None:
    config = load_app_config('health_path = "/_stcore/health"\n')
    assert config.health_path == "/_stcore/health"
    assert config.run is None


def test_expand_port_leaves_other_arguments_alone() -> None:
    assert expand_port(["a", "$PORT", "b${PORT}c"], port=1) == ["a", "1", "b1c"]


def test_bad_toml_names_the_file() -> None:
    with pytest.raises(InvalidInput, match=r"nakama\.toml is not valid TOML"):
        load_app_config("run = python app.py\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('run = ["python", "app.py"]\n', r"nakama\.toml: 'run' must be a string.*not an array"),
        ("run = 5\n", r"nakama\.toml: 'run' must be a string.*not an integer"),
        ('run = ""\n', r"nakama\.toml: 'run' is empty"),
        ('run = "python \'unclosed"\n', r"nakama\.toml: 'run' cannot be split"),
        ("health_path = true\n", r"nakama\.toml: 'health_path' must be a string, not a boolean"),
        ("health_path = 1.5\n", r"nakama\.toml: 'health_path' must be a string, not a number"),
        ('health_path = "health"\n', r"nakama\.toml: 'health_path' must be a URL path"),
        ('health_path = "/a b"\n', r"nakama\.toml: 'health_path' must be a URL path"),
        ("[run]\ncmd = 'x'\n", r"nakama\.toml: 'run' must be a string.*not a table"),
    ],
)
def test_wrong_types_name_the_key(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        load_app_config(text)


def _toml_string(value: str) -> str:
    return "'''" + value + "'''"
