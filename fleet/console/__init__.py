"""The LabFleet console: server-rendered pages at `/` over the same services as the API (issue 14).

One module per feature (`devices.py`, `alerts.py`, ...), one layout and stylesheet, vendored browser
libraries under `static/vendor/` (see its VERSIONS file); no Node build, no CDN.
"""

from __future__ import annotations

import inspect

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleet.console.app import LANG_COOKIE, STATIC, error_response
from fleet.errors import InvalidInput, NotFound
from fleet.i18n import negotiate, set_locale


def install(app: FastAPI) -> None:
    """Mount the console, its static files and the offline API docs on the app (after the API routes)."""
    from fleet.console import (
        admin,
        alerts,
        asset_labels,
        auth,
        cockpit,
        deliveries,
        devices,
        provisioning,
        reports,
        rollouts,
        stocktake,
        timetables,
        update_policies,
    )

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="LabFleet API",
            swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="LabFleet API",
            redoc_js_url="/static/vendor/redoc/redoc.standalone.js",
            redoc_favicon_url="/static/favicon.svg",
            with_google_fonts=False,
        )

    for module in (
        auth,
        cockpit,
        devices,
        deliveries,
        stocktake,
        asset_labels,
        provisioning,
        alerts,
        rollouts,
        reports,
        admin,
        timetables,
        update_policies,
    ):
        app.include_router(module.router)

    # Any other path a browser asks for gets the console's 404 page; API clients keep the API's JSON answer.
    json_handler = app.exception_handlers.get(StarletteHTTPException)

    async def http_error(request: Request, err: Exception) -> Response:
        assert isinstance(err, StarletteHTTPException)
        wants_html = "text/html" in request.headers.get("accept", "")
        if 400 <= err.status_code < 500 and wants_html and not request.url.path.startswith("/api/"):
            set_locale(
                negotiate(
                    user=request.cookies.get(LANG_COOKIE),
                    accept_language=request.headers.get("accept-language"),
                    default=app.state.fleet.settings.locale if hasattr(app.state, "fleet") else None,
                )
            )
            # 405: a browser visiting an address that only takes a form (reloading after a refused post, a
            # bookmark): for a person that is "nothing here", never a raw JSON error.
            if err.status_code in (404, 405):
                return error_response(request, NotFound(request.url.path), status=err.status_code)
            return error_response(request, InvalidInput(str(err.detail)), status=err.status_code)
        if json_handler is not None:
            answer = json_handler(request, err)
            return await answer if inspect.isawaitable(answer) else answer
        raise err

    app.add_exception_handler(StarletteHTTPException, http_error)
