"""The gateway's own pages, shown on an app's host instead of the app: unknown app, building,
crashed, waking up, no access, bad request. Self-contained (inline style, no script, nothing
fetched from the host, which is the app's), so they render whatever the app serves."""

from __future__ import annotations

from html import escape

from starlette.responses import HTMLResponse, JSONResponse, Response

_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;margin:0;display:grid;place-items:center;"
    "min-height:100vh;background:#f6f7f9;color:#1d2330}"
    "main{max-width:34rem;padding:2rem;background:#fff;border-radius:12px;"
    "box-shadow:0 1px 4px #0002}h1{font-size:1.3rem;margin:0 0 .5rem}p{margin:.5rem 0}"
    "a{color:#2557d6}.muted{color:#667;font-size:.9rem}"
)
# Inline style only, no script, nothing from elsewhere: the page cannot be made to run code.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"


def gateway_page(
    status: int,
    title: str,
    message: str,
    *,
    link: tuple[str, str] | None = None,
    refresh_s: int | None = None,
    html: bool = True,
    headers: dict[str, str] | None = None,
) -> Response:
    """The page (or, for a client that does not want HTML, ``{"detail": message}``)."""
    extra = dict(headers or {})
    if refresh_s is not None:
        extra["Retry-After"] = str(refresh_s)
    extra["Cache-Control"] = "no-store"
    if not html:
        return JSONResponse({"detail": message}, status_code=status, headers=extra)
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    anchor = f'<p><a href="{escape(link[0], quote=True)}">{escape(link[1])}</a></p>' if link else ""
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{refresh}<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{escape(title)}</h1><p>{escape(message)}</p>{anchor}"
        '<p class="muted">Served by Nakama\'s gateway.</p></main></body></html>'
    )
    extra["Content-Security-Policy"] = _CSP
    extra["X-Content-Type-Options"] = "nosniff"
    return HTMLResponse(body, status_code=status, headers=extra)


def wants_html(method: str, accept: str | None) -> bool:
    """A browser loading a page (so a redirect to the sign-in or a page helps), not an API
    client, a script's fetch or an image."""
    return method in ("GET", "HEAD") and "text/html" in (accept or "")
