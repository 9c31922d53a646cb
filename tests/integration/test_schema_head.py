"""A database already at the newest revision starts without Alembic (issue 13: Alembic is about
a tenth of Nakama's memory); one behind is still migrated, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from nakama.db.session import HEAD_REVISION, MIGRATIONS_DIR, Database
from nakama.db.tables import User
from tests.integration.test_secrets_at_rest import alembic

ROOT = Path(__file__).resolve().parents[2]


def test_the_head_constant_is_alembics_head() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(cfg).get_heads() == [HEAD_REVISION]


def test_a_database_at_head_starts_without_alembic(database_url: str) -> None:
    db = Database(database_url)
    try:
        assert db.revision() is None  # a new database
        db.migrate()
        assert db.revision() == HEAD_REVISION
    finally:
        db.dispose()
    script = (
        "import sys\n"
        "from nakama.db.session import Database\n"
        f"db = Database({database_url!r})\n"
        "db.migrate()\n"
        "db.changes()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_a_database_one_revision_behind_is_migrated(database_url: str) -> None:
    db = Database(database_url)
    try:
        db.migrate()
        alembic(db, "downgrade", "-1")
        assert db.revision() != HEAD_REVISION
        db.migrate()
        assert db.revision() == HEAD_REVISION
        before = db.changes()
        with db.session() as s:
            s.add(User(username="alice"))
        assert db.changes() > before  # the counter's triggers are back too
    finally:
        db.dispose()
