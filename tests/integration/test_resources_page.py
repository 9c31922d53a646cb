"""The project page's Resources panel against a real ``nakama up``, seen by each role: the limits
in force, how they are enforced, what $DATA_DIR holds and why the app stopped; the admin's form
to change them (CSRF like every form; anyone else is refused, and never sees it); and the
warning every project page shows when apps run without a sandbox.

alice owns project ``res-p``, bob is a developer there, carol a viewer, dave no member."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.nakama_server import ADMIN_TOKEN, NakamaProcess, running, wait_for, write_tiny_kit
from tests.integration.test_users import make_user
from tests.integration.test_web_security import Browser

P = "res-p"
PASSWORDS = {
    "alice": "alice-password-1",
    "bob": "bob-password-22",
    "carol": "carol-password-3",
    "dave": "dave-password-44",
}
ROLES = {"bob": "developer", "carol": "viewer"}


@dataclass
class World:
    server: NakamaProcess
    browsers: dict[str, Browser]

    def page(self, who: str, project: str = P) -> httpx.Response:
        return self.browsers[who].http.get(f"/projects/{project}")

    def overrides(self) -> dict[str, Any]:
        r = self.server.api.get(f"/api/v1/projects/{P}/limits")
        assert r.status_code == 200, r.text
        return dict(r.json()["overrides"])


def signed_in(server: NakamaProcess) -> dict[str, Browser]:
    browsers = {}
    for name in ("admin", *PASSWORDS):
        browser = Browser(server)
        password = ADMIN_TOKEN if name == "admin" else PASSWORDS[name]
        assert browser.sign_in(name, password).status_code == 303
        browsers[name] = browser
    return browsers


def make_project(server: NakamaProcess, alice: str, name: str = P) -> None:
    """alice's project, bob a developer and carol a viewer in it, its app running."""
    with httpx.Client(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {alice}"}
    ) as api:
        assert api.post("/api/v1/projects", json={"name": name}).status_code == 201
        for username, role in ROLES.items():
            r = api.put(f"/api/v1/projects/{name}/members/{username}", json={"role": role})
            assert r.status_code == 200, r.text
    [first] = server.pipelines(name)
    server.wait_deployed(name, first["commit"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("resources")
    kit = write_tiny_kit(root / "kit")
    # Disk limits are checked every second here (a minute by default).
    env = {
        "NAKAMA_RUNTIME__DISK_CHECK_INTERVAL_S": "1",
        "NAKAMA_GATEWAY__IDLE_CHECK_INTERVAL_S": "0.5",
    }
    with running(root / "data", starter_kit=kit, uv_cache=root / "uv", extra_env=env) as server:
        tokens = {name: make_user(server, name, pw) for name, pw in PASSWORDS.items()}
        browsers = signed_in(server)
        try:
            make_project(server, tokens["alice"])
            yield World(server=server, browsers=browsers)
        finally:
            for browser in browsers.values():
                browser.close()


@pytest.fixture
def defaults(world: World) -> Iterator[None]:
    assert world.server.api.delete(f"/api/v1/projects/{P}/limits").status_code == 200
    yield
    assert world.server.api.delete(f"/api/v1/projects/{P}/limits").status_code == 200


def panel(page: str) -> str | None:
    """The Resources section of a project page (None: not on it)."""
    found = re.search(r'<section class="card" id="resources">.*?</section>', page, re.S)
    return found.group(0) if found else None


def facts(section: str) -> dict[str, str]:
    """The panel's rows as text: label -> value."""
    rows = re.findall(r"<dt>(.*?)</dt>\s*<dd[^>]*>(.*?)</dd>", section, re.S)
    return {
        html.unescape(k): " ".join(html.unescape(re.sub(r"<[^>]+>", "", v)).split())
        for k, v in rows
    }


def notice(browser: Browser, answer: httpx.Response) -> str:
    """The one-time notice on the page a form's answer sends the browser to."""
    assert answer.status_code == 303, answer.text[:300]
    assert answer.headers["location"] == f"/projects/{P}#resources"
    page = browser.http.get(answer.headers["location"]).text
    found = re.search(r'<p class="flash (\w+)" role="status">(.*?)</p>', page, re.S)
    assert found, "no notice on the page"
    return f"{found.group(1)}: {html.unescape(found.group(2))}"


def test_members_see_the_limits_and_only_an_admin_the_form(world: World, defaults: None) -> None:
    answer = world.server.api.get(f"/api/v1/projects/{P}/limits").json()
    for who in ("bob", "alice", "admin"):
        page = world.page(who)
        assert page.status_code == 200, who
        section = panel(page.text)
        assert section is not None, who
        rows = facts(section)
        assert rows["Memory"] == "1 GiB", rows
        assert rows["CPU"] == "1 core"
        assert rows["Processes"] == "256"
        assert re.fullmatch(r"[\d.]+ [MG]iB of 2 GiB", rows["Disk ($DATA_DIR)"]), rows
        assert rows["Log kept"] == "10 MiB"
        assert "Replicas" not in rows and "Autoscaler" not in rows  # cluster mode only
        assert rows["Enforced by"] == answer["enforced_by"]
        assert "bubblewrap sandbox" in rows["Isolation"]
        assert "Stop reason" not in rows  # the app runs
        has_form = 'id="limits-form"' in section
        assert has_form == (who == "admin"), who  # an owner is no admin
        assert 'id="isolation-warning"' not in page.text  # sandboxed here

    # a viewer keeps the viewer's page: no panel, nothing of it
    page = world.page("carol")
    assert page.status_code == 200
    assert 'id="viewer"' in page.text
    assert panel(page.text) is None
    assert "Enforced by" not in page.text and "/limits" not in page.text
    assert world.page("dave").status_code == 404


def test_the_admin_changes_limits_and_keeps_the_others(world: World, defaults: None) -> None:
    api, admin = world.server.api, world.browsers["admin"]
    # set from the CLI or the API: the form leaves them be
    assert api.put(f"/api/v1/projects/{P}/limits", json={"log_mib": 20}).status_code == 200
    form = {"memory_mib": "512", "cpu": "0.5", "processes": "", "disk_mib": " 1024 "}
    said = notice(admin, admin.post(f"/projects/{P}/limits", form))
    assert said == f"ok: Limits of {P} saved; the app restarts with them."
    assert world.overrides() == {"memory_mib": 512, "cpu": 0.5, "disk_mib": 1024, "log_mib": 20}

    section = panel(world.page("bob").text)  # the developer sees the change
    assert section is not None
    rows = facts(section)
    assert rows["Memory"] == "512 MiB (set for this project)"
    assert rows["CPU"] == "0.5 cores (set for this project)"
    assert rows["Processes"] == "256"
    assert re.fullmatch(
        r"[\d.]+ [MG]iB of 1 GiB \(set for this project\)", rows["Disk ($DATA_DIR)"]
    )
    assert rows["Log kept"] == "20 MiB (set for this project)"
    mine = panel(world.page("admin").text)
    assert mine is not None  # the form shows what is set, empty where the default holds
    assert 'name="memory_mib" inputmode="numeric" maxlength="20" value="512"' in mine
    assert 'name="processes" inputmode="numeric" maxlength="20" value=""' in mine

    # an empty field goes back to the default
    form = {"memory_mib": "", "cpu": "0.5", "processes": "", "disk_mib": ""}
    assert notice(admin, admin.post(f"/projects/{P}/limits", form)).startswith("ok: ")
    assert world.overrides() == {"cpu": 0.5, "log_mib": 20}


@pytest.mark.parametrize(
    ("form", "said"),
    [
        ({"memory_mib": "1"}, "memory_mib: Input should be greater than or equal to 32"),
        ({"memory_mib": "lots"}, "memory_mib: Input should be a valid integer"),
        ({"cpu": "0"}, "cpu: Input should be greater than 0"),
        ({"processes": "2"}, "processes: Input should be greater than or equal to 8"),
        ({"disk_mib": "1.5"}, "disk_mib: Input should be a valid integer"),
    ],
)
def test_invalid_limits_are_explained_and_change_nothing(
    world: World, defaults: None, form: dict[str, str], said: str
) -> None:
    admin = world.browsers["admin"]
    assert world.server.api.put(f"/api/v1/projects/{P}/limits", json={"cpu": 2}).status_code == 200
    shown = notice(admin, admin.post(f"/projects/{P}/limits", {"cpu": "2", **form}))
    assert shown.startswith("error: Limits not changed: invalid limits: "), shown
    assert said in shown, shown
    assert world.overrides() == {"cpu": 2.0}


def test_no_one_but_an_admin_may_post_the_form(world: World, defaults: None) -> None:
    for who, status, said in (
        ("bob", 403, "only an admin may do this"),
        ("alice", 403, "only an admin may do this"),
        ("carol", 403, "only an admin may do this"),
        ("dave", 404, f"project {P!r} not found"),
    ):
        r = world.browsers[who].post(f"/projects/{P}/limits", {"memory_mib": "512"})
        assert r.status_code == status, (who, r.status_code)
        assert said in html.unescape(r.text), who
    # without the CSRF token even the admin is refused
    r = world.browsers["admin"].http.post(f"/projects/{P}/limits", data={"memory_mib": "512"})
    assert r.status_code == 403
    assert "Request refused" in r.text
    assert world.overrides() == {}


def test_the_panel_says_why_the_app_stopped(world: World, tmp_path: Path) -> None:
    name = "res-full"
    tokens = world.server.api.post("/api/v1/users/alice/tokens").json()["token"]
    make_project(world.server, tokens, name)
    r = world.server.api.put(f"/api/v1/projects/{name}/limits", json={"disk_mib": 1})
    assert r.status_code == 200, r.text
    data = world.server.data_dir / "apps" / name / "data"
    (data / "big.bin").write_bytes(b"x" * (3 * 2**20))  # as the app would have

    def stopped() -> bool:
        return bool(world.server.project(name)["app_state"] == "stopped")

    wait_for(stopped, timeout=30, interval=0.2, what=f"{name} to be stopped for its disk")
    section = panel(world.page("bob", name).text)
    assert section is not None
    rows = facts(section)
    # what its blocks take: a little more than the bytes written
    used = r"3(\.\d)? MiB of 1 MiB"
    assert re.match(rf"stopped: data directory over its limit \({used}\)", rows["Stop reason"])
    assert rows["Stop reason"] == world.server.project(name)["app_detail"].split("; ")[0]
    assert re.fullmatch(rf"{used} \(set for this project\)", rows["Disk ($DATA_DIR)"]), rows


def test_every_project_page_warns_when_apps_run_unsandboxed(tmp_path: Path) -> None:
    kit = write_tiny_kit(tmp_path / "kit")
    env = {"NAKAMA_RUNTIME__SANDBOX": "off"}
    with running(
        tmp_path / "data", starter_kit=kit, uv_cache=tmp_path / "uv", extra_env=env
    ) as server:
        tokens = {name: make_user(server, name, pw) for name, pw in PASSWORDS.items()}
        browsers = signed_in(server)
        try:
            make_project(server, tokens["alice"])
            [pipeline] = server.pipelines(P)
            for who, path in (
                ("alice", f"/projects/{P}"),
                ("admin", f"/projects/{P}"),
                ("bob", f"/projects/{P}"),
                ("carol", f"/projects/{P}"),  # the viewer's page too
                ("bob", f"/projects/{P}/pipelines/{pipeline['id']}"),
                ("alice", f"/projects/{P}/delete"),
            ):
                page = browsers[who].http.get(path)
                assert page.status_code == 200, (who, path)
                found = re.search(
                    r'<p class="banner warn" role="alert" id="isolation-warning">(.*?)</p>',
                    page.text,
                    re.S,
                )
                assert found, (who, path)
                text = html.unescape(re.sub(r"<[^>]+>", "", found.group(1)))
                assert text.startswith("Not isolated: apps run UNSANDBOXED as Nakama's own user"), (
                    text
                )
                assert "NAKAMA_RUNTIME__SANDBOX=off" in text
            assert 'id="isolation-warning"' not in browsers["alice"].http.get("/projects").text
            section = panel(browsers["bob"].http.get(f"/projects/{P}").text)
            assert section is not None
            assert "Isolation" not in facts(section)  # the warning above says it
        finally:
            for browser in browsers.values():
                browser.close()
