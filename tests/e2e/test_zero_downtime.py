"""Deploys drop no request: continuous requests through the gateway across a code push that
restarts the app and across a dependency push that builds and restarts it, with a real
``nakama up``, real git and real app processes."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import httpx

from tests.e2e.nakama_server import (
    ADMIN_TOKEN,
    clone,
    git,
    git_push,
    running,
    set_version,
    wait_for,
)

MIN_REQUESTS = 1000


class Load:
    """Requests to the app, one after another on a kept-alive connection, until stopped."""

    def __init__(self, url: str, host: str) -> None:
        self.answers: Counter[str] = Counter()
        self.failures: list[str] = []
        self.order: list[str] = []
        self._stop = threading.Event()
        self._client = httpx.Client(
            base_url=url,
            headers={"Host": host, "Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=10,
        )
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def count(self) -> int:
        return sum(self.answers.values()) + len(self.failures)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                r = self._client.get("/")
            except httpx.HTTPError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            if r.status_code != 200:
                self.failures.append(f"{r.status_code}: {r.text[:200]}")
                continue
            self.answers[r.text] += 1
            if not self.order or self.order[-1] != r.text:
                self.order.append(r.text)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._client.close()


def test_no_request_fails_across_a_restart_and_a_rebuild(
    tmp_path: Path, tiny_kit: Path, uv_cache: Path
) -> None:
    env = {"NAKAMA_RUNTIME__RELOAD_STRATEGY": "restart"}
    with running(
        tmp_path / "data", starter_kit=tiny_kit, uv_cache=uv_cache, extra_env=env
    ) as nakama:
        r = nakama.api.post("/api/v1/projects", json={"name": "steady"})
        assert r.status_code == 201, r.text
        first = nakama.pipelines("steady")[0]["commit"]
        nakama.wait_deployed("steady", first)
        host = f"steady.localhost:{nakama.port}"
        work = clone(nakama, "steady", tmp_path / "work")

        with Load(nakama.url, host) as load:
            wait_for(lambda: load.count >= 100, timeout=30, what="the load to run")
            pid_before = (nakama.data_dir / "apps" / "steady" / "app.pid").read_text()
            # A code push: the app is restarted (the restart strategy), not reloaded in place.
            set_version(work, "v2")
            git("commit", "-qam", "v2", cwd=work)
            git_push(work)
            second = git("rev-parse", "HEAD", cwd=work)
            nakama.wait_deployed("steady", second, timeout=60)
            wait_for(lambda: load.answers["v2"] > 50, timeout=30, what="v2 to be served")
            pid_after = (nakama.data_dir / "apps" / "steady" / "app.pid").read_text()
            assert pid_after != pid_before, "the code push did not restart the app"

            # A dependency push: an environment is built, then the app restarts on it.
            set_version(work, "v3")
            (work / "requirements.txt").write_text("six==1.16.0\n")
            git("commit", "-qam", "v3 with six", cwd=work)
            git_push(work)
            third = git("rev-parse", "HEAD", cwd=work)
            nakama.wait_deployed("steady", third, timeout=240)
            wait_for(
                lambda: load.answers["v3 six=1.16.0"] > 50 and load.count >= MIN_REQUESTS,
                timeout=60,
                what="v3 to be served and enough requests made",
            )
        kinds = [p["kind"] for p in nakama.pipelines("steady")]
        assert kinds == ["build", "reload", "build"], kinds

    assert load.failures == [], load.failures[:5]
    assert load.count >= MIN_REQUESTS
    assert load.order == ["v1", "v2", "v3 six=1.16.0"], load.order
