"""``/docs`` works without internet: Swagger UI's script, stylesheet and icon come from Nakama
itself (the swagger-ui-bundle package), and a browser that may reach nothing but Nakama renders
the list of operations."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from backend.app import build_platform, create_app
from nakama.settings import RuntimeSettings, Settings
from tests.e2e.nakama_server import ADMIN_TOKEN, write_tiny_kit
from tests.support import free_port, serve

# src= and href= of the page's <script> and <link> tags.
_ASSET = re.compile(r"<(?:script|link)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", re.IGNORECASE)


@pytest.fixture
def nakama(tmp_path: Path) -> Iterator[str]:
    """A local-mode Nakama on a free loopback port; its base URL."""
    settings = Settings(
        data_dir=tmp_path / "data",
        port=free_port(),
        admin_token=ADMIN_TOKEN,
        starter_kit_dir=write_tiny_kit(tmp_path / "kit"),
        runtime=RuntimeSettings(sandbox="off"),
    )
    platform = build_platform(settings)
    with serve(create_app(platform), port=settings.port) as url:
        yield url


def test_docs_page_loads_its_assets_from_nakama(nakama: str) -> None:
    page = httpx.get(f"{nakama}/docs", timeout=10)
    assert page.status_code == 200
    assets = _ASSET.findall(page.text)
    assert assets, page.text
    for asset in assets:
        assert not re.match(r"(?i)^(https?:)?//", asset), f"{asset} is on another host"
    scripts = [a for a in assets if a.endswith(".js")]
    styles = [a for a in assets if a.endswith(".css")]
    assert scripts and styles, assets
    for asset, kind, marker in [
        *((a, "javascript", "SwaggerUIBundle") for a in scripts),
        *((a, "text/css", ".swagger-ui") for a in styles),
    ]:
        r = httpx.get(urljoin(f"{nakama}/docs", asset), timeout=10)
        assert r.status_code == 200, asset
        assert kind in r.headers["content-type"], (asset, r.headers["content-type"])
        assert marker in r.text, asset
    # The schema the page reads is on this server too.
    spec = re.search(r"url: '([^']+)'", page.text)
    assert spec and spec.group(1) == "/openapi.json"
    assert httpx.get(f"{nakama}/openapi.json", timeout=10).json()["info"]["title"] == "Nakama"


def test_no_docs_page_loads_from_a_cdn(nakama: str) -> None:
    """ReDoc's page would load its script from a CDN: it is not offered."""
    assert httpx.get(f"{nakama}/redoc", timeout=10).status_code == 404
    redirect = httpx.get(f"{nakama}/docs/oauth2-redirect", timeout=10)
    assert redirect.status_code == 200
    assert not re.search(r"(?i)<script[^>]+src=\"(https?:)?//", redirect.text)


def test_swagger_ui_renders_the_operations_offline(nakama: str) -> None:
    from tests.e2e.browser import CHROMIUM, chromium

    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium): no browser to render in")
    ours = urlsplit(nakama).netloc
    elsewhere: list[str] = []
    with chromium() as browser:
        page = browser.new_page()

        def offline(route: object) -> None:
            # Only Nakama answers: anything else is what a machine without internet would lose.
            request = route.request  # type: ignore[attr-defined]
            if urlsplit(request.url).netloc == ours or request.url.startswith("data:"):
                route.continue_()  # type: ignore[attr-defined]
            else:
                elsewhere.append(request.url)
                route.abort()  # type: ignore[attr-defined]

        page.route("**/*", offline)
        page.goto(f"{nakama}/docs")
        page.wait_for_selector(".opblock", timeout=30_000)
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        title = page.locator(".info .title").inner_text()
    assert elsewhere == [], f"the page reached for {elsewhere}"
    assert "Nakama" in title
    assert any(p.replace("\u200b", "") == "/api/v1/projects" for p in paths), paths[:10]
