"""Builders for test data, through the public API so tests exercise the real paths."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from fleet.app import create_app
from fleet.domain.clock import FakeClock
from fleet.runtime.plane import device_plane_hook
from fleet.settings import Settings
from tests.conftest import Api


@contextlib.asynccontextmanager
async def plane_api(settings: Settings, clock: FakeClock) -> AsyncIterator[Api]:
    """The whole app with its device plane (broker from `settings`, ingest connected), driven through the API;
    `api.port` is the broker's device port."""
    app = create_app(settings, clock=clock, migrate=False, runtime_hooks=[device_plane_hook])
    async with app.router.lifespan_context(app):
        await app.state.fleet.plane.ingest.wait_connected()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            api = Api(client=client, sessions=app.state.fleet.sessions, clock=clock)
            api.port = settings.mqtt.listen_port
            yield api


@dataclass
class World:
    district: int
    school_a: int
    school_b: int
    room_a: int
    room_b: int
    model: int
    device_a: int
    device_b: int
    period_a: int
    period_b: int
    calendar_a: int
    calendar_b: int


async def post(api: Api, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await api.client.post(path, json=body, headers=await api.admin())
    assert r.status_code == 201, (path, r.status_code, r.text)
    return r.json()


async def build_world(api: Api) -> World:
    """Two schools (A and B) in one district, each with a room, a device, a period and a calendar entry."""
    d = await post(api, "/api/v1/districts", {"name": "Test District"})
    ids: dict[str, int] = {"district": d["id"]}
    model = await post(
        api,
        "/api/v1/device-models",
        {
            "vendor": "EduTech",
            "model_number": "LT-100",
            "kind": "terminal",
            "transport": "mqtt",
            "unit_price": "329.00",
            "warranty_months": 36,
            "supplier": "EduTech Supply",
            "profile_key": "terminal-lt100",
        },
    )
    ids["model"] = model["id"]
    for tag in ("a", "b"):
        school = await post(
            api,
            "/api/v1/schools",
            {
                "district_id": d["id"],
                "code": f"school-{tag}",
                "name": f"School {tag.upper()}",
                "uplink_mbps": 100,
                "timezone": "UTC",
            },
        )
        room = await post(
            api,
            "/api/v1/rooms",
            {"school_id": school["id"], "name": "Room 1", "kind": "smart_classroom", "capacity": 30},
        )
        dev = await post(
            api,
            "/api/v1/devices",
            {
                "serial_number": f"SN-{tag}-1",
                "asset_tag": f"AT-{tag}-1",
                "model_id": model["id"],
                "school_id": school["id"],
                "room_id": room["id"],
            },
        )
        period = await post(
            api,
            "/api/v1/bell-periods",
            {
                "school_id": school["id"],
                "weekday": 0,
                "name": "P1",
                "start_time": "08:00",
                "end_time": "08:40",
            },
        )
        cal = await post(
            api,
            "/api/v1/calendar-entries",
            {
                "school_id": school["id"],
                "kind": "term",
                "name": "Autumn",
                "start_date": "2026-09-01",
                "end_date": "2027-01-20",
            },
        )
        ids.update(
            {
                f"school_{tag}": school["id"],
                f"room_{tag}": room["id"],
                f"device_{tag}": dev["id"],
                f"period_{tag}": period["id"],
                f"calendar_{tag}": cal["id"],
            }
        )
    return World(**ids)
