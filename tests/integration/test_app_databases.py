"""A PostgreSQL database per app (issue 14), against a real PostgreSQL server that asks for
passwords (scram-sha-256), as an operator's would: alice's app gets DATABASE_URL and a database
no other app's role may open, bob's app its own; rotation, delete, project delete; a create
that fails or is interrupted is undone; names reach the server quoted."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from backend.databases import _Server
from nakama.db.tables import AppDatabase
from nakama.settings import AddonSettings, Settings
from tests.e2e.nakama_server import wait_for, write_tiny_kit
from tests.integration.test_quotas import World, local_settings, served
from tests.postgres import postgres_server

ADMIN_PASSWORD = "admin-pw-0f9c2a"
# The tiny app, telling in its log which DATABASE_URL it was started with (a digest of it).
DB_APP = """\
import hashlib, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "v1"
url = os.environ.get("DATABASE_URL", "")
print("db=" + (hashlib.sha256(url.encode()).hexdigest()[:16] if url else "none"), flush=True)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


@pytest.fixture(scope="module")
def addon_server() -> Iterator[str]:
    """The operator's PostgreSQL server, its admin DSN (libpq form)."""
    with postgres_server(password=ADMIN_PASSWORD) as url:
        yield url.replace("postgresql+psycopg://", "postgresql://")


def admin(addon_server: str, dbname: str = "postgres") -> psycopg.Connection[Any]:
    url = make_url(addon_server)
    return psycopg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        dbname=dbname,
        autocommit=True,
    )


def with_addons(root: Path, database_url: str, addon_server: str | None) -> Settings:
    base = local_settings(root, database_url)
    kit = write_tiny_kit(root / "db-kit", app=DB_APP)
    addons = AddonSettings(postgres_url=addon_server) if addon_server else AddonSettings()
    return base.model_copy(update={"addons": addons, "starter_kit_dir": kit})


@pytest.fixture
def world(database_url: str, tmp_path: Path, addon_server: str) -> Iterator[World]:
    """Alice owns alice-app, bob owns bob-app; both apps run."""
    with served(with_addons(tmp_path, database_url, addon_server), tmp_path) as w:
        w.user("alice"), w.user("bob")
        for who in ("alice", "bob"):
            assert w.create(who, f"{who}-app").status_code == 201
            w.settle(f"{who}-app")
        yield w
        for who in ("alice", "bob"):  # the server outlives the test: leave nothing on it
            w.apis["admin"].delete(f"/api/v1/projects/{who}-app/database")


def database_url_of(world: World, project: str) -> str:
    return world.platform.variables.environment(project)["DATABASE_URL"]


def digest(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def app_saw(world: World, project: str, url: str) -> bool:
    logs = world.apis["admin"].get(f"/api/v1/projects/{project}/logs").text
    said = [line for line in logs.splitlines() if "db=" in line]
    return bool(said) and said[-1].endswith(f"db={digest(url) if url else 'none'}")


def connect(url: str, dbname: str | None = None) -> psycopg.Connection[Any]:
    parsed = make_url(url)
    return psycopg.connect(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        dbname=dbname or parsed.database,
        autocommit=True,
    )


def roles_and_databases(addon_server: str, project: str) -> list[str]:
    with admin(addon_server) as conn:
        roles = [r for (r,) in conn.execute("SELECT rolname FROM pg_roles ORDER BY 1")]
        dbs = [d for (d,) in conn.execute("SELECT datname FROM pg_database ORDER BY 1")]
    return [n for n in roles + dbs if n.startswith(f"nakama_{project}")]


def test_each_app_gets_a_database_no_other_app_can_open(world: World, addon_server: str) -> None:
    made = world.apis["alice"].post("/api/v1/projects/alice-app/database")
    assert made.status_code == 201, made.text
    shown = made.json()
    assert (shown["database"], shown["role"], shown["state"]) == (
        "nakama_alice-app",
        "nakama_alice-app_1",
        "ready",
    )
    assert (shown["host"], shown["port"]) == ("127.0.0.1", make_url(addon_server).port)
    assert world.apis["bob"].post("/api/v1/projects/bob-app/database").status_code == 201
    alice_url, bob_url = database_url_of(world, "alice-app"), database_url_of(world, "bob-app")
    password = make_url(alice_url).password
    assert password and len(password) >= 40

    # Each app was restarted with its own address.
    wait_for(lambda: app_saw(world, "alice-app", alice_url), timeout=30, what="alice's restart")
    wait_for(lambda: app_saw(world, "bob-app", bob_url), timeout=30, what="bob's restart")

    # Alice's role works in her database; what it makes is the owner's.
    with connect(alice_url) as conn:
        conn.execute("CREATE TABLE notes (body text)")
        conn.execute("INSERT INTO notes VALUES ('alice was here')")
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'notes'")
        assert owner.fetchone() == ("nakama_alice-app",)
    # Neither role may connect to the other's database.
    for url, other in ((alice_url, "nakama_bob-app"), (bob_url, "nakama_alice-app")):
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            connect(url, other)
    # A wrong password is refused: the server checks it (scram), not just the role.
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(alice_url.replace(password, "x" * len(password)))

    # The password is shown nowhere: not by the API, not in the variables list.
    status = world.apis["alice"].get("/api/v1/projects/alice-app/database")
    assert status.status_code == 200 and status.json()["database"]["role"] == "nakama_alice-app_1"
    variables = world.apis["alice"].get("/api/v1/projects/alice-app/variables").text
    for text in (made.text, status.text, variables):
        assert password not in text
    assert '"DATABASE_URL"' in variables

    # Bob sees nothing of alice's database and changes nothing of it.
    for call in (
        world.apis["bob"].get("/api/v1/projects/alice-app/database"),
        world.apis["bob"].post("/api/v1/projects/alice-app/database/rotate"),
        world.apis["bob"].delete("/api/v1/projects/alice-app/database"),
    ):
        assert call.status_code == 404, call.text
    # Nor does alice's developer, who may read the status but not change it.
    r = world.apis["alice"].put(
        "/api/v1/projects/alice-app/members/bob", json={"role": "developer"}
    )
    assert r.status_code in (200, 201), r.text
    assert world.apis["bob"].get("/api/v1/projects/alice-app/database").status_code == 200
    assert world.apis["bob"].delete("/api/v1/projects/alice-app/database").status_code == 403
    # The address is the database's: the variables API does not change it.
    refused = world.apis["alice"].put(
        "/api/v1/projects/alice-app/variables/DATABASE_URL", json={"value": "x", "secret": True}
    )
    assert refused.status_code == 409 and "database rotate" in refused.json()["detail"]
    again = world.apis["alice"].post("/api/v1/projects/alice-app/database")
    assert again.status_code == 409 and "has a database already" in again.json()["detail"]


def test_rotation_keeps_the_data_and_ends_the_old_credentials(
    world: World, addon_server: str
) -> None:
    assert world.apis["alice"].post("/api/v1/projects/alice-app/database").status_code == 201
    old = database_url_of(world, "alice-app")
    with connect(old) as conn:
        conn.execute("CREATE TABLE notes (body text)")
        conn.execute("INSERT INTO notes VALUES ('kept')")

    rotated = world.apis["alice"].post("/api/v1/projects/alice-app/database/rotate")
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["role"] == "nakama_alice-app_2" and rotated.json()["rotated_at"]
    new = database_url_of(world, "alice-app")
    assert new != old
    wait_for(lambda: app_saw(world, "alice-app", new), timeout=30, what="the app's restart")
    with pytest.raises(psycopg.OperationalError):
        connect(old)
    with connect(new) as conn:
        assert conn.execute("SELECT body FROM notes").fetchall() == [("kept",)]
        conn.execute("INSERT INTO notes VALUES ('after')")
    assert roles_and_databases(addon_server, "alice-app") == [
        "nakama_alice-app",
        "nakama_alice-app_2",
        "nakama_alice-app",
    ]


def test_delete_drops_the_database_and_its_roles_and_so_does_deleting_the_project(
    world: World, addon_server: str
) -> None:
    for who in ("alice", "bob"):
        assert world.apis[who].post(f"/api/v1/projects/{who}-app/database").status_code == 201
    assert world.apis["alice"].delete("/api/v1/projects/alice-app/database").status_code == 204
    assert roles_and_databases(addon_server, "alice-app") == []
    assert "DATABASE_URL" not in world.platform.variables.environment("alice-app")
    wait_for(lambda: app_saw(world, "alice-app", ""), timeout=30, what="the app without it")
    gone = world.apis["alice"].get("/api/v1/projects/alice-app/database").json()
    assert gone["database"] is None and gone["configured"] is True
    # Without a database, DATABASE_URL is the user's to set.
    r = world.apis["alice"].put(
        "/api/v1/projects/alice-app/variables/DATABASE_URL", json={"value": "sqlite://"}
    )
    assert r.status_code == 200, r.text
    # Bob's is untouched by alice's delete; deleting his project drops it.
    assert len(roles_and_databases(addon_server, "bob-app")) == 3
    assert world.apis["bob"].delete("/api/v1/projects/bob-app").status_code in (202, 204)
    wait_for(
        lambda: roles_and_databases(addon_server, "bob-app") == [],
        timeout=60,
        what="bob's database dropped with his project",
    )


def test_without_a_server_the_status_says_what_to_set(database_url: str, tmp_path: Path) -> None:
    with served(with_addons(tmp_path, database_url, None), tmp_path) as w:
        w.user("alice")
        assert w.create("alice", "alice-app").status_code == 201
        status = w.apis["alice"].get("/api/v1/projects/alice-app/database").json()
        assert status["configured"] is False and status["database"] is None
        assert "NAKAMA_ADDONS__POSTGRES_URL" in status["message"]
        refused = w.apis["alice"].post("/api/v1/projects/alice-app/database")
        assert refused.status_code == 409
        assert "NAKAMA_ADDONS__POSTGRES_URL" in refused.json()["detail"]


def test_a_create_that_fails_halfway_is_undone(world: World, addon_server: str) -> None:
    # A session on template1 makes CREATE DATABASE fail (after the roles were made).
    with admin(addon_server, "template1"):
        failed = world.apis["alice"].post("/api/v1/projects/alice-app/database")
    assert failed.status_code == 503, failed.text
    assert "template1" in failed.json()["detail"] and ADMIN_PASSWORD not in failed.text
    assert roles_and_databases(addon_server, "alice-app") == []
    assert world.apis["alice"].get("/api/v1/projects/alice-app/database").json()["database"] is None
    assert world.apis["alice"].post("/api/v1/projects/alice-app/database").status_code == 201


CHILD = """\
import os
from backend.app import secret_box
from backend.databases import DatabaseService
from backend.variables import VariableService
from nakama.db.session import Database
from nakama.settings import AddonSettings, Settings

settings = Settings(
    data_dir=os.environ["DATA_DIR"],
    database_url=os.environ["DB_URL"],
    addons=AddonSettings(postgres_url=os.environ["ADDON_URL"]),
)
db = Database(settings.db_url)
box = secret_box(settings)
DatabaseService(db, box, settings.addons, VariableService(db, None, box)).create("alice-app")
"""


def test_a_create_interrupted_halfway_is_undone_at_the_next_start(
    database_url: str, tmp_path: Path, addon_server: str
) -> None:
    settings = with_addons(tmp_path, database_url, addon_server)
    with served(settings, tmp_path) as w:
        w.user("alice")
        assert w.create("alice", "alice-app").status_code == 201
    # Another Nakama process is killed while its create waits on CREATE DATABASE.
    env = {
        **os.environ,
        "DATA_DIR": str(settings.data_dir),
        "DB_URL": settings.db_url,
        "ADDON_URL": addon_server,
    }
    with admin(addon_server, "template1"):
        child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CHILD)], env=env)
        try:
            wait_for(
                lambda: "nakama_alice-app_1" in roles_and_databases(addon_server, "alice-app"),
                timeout=30,
                what="the child's roles",
            )
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
    # Its CREATE DATABASE is still running on the server, and may finish now that template1
    # is free: the undo at the next start ends it first.
    from nakama.db.session import Database

    db = Database(settings.db_url)
    with db.session() as s:
        assert [r.state for r in s.query(AppDatabase).all()] == ["creating"]
    db.dispose()
    with served(settings, tmp_path) as w:
        wait_for(
            lambda: roles_and_databases(addon_server, "alice-app") == [],
            timeout=30,
            what="the interrupted create undone",
        )
        status = w.apis["admin"].get("/api/v1/projects/alice-app/database").json()
        assert status["database"] is None
        time.sleep(1)  # what an orphaned statement would make, it would have made by now
        assert roles_and_databases(addon_server, "alice-app") == []
        assert w.apis["admin"].post("/api/v1/projects/alice-app/database").status_code == 201
        assert w.apis["admin"].delete("/api/v1/projects/alice-app/database").status_code == 204


def test_names_reach_the_server_quoted(addon_server: str) -> None:
    hostile = 'nakama_x"; DROP ROLE nakama; --'
    row = AppDatabase(project="x", database=hostile, owner_role=hostile, login_role=hostile + "_1")
    server = _Server(addon_server, connection_limit=3)
    server.make(row, "a password ' with a quote")
    try:
        with admin(addon_server) as conn:
            assert conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (hostile,)
            ).fetchone()
            roles = {r for (r,) in conn.execute("SELECT rolname FROM pg_roles")}
            assert {hostile, hostile + "_1", "nakama"} <= roles
            limit = conn.execute(
                "SELECT rolconnlimit FROM pg_roles WHERE rolname = %s", (hostile + "_1",)
            ).fetchone()
            assert limit == (3,)
            # Its login role's password is stored as a SCRAM verifier.
            stored = conn.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (hostile + "_1",)
            ).fetchone()
            assert stored is not None and stored[0].startswith("SCRAM-SHA-256$")
            ident = sql.Identifier(hostile).as_string(conn)
            assert ident.startswith('"') and '""' in ident
    finally:
        server.drop(row, [row.login_role])
    with admin(addon_server) as conn:
        left = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (hostile,)).fetchone()
        assert left is None


def test_the_prefix_must_be_an_identifier() -> None:
    with pytest.raises(ValueError, match="postgres_prefix"):
        AddonSettings(postgres_prefix='x"; DROP')
