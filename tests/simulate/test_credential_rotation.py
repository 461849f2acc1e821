"""Credential rotation against the district simulator's terminals (docs/protocol-mqtt.md 8.1): a school-wide
rotation over the API; every terminal stores its new password, acks, is disconnected, reconnects with the new
password and reports the rotation done; no telemetry is lost on the way."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from fleet.cli.simulate_service import DbReadBack
from fleet.persistence.models import School
from fleet.persistence.models_mqtt import DeviceCredential
from simulators.district.spec import parse_spec

from .harness import run, service, small_spec


async def _poll(check: Any, limit_s: float) -> None:
    """Poll until `check()` is true; the bound is a failure deadline, not a timing assertion."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not await check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.2)


async def test_simulated_terminals_take_a_rotated_password_over_mqtt(sqlite_url: str, tmp_path: Path) -> None:
    spec = small_spec()
    spec["schools"] = spec["schools"][1:]  # one school, 4 terminals
    d = parse_spec(spec, "rotation.yaml")
    async with service(sqlite_url, tmp_path) as sut:
        assert sut.sessions is not None
        readback = DbReadBack(sut.sessions)
        serials = [dev.serial for _s, _r, dev in d.devices() if dev.transport == "mqtt"]
        sim = asyncio.create_task(run(sut, d, ("bell-storm",), duration_s=20.0))

        async def reporting() -> bool:
            return len(await readback.device_states(serials)) == len(serials)

        await _poll(reporting, 15)
        async with sut.sessions() as s:
            school_id = (await s.execute(select(School.id).where(School.code == "TS2"))).scalar_one()
            before = dict(
                (await s.execute(select(DeviceCredential.username, DeviceCredential.password_hash))).all()
            )
        async with httpx.AsyncClient(
            base_url=sut.api, headers={"Authorization": f"Bearer {sut.token}"}
        ) as http:
            r = await http.post(
                "/api/v1/credential-rotations", json={"school_id": school_id, "grace_hours": 24}
            )
            assert r.status_code == 202, r.text
            assert r.json()["devices"] == len(serials)
            batch = r.json()["batch_id"]

            async def all_rotated() -> bool:
                got = (await http.get(f"/api/v1/commands/{batch}")).json()
                return bool(got["by_status"] == {"succeeded": len(serials)})

            await _poll(all_rotated, 15)
        report = await sim
        async with sut.sessions() as s:
            creds = (await s.execute(select(DeviceCredential))).scalars().all()
    assert all(c.pending_hash is None and c.rotation_command_id is None for c in creds)
    assert all(before[c.username] != c.password_hash for c in creds if c.username in serials)
    assert report["messages"]["commands"].get("rotate_credentials") == len(serials)
    assert report["accounting"]["lost"] == 0
