"""The app gateway's cost: an app opened directly on its loopback port against the same app
through Nakama's gateway at ``<name>.localhost``, in the same run.

Measured, with a throw-away ``nakama up`` (see ``_harness.py``):

* throughput and latency, ``wrk -t2 -c64`` for ``--seconds`` each, of the tiny test app (the
  stdlib HTTP server the e2e tests deploy): directly, through the gateway as a public app, and
  through the gateway as a private app with a member's API token (the sign-in check included).
  Targets: gateway >= 0.5x the direct throughput, added p99 <= 10 ms.
* WebSocket round trip (send a message, wait for its echo; median of ``--ws-rounds``) to a small
  Tornado echo app, directly and through the gateway.
* wake from sleep: the tiny app asleep (idle timeout), then one request that waits for it; the
  time until its answer (target <= 1.5 s). With ``--streamlit``: the real starter kit asleep,
  then a new Chromium tab until the kit's title is rendered (target <= 6 s).
* push to live for a code-only push with the zero-downtime restart (``restart`` strategy: new
  process on a new port, route switched once healthy); median of ``--pushes`` (target <= 1.0 s).

Run: ``python benchmarks/gateway.py [--seconds 10] [--pushes 10] [--streamlit]``.
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    create_project,
    fmt_stats,
    machine_note,
    running_nakama,
    timed_push,
)

from tests.e2e.nakama_server import (
    ADMIN_TOKEN,
    clone,
    set_version,
    wait_for,
    write_tiny_kit,
)

WS_APP = """\
import os
import tornado.ioloop, tornado.web, tornado.websocket

class Echo(tornado.websocket.WebSocketHandler):
    def check_origin(self, origin):
        return True
    def on_message(self, message):
        self.write_message(message)

class Home(tornado.web.RequestHandler):
    def get(self):
        self.write("ws echo")

app = tornado.web.Application([(r"/", Home), (r"/ws", Echo)])
app.listen(int(os.environ["PORT"]), address="127.0.0.1")
print("ws echo app up", flush=True)
tornado.ioloop.IOLoop.current().start()
"""


def app_port(data_dir: Path, project: str) -> int:
    """The loopback port the app's process listens on now."""
    pid = (data_dir / "apps" / project / "app.pid").read_text().strip()
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if f"pid={pid}," in line:
            return int(line.split()[3].rsplit(":", 1)[1])
    raise RuntimeError(f"no listening socket of pid {pid}")


def wrk(url: str, seconds: int, headers: dict[str, str]) -> dict[str, float]:
    cmd = ["wrk", "-t2", "-c64", f"-d{seconds}s", "--latency"]
    for key, value in headers.items():
        cmd += ["-H", f"{key}: {value}"]
    text = subprocess.run(
        [*cmd, url], capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    lat = {
        p: float(v) * units[u]
        for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    }
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),  # type: ignore[union-attr]
        "p50": lat.get("50", float("nan")),
        "p99": lat.get("99", float("nan")),
        "non2xx": float(bad.group(1)) if bad else 0.0,
        "errors": float(sum(int(g) for g in errors.groups())) if errors else 0.0,
    }


def ws_round_trips(port: int, host: str | None, rounds: int) -> list[float]:
    from websockets.sync.client import connect

    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if host else {}
    uri = f"ws://{host or f'127.0.0.1:{port}'}/ws"
    sock = socket.create_connection(("127.0.0.1", port))
    times = []
    with connect(uri, sock=sock, additional_headers=headers) as ws:
        for i in range(rounds):
            t = time.perf_counter()
            ws.send(f"ping {i}")
            assert ws.recv() == f"ping {i}"
            times.append(time.perf_counter() - t)
    return times


# The tiny app again, with HTTP/1.1 keep-alive and a listen backlog that does not overflow under
# 64 connections: the stdlib server's default (HTTP/1.0, a backlog of 5) makes both the direct
# and the proxied p99 a matter of dropped SYNs retried after a second, which hides what the
# gateway itself adds.
KEEPALIVE_APP = """\
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"v1")
    def log_message(self, *args):
        pass

class Server(ThreadingHTTPServer):
    request_queue_size = 1024

Server(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def throughput(seconds: int, *, label: str, app: str | None = None) -> tuple[float, float]:
    """Prints the table; returns the gateway's lowest throughput ratio and highest added p99."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {}
        if app is not None:
            kit = write_tiny_kit(Path(tmp) / "kit", app=app)
            env["NAKAMA_STARTER_KIT_DIR"] = str(kit)
        with running_nakama("gateway", extra_env=env) as server:
            create_project(server, "bench")
            port = app_port(server.data_dir, "bench")
            host = f"bench.localhost:{server.port}"
            token = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            direct = wrk(f"http://127.0.0.1:{port}/", seconds, {})
            private = wrk(f"{server.url}/", seconds, {"Host": host, **token})
            server.api.patch("/api/v1/projects/bench", json={"visibility": "public"})
            public = wrk(f"{server.url}/", seconds, {"Host": host})
            again = wrk(f"http://127.0.0.1:{port}/", seconds, {})
    base_rps = (direct["rps"] + again["rps"]) / 2
    base_p99 = (direct["p99"] + again["p99"]) / 2
    print(f"\nthroughput, wrk -t2 -c64 -d{seconds}s, {label}")
    print(f"{'':34}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'x direct':>10}{'+p99 ms':>9}")
    rows = [
        ("direct (before)", direct),
        ("gateway, private + API token", private),
        ("gateway, public", public),
        ("direct (after)", again),
    ]
    for name, r in rows:
        ratio = r["rps"] / base_rps
        added = r["p99"] - base_p99
        print(
            f"{name:34}{r['rps']:9.0f}{r['p50']:9.1f}{r['p99']:9.1f}{ratio:10.2f}{added:9.1f}"
            + (
                f"  ({r['non2xx']:.0f} non-2xx, {r['errors']:.0f} socket errors)"
                if r["non2xx"] or r["errors"]
                else ""
            )
        )
    worst = [private, public]
    return min(r["rps"] for r in worst) / base_rps, max(r["p99"] for r in worst) - base_p99


def websocket_and_wake(rounds: int, pushes: int) -> tuple[float, float, float]:
    """Prints the figures; returns the added WebSocket round trip, wake and push-to-live."""
    with tempfile.TemporaryDirectory() as tmp:
        kit = Path(tmp) / "kit"
        kit.mkdir()
        (kit / "app.py").write_text(WS_APP)
        (kit / "nakama.toml").write_text('run = "python app.py"\n')
        (kit / "requirements.txt").write_text("tornado\n")
        env = {
            "NAKAMA_STARTER_KIT_DIR": str(kit),
            "NAKAMA_GATEWAY__IDLE_CHECK_INTERVAL_S": "0.2",
        }
        with running_nakama("gateway-ws", uv_cache=True, extra_env=env) as server:
            create_project(server, "echo", timeout=300)
            port = app_port(server.data_dir, "echo")
            direct = ws_round_trips(port, None, rounds)
            through = ws_round_trips(server.port, f"echo.localhost:{server.port}", rounds)
    print(f"\nWebSocket round trip, Tornado echo app, {rounds} messages on one connection")
    print(f"  direct   {_ms(direct)}")
    print(f"  gateway  {_ms(through)}")
    added = statistics.median(through) - statistics.median(direct)
    print(f"  added by the gateway (median): {added * 1000:.2f} ms")

    with running_nakama(
        "gateway-wake",
        extra_env={
            "NAKAMA_GATEWAY__IDLE_CHECK_INTERVAL_S": "0.2",
            "NAKAMA_RUNTIME__RELOAD_STRATEGY": "restart",
        },
    ) as server:
        project = create_project(server, "nap")
        server.api.patch("/api/v1/projects/nap", json={"idle_timeout_s": 1})
        wakes = []
        client = httpx.Client(timeout=30)
        headers = {"Host": f"nap.localhost:{server.port}", "Authorization": f"Bearer {ADMIN_TOKEN}"}
        for _ in range(5):
            wait_for(
                lambda: server.project("nap")["app_state"] == "sleeping", timeout=20, what="sleep"
            )
            t = time.perf_counter()
            r = client.get(f"{server.url}/", headers=headers)
            wakes.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
        server.api.patch("/api/v1/projects/nap", json={"idle_timeout_s": 0})
        print(f"\nwake from sleep, tiny app, one request that waits: {fmt_stats(wakes)}")

        work = clone(server, "nap", server.tmp / "work")
        results = []
        for i in range(pushes):
            set_version(work, f"p{i}")
            results.append(
                timed_push(
                    server,
                    "nap",
                    work,
                    message=f"p{i}",
                    app_url=project["app_url"],
                    expected=f"p{i}",
                    client=client,
                )
            )
        lives = [r["live"] for r in results]
        kinds = {r["kind"] for r in results}
        print(
            f"push to live, code-only push, zero-downtime restart ({', '.join(sorted(kinds))}), "
            f"{pushes} pushes: {fmt_stats(lives)}"
        )
    return added, statistics.median(wakes), statistics.median(lives)


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"median {statistics.median(values) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms"


def streamlit_wake() -> None:
    from _streamlit import chromium, current_title, page_load

    env = {"NAKAMA_GATEWAY__IDLE_CHECK_INTERVAL_S": "0.2"}
    with (
        running_nakama("gateway-st", uv_cache=True, real_kit=True, extra_env=env) as server,
        chromium() as browser,
    ):
        project = create_project(server, "kit", timeout=600)
        server.api.patch("/api/v1/projects/kit", json={"visibility": "public"})
        title = current_title(Path(__file__).resolve().parent.parent / "app_starter_kit/app.py")
        warm = page_load(browser, project["app_url"], title)
        server.api.patch("/api/v1/projects/kit", json={"idle_timeout_s": 1})
        wakes = []
        for _ in range(3):
            wait_for(
                lambda: server.project("kit")["app_state"] == "sleeping", timeout=30, what="sleep"
            )
            wakes.append(page_load(browser, project["app_url"], title, timeout=60))
        print(
            f"\nwake from sleep, Streamlit kit, new tab until the title is rendered: "
            f"{fmt_stats(wakes)} (an awake app: {warm:.2f} s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--ws-rounds", type=int, default=2000)
    parser.add_argument("--pushes", type=int, default=10)
    parser.add_argument("--streamlit", action="store_true", help="also the Streamlit kit's wake")
    parser.add_argument("--streamlit-only", action="store_true")
    args = parser.parse_args()
    print(machine_note())
    if args.streamlit_only:
        streamlit_wake()
        return
    throughput(
        args.seconds,
        label="tiny app, keep-alive (stdlib HTTP/1.1, backlog 1024)",
        app=KEEPALIVE_APP,
    )
    ratio, added_p99 = throughput(
        args.seconds,
        label="tiny app, keep-alive (stdlib HTTP/1.1, backlog 1024)",
        app=KEEPALIVE_APP,
    )
    ratio_10, _ = throughput(args.seconds, label="tiny test app (stdlib HTTP/1.0, backlog 5)")
    ws_added, wake, live = websocket_and_wake(args.ws_rounds, args.pushes)
    print(
        f"\nRESULT gateway throughput_ratio={ratio:.2f} throughput_ratio_http10={ratio_10:.2f} "
        f"added_p99={added_p99:.1f}ms ws_added={ws_added * 1000:.2f}ms wake={wake:.3f}s "
        f"push_to_live={live:.3f}s"
    )
    if args.streamlit:
        streamlit_wake()


if __name__ == "__main__":
    main()
