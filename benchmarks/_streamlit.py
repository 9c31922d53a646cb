"""Watching a real Streamlit app in Debian's Chromium (driven by Playwright) for the benchmarks.

Streamlit renders through a websocket, so only a browser can tell which code ran. Every page gets
an init script with a MutationObserver that writes down, in the page itself, the wall-clock time
(``Date.now()``) at which each ``<h1>`` text first appeared. The benchmark reads those times after
the fact, so they do not depend on how often Python looks, and several pages can be watched at
once from Playwright's synchronous API. Browser and benchmark share the machine's clock.

Chromium is started as in ``tests/e2e/test_streamlit_kit.py`` (``/usr/bin/chromium``, Playwright's
own browser download is not used), plus a host-resolver rule so it can reach 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from tests.e2e.browser import CHROMIUM
from tests.e2e.browser import CHROMIUM_ARGS as TEST_CHROMIUM_ARGS

# The browser tests' Chromium, and no name resolves: it can reach 127.0.0.1 and nothing else.
CHROMIUM_ARGS = [
    *TEST_CHROMIUM_ARGS,
    # Nothing but this machine: apps are at *.localhost (the gateway), Nakama at 127.0.0.1.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost , "
    "EXCLUDE *.localhost",
]

# Records {h1 text: first time seen, epoch ms} in window.__h1Seen, from the first DOM change on.
H1_OBSERVER = """
(() => {
  const seen = (window.__h1Seen = {});
  const look = () => {
    for (const h of document.querySelectorAll("h1")) {
      const text = h.textContent.trim();
      if (text && !(text in seen)) seen[text] = Date.now();
    }
  };
  new MutationObserver(look).observe(document, {
    subtree: true, childList: true, characterData: true,
  });
})();
"""
# When an <h1> containing the argument was first seen (epoch ms), or null.
SEEN_AT = """t => {
  const times = Object.entries(window.__h1Seen || {})
    .filter(([text]) => text.includes(t)).map(([, at]) => at);
  return times.length ? Math.min(...times) : null;
}"""
ANY_H1 = "() => Object.keys(window.__h1Seen || {})"

TITLE_RE = re.compile(r'st\.title\("([^"]*)"\)')


def current_title(app_py: Path) -> str:
    m = TITLE_RE.search(app_py.read_text())
    if not m:
        raise RuntimeError(f'no st.title("...") in {app_py}')
    return m.group(1)


def set_title(app_py: Path, title: str) -> None:
    source = app_py.read_text()
    app_py.write_text(TITLE_RE.sub(lambda _: f'st.title("{title}")', source, count=1))


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    if not Path(CHROMIUM).is_file():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _seen_at(page: Page, title: str) -> float | None:
    """Epoch seconds at which ``page`` first showed ``title`` in an <h1>, or None."""
    try:
        ms = page.evaluate(SEEN_AT, title)
    except PlaywrightError:  # navigating or closed
        return None
    return None if ms is None else ms / 1000


@dataclass
class Session:
    """One browser context on the app: a Streamlit session of its own."""

    context: BrowserContext
    page: Page
    opened: float  # epoch seconds, just before the context was created
    error: str = ""

    def seen_at(self, title: str) -> float | None:
        return _seen_at(self.page, title)

    def titles(self) -> list[str]:
        try:
            return list(self.page.evaluate(ANY_H1))
        except PlaywrightError:
            return []

    def body_text(self, limit: int = 80) -> str:
        try:
            text = self.page.locator("body").inner_text(timeout=2_000)
        except PlaywrightError:
            return ""
        return " ".join(text.split())[:limit]

    def close(self) -> None:
        with contextlib.suppress(PlaywrightError):
            self.context.close()


def open_session(browser: Browser, url: str, *, timeout_ms: int = 10_000) -> Session:
    """A new context on ``url``; returns once the page's HTML has arrived (or failed to: then
    ``error`` says why, e.g. the port is closed while the app restarts)."""
    opened = time.time()
    context = browser.new_context()
    context.add_init_script(H1_OBSERVER)
    page = context.new_page()
    session = Session(context, page, opened)
    try:
        page.goto(url, wait_until="commit", timeout=timeout_ms)
    except PlaywrightError as exc:
        session.error = str(exc).splitlines()[0]
    return session


def wait_title(
    session: Session, title: str, *, timeout: float, interval: float = 0.02
) -> float | None:
    """Epoch seconds at which ``session`` showed ``title`` in an <h1>; None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        at = session.seen_at(title)
        if at is not None:
            return at
        if time.monotonic() >= deadline:
            return None
        session.page.wait_for_timeout(interval * 1000)  # lets Playwright deliver events


def page_load(browser: Browser, url: str, title: str, *, timeout: float = 30) -> float:
    """Seconds from creating a new context to ``title`` rendered in its <h1> (unchanged app)."""
    session = open_session(browser, url)
    try:
        at = wait_title(session, title, timeout=timeout)
        if at is None:
            raise RuntimeError(f"{url} did not render {title!r} in {timeout}s: {session.titles()}")
        return at - session.opened
    finally:
        session.close()


@dataclass
class NewSessionResult:
    rendered: float | None = None  # epoch seconds the new title appeared in a fresh session
    opened: float | None = None  # when that session's context was created
    attempts: int = 0  # sessions opened, including those that got the old title
    stale: list[str] = field(default_factory=list)  # what the earlier sessions showed

    def stale_summary(self) -> str:
        """What the sessions before the good one got, e.g. ``3 old title, 1 no page``."""
        kinds = {"old title": 0, "no page": 0, "blank": 0}
        for what in self.stale:
            kind = what.split(":")[0]
            kinds[kind if kind in kinds else "old title"] += 1
        return ", ".join(f"{n} {kind}" for kind, n in kinds.items() if n) or "none"


def first_new_session(
    browser: Browser, url: str, title: str, *, deadline: float, attempt_timeout: float = 20
) -> NewSessionResult:
    """Open one new session after another until one renders ``title``.

    An attempt ends as soon as its page shows any <h1> (the old title: open the next one), when
    it has shown nothing for ``attempt_timeout`` s, or when the page did not load at all (the app
    is restarting: try again 50 ms later). ``deadline`` is a ``time.monotonic()`` value.
    """
    result = NewSessionResult()
    while time.monotonic() < deadline:
        result.attempts += 1
        session = open_session(browser, url)
        try:
            if session.error:
                result.stale.append(f"no page: {session.error}")
                session.page.wait_for_timeout(50)
                continue
            give_up = min(deadline, time.monotonic() + attempt_timeout)
            while time.monotonic() < give_up:
                at = session.seen_at(title)
                if at is not None:
                    result.rendered, result.opened = at, session.opened
                    return result
                shown = session.titles()
                if shown and not any(title in text for text in shown):
                    result.stale.append(f"old title: {shown[0]}")
                    break
                session.page.wait_for_timeout(20)
            else:
                result.stale.append(f"blank: no <h1> in {attempt_timeout}s: {session.body_text()}")
        finally:
            session.close()
    return result
