"""Secret variables encrypted at rest, on SQLite and a real PostgreSQL server: the raw rows hold
no plain text, migration 0007 encrypts the rows of a database from before it (and its downgrade
restores them), a wrong key stops the start with an error that names the setting and never a
value, and `nakama secrets rotate-key [--drop-old]` keeps every value readable, retires the old
key, and changes nothing when it fails half-way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import structlog
from alembic import command
from alembic.config import Config
from pydantic import SecretStr
from sqlalchemy import select
from typer.testing import CliRunner

from backend.app import build_platform
from backend.variables import stored_environment
from nakama.db.session import BOX_ATTRIBUTE, MIGRATIONS_DIR, Database
from nakama.db.tables import NotificationTarget, Project, ProjectVariable
from nakama.secret_keys import load_keys
from nakama.secretbox import SecretBox, SecretsKeyError, generate_key, parse_keys
from nakama.settings import Settings
from nakama_cli.main import app as cli_app

ALICE_SECRET = "alice-sk-live-0123456789"
BOB_SECRET = "bob-db-password-98765"
LOOKALIKE = "fernet:gAAAAAB-looks-encrypted-but-is-plain"  # a plain secret that looks marked
API_URL = "https://api.example.com/v2"
PLAIN = {("alice-app", "API_URL"): API_URL}
TARGET_URL = "https://hooks.example.com/services/T0/B0/alice-secret-path"
TARGET_SECRET = "alice-signing-secret-0123456789"
SECRETS = {
    ("alice-app", "API_TOKEN"): ALICE_SECRET,
    ("bob-app", "DB_PASSWORD"): BOB_SECRET,
    ("bob-app", "ODD"): LOOKALIKE,
}
HIDDEN = (ALICE_SECRET, BOB_SECRET, LOOKALIKE.removeprefix("fernet:"))


@pytest.fixture(autouse=True)
def _no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NAKAMA_SECRETS_KEY", raising=False)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.db_url)
    yield database
    database.dispose()


def alembic(db: Database, action: str, revision: str, box: SecretBox | None = None) -> None:
    """Upgrade or downgrade as Database.migrate does (on its connection, with its keys)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes[BOX_ATTRIBUTE] = box
    with db.engine.begin() as connection:
        cfg.attributes["connection"] = connection
        getattr(command, action)(cfg, revision)


def raw_rows(db: Database) -> list[tuple[str, str, str, bool]]:
    """(project, key, value, secret) as the database holds them, read with plain SQL."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT project, key, value, secret FROM project_variables ORDER BY id")
        ).all()
    return [(p, k, v, bool(s)) for p, k, v, s in rows]


def assert_no_plain_secret(db: Database) -> None:
    dump = repr(raw_rows(db))
    for hidden in HIDDEN:
        assert hidden not in dump
    for _, key, value, secret in raw_rows(db):
        assert value.startswith("fernet:") if secret else value == API_URL, key


def seed(db: Database, box: SecretBox) -> None:
    """Two users' projects with their variables, stored as Nakama stores them."""
    db.migrate(secrets=box)
    with db.session() as s:
        for name in ("alice-app", "bob-app"):
            s.add(Project(name=name, status="running", branch="main", hook_token="t"))
        for (project, key), value in PLAIN.items():
            s.add(ProjectVariable(project=project, key=key, value=value, secret=False))
        for (project, key), value in SECRETS.items():
            s.add(ProjectVariable(project=project, key=key, value=box.encrypt(value), secret=True))
        s.add(
            NotificationTarget(
                project="alice-app",
                kind="webhook",
                url=box.encrypt(TARGET_URL),
                secret=box.encrypt(TARGET_SECRET),
            )
        )


def target_of(db: Database, box: SecretBox) -> tuple[str, str]:
    """Alice's notification target's URL and signing secret, opened with ``box``."""
    with db.read() as s:
        row = s.scalars(select(NotificationTarget)).one()
    assert row.secret is not None
    return box.decrypt(row.url), box.decrypt(row.secret)


def environments(db: Database, box: SecretBox) -> dict[tuple[str, str], str]:
    found = {}
    for project in ("alice-app", "bob-app"):
        for key, value in stored_environment(db, project, box).items():
            found[project, key] = value
    return found


def run_cli(settings: Settings, *args: str, key: str | None = None) -> Any:
    env = {"NAKAMA_DATA_DIR": str(settings.data_dir), "NAKAMA_DATABASE_URL": settings.db_url}
    if key is not None:
        env["NAKAMA_SECRETS_KEY"] = key
    with structlog.testing.capture_logs() as logs:
        result = CliRunner().invoke(cli_app, ["secrets", "rotate-key", *args], env=env)
    shown = result.output + repr(logs)
    for hidden in HIDDEN:
        assert hidden not in shown
    return result


def file_keys(settings: Settings) -> tuple[str, ...]:
    path = settings.data_dir / "secrets.key"
    assert path.stat().st_mode & 0o777 == 0o600
    return parse_keys(path.read_text(), source="test")


def test_the_database_holds_no_plain_secret_and_the_app_gets_the_values(
    settings: Settings, db: Database
) -> None:
    box = load_keys(settings).box()  # makes the key file, as the first start does
    (key,) = file_keys(settings)
    seed(db, box)
    assert_no_plain_secret(db)
    assert environments(db, box) == PLAIN | SECRETS
    # Each secret is sealed with the key outside the database; another key opens none of them.
    other = SecretBox([generate_key()], source="NAKAMA_SECRETS_KEY")
    for project in ("alice-app", "bob-app"):
        with pytest.raises(SecretsKeyError):
            stored_environment(db, project, other)
    assert key not in repr(raw_rows(db))


def test_migration_0007_encrypts_plain_secrets_and_its_downgrade_restores_them(
    settings: Settings, db: Database
) -> None:
    alembic(db, "upgrade", "0006")
    rows = [
        ("alice-app", "API_URL", API_URL, False),
        ("alice-app", "API_TOKEN", ALICE_SECRET, True),
        ("bob-app", "DB_PASSWORD", BOB_SECRET, True),
        ("bob-app", "ODD", LOOKALIKE, True),
    ]
    with db.engine.begin() as conn:
        for project, key, value, secret in rows:
            conn.execute(
                sa.text(
                    "INSERT INTO project_variables (project, key, value, secret, created_at, "
                    "updated_at) VALUES (:p, :k, :v, :s, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"p": project, "k": key, "v": value, "s": secret},
            )
    box = load_keys(settings).box()
    alembic(db, "upgrade", "0007", box)
    assert_no_plain_secret(db)
    assert [r[:2] for r in raw_rows(db)] == [r[:2] for r in rows]
    assert environments(db, box) == PLAIN | SECRETS  # the look-alike too: it was plain

    alembic(db, "downgrade", "0006", box)
    assert raw_rows(db) == rows


def test_a_migration_run_alone_reads_the_key_as_the_app_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the app's keys handed over: NAKAMA_SECRETS_KEY, else the data dir's key file."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("NAKAMA_DATA_DIR", str(data_dir))
    for source in ("file", "setting"):
        db = Database(f"sqlite:///{tmp_path / f'{source}.db'}")
        key = generate_key()
        if source == "setting":
            monkeypatch.setenv("NAKAMA_SECRETS_KEY", key)
        alembic(db, "upgrade", "0006")
        with db.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO project_variables (project, key, value, secret, created_at, "
                    "updated_at) VALUES ('p', 'K', :v, true, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"v": ALICE_SECRET},
            )
        alembic(db, "upgrade", "0007")
        [(_, _, stored, _)] = raw_rows(db)
        assert ALICE_SECRET not in stored
        if source == "file":
            (key,) = file_keys(Settings(data_dir=data_dir))
        assert SecretBox([key], source="s").decrypt(stored) == ALICE_SECRET
        alembic(db, "downgrade", "0006")
        assert raw_rows(db) == [("p", "K", ALICE_SECRET, True)]
        db.dispose()


def test_rotation_keeps_every_value_readable_and_drop_old_retires_the_old_key(
    settings: Settings, db: Database
) -> None:
    seed(db, load_keys(settings).box())
    (old,) = file_keys(settings)
    before = raw_rows(db)

    result = run_cli(settings)
    assert result.exit_code == 0, result.output
    assert "4 secrets (variables and notification targets) are encrypted" in result.output
    new, kept = file_keys(settings)
    assert kept == old and new != old
    assert new not in result.output and old not in result.output
    after = raw_rows(db)
    assert_no_plain_secret(db)
    for (_, key, was, secret), (_, _, now, _) in zip(before, after, strict=True):
        assert (now != was) if secret else (now == was), key
    assert environments(db, load_keys(settings).box()) == PLAIN | SECRETS
    assert environments(db, SecretBox([new], source="s")) == PLAIN | SECRETS  # all under it
    assert target_of(db, SecretBox([new], source="s")) == (TARGET_URL, TARGET_SECRET)

    result = run_cli(settings, "--drop-old")
    assert result.exit_code == 0, result.output
    assert file_keys(settings) == (new,)
    assert environments(db, load_keys(settings).box()) == PLAIN | SECRETS
    old_only = SecretBox([old], source="s")
    for project in ("alice-app", "bob-app"):
        with pytest.raises(SecretsKeyError):
            stored_environment(db, project, old_only)
    with pytest.raises(SecretsKeyError):
        target_of(db, old_only)


def test_rotation_with_the_key_in_nakama_secrets_key(settings: Settings, db: Database) -> None:
    old = generate_key()
    seed(db, SecretBox([old], source="s"))
    before = raw_rows(db)

    # One key: Nakama cannot change the setting; it prints a new key and changes nothing.
    result = run_cli(settings, key=old)
    assert result.exit_code == 0, result.output
    new = result.stdout.strip()
    assert parse_keys(new, source="s") == (new,) and new != old
    assert "NAKAMA_SECRETS_KEY=<new key>,<its value now>" in result.stderr
    assert old not in result.output
    assert raw_rows(db) == before
    assert not (settings.data_dir / "secrets.key").exists()

    # The operator put it in front: now everything moves to it.
    result = run_cli(settings, key=f"{new},{old}")
    assert result.exit_code == 0, result.output
    assert new not in result.output and old not in result.output
    assert environments(db, SecretBox([new], source="s")) == PLAIN | SECRETS

    result = run_cli(settings, "--drop-old", key=f"{new},{old}")
    assert result.exit_code == 0, result.output
    assert "keep only the first key in NAKAMA_SECRETS_KEY" in result.output
    assert environments(db, SecretBox([new], source="s")) == PLAIN | SECRETS
    with pytest.raises(SecretsKeyError):
        stored_environment(db, "alice-app", SecretBox([old], source="s"))


def test_a_rotation_that_fails_half_way_changes_nothing(settings: Settings, db: Database) -> None:
    box = load_keys(settings).box()
    seed(db, box)
    (old,) = file_keys(settings)
    # A row that no key opens, after some that the rotation re-encrypts before it gets there.
    with db.session() as s:
        stray = SecretBox([generate_key()], source="s").encrypt(BOB_SECRET)
        s.add(ProjectVariable(project="bob-app", key="STRAY", value=stray, secret=True))
    before = raw_rows(db)

    result = run_cli(settings)
    assert result.exit_code == 1, result.output
    assert "the secret variable 'STRAY' of project 'bob-app' cannot be decrypted" in result.output
    assert "the key file" in result.output
    assert raw_rows(db) == before  # one transaction: rolled back whole
    new, kept = file_keys(settings)
    assert kept == old  # the old key stays until everything is re-encrypted
    assert stored_environment(db, "alice-app", load_keys(settings).box()) == {
        "API_URL": API_URL,
        "API_TOKEN": ALICE_SECRET,
    }

    result = run_cli(settings, "--drop-old")
    assert result.exit_code == 1
    assert file_keys(settings) == (new, old)  # nothing dropped either


@pytest.mark.parametrize("wrong", ["another key", "not a key"])
def test_a_wrong_key_stops_the_start_with_a_clear_error_without_the_value(
    settings: Settings, db: Database, wrong: str
) -> None:
    right = generate_key()
    seed(db, SecretBox([right], source="s"))
    key = generate_key() if wrong == "another key" else "hunter2-is-not-a-fernet-key"
    with pytest.raises(SecretsKeyError) as caught:
        build_platform(settings.model_copy(update={"secrets_key": SecretStr(key)}))
    message = str(caught.value)
    assert "NAKAMA_SECRETS_KEY" in message
    if wrong == "another key":
        assert "'API_TOKEN' of project 'alice-app' cannot be decrypted with any key" in message
    else:
        assert "key 1 of NAKAMA_SECRETS_KEY is not a Fernet key" in message
    for hidden in (*HIDDEN, right, key):
        assert hidden not in message
    assert raw_rows(db)[1][2].startswith("fernet:")  # nothing was changed
