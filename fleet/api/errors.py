"""The one table from domain errors to HTTP status, the JSON error handlers, and the body-size guard."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleet import errors as e

log = logging.getLogger(__name__)

STATUS: dict[type[e.FleetError], int] = {
    e.Unauthenticated: 401,
    e.PermissionDenied: 403,
    e.NotFound: 404,
    e.Conflict: 409,
    e.IllegalTransition: 409,
    e.InvalidInput: 422,
    e.ImportRejected: 422,
    e.FeatureUnavailable: 501,
    e.RateLimited: 429,
}


# What each status means to a client; the OpenAPI document (fleet/api/openapi.py) lists them per route.
DESCRIPTIONS: dict[int, str] = {
    400: "the request cannot be processed",
    401: "no valid API token (Authorization: Bearer <token>)",
    403: "the token's role may not do this",
    404: "no such object, or outside the token's schools (the two look the same)",
    405: "method not allowed",
    409: "the change clashes with the current state (a duplicate, an illegal transition)",
    413: "the request body is too large",
    416: "the requested range is outside the file",
    422: "the input is malformed or not acceptable; details say where and why",
    429: "too many attempts; retry after Retry-After seconds",
    500: "an unexpected error; details.incident identifies it in the service's log",
    501: "the feature needs an optional part that is not installed",
    503: "the database is busy or unavailable; retry shortly",
}


def status_for(err: e.FleetError) -> int:
    for cls in type(err).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": code, "message": message, "details": details}


def _jsonable_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for err in errors:
        out.append(
            {
                "loc": [str(x) for x in err.get("loc", ())],
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
        )
    return out


def install(app: FastAPI) -> None:
    # Innermost middleware: anything the handlers below do not map becomes a JSON 500 with an incident id.
    app.add_middleware(IncidentGuard)

    @app.exception_handler(e.FleetError)
    async def _fleet(_request: Request, err: e.FleetError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(err, e.Unauthenticated) else None
        if isinstance(err, e.RateLimited):
            headers = {"Retry-After": str(err.retry_after_s)}
        return JSONResponse(
            error_body(err.code, err.message, err.details), status_code=status_for(err), headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, err: RequestValidationError) -> JSONResponse:
        errs = _jsonable_errors(list(err.errors()))
        first = errs[0] if errs else {"loc": [], "msg": "invalid request"}
        where = ".".join(first["loc"])
        return JSONResponse(
            error_body("invalid_request", f"{where}: {first['msg']}" if where else str(first["msg"]), errs),
            status_code=422,
        )

    @app.exception_handler(IntegrityError)
    async def _integrity(_request: Request, err: IntegrityError) -> JSONResponse:
        # A race between two writers: the pre-checks passed, the database constraint caught it.
        log.info("integrity conflict: %s", type(err.orig).__name__)
        return JSONResponse(
            error_body("conflict", "the change clashes with an existing record"), status_code=409
        )

    @app.exception_handler(OperationalError)
    async def _busy(_request: Request, err: OperationalError) -> JSONResponse:
        # SQLite's writer lock held past the busy timeout, or PostgreSQL gone: the request can be retried.
        log.warning("database unavailable for a request: %s", type(err.orig).__name__)
        return JSONResponse(
            error_body("unavailable", "the database is busy or unavailable; retry shortly"),
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            err.status_code, "http_error"
        )
        headers = dict(getattr(err, "headers", None) or {})
        if err.status_code == 405:
            # One route per method: Starlette's Allow names only the first route matching the path.
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return JSONResponse(
            error_body(code, str(err.detail)), status_code=err.status_code, headers=headers or None
        )


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


class IncidentGuard:
    """Turn an unexpected exception into a JSON 500 carrying an incident id; the traceback goes to the log
    only."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        responded = False

        async def tracking_send(message: Message) -> None:
            nonlocal responded
            if message["type"] == "http.response.start":
                responded = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as err:  # the one place that answers for any failure
            incident = uuid.uuid4().hex[:16]
            # The path only: query strings may hold secrets (signed links, tokens).
            log.error(
                "incident %s: unexpected %s on %s %s",
                incident,
                type(err).__name__,
                scope.get("method", "?"),
                scope.get("path", "?"),
                exc_info=err,
            )
            if responded:
                raise
            body = json.dumps(
                error_body(
                    "internal_error",
                    f"an unexpected error occurred; quote incident {incident} when reporting it",
                    {"incident": incident},
                )
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"x-incident-id", incident.encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse bodies over the limit with 413 before they are read into memory (Content-Length or streamed)."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, import_max_bytes: int, import_prefix: str | tuple[str, ...]
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.import_max_bytes = import_max_bytes
        self.import_prefix = import_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.import_max_bytes if scope["path"].startswith(self.import_prefix) else self.max_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = False
                if too_big:
                    await _send_413(send, limit)
                    return
        seen = 0
        responded = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # An HTTPException passes through FastAPI's body parsing unchanged (others become a 400).
                    raise _TooLarge(413, detail=f"request body is larger than {limit} bytes")
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal responded
            if message["type"] == "http.response.start":
                responded = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not responded:
                await _send_413(send, limit)


class _TooLarge(HTTPException):
    pass


async def _send_413(send: Send, limit: int) -> None:
    body = json.dumps(error_body("too_large", f"request body is larger than {limit} bytes")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
