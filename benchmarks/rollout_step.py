"""The rollout engine's step at district scale: one running rollout over N terminals in 10 schools (SQLite).

Measures, in one process: the first step (schedules up to each school's download cap), a steady
step (everyone busy or waiting), and a progress report; each as a ratio against the same-run baseline of
loading the rollout's device rows with one bare query. Ends with one JSON line.

    .venv/bin/python benchmarks/rollout_step.py [--devices 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import select

from fleet.domain import wire
from fleet.domain.permissions import SYSTEM
from fleet.domain.rollouts import GroupPlan
from fleet.domain.update_wire import Progress, UpdateProgress
from fleet.persistence.db import create_engine, session_factory, unit_of_work, upgrade
from fleet.persistence.models import Device, DeviceModel, District, Room, School
from fleet.persistence.models_mqtt import DeviceState
from fleet.persistence.models_rollouts import RolloutDevice
from fleet.runtime.rollout_engine import RolloutEngine
from fleet.services import artifacts
from fleet.services.rollout_targets import DeviceTarget
from fleet.services.rollouts import RolloutService, RolloutSpec
from fleet.settings import RolloutSettings

EVENING = datetime(2026, 9, 7, 17, 0, tzinfo=UTC)


class Collect:
    def __init__(self) -> None:
        self.sent: list[tuple[DeviceTarget, wire.Command]] = []

    async def send(self, target: DeviceTarget, command: wire.Command) -> None:
        self.sent.append((target, command))


async def main(n_devices: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="labfleet-bench-rollout-"))
    url = f"sqlite+aiosqlite:///{tmp}/bench.db"
    await upgrade(url)
    engine = create_engine(url)
    sessions = session_factory(engine)
    settings = RolloutSettings(artifact_dir=str(tmp / "artifacts"))
    async with unit_of_work(sessions) as s:
        d = District(name="Bench", created_at=EVENING)
        s.add(d)
        await s.flush()
        model = DeviceModel(
            vendor="Huaxin",
            model_number="LT100",
            kind="terminal",
            transport="mqtt",
            unit_price=Decimal("329.00"),
            warranty_months=36,
            supplier="H",
            profile_key="terminal-lt100",
            created_at=EVENING,
        )
        s.add(model)
        rooms = []
        for i in range(10):
            school = School(
                district_id=d.id,
                code=f"B{i:02d}",
                name=f"B{i}",
                uplink_mbps=200,
                timezone="UTC",
                created_at=EVENING,
            )
            s.add(school)
            await s.flush()
            room = Room(
                school_id=school.id, name="R", kind="smart_classroom", capacity=40, created_at=EVENING
            )
            s.add(room)
            await s.flush()
            rooms.append((school.id, room.id))
        await s.flush()
        for i in range(n_devices):
            sid, rid = rooms[i % len(rooms)]
            dev = Device(
                vendor="Huaxin",
                serial_number=f"B{i:06d}",
                asset_tag=f"B{i:06d}",
                model_id=model.id,
                school_id=sid,
                room_id=rid,
                status="in_service",
                created_at=EVENING,
                updated_at=EVENING,
            )
            s.add(dev)
            if i % 500 == 499:
                await s.flush()
        await s.flush()
        for (dev_id,) in (await s.execute(select(Device.id))).all():
            s.add(DeviceState(device_id=dev_id, firmware_version="1.1.0"))
        await artifacts.import_profile_artifacts(
            s, artifacts.ArtifactStore(settings.artifact_dir), SYSTEM, EVENING
        )
        r = await RolloutService(s, SYSTEM, EVENING).create(
            RolloutSpec(
                name="bench",
                model_id=model.id,
                target_version="1.2.0",
                success_threshold=0.5,
                plan=GroupPlan(canary_percent=50),
            )
        )  # 1,000 devices eligible at once: the caps decide
        rollout_id = r.id

    link = Collect()
    eng = RolloutEngine(sessions, settings, link, base_url="http://bench")
    t0 = time.perf_counter()
    async with sessions() as s:
        rows = (
            (await s.execute(select(RolloutDevice).where(RolloutDevice.rollout_id == rollout_id)))
            .scalars()
            .all()
        )
    baseline = time.perf_counter() - t0
    assert len(rows) == n_devices

    t0 = time.perf_counter()
    await eng.step(EVENING)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    await eng.step(EVENING)
    steady = time.perf_counter() - t0
    target, cmd = link.sent[0]
    t0 = time.perf_counter()
    await eng.on_progress(
        target.device_id,
        UpdateProgress(cmd.id, int(EVENING.timestamp() * 1000), Progress.DOWNLOADING, offset=0),
        EVENING,
    )
    report = time.perf_counter() - t0
    await engine.dispose()
    return {
        "devices": n_devices,
        "commands_first_step": len(link.sent),
        "baseline_load_s": round(baseline, 4),
        "first_step_s": round(first, 4),
        "steady_step_s": round(steady, 4),
        "progress_report_s": round(report, 4),
        "first_step_ratio": round(first / baseline, 2),
        "steady_step_ratio": round(steady / baseline, 2),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=2000)
    figures = asyncio.run(main(ap.parse_args().devices))
    print(f"baseline: load {figures['devices']} rollout rows in {figures['baseline_load_s']} s")
    print(
        f"first step: {figures['first_step_s']} s ({figures['first_step_ratio']}x baseline), "
        f"{figures['commands_first_step']} commands"
    )
    print(f"steady step: {figures['steady_step_s']} s ({figures['steady_step_ratio']}x baseline)")
    print(f"progress report: {figures['progress_report_s']} s")
    print(json.dumps(figures))
