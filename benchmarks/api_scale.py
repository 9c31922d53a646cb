"""The API, the web project list and the webhook intake under 64 connections, with 1, 50 and 200
projects, each against a bare uvicorn in the same run (issue 13).

One ``nakama up`` (tiny kit, see ``_harness.py``; quotas raised so that one user may hold 200
projects and run their apps). A user ``alice`` creates the projects through the API; for each
project count (1, then 50, then 200: the projects are added, not made anew) and each endpoint,
``wrk -t2 -c64 -d<seconds>s`` runs against:

* ``GET /api/v1/projects`` with alice's token (every one of her projects);
* ``GET /api/v1/projects/<first>`` with alice's token;
* ``GET /projects``: the web UI's project list, with alice's session cookie;
* at the largest count, ``GET /api/v1/projects`` again while another client changes a project
  every 0.5 s (every change makes the cached lists stale at once);
* ``POST /code-reload/<first>``: a push hook for a branch that deploys nothing, each with its own
  Idempotency-Key, so every one is stored (the intake answers only after it is).

and the same wrk load against ``_bare_static.py`` (or ``_bare_asgi.py`` for the intake)
answering with a body of the size Nakama answered with. Printed: requests/s, p50/p99, the
answer's size, Nakama's CPU share, and the bare baseline's requests/s and p99 beside it.

Targets: the list with 200 projects >= 1,000 req/s and p99 <= 100 ms; intake with 200 projects
>= 1,500 events/s and p99 <= 50 ms.

Run: ``python benchmarks/api_scale.py [--seconds 10] [--counts 1,50,200] [--profile]
[--database postgresql]`` (PostgreSQL: a throw-away local server, as the tests start one).
(``--profile``: one more pass of the list at the largest count under py-spy).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import sqlalchemy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._harness import _free_port_range, machine_note, query, running_nakama
from benchmarks._pyspy import profile_summary, py_spy_record
from benchmarks._wrk import WRK_LUA, loaded, lua_str
from benchmarks.webhook_intake import push_body
from tests.e2e.nakama_server import NakamaProcess, wait_for
from tests.postgres import postgres_server
from tests.support import free_port

HERE = Path(__file__).resolve().parent
GET_LUA = """wrk.method = "GET"
wrk.headers[{header}] = {value}
"""
PASSWORD = "alice-password-1"


def sign_in(url: str) -> str:
    """Alice's session cookie for the web UI (a real sign-in through the form)."""
    with httpx.Client(base_url=url, timeout=30, follow_redirects=False) as web:
        page = web.get("/login")
        found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert found, "no CSRF field on the sign-in page"
        data = {"username": "alice", "password": PASSWORD, "csrf_token": found[1]}
        answer = web.post("/login", data=data)
        if answer.status_code not in (302, 303):
            raise RuntimeError(f"sign-in: HTTP {answer.status_code}")
        return "; ".join(f"{k}={v}" for k, v in web.cookies.items())


def bare(script: str, lua: Path, seconds: int, body: bytes, path: str, kind: str) -> dict:
    port = free_port()
    body_file = lua.with_suffix(".body")
    body_file.write_bytes(body)
    proc = subprocess.Popen([sys.executable, str(HERE / script), str(port), str(body_file), kind])
    try:
        wait_for(lambda: _up(port), timeout=30, what="bare uvicorn")
        return loaded(proc.pid, f"http://127.0.0.1:{port}{path}", lua, seconds)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _up(port: int) -> bool:
    try:
        httpx.post(f"http://127.0.0.1:{port}/", content=b"{}", timeout=1)
    except httpx.HTTPError:
        return False
    return True


def create(api: httpx.Client, names: list[str], server: object) -> None:
    for name in names:
        answer = api.post("/api/v1/projects", json={"name": name})
        if answer.status_code != 201:
            raise RuntimeError(f"create {name}: HTTP {answer.status_code} {answer.text}")

    def all_running() -> bool:
        rows = api.get("/api/v1/projects").json()
        return sum(1 for p in rows if p["app_state"] == "running") >= len(rows)

    wait_for(all_running, timeout=60 + 3 * len(names), interval=1, what="every app running")


def row(label: str, r: dict, size: int, base: dict | None) -> str:
    cpu = 100 * r["cpu_s"] / r["seconds"]
    line = (
        f"{label:<28}{r['rps']:>8.0f}/s  p50 {r['p50']:7.1f}ms  p99 {r['p99']:7.1f}ms  "
        f"{size:>8} B  CPU {cpu:3.0f}%  non-2xx {r['non2xx'] + r['socket_errors']:<4}"
    )
    if base is None:
        return line
    return line + f"| bare {base['rps']:>7.0f}/s  p99 {base['p99']:6.1f}ms"


@contextlib.contextmanager
def changing(api: httpx.Client, name: str, *, every_s: float) -> Iterator[None]:
    """While inside: the project's idle timeout changed every ``every_s`` seconds, through
    the API (a committed change to a watched table, as any user's edit is)."""
    stop = threading.Event()

    def change() -> None:
        n = 0
        while not stop.wait(every_s):
            n += 1
            answer = api.patch(f"/api/v1/projects/{name}", json={"idle_timeout_s": 600 + n})
            answer.raise_for_status()

    worker = threading.Thread(target=change, daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--counts", default="1,50,200")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--database",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="postgresql: a throw-away local server (tests/postgres.py; fsync off)",
    )
    args = ap.parse_args()
    with contextlib.ExitStack() as stack:
        database_url = None
        if args.database == "postgresql":
            database_url = stack.enter_context(postgres_server())
        return run(args, database_url)


def read(
    server: NakamaProcess, database_url: str | None, sql: str, params: tuple[object, ...]
) -> list[tuple]:
    """A query of Nakama's database: SQLite read-only, or the PostgreSQL server."""
    if database_url is None:
        return query(server, sql, params)
    parts = sql.split("?")
    named = "".join(p + (f":p{i}" if i < len(parts) - 1 else "") for i, p in enumerate(parts))
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as conn:
            values = {f"p{i}": v for i, v in enumerate(params)}
            return [tuple(r) for r in conn.execute(sqlalchemy.text(named), values)]
    finally:
        engine.dispose()


def run(args: argparse.Namespace, database_url: str | None) -> int:
    counts = sorted({int(c) for c in args.counts.split(",")})
    if args.profile and not shutil.which("py-spy"):
        sys.exit("--profile needs py-spy: pip install py-spy")
    first_port = _free_port_range(counts[-1] + 20)
    env = {
        "NAKAMA_QUOTAS__PROJECTS_PER_USER": str(counts[-1] + 10),
        "NAKAMA_QUOTAS__RUNNING_APPS_PER_USER": str(counts[-1] + 10),
        "NAKAMA_QUOTAS__ENVIRONMENTS_PER_USER": str(counts[-1] + 10),
        "NAKAMA_RUNTIME__PORT_RANGE_START": str(first_port),
        "NAKAMA_RUNTIME__PORT_RANGE_END": str(first_port + counts[-1] + 19),
    }
    if database_url is not None:
        env["NAKAMA_DATABASE_URL"] = database_url
    rows: list[str] = []
    figures: dict[tuple[int, str], dict] = {}
    profile: list[str] = []
    with running_nakama("api-scale", extra_env=env) as server:
        made = server.api.post("/api/v1/users", json={"username": "alice", "password": PASSWORD})
        made.raise_for_status()
        token = made.json()["token"]
        api = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        cookie = sign_in(server.url)
        tmp: Path = server.tmp  # type: ignore[attr-defined]
        have = 0
        for count in counts:
            t0 = time.monotonic()
            create(api, [f"app-{i:03}" for i in range(have, count)], server)
            print(f"{count} projects ready ({time.monotonic() - t0:.0f} s)", flush=True)
            have = count
            hook = read(
                server, database_url, "SELECT hook_token FROM projects WHERE name = ?", ("app-000",)
            )
            targets = [
                ("GET /api/v1/projects", "/api/v1/projects", "Authorization", f"Bearer {token}"),
                (
                    "GET /api/v1/projects/app-000",
                    "/api/v1/projects/app-000",
                    "Authorization",
                    f"Bearer {token}",
                ),
                ("GET /projects (web)", "/projects", "Cookie", cookie),
            ]
            for label, path, header, value in targets:
                lua = tmp / f"get-{count}-{len(rows)}.lua"
                lua.write_text(GET_LUA.format(header=lua_str(header), value=lua_str(value)))
                sample = httpx.get(f"{server.url}{path}", headers={header: value}, timeout=30)
                sample.raise_for_status()
                kind = sample.headers["content-type"]
                r = loaded(server.proc.pid, f"{server.url}{path}", lua, args.seconds)
                base = bare("_bare_static.py", lua, args.seconds, sample.content, path, kind)
                figures[(count, label)] = r
                rows.append(row(f"{count:>3} {label}", r, len(sample.content), base))
                print(rows[-1], flush=True)
            body = push_body("app-000")
            prefix = f"scale{count}-{os.getpid()}-"
            lua = tmp / f"intake-{count}.lua"
            lua.write_text(
                WRK_LUA.format(
                    body=lua_str(body.decode()), token=lua_str(hook[0][0]), prefix=lua_str(prefix)
                )
            )
            r = loaded(server.proc.pid, f"{server.url}/code-reload/app-000", lua, args.seconds)
            stored = int(
                read(
                    server,
                    database_url,
                    "SELECT COUNT(*) FROM webhook_events WHERE dedup_key LIKE ?",
                    (f"code-reload:app-000:{prefix}%",),
                )[0][0]
            )
            r["stored_per_s"] = stored / r["seconds"]
            base = bare("_bare_asgi.py", lua, args.seconds, b"", "/code-reload", "")
            figures[(count, "intake")] = r
            rows.append(
                row(f"{count:>3} POST /code-reload (intake)", r, 0, base)
                + f"  stored {r['stored_per_s']:.0f}/s"
            )
            print(rows[-1], flush=True)
        # The list while a project changes every 0.5 s (each change makes every cached list
        # stale at once: shows that one request recomputes it while the others wait).
        lua = tmp / "churn.lua"
        lua.write_text(
            GET_LUA.format(header=lua_str("Authorization"), value=lua_str(f"Bearer {token}"))
        )
        with changing(api, "app-001", every_s=0.5):
            r = loaded(server.proc.pid, f"{server.url}/api/v1/projects", lua, args.seconds)
        figures[(counts[-1], "churn")] = r
        rows.append(
            row(f"{counts[-1]:>3} GET /api/v1/projects, a change every 0.5 s", r, 0, base=None)
        )
        print(rows[-1], flush=True)
        if args.profile:
            lua = tmp / "profile.lua"
            lua.write_text(
                GET_LUA.format(header=lua_str("Authorization"), value=lua_str(f"Bearer {token}"))
            )
            raw = tmp / "profile.txt"
            with py_spy_record(server.proc.pid, raw, duration=args.seconds, gil=True):
                loaded(server.proc.pid, f"{server.url}/api/v1/projects", lua, args.seconds)
            profile = profile_summary(raw, HERE.parent)
        api.close()

    print()
    print(f"=== api_scale: wrk -t2 -c64 -d{args.seconds}s, projects {counts}, {args.database} ===")
    print(machine_note())
    print("\n".join(rows))
    top = counts[-1]
    listing = figures[(top, "GET /api/v1/projects")]
    intake = figures[(top, "intake")]
    ok_list = listing["rps"] >= 1000 and listing["p99"] <= 100
    ok_intake = intake["stored_per_s"] >= 1500 and intake["p99"] <= 50
    print(
        f"targets at {top} projects: list >= 1000 req/s, p99 <= 100 ms -> "
        f"{'MET' if ok_list else 'MISSED'} ({listing['rps']:.0f}/s, {listing['p99']:.1f} ms); "
        f"intake >= 1500 events/s, p99 <= 50 ms -> {'MET' if ok_intake else 'MISSED'} "
        f"({intake['stored_per_s']:.0f}/s, {intake['p99']:.1f} ms)"
    )
    if profile:
        print("\npy-spy profile (GIL holder only) of nakama up under the list load:")
        print("\n".join(profile))
    print(
        f"RESULT api_scale list_rps={listing['rps']:.0f} list_p99={listing['p99']:.1f}ms "
        f"intake_events_per_s={intake['stored_per_s']:.0f} intake_p99={intake['p99']:.1f}ms "
        f"projects={top}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
