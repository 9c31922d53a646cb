"""Apps that misbehave behind the gateway: slow, hanging, cutting a response short, sending
100 MB, streaming forever to a client that leaves, taking a 100 MB upload, flooding a WebSocket
client that never reads. Each gets a clear answer or a clean end, Nakama's memory stays bounded,
and another app keeps answering meanwhile. A real ``nakama up``; the apps are Tornado, built from
the package index as any app's dependencies are."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.nakama_server import ADMIN_TOKEN, NakamaProcess, write_tiny_kit

HOSTILE_APP = """\
import asyncio, os
import tornado.ioloop, tornado.web, tornado.websocket

OPEN_STREAMS = [0]
MB = b"x" * (1 << 20)

class Home(tornado.web.RequestHandler):
    def get(self):
        self.write("ok")

class Slow(tornado.web.RequestHandler):
    async def get(self):
        await asyncio.sleep(2)
        self.write("slow but here")

class Hang(tornado.web.RequestHandler):
    async def get(self):
        await asyncio.sleep(3600)

class Cut(tornado.web.RequestHandler):
    def get(self):
        self.request.connection.stream.write(
            b"HTTP/1.1 200 OK\\r\\nContent-Length: 1000\\r\\n\\r\\nonly ten b")
        self.request.connection.stream.close()
        self._finished = True

class Big(tornado.web.RequestHandler):
    async def get(self):
        self.set_header("Content-Length", str(100 << 20))
        for _ in range(100):
            self.write(MB)
            await self.flush()

class Events(tornado.web.RequestHandler):
    async def get(self):
        self.set_header("Content-Type", "text/event-stream")
        OPEN_STREAMS[0] += 1
        try:
            n = 0
            while True:
                self.write(f"data: {n}\\n\\n")
                await self.flush()
                n += 1
                await asyncio.sleep(0.05)
        except tornado.iostream.StreamClosedError:
            pass
        finally:
            OPEN_STREAMS[0] -= 1

class Streams(tornado.web.RequestHandler):
    def get(self):
        self.write(str(OPEN_STREAMS[0]))

@tornado.web.stream_request_body
class Upload(tornado.web.RequestHandler):
    def prepare(self):
        self.size = 0
    def data_received(self, chunk):
        self.size += len(chunk)
    def post(self):
        self.write(str(self.size))

class Flood(tornado.websocket.WebSocketHandler):
    def check_origin(self, origin):
        return True
    async def open(self):
        for _ in range(2000):
            try:
                await self.write_message(MB[:64 * 1024], binary=True)
            except tornado.websocket.WebSocketClosedError:
                return

app = tornado.web.Application([
    (r"/", Home), (r"/slow", Slow), (r"/hang", Hang), (r"/cut", Cut), (r"/big", Big),
    (r"/events", Events), (r"/streams", Streams), (r"/upload", Upload), (r"/flood", Flood),
])
app.listen(int(os.environ["PORT"]), address="127.0.0.1", max_body_size=200 << 20)
tornado.ioloop.IOLoop.current().start()
"""


@pytest.fixture(scope="module")
def nakama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NakamaProcess]:
    root = tmp_path_factory.mktemp("gateway-faults")
    kit = write_tiny_kit(root / "kit", app=HOSTILE_APP, requirements="tornado\n")
    server = NakamaProcess(
        data_dir=root / "data",
        starter_kit=kit,
        uv_cache=root / "uv-cache",
        extra_env={"NAKAMA_GATEWAY__RESPONSE_TIMEOUT_S": "3"},
    )
    server.start()
    for name in ("hostile", "calm"):
        assert server.api.post("/api/v1/projects", json={"name": name}).status_code == 201
    for name in ("hostile", "calm"):
        server.wait_deployed(name, server.pipelines(name)[0]["commit"], timeout=240)
    yield server
    server.close()
    server.kill_apps()


def url(nakama: NakamaProcess) -> str:
    return nakama.url


def headers(nakama: NakamaProcess, app: str) -> dict[str, str]:
    return {"Host": f"{app}.localhost:{nakama.port}", "Authorization": f"Bearer {ADMIN_TOKEN}"}


def get(nakama: NakamaProcess, app: str, path: str, **kwargs: object) -> httpx.Response:
    return httpx.get(f"{nakama.url}{path}", headers=headers(nakama, app), **kwargs)  # type: ignore[arg-type]


def rss_kib(nakama: NakamaProcess) -> int:
    assert nakama.proc is not None
    for line in Path(f"/proc/{nakama.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def calm_answers_while(nakama: NakamaProcess, action: threading.Thread) -> list[float]:
    """Run ``action``; meanwhile ask the calm app every 50 ms and return its response times."""
    times = []
    action.start()
    with httpx.Client(timeout=10) as client:
        while action.is_alive():
            t = time.perf_counter()
            r = client.get(f"{nakama.url}/", headers=headers(nakama, "calm"))
            assert r.status_code == 200 and r.text == "ok"
            times.append(time.perf_counter() - t)
            time.sleep(0.05)
    action.join()
    return times


def test_a_slow_app_answers_and_the_calm_one_is_not_held_up(nakama: NakamaProcess) -> None:
    result: dict[str, httpx.Response] = {}
    slow = threading.Thread(
        target=lambda: result.update(r=get(nakama, "hostile", "/slow", timeout=10))
    )
    times = calm_answers_while(nakama, slow)
    assert result["r"].status_code == 200 and result["r"].text == "slow but here"
    assert len(times) >= 10 and max(times) < 1.0, times


def test_a_hanging_app_gets_a_502_after_the_response_timeout(nakama: NakamaProcess) -> None:
    t = time.monotonic()
    r = get(nakama, "hostile", "/hang", timeout=30)
    assert r.status_code == 502
    assert "did not answer" in r.json()["detail"]
    assert 2.5 < time.monotonic() - t < 15
    assert get(nakama, "calm", "/", timeout=5).text == "ok"


def test_a_response_cut_short_ends_the_clients_response_too(nakama: NakamaProcess) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        get(nakama, "hostile", "/cut", timeout=10)
    assert get(nakama, "calm", "/", timeout=5).text == "ok"


def test_100_mb_stream_through_without_filling_memory(nakama: NakamaProcess) -> None:
    before = rss_kib(nakama)
    size = 0
    peak = before
    with httpx.stream(
        "GET", f"{nakama.url}/big", headers=headers(nakama, "hostile"), timeout=60
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-length"] == str(100 << 20)
        for chunk in r.iter_bytes():
            size += len(chunk)
            if size % (10 << 20) < len(chunk):
                peak = max(peak, rss_kib(nakama))
    assert size == 100 << 20
    assert peak - before < 40 * 1024, f"Nakama grew by {(peak - before) // 1024} MiB"


def test_a_100_mb_upload_streams_to_the_app(nakama: NakamaProcess) -> None:
    before = rss_kib(nakama)

    def body() -> Iterator[bytes]:
        block = b"y" * (1 << 20)
        for _ in range(100):
            yield block

    r = httpx.post(
        f"{nakama.url}/upload", headers=headers(nakama, "hostile"), content=body(), timeout=60
    )
    assert r.status_code == 200 and r.text == str(100 << 20)
    assert rss_kib(nakama) - before < 40 * 1024


def test_an_endless_stream_ends_at_the_app_when_the_client_leaves(nakama: NakamaProcess) -> None:
    assert get(nakama, "hostile", "/streams", timeout=5).text == "0"
    with httpx.stream(
        "GET", f"{nakama.url}/events", headers=headers(nakama, "hostile"), timeout=10
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        events = [line for line in (next(lines) for _ in range(6)) if line.startswith("data:")]
        assert events[:2] == ["data: 0", "data: 1"]  # as they come, not buffered
        assert get(nakama, "hostile", "/streams", timeout=5).text == "1"
    deadline = time.monotonic() + 10
    while get(nakama, "hostile", "/streams", timeout=5).text != "0":
        assert time.monotonic() < deadline, "the app's stream stayed open after the client left"
        time.sleep(0.1)


def test_a_websocket_client_that_never_reads_holds_only_its_own_connection(
    nakama: NakamaProcess,
) -> None:
    before = rss_kib(nakama)
    sock = socket.create_connection(("127.0.0.1", nakama.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        (
            f"GET /flood HTTP/1.1\r\nHost: hostile.localhost:{nakama.port}\r\n"
            f"Authorization: Bearer {ADMIN_TOKEN}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    assert sock.recv(12) == b"HTTP/1.1 101"
    try:
        idle = threading.Thread(target=time.sleep, args=(3,))
        times = calm_answers_while(nakama, idle)  # the flood goes on; nobody reads it
        assert max(times) < 1.0, times
        grown = rss_kib(nakama) - before
        assert grown < 40 * 1024, f"Nakama grew by {grown // 1024} MiB for one unread socket"
    finally:
        sock.close()
    assert get(nakama, "calm", "/", timeout=5).text == "ok"
