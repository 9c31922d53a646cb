"""Rendering: the Jinja2 environment, its filters, and what every page needs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from backend.web.security import CSRF_FIELD, CSRF_HEADER, csrf_token, security_headers
from nakama.auth import Principal
from nakama.db.tables import as_utc
from nakama.limits_text import format_cores

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
HTMX = "htmx-2.0.11.min.js"

# Pipeline statuses after which nothing changes any more.
FINISHED = frozenset({"success", "failed", "canceled", "superseded"})


def short_sha(value: str | None) -> str:
    return value[:8] if value else "—"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return "—"
    seconds = max(0, int(((now or datetime.now(UTC)) - as_utc(moment)).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def elapsed(started: datetime | None, finished: datetime | None) -> float | None:
    """Seconds a pipeline ran, or has been running so far."""
    if started is None:
        return None
    end = as_utc(finished) if finished else datetime.now(UTC)
    return max(0.0, (end - as_utc(started)).total_seconds())


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=HERE / "templates")
    env = templates.env
    env.filters["short_sha"] = short_sha
    env.filters["duration"] = duration
    env.filters["ago"] = ago
    env.filters["cores"] = format_cores
    env.globals["elapsed"] = elapsed
    env.globals["FINISHED"] = FINISHED
    env.globals["HTMX"] = HTMX
    env.globals["CSRF_FIELD"] = CSRF_FIELD
    env.globals["CSRF_HEADER"] = CSRF_HEADER
    return templates


class Renderer:
    """Renders a template with the signed-in user, the CSRF token and any one-time notice."""

    def __init__(
        self, templates: Jinja2Templates, *, mode: str, poll_s: float, apps: str | None = None
    ) -> None:
        """``apps``: the CSP source of the apps' hosts (see :func:`security_headers`)."""
        self._headers = security_headers(apps=apps)
        self._templates = templates
        self._mode = mode
        self._poll_s = poll_s

    @property
    def mode(self) -> str:
        """``local`` or ``cluster``: what the pages say differs a little."""
        return self._mode

    def __call__(
        self,
        request: Request,
        template: str,
        *,
        user: Principal | None = None,
        status_code: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        flash = request.session.pop("flash", None) if not template.startswith("_") else None
        response = self._templates.TemplateResponse(
            request,
            template,
            {
                "user": user,
                "csrf": csrf_token(request),
                "flash": flash,
                "mode": self._mode,
                "poll_s": self._poll_s,
                **context,
            },
            status_code=status_code,
        )
        response.headers.update(self._headers)
        return response


def flash(request: Request, text: str, *, kind: str = "ok") -> None:
    """A notice shown once, on the next page."""
    request.session["flash"] = {"text": text, "kind": kind}
