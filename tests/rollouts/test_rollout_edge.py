"""Serial devices (robots, kits) are updated through the edge agent's EdgeFlasher interface: without an agent
they wait in `pending` with a reason; with one, they get the same update command a terminal gets."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import update

from fleet.domain import wire
from fleet.domain.update_wire import Phase, Progress, UpdateProgress, parse_update_args
from fleet.persistence.db import unit_of_work
from fleet.persistence.models import Device
from fleet.persistence.models_mqtt import DeviceState
from fleet.services.rollouts import DeviceTarget
from tests.rollouts.harness import lab

EVENING = datetime(2026, 9, 7, 17, 0, tzinfo=UTC)


@dataclass
class EdgeAgentInbox:
    """Stands in for the edge agent on the lab PC (not built yet): it only receives what the engine sends."""

    commands: list[tuple[DeviceTarget, wire.Command]] = field(default_factory=list)

    async def send(self, target: DeviceTarget, command: wire.Command) -> None:
        self.commands.append((target, command))


async def test_serial_devices_wait_for_an_edge_agent_then_get_update_commands(sqlite_url: str,
                                                                             tmp_path: Path) -> None:
    async with lab(sqlite_url, tmp_path, EVENING) as lb:
        school = await lb.add_school("S-A")
        model = await lb.post("/api/v1/device-models", {
            "vendor": "EduBot", "model_number": "R2", "kind": "robot", "transport": "serial",
            "unit_price": "199.00", "warranty_months": 24, "supplier": "EduBot", "profile_key": "robot-edubot-r2"})
        robot = await lb.post("/api/v1/devices", {"serial_number": "R2-0001", "asset_tag": "R2-0001",
                                                  "model_id": model["id"], "school_id": school,
                                                  "room_id": lb.rooms[school][0]})
        async with unit_of_work(lb.api.sessions) as s:
            await s.execute(update(Device).where(Device.id == robot["id"]).values(status="in_service"))
            s.add(DeviceState(device_id=robot["id"], firmware_version="3.4.0"))
        r = await lb.post("/api/v1/rollouts", {"name": "r2", "model_id": model["id"], "target_version": "3.5.0"})
        await lb.engine.step(lb.clock.now())
        row = (await lb.device_rows(r["id"]))[robot["id"]]
        assert row.state == "pending" and row.reason == "waiting for an edge agent"

        agent = EdgeAgentInbox()
        lb.engine.edge = agent
        await lb.engine.step(lb.clock.now())
        [(target, cmd)] = agent.commands
        assert target.transport == "serial" and target.identity == "R2-0001"
        args = parse_update_args(cmd.args)
        assert args.phase == Phase.DOWNLOAD and args.version == "3.5.0" and args.url
        # The agent reports exactly like a terminal.
        ts = int(lb.clock.now().timestamp() * 1000)
        for state in (Progress.DOWNLOADING, Progress.DOWNLOADED):
            assert await lb.engine.on_progress(robot["id"], UpdateProgress(cmd.id, ts, state, size=args.size),
                                               lb.clock.now())
        assert (await lb.device_rows(r["id"]))[robot["id"]].state == "downloaded"
