"""The OpenAPI document as the contract: every status a route can answer, with the one error schema.

FastAPI documents only what a route returns on success and its own 422. Our errors come from one table
(fleet/api/errors.py) and one JSON shape, so they are added here generically, by what each operation can
meet: authentication (401/403, and 404 for objects out of scope), a body (413, 422), a write (409), the
database (503), and anything unexpected (500). File downloads get their real media types.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from fleet.api import errors
from fleet.api.schemas import ErrorOut

ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

# Media types of the routes that answer with a file rather than JSON (path -> media type -> schema).
_TEXT = {"type": "string"}
_BINARY = {"type": "string", "format": "binary"}
FILE_RESPONSES: dict[str, dict[str, dict[str, Any]]] = {
    "/api/v1/exports/devices": {"text/csv": _TEXT, XLSX: _BINARY},
    "/api/v1/exports/rooms": {"text/csv": _TEXT, XLSX: _BINARY},
    "/api/v1/audit/export": {"text/csv": _TEXT, XLSX: _BINARY},
    "/api/v1/reports/{name}": {
        "application/json": {"type": "object"},
        "text/csv": _TEXT,
        XLSX: _BINARY,
        "text/html": _TEXT,
        "application/pdf": _BINARY,
    },
    "/api/v1/artifacts/{sha256}/download": {"application/octet-stream": _BINARY},
}
# Statuses particular to one route, beyond the generic ones.
EXTRA_STATUSES: dict[str, tuple[int, ...]] = {
    "/api/v1/reports/{name}": (501,),  # pdf without the reports extra
    "/api/v1/artifacts/{sha256}/download": (206, 416),  # Range requests
}
_WRITES = {"post", "put", "patch", "delete"}


# Imports whose refusal (422) can come as the bad-row list in CSV (errors=csv).
CSV_ERROR_LISTS = ("/api/v1/imports/devices", "/api/v1/imports/rooms")


def statuses_for(path: str, method: str, op: dict[str, Any]) -> set[int]:
    """The error statuses an operation can answer with, from what it meets."""
    out = {400, 422, 500}
    if path.startswith("/api/"):
        # The database may be busy or gone (503); every API route authenticates somebody, by API token or
        # (enrollment) by claim token, and may be rate limited.
        out |= {401, 403, 429, 503}
    if op.get("security"):
        out.add(404)
    if "{" in path:
        out.add(404)
    if method in _WRITES:
        out.add(409)
    if "requestBody" in op:
        out.add(413)
    out.update(s for s in EXTRA_STATUSES.get(path, ()) if s >= 400)
    return out


def _error_response(status: int) -> dict[str, Any]:
    return {
        "description": errors.DESCRIPTIONS.get(status, "error"),
        "content": {"application/json": {"schema": ERROR_REF}},
    }


def build(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorOut"] = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    # Validation errors answer in the one error shape, not FastAPI's default body.
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            responses = op.setdefault("responses", {})
            for status in sorted(statuses_for(path, method, op)):
                responses[str(status)] = _error_response(status)
            if path in CSV_ERROR_LISTS:
                # errors=csv answers a refused import's bad-row list as a CSV download instead.
                responses["422"]["content"]["text/csv"] = {"schema": {"type": "string"}}
            if path in FILE_RESPONSES:
                ok = next((k for k in ("200", "206") if k in responses), "200")
                responses[ok] = {
                    "description": responses.get(ok, {}).get("description", "the file"),
                    "content": {media: {"schema": s} for media, s in FILE_RESPONSES[path].items()},
                }
                for extra in EXTRA_STATUSES.get(path, ()):
                    if extra < 400:
                        responses[str(extra)] = {
                            "description": "part of the file (Range)",
                            "content": {media: {"schema": s} for media, s in FILE_RESPONSES[path].items()},
                        }
    return schema


def install(app: FastAPI) -> None:
    """Replace app.openapi with the generic contract (built once, on first request for it)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
