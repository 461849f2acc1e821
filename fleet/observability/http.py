"""HTTP side of metrics: request latency per route template (ASGI middleware) and the /metrics route.

The service wires both in `create_app`:
    app.add_middleware(HttpMetricsMiddleware, metrics=fleet_metrics)
    app.include_router(metrics_router(registry, MetricsAccess.from_settings(...)))
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CollectorRegistry, make_wsgi_app
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleet.observability.exposition import MetricsAccess, render
from fleet.observability.metrics import UNMATCHED_ROUTE, FleetMetrics


def route_template(scope: Scope) -> str:
    """The matched route's template (/api/v1/devices/{device_id}), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


def route_templates(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, route template) the app serves, from its OpenAPI schema (what the latency labels can
    be)."""
    methods = ("get", "post", "put", "patch", "delete")
    return [
        (m.upper(), path) for path, ops in app.openapi().get("paths", {}).items() for m in methods if m in ops
    ]


class HttpMetricsMiddleware:
    """Observes every HTTP request's latency by method and route template, and counts it by status class."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: FleetMetrics,
        timer: Callable[[], float] = time.perf_counter,
        skip_routes: frozenset[str] = frozenset({"/metrics"}),
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.timer = timer
        # Prometheus's own scrapes would otherwise dominate the route table.
        self.skip_routes = skip_routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = self.timer()
        status = 500  # an exception before the response starts is a 500 to the client

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = route_template(scope)
            if route not in self.skip_routes:
                self.metrics.http_request(scope.get("method", "GET"), route, status, self.timer() - start)


def metrics_router(registry: CollectorRegistry, access: MetricsAccess) -> APIRouter:
    """GET /metrics: the registry in Prometheus format, for allowed networks or a bearer token."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Any:
        host = request.client.host if request.client else None
        if not access.allows(host, request.headers.get("authorization")):
            return Response(
                "metrics need a bearer token from this network\n",
                status_code=401,
                media_type="text/plain",
                headers={"WWW-Authenticate": "Bearer"},
            )
        # Off the event loop: rendering the district takes tens of ms, which ingest on the loop should not
        # wait for.
        body, content_type = await asyncio.to_thread(render, registry, request.headers.get("accept"))
        return Response(body, media_type=content_type)

    return router


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape (one every 15 s per worker is noise)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def serve_metrics_thread(
    registry: CollectorRegistry, access: MetricsAccess, host: str, port: int
) -> WSGIServer:
    """/metrics for a process without the API (an ingest worker), on its own thread, with the service's access
    rule.

    A thread, not the worker's event loop: a scrape is answered even while the loop is busy committing a
    batch. Raises OSError when the port is taken; stop it with `shutdown()` and `server_close()`.
    """
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if not access.allows(environ.get("REMOTE_ADDR"), environ.get("HTTP_AUTHORIZATION")):
            start_response(
                "401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")]
            )
            return [b"metrics need a bearer token from this network\n"]
        return metrics_app(environ, start_response)

    httpd = make_server(host, port, app, _ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=httpd.serve_forever, name=f"metrics-http-{port}", daemon=True).start()
    return httpd
