"""A district in a box for rollout tests: the real app (API, database, artifact server), the real engine, and
simulated terminals that download over HTTP; time is a FakeClock the test moves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, update

from fleet.app import create_app
from fleet.domain import wire
from fleet.domain.clock import FakeClock
from fleet.domain.permissions import SYSTEM
from fleet.domain.update_wire import decode_progress, encode_progress
from fleet.persistence.db import unit_of_work
from fleet.persistence.models import Device
from fleet.persistence.models_mqtt import DeviceState
from fleet.persistence.models_rollouts import Rollout, RolloutDevice, RolloutDeviceEvent
from fleet.runtime.rollout_engine import RolloutEngine
from fleet.services.rollout_targets import DeviceTarget
from simulators.terminal.update import SimTerminal
from tests.conftest import Api, make_settings

OLD = "1.1.0"
NEW = "1.2.0"


@dataclass
class InProcessLink:
    """The UpdateSender for in-process simulators: a command lands in the terminal's inbox, as MQTT would."""

    inbox: dict[str, list[wire.Command]] = field(default_factory=dict)

    async def send(self, target: DeviceTarget, command: wire.Command) -> None:
        # Round-trip through the wire encoding, as the terminal would receive it.
        decoded = wire.decode_downlink(wire.encode_command(command))
        assert isinstance(decoded, wire.Command), decoded
        self.inbox.setdefault(target.identity, []).append(decoded)


@dataclass
class Lab:
    api: Api
    app: Any
    clock: FakeClock
    engine: RolloutEngine
    link: InProcessLink
    district: int = 0
    model: int = 0
    schools: list[int] = field(default_factory=list)
    rooms: dict[int, list[int]] = field(default_factory=dict)
    sims: dict[int, SimTerminal] = field(default_factory=dict)

    @property
    def client(self) -> httpx.AsyncClient:
        return self.api.client

    async def post(self, path: str, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
        r = await self.client.post(path, json=body, headers=await self.api.admin())
        assert r.status_code == status, (path, r.status_code, r.text)
        return r.json()

    async def get(self, path: str) -> dict[str, Any]:
        r = await self.client.get(path, headers=await self.api.admin())
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    async def add_school(self, code: str, *, rooms: int = 1, uplink_mbps: int = 100, tz: str = "UTC") -> int:
        s = await self.post(
            "/api/v1/schools",
            {
                "district_id": self.district,
                "code": code,
                "name": code,
                "uplink_mbps": uplink_mbps,
                "timezone": tz,
            },
        )
        self.schools.append(s["id"])
        self.rooms[s["id"]] = []
        for i in range(rooms):
            r = await self.post(
                "/api/v1/rooms",
                {"school_id": s["id"], "name": f"Room {i + 1}", "kind": "smart_classroom", "capacity": 30},
            )
            self.rooms[s["id"]].append(r["id"])
        return s["id"]

    async def add_terminals(
        self, school_id: int, count: int, *, room_index: int = 0, version: str = OLD, **sim: Any
    ) -> list[int]:
        ids = []
        for _ in range(count):
            n = len(self.sims) + 1
            d = await self.post(
                "/api/v1/devices",
                {
                    "serial_number": f"LT{n:05d}",
                    "asset_tag": f"AT{n:05d}",
                    "model_id": self.model,
                    "school_id": school_id,
                    "room_id": self.rooms[school_id][room_index],
                },
            )
            ids.append(d["id"])
            self.sims[d["id"]] = SimTerminal(d["id"], f"LT{n:05d}", version, self.client, **sim)
        # Put them in service and record the version they report (ingest's job in production).
        async with unit_of_work(self.api.sessions) as s:
            await s.execute(update(Device).where(Device.id.in_(ids)).values(status="in_service"))
            for i in ids:
                s.add(DeviceState(device_id=i, firmware_version=version))
        return ids

    async def create_rollout(self, **body: Any) -> dict[str, Any]:
        payload = {
            "name": "lt100 to 1.2.0",
            "model_id": self.model,
            "target_version": NEW,
            "groups": {"canary_size": 2, "strategy": "per_school"},
            **body,
        }
        return await self.post("/api/v1/rollouts", payload)

    async def tick(self) -> None:
        """One engine step, then every terminal handles its commands and moves on to now."""
        now = self.clock.now()
        await self.engine.step(now)
        for dev_id, sim in self.sims.items():
            reports = []
            for cmd in self.link.inbox.pop(sim.identity, []):
                reports += await sim.handle(cmd, now)
            reports += await sim.tick(now)
            for p in reports:
                decoded = decode_progress(encode_progress(p))
                assert not isinstance(decoded, wire.Rejection), decoded
                await self.engine.on_progress(dev_id, decoded, now)

    async def run(
        self,
        *,
        seconds: float,
        step: float = 30.0,
        until_state: str | None = None,
        rollout_id: int | None = None,
    ) -> None:
        end = self.clock.now() + timedelta(seconds=seconds)
        while self.clock.now() < end:
            await self.tick()
            if until_state and rollout_id and (await self.rollout_state(rollout_id)) == until_state:
                return
            self.clock.advance(step)

    async def rollout_state(self, rollout_id: int) -> str:
        async with self.api.sessions() as s:
            r = await s.get(Rollout, rollout_id)
            assert r is not None
            return r.state

    async def device_rows(self, rollout_id: int) -> dict[int, RolloutDevice]:
        async with self.api.sessions() as s:
            rows = (
                await s.execute(select(RolloutDevice).where(RolloutDevice.rollout_id == rollout_id))
            ).scalars()
            return {r.device_id: r for r in rows}

    async def timeline(self, rollout_id: int) -> list[RolloutDeviceEvent]:
        async with self.api.sessions() as s:
            return list(
                (
                    await s.execute(
                        select(RolloutDeviceEvent)
                        .where(RolloutDeviceEvent.rollout_id == rollout_id)
                        .order_by(RolloutDeviceEvent.id)
                    )
                ).scalars()
            )


@asynccontextmanager
async def lab(
    sqlite_url: str, tmp_path: Path, start: datetime, *, import_profiles: bool = True, **settings: Any
) -> AsyncIterator[Lab]:
    clock = FakeClock(start)
    rollouts = {"artifact_dir": str(tmp_path / "artifacts"), **settings.pop("rollouts", {})}
    app = create_app(make_settings(sqlite_url, rollouts=rollouts, **settings), clock=clock, migrate=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            api = Api(client=client, sessions=app.state.fleet.sessions, clock=clock)
            link = InProcessLink()
            engine = RolloutEngine(
                app.state.fleet.sessions, app.state.fleet.settings.rollouts, link, base_url="http://test"
            )
            app.state.fleet.rollout_engine = engine
            lb = Lab(api, app, clock, engine, link)
            d = await lb.post("/api/v1/districts", {"name": "District"})
            lb.district = d["id"]
            m = await lb.post(
                "/api/v1/device-models",
                {
                    "vendor": "Huaxin Education",
                    "model_number": "LT100",
                    "kind": "terminal",
                    "transport": "mqtt",
                    "unit_price": "329.00",
                    "warranty_months": 36,
                    "supplier": "Huaxin",
                    "profile_key": "terminal-lt100",
                },
            )
            lb.model = m["id"]
            if import_profiles:
                await lb.post("/api/v1/artifacts/import", {"source": "profiles"})
            yield lb


__all__ = ["NEW", "OLD", "SYSTEM", "InProcessLink", "Lab", "lab"]
