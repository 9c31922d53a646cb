"""Apps asleep when idle: stopped after the project's idle timeout, woken by the next request
(a page gets a "waking up" page that reloads itself, other requests wait), and still asleep,
not running, after Nakama restarts. A real ``nakama up`` and real app processes."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.e2e.nakama_server import ADMIN_TOKEN, NakamaProcess, wait_for

FAST_IDLE_CHECK = {"NAKAMA_GATEWAY__IDLE_CHECK_INTERVAL_S": "0.2"}


def app_get(nakama: NakamaProcess, **headers: str) -> httpx.Response:
    return httpx.get(
        f"{nakama.url}/",
        headers={
            "Host": f"nap.localhost:{nakama.port}",
            "Authorization": f"Bearer {ADMIN_TOKEN}",
            **headers,
        },
        timeout=30,
    )


def state(nakama: NakamaProcess) -> str:
    return str(nakama.project("nap")["app_state"])


def test_an_idle_app_sleeps_wakes_on_request_and_stays_asleep_across_a_restart(
    tmp_path: Path, tiny_kit: Path, uv_cache: Path
) -> None:
    nakama = NakamaProcess(
        data_dir=tmp_path / "data",
        starter_kit=tiny_kit,
        uv_cache=uv_cache,
        extra_env=FAST_IDLE_CHECK,
    )
    nakama.start()
    try:
        assert nakama.api.post("/api/v1/projects", json={"name": "nap"}).status_code == 201
        nakama.wait_deployed("nap", nakama.pipelines("nap")[0]["commit"])
        assert app_get(nakama).text == "v1"
        r = nakama.api.patch("/api/v1/projects/nap", json={"idle_timeout_s": 1})
        assert r.status_code == 200 and r.json()["idle_timeout_s"] == 1

        wait_for(lambda: state(nakama) == "sleeping", timeout=15, what="the app to sleep")
        pid_file = nakama.data_dir / "apps" / "nap" / "app.pid"
        assert not Path(f"/proc/{pid_file.read_text()}").exists(), "the process still runs"

        # A browser gets a page that says so and reloads itself; the app is woken meanwhile.
        page = app_get(nakama, Accept="text/html")
        assert page.status_code == 503
        assert "Waking up" in page.text and 'http-equiv="refresh"' in page.text
        wait_for(lambda: state(nakama) == "running", timeout=15, what="the app to wake")
        assert app_get(nakama).text == "v1"

        # Asleep again; a request that is no page waits for the app and gets its answer.
        wait_for(lambda: state(nakama) == "sleeping", timeout=15, what="the app to sleep again")
        assert app_get(nakama).text == "v1"
        assert state(nakama) == "running"

        # Asleep when Nakama stops: asleep when it is back, until a request comes.
        wait_for(lambda: state(nakama) == "sleeping", timeout=15, what="a third sleep")
        nakama.stop()
        nakama.start()
        wait_for(lambda: state(nakama) == "sleeping", timeout=15, what="sleeping after restart")
        assert app_get(nakama).text == "v1"

        # Turned off: it stays up.
        r = nakama.api.patch("/api/v1/projects/nap", json={"idle_timeout_s": 0})
        assert r.json()["idle_timeout_s"] is None
    finally:
        nakama.close()
        nakama.kill_apps()
