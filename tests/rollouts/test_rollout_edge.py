"""Serial devices (robots, kits) are updated by the edge agent that bridges them.

The engine waits for an agent (a kit is reachable only while one bridges it), and, end to end, a rollout on a
simulated robot on a real pty goes through the real agent: the update command reaches the kit's cmd topic on
the embedded broker, the agent downloads the image from the service (sha256 checked), flashes it with the
robot driver (A/B slot, trial boot, confirm) and reports on the kit's update channel like a terminal. A bad
image leaves the robot on its old slot and the rollout records it. The lab room's timetable gates it all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from drivers.codecs.robot import MsgType
from drivers.discovery import PortWatcher
from drivers.edge import EdgeSupervisor
from fleet.app import create_app
from fleet.domain import wire
from fleet.domain.clock import FakeClock
from fleet.domain.update_wire import Phase, Progress, UpdateProgress, parse_update_args
from fleet.persistence.db import unit_of_work
from fleet.persistence.models import Device
from fleet.persistence.models_mqtt import DeviceState
from fleet.persistence.models_rollouts import RolloutDevice, RolloutDeviceEvent
from fleet.runtime.brokers import free_port
from fleet.runtime.edge_agent import EdgeAgent
from fleet.runtime.edge_flash import KitUpdater
from fleet.runtime.plane import device_plane_hook
from fleet.runtime.rollout_engine import RolloutEngine
from fleet.runtime.rollouts import rollout_hook
from fleet.services.artifacts import ArtifactStore
from fleet.services.rollout_targets import DeviceTarget
from simulators.serial.bench import SimBench
from simulators.serial.micropython import MicroPythonSim
from simulators.serial.robot import RobotSim, Slot
from tests.conftest import Api, make_settings
from tests.mqtt.mqtt_plane import wait_until
from tests.rollouts.harness import lab

V1 = "/api/v1"
EVENING = datetime(2026, 9, 7, 17, 0, tzinfo=UTC)
# Monday 10:00 UTC: the lab room is in its morning block (08:00-12:00) and the robot must not be touched.
IN_LAB_LESSON = datetime(2026, 9, 7, 10, 0, tzinfo=UTC)
LAB_BLOCKS = [("Lab AM", "08:00", "12:00"), ("Lab PM", "13:00", "16:00")]
OLD, NEW = "3.4.0", "3.5.0"  # robot-edubot-r2's shipped versions
MPY_OLD, MPY_NEW = "1.0.0", "1.1.0"  # kit-esp32-mpy's
# Reports cross the broker and the pty in real time: the bound is a failure deadline, not a timing assertion.
REAL_WORK_S = 20.0


@dataclass
class EdgeAgentInbox:
    """Only receives what the engine sends (for the engine-side test without an agent process)."""

    commands: list[tuple[DeviceTarget, wire.Command]] = field(default_factory=list)

    async def send(self, target: DeviceTarget, command: wire.Command) -> None:
        self.commands.append((target, command))


async def test_serial_devices_wait_for_an_edge_agent_then_get_update_commands(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with lab(sqlite_url, tmp_path, EVENING) as lb:
        school = await lb.add_school("S-A")
        model = await lb.post(
            "/api/v1/device-models",
            {
                "vendor": "EduBot",
                "model_number": "R2",
                "kind": "robot",
                "transport": "serial",
                "unit_price": "199.00",
                "warranty_months": 24,
                "supplier": "EduBot",
                "profile_key": "robot-edubot-r2",
            },
        )
        robot = await lb.post(
            "/api/v1/devices",
            {
                "serial_number": "R2-0001",
                "asset_tag": "R2-0001",
                "model_id": model["id"],
                "school_id": school,
                "room_id": lb.rooms[school][0],
            },
        )
        async with unit_of_work(lb.api.sessions) as s:
            await s.execute(update(Device).where(Device.id == robot["id"]).values(status="in_service"))
            s.add(DeviceState(device_id=robot["id"], firmware_version=OLD, online=False))
        r = await lb.post("/api/v1/rollouts", {"name": "r2", "model_id": model["id"], "target_version": NEW})
        await lb.engine.step(lb.clock.now())
        row = (await lb.device_rows(r["id"]))[robot["id"]]
        assert row.state == "pending" and row.reason == "waiting for an edge agent"

        agent = EdgeAgentInbox()
        lb.engine.edge = agent
        await lb.engine.step(lb.clock.now())
        assert not agent.commands, "an offline kit has no agent bridging it: nothing can reach it"

        async with unit_of_work(lb.api.sessions) as s:  # an agent bridges it now (its status says online)
            await s.execute(
                update(DeviceState).where(DeviceState.device_id == robot["id"]).values(online=True)
            )
        await lb.engine.step(lb.clock.now())
        [(target, cmd)] = agent.commands
        assert target.transport == "serial" and target.identity == "R2-0001"
        args = parse_update_args(cmd.args)
        assert args.phase == Phase.DOWNLOAD and args.version == NEW and args.url
        # The agent reports exactly like a terminal.
        ts = int(lb.clock.now().timestamp() * 1000)
        for state in (Progress.DOWNLOADING, Progress.DOWNLOADED):
            assert await lb.engine.on_progress(
                robot["id"], UpdateProgress(cmd.id, ts, state, size=args.size), lb.clock.now()
            )
        assert (await lb.device_rows(r["id"]))[robot["id"]].state == "downloaded"


# --- end to end through the real agent --------------------------------------------------------------------


@dataclass
class LabPC:
    api: Api
    app: Any
    engine: RolloutEngine
    clock: FakeClock
    robot: Any  # RobotSim or MicroPythonSim
    agent: EdgeAgent
    supervisor: EdgeSupervisor
    tech: dict[str, str]
    model_id: int
    device_id: int = 0

    async def row(self, rollout_id: int) -> RolloutDevice:
        async with self.api.sessions() as s:
            return (
                await s.execute(
                    select(RolloutDevice).where(
                        RolloutDevice.rollout_id == rollout_id, RolloutDevice.device_id == self.device_id
                    )
                )
            ).scalar_one()

    async def wait_state(self, rollout_id: int, *states: str) -> RolloutDevice:
        async def reached() -> bool:
            return (await self.row(rollout_id)).state in states

        await wait_until(reached, REAL_WORK_S)
        return await self.row(rollout_id)

    async def device_state(self) -> dict[str, Any]:
        r = await self.api.client.get(f"{V1}/devices/{self.device_id}/state", headers=self.tech)
        return r.json()

    async def rollout(self, rollout_id: int) -> dict[str, Any]:
        r = await self.api.client.get(f"{V1}/rollouts/{rollout_id}", headers=self.tech)
        assert r.status_code == 200, r.text
        return r.json()

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


# The kits a lab PC can hold here: (profile, model number, old version, simulator factory).
KITS: dict[str, tuple[str, str, str, Any]] = {
    "robot": (
        "robot-edubot-r2",
        "R2",
        OLD,
        lambda: RobotSim(uid="ab12cd", usb_serial="EB-AB12CD", slots=[Slot(OLD, b"factory"), Slot("")]),
    ),
    "micropython": (
        "kit-esp32-mpy",
        "ESP32-MPY",
        MPY_OLD,
        lambda: MicroPythonSim(
            unique_id=bytes.fromhex("a4cf12345678"),
            files={
                "/main.py": b"print('blink')\n",
                "/lf_app.json": json.dumps({"version": MPY_OLD, "sha256": "0" * 64, "files": {}}).encode(),
            },
        ),
    ),
}


@asynccontextmanager
async def lab_pc(
    sqlite_url: str, tmp_path: Path, start: datetime, kit: str = "robot"
) -> AsyncIterator[LabPC]:
    """The service (embedded broker, rollout job), and a lab PC running the agent with one kit on a pty."""
    profile_key, model_number, old_version, make_sim = KITS[kit]
    clock = FakeClock(start)
    settings = make_settings(
        sqlite_url,
        mqtt={"broker": "embedded", "listen_port": free_port(), "ingest_batch_ms": 20},
        # The job's own loop steps once at start; the test steps the engine itself on its fake clock.
        rollouts={
            "artifact_dir": str(tmp_path / "artifacts"),
            "step_seconds": 3600,
            "public_base_url": "http://test",
        },
    )
    app = create_app(
        settings, clock=clock, migrate=False, runtime_hooks=[device_plane_hook, rollout_hook(settings)]
    )
    async with app.router.lifespan_context(app):
        await app.state.fleet.plane.ingest.wait_connected()
        engine: RolloutEngine = app.state.fleet.rollout_engine
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
            httpx.AsyncClient(transport=transport) as downloads,
        ):
            api = Api(client=client, sessions=app.state.fleet.sessions, clock=clock)
            admin = await api.admin()
            d = (await client.post(f"{V1}/districts", json={"name": "D"}, headers=admin)).json()
            school = (
                await client.post(
                    f"{V1}/schools",
                    headers=admin,
                    json={
                        "district_id": d["id"],
                        "code": "S-LAB",
                        "name": "Lab school",
                        "uplink_mbps": 100,
                        "timezone": "UTC",
                    },
                )
            ).json()
            room = (
                await client.post(
                    f"{V1}/rooms",
                    headers=admin,
                    json={
                        "school_id": school["id"],
                        "name": "AI lab",
                        "kind": "ai_lab",
                        "tier": "advanced_research",
                        "capacity": 30,
                    },
                )
            ).json()
            assert "id" in room, room
            for name, st, en in LAB_BLOCKS:
                r = await client.post(
                    f"{V1}/bell-periods",
                    headers=admin,
                    json={
                        "school_id": school["id"],
                        "room_id": room["id"],
                        "weekday": 0,
                        "name": name,
                        "start_time": st,
                        "end_time": en,
                    },
                )
                assert r.status_code == 201, r.text
            await client.post(
                f"{V1}/calendar-entries",
                headers=admin,
                json={
                    "school_id": school["id"],
                    "kind": "term",
                    "name": "Autumn",
                    "start_date": "2026-09-01",
                    "end_date": "2027-01-20",
                },
            )
            model = (
                await client.post(
                    f"{V1}/device-models",
                    headers=admin,
                    json={
                        "vendor": "LabFleet demo",
                        "model_number": model_number,
                        "kind": "robot" if kit == "robot" else "mcu_kit",
                        "transport": "serial",
                        "unit_price": "129.00",
                        "warranty_months": 24,
                        "supplier": "Demo",
                        "profile_key": profile_key,
                    },
                )
            ).json()
            r = await client.post(f"{V1}/artifacts/import", json={"source": "profiles"}, headers=admin)
            assert r.status_code == 201, r.text
            tech = await api.as_("technician", (school["id"],))
            agent_http = httpx.AsyncClient(transport=transport, base_url="http://test", headers=tech)
            agent = EdgeAgent(
                agent_http,
                school_id=school["id"],
                room_id=room["id"],
                broker=f"mqtt://127.0.0.1:{settings.mqtt.listen_port}",
                clock_ms=lambda: int(clock.now().timestamp() * 1000),
            )
            updater = KitUpdater(downloads, clock_ms=agent.clock_ms, publish=agent._publish)
            agent.updates = updater
            robot = make_sim()
            async with SimBench() as bench:
                bench.add(robot)
                await bench.start()
                supervisor = EdgeSupervisor(PortWatcher(bench.lister), agent, reset_for=bench.reset_for)
                agent.supervisor = updater.supervisor = supervisor
                try:
                    await supervisor.poll_once()  # plugged in: identified, enrolled, bridged
                    [link] = agent.kits.values()
                    pc = LabPC(
                        api, app, engine, clock, robot, agent, supervisor, tech, model["id"], link.device_id
                    )

                    async def online_on_old() -> bool:
                        st = await pc.device_state()
                        return st.get("online") is True and st.get("firmware_version") == old_version

                    await wait_until(online_on_old, REAL_WORK_S)
                    async with unit_of_work(api.sessions) as s:  # the technician puts it in service
                        await s.execute(
                            update(Device).where(Device.id == link.device_id).values(status="in_service")
                        )
                    link_ = engine.sender
                    await wait_until(lambda: _connected(link_), REAL_WORK_S)
                    yield pc
                finally:
                    await updater.aclose()
                    await supervisor.aclose()
                    await agent.aclose()
                    await agent_http.aclose()


async def _connected(link: Any) -> bool:
    return bool(link.connected.is_set())


async def test_robot_rollout_through_the_real_edge_agent_waits_for_the_lab_lesson_then_succeeds(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with lab_pc(sqlite_url, tmp_path, IN_LAB_LESSON) as pc:
        r = await pc.api.client.post(
            f"{V1}/rollouts",
            headers=await pc.api.admin(),
            json={"name": "r2 3.5.0", "model_id": pc.model_id, "target_version": NEW},
        )
        assert r.status_code == 201, r.text
        rid = r.json()["id"]
        # During the lab's morning block nothing is sent, however often the engine steps.
        for _ in range(3):
            report = await pc.engine.step(pc.clock.now())
            assert report.commands == 0 and report.waiting["lesson"] == 1
            pc.clock.advance(600)
        assert (await pc.row(rid)).state == "pending"
        assert not any(f.type == MsgType.FW_BEGIN for f in pc.robot.executed)

        pc.clock.set(datetime(2026, 9, 7, 12, 5, tzinfo=UTC))  # the lunch break: 55 minutes without a lesson
        assert (await pc.engine.step(pc.clock.now())).commands == 1  # download
        row = await pc.wait_state(rid, "downloaded", "failed")
        assert row.state == "downloaded" and row.bytes_done == 563
        assert (await pc.engine.step(pc.clock.now())).commands == 1  # install
        row = await pc.wait_state(rid, "succeeded", "rolled_back", "failed")
        assert row.state == "succeeded", row.reason
        assert row.reported_version == NEW
        await pc.engine.step(pc.clock.now())
        detail = await pc.rollout(rid)
        assert detail["state"] == "completed" and detail["totals"] == {"succeeded": 1}

        # The robot runs the new image from its other slot, confirmed (not a trial a reboot would undo).
        assert pc.robot.version == NEW and pc.robot.active == 1 and pc.robot.boot_status == 0
        assert pc.robot.slots[0].version == OLD  # the old slot is kept for a later rollback
        assert [f.type for f in pc.robot.executed].count(MsgType.FW_COMMIT) == 1

        async def reports_new() -> bool:
            return (await pc.device_state()).get("firmware_version") == NEW

        await wait_until(reports_new, REAL_WORK_S)  # its telemetry says so too
        events = [e.event for e in await pc.timeline(rid)]
        for step in (
            "scheduled",
            "download_started",
            "downloaded",
            "install_sent",
            "install_started",
            "rebooting",
            "succeeded",
        ):
            assert step in events, (step, events)
        assert all(
            e.at >= datetime(2026, 9, 7, 12, 0, tzinfo=UTC)
            for e in await pc.timeline(rid)
            if e.event not in ("pending",)
        ), "nothing happened during the lab's lesson"


@pytest.mark.parametrize("bad", ["fails_to_boot", "corrupt_artifact"])
async def test_bad_robot_image_leaves_the_robot_on_its_old_slot_and_the_rollout_records_it(
    sqlite_url: str, tmp_path: Path, bad: str
) -> None:
    async with lab_pc(sqlite_url, tmp_path, EVENING) as pc:
        r = await pc.api.client.post(
            f"{V1}/rollouts",
            headers=await pc.api.admin(),
            json={"name": "r2 3.5.0", "model_id": pc.model_id, "target_version": NEW, "max_attempts": 1},
        )
        assert r.status_code == 201, r.text
        rid = r.json()["id"]
        if bad == "fails_to_boot":
            pc.robot.faults.fail_boot = True  # the new build crashes at boot: the bootloader must roll back
        else:
            path = ArtifactStore(pc.app.state.fleet.settings.rollouts.artifact_dir).path_for(
                r.json()["artifact_sha256"]
            )
            data = bytearray(path.read_bytes())
            data[100] ^= 0xFF  # damaged in storage: the service still serves it, the agent must catch it
            path.write_bytes(bytes(data))
        await pc.engine.step(pc.clock.now())
        row = await pc.wait_state(rid, "downloaded", "failed", "rolled_back")
        if row.state == "downloaded":
            await pc.engine.step(pc.clock.now())
            row = await pc.wait_state(rid, "succeeded", "failed", "rolled_back")
        if bad == "fails_to_boot":
            assert row.state == "rolled_back"
            assert row.reported_version == OLD and "rolled back to 3.4.0" in (row.reason or "")
            assert "failed to boot" in (row.reason or "")
            assert [f.type for f in pc.robot.executed].count(MsgType.FW_COMMIT) == 1  # it was flashed
        else:
            assert row.state == "failed"
            assert "verify_failed" in (row.reason or "") and "sha256" in (row.reason or "")
            assert not any(f.type == MsgType.FW_BEGIN for f in pc.robot.executed), (
                "a bad image never reaches it"
            )
        # Either way the robot runs its old slot, and says so.
        assert pc.robot.version == OLD and pc.robot.active == 0 and pc.robot.slots[0].version == OLD
        await pc.engine.step(pc.clock.now() + timedelta(seconds=1))
        detail = await pc.rollout(rid)
        assert detail["state"] == "paused" and "error threshold" in detail["state_reason"]
        assert (await pc.device_state()).get("firmware_version") == OLD


async def test_micropython_kit_rollout_writes_files_verified_by_hash_through_the_agent(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with lab_pc(sqlite_url, tmp_path, EVENING, kit="micropython") as pc:
        r = await pc.api.client.post(
            f"{V1}/rollouts",
            headers=await pc.api.admin(),
            json={"name": "esp32 app 1.1.0", "model_id": pc.model_id, "target_version": MPY_NEW},
        )
        assert r.status_code == 201, r.text
        rid = r.json()["id"]
        await pc.engine.step(pc.clock.now())
        assert (await pc.wait_state(rid, "downloaded", "failed")).state == "downloaded"
        await pc.engine.step(pc.clock.now())
        row = await pc.wait_state(rid, "succeeded", "rolled_back", "failed")
        assert row.state == "succeeded", row.reason
        shipped = Path("firmware_profiles/artifacts/kit-esp32-mpy-1.1.0.py").read_bytes()
        files = pc.robot.board.files
        assert (
            hashlib.sha256(files["/main.py"]).hexdigest()
            == r.json()["artifact_sha256"]
            == hashlib.sha256(shipped).hexdigest()
        )
        assert json.loads(files["/lf_app.json"])["version"] == MPY_NEW

        async def reports_new() -> bool:
            return (await pc.device_state()).get("firmware_version") == MPY_NEW

        await wait_until(reports_new, REAL_WORK_S)


async def test_micropython_kit_with_failing_flash_writes_is_recorded_failed_and_keeps_its_app(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with lab_pc(sqlite_url, tmp_path, EVENING, kit="micropython") as pc:
        r = await pc.api.client.post(
            f"{V1}/rollouts",
            headers=await pc.api.admin(),
            json={
                "name": "esp32 app 1.1.0",
                "model_id": pc.model_id,
                "target_version": MPY_NEW,
                "max_attempts": 1,
            },
        )
        rid = r.json()["id"]
        pc.robot.board.corrupt_writes = True  # a dying flash chip: the written file's hash check must fail
        await pc.engine.step(pc.clock.now())
        await pc.wait_state(rid, "downloaded")
        await pc.engine.step(pc.clock.now())
        row = await pc.wait_state(rid, "succeeded", "rolled_back", "failed")
        assert row.state == "failed" and "install_failed" in (row.reason or ""), row.reason
        assert "board has sha256" in (row.reason or "")
        assert (
            json.loads(pc.robot.board.files["/lf_app.json"])["version"] == MPY_OLD
        )  # manifest never replaced
