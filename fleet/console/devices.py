"""Console pages: devices."""

from __future__ import annotations

from fastapi import APIRouter

from fleet.console.app import ConsoleRoute

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
