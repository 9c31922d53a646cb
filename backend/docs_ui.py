"""The API's interactive docs at ``/docs``, served entirely by Nakama.

FastAPI's own ``/docs`` page loads Swagger UI's script and stylesheet from a CDN: on a machine
without internet, or a browser that may not reach it, the page stays blank. Here the same page
(FastAPI's ``get_swagger_ui_html``) points at Swagger UI's files as the ``swagger-ui-bundle-v2``
package installs them (module ``swagger_ui_bundle``), mounted at ``/docs/swagger-ui/``. ReDoc,
which also loads from CDNs (and fonts from Google), is not offered.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]  # no py.typed

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/swagger-ui"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"


def install_docs(app: FastAPI) -> None:
    """``/docs`` (and Swagger UI's OAuth2 redirect page) on ``app``, made with ``docs_url=None``
    and ``redoc_url=None``."""
    app.mount(ASSETS_PATH, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")
    openapi_url = app.openapi_url or "/openapi.json"
    title = f"{app.title} - API docs"

    @app.get(DOCS_PATH, include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=title,
            oauth2_redirect_url=OAUTH2_REDIRECT_PATH,
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
        )

    @app.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
