"""A firmware rollout against the district simulator's terminals: the service's rollout job sends `update`,
the terminals download the image over HTTP (Range, sha256), install, reboot and report; the rollout completes
and the service sees the new version."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from fleet.cli.simulate_service import DbReadBack
from simulators.district.spec import parse_spec

from .harness import run, service, small_spec

OLD, NEW = "1.1.0", "1.2.0"
# The simulated robots boot the factory image; the robot-edubot-r2 profile ships 3.5.0
# (firmware_profiles/artifacts).
ROBOT_OLD, ROBOT_NEW = "1.0.0", "3.5.0"


def _spec() -> dict[str, Any]:
    spec = small_spec()
    # Before school (07:30): downloads and installs are allowed outside lessons.
    spec["start"] = "2026-09-07T07:30:00"
    spec["models"]["tablet"].update(model_number="SIM-LT100", profile_key="terminal-lt100", firmware=OLD)
    spec["schools"] = spec["schools"][1:]  # one school, 4 terminals: a canary and one group
    return spec


async def _poll(check: Any, limit_s: float) -> None:
    """Poll until `check()` is true; the bound is a failure deadline, not a timing assertion."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not await check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.2)


async def test_rollout_updates_simulated_terminals_over_http_range_end_to_end(
    sqlite_url: str, tmp_path: Path
) -> None:
    d = parse_spec(_spec(), "update.yaml")
    async with service(sqlite_url, tmp_path) as sut:
        assert sut.sessions is not None
        readback = DbReadBack(sut.sessions)
        serials = [dev.serial for _s, _r, dev in d.devices() if dev.transport == "mqtt"]
        sim = asyncio.create_task(run(sut, d, ("bell-storm",), duration_s=30.0))
        async with httpx.AsyncClient(
            base_url=sut.api, headers={"Authorization": f"Bearer {sut.token}"}
        ) as http:

            async def reporting_old() -> bool:
                states = await readback.device_states(serials)
                return len(states) == len(serials) and all(s.firmware == OLD for s in states.values())

            await _poll(reporting_old, 20)
            models = (await http.get("/api/v1/device-models", params={"limit": 500})).json()["items"]
            model_id = next(m["id"] for m in models if m["model_number"] == "SIM-LT100")
            assert (
                await http.post("/api/v1/artifacts/import", json={"source": "profiles"})
            ).status_code == 201
            r = await http.post(
                "/api/v1/rollouts",
                json={
                    "name": "simulated lt100 to 1.2.0",
                    "model_id": model_id,
                    "target_version": NEW,
                    "groups": {"canary_size": 1, "strategy": "per_school"},
                },
            )
            assert r.status_code == 201, r.text
            rollout = r.json()["id"]

            async def completed() -> bool:
                got = (await http.get(f"/api/v1/rollouts/{rollout}")).json()
                return bool(got["state"] == "completed")

            await _poll(completed, 25)
        report = await sim
        states = await readback.device_states(serials)
    assert {s.firmware for s in states.values()} == {NEW}
    up = report["updates"]
    assert up["firmware"] == {NEW: len(serials)}
    assert up["progress_reports"]["succeeded"] == len(serials)
    assert {"downloading", "downloaded", "installing", "rebooting"} <= set(up["progress_reports"])
    assert report["accounting"]["lost"] == 0 and report["accounting"]["duplicated"] == 0


async def test_rollout_to_lab_robots_is_carried_out_by_the_simulated_labs_edge_agent(
    sqlite_url: str, tmp_path: Path
) -> None:
    """The lab rooms' agents are the production agent, KitUpdater included: an `update` for a robot is
    downloaded, flashed into the simulated robot's inactive slot over its pty, trial-booted, confirmed and
    reported."""
    spec = small_spec()
    spec["start"] = "2026-09-07T07:00:00"  # an hour before the first lesson: updates are allowed
    spec["schools"] = spec["schools"][:1]  # TS1: two classrooms and a lab with two robots
    spec["edge"] = {"labs": 1, "health_interval_s": 30}
    d = parse_spec(spec, "kits.yaml")
    robots = [dev.serial for _s, _r, dev in d.devices() if dev.transport == "serial"]
    assert len(robots) == 2
    async with service(sqlite_url, tmp_path) as sut:
        assert sut.sessions is not None
        readback = DbReadBack(sut.sessions)
        sim = asyncio.create_task(run(sut, d, ("bell-storm",), duration_s=40.0))
        async with httpx.AsyncClient(
            base_url=sut.api, headers={"Authorization": f"Bearer {sut.token}"}
        ) as http:

            async def robots_on_factory_image() -> bool:
                states = await readback.device_states(robots)
                return len(states) == len(robots) and all(s.firmware == ROBOT_OLD for s in states.values())

            await _poll(robots_on_factory_image, 20)
            models = (await http.get("/api/v1/device-models", params={"limit": 500})).json()["items"]
            model_id = next(m["id"] for m in models if m["model_number"] == "SIM-R1")
            assert (
                await http.post("/api/v1/artifacts/import", json={"source": "profiles"})
            ).status_code == 201
            r = await http.post(
                "/api/v1/rollouts",
                json={
                    "name": "lab robots to 3.5.0",
                    "model_id": model_id,
                    "target_version": ROBOT_NEW,
                    "groups": {"canary_size": 1, "strategy": "per_school"},
                },
            )
            assert r.status_code == 201, r.text
            rollout = r.json()["id"]

            async def completed() -> bool:
                got = (await http.get(f"/api/v1/rollouts/{rollout}")).json()
                assert got["state"] not in ("paused", "failed", "cancelled"), got
                return bool(got["state"] == "completed")

            await _poll(completed, 30)
        report = await sim
        states = await readback.device_states(robots)
    assert {s.firmware for s in states.values()} == {ROBOT_NEW}  # as the agent read it back from the robots
    assert report["labs"]["bridged_by_agent"] == 2 and not report["labs"]["agent_failures"]
