"""`labfleet provision` against simulated kits on real ptys, recorded in a real SQLite inventory."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from rich.console import Console
from sqlalchemy import func, select

from drivers.provisioning import Outcome
from fleet.cli.provision import PROVISIONER, provision_bench, result_table
from fleet.domain.clock import SystemClock
from fleet.domain.enums import Role
from fleet.domain.permissions import Principal
from fleet.persistence.db import create_engine, session_factory, unit_of_work, upgrade_sync
from fleet.persistence.models import AuditEntry, Device
from fleet.persistence.models_mqtt import DeviceCredential
from fleet.services.seed import seed_demo
from fleet.settings import Settings

SEEDER = Principal(name="seed", role=Role.ADMIN, district_wide=True, school_ids=frozenset())


async def _seeded(tmp_path: Path) -> Settings:
    url = f"sqlite+aiosqlite:///{tmp_path}/bench.db"
    await asyncio.to_thread(upgrade_sync, url)
    engine = create_engine(url)
    async with unit_of_work(session_factory(engine)) as session:
        await seed_demo(session, SEEDER, SystemClock())
    await engine.dispose()
    return Settings(database_url=url)


async def _counts(cfg: Settings) -> tuple[dict[str, int], dict[str, int], int]:
    engine = create_engine(cfg.database_url)
    async with unit_of_work(session_factory(engine)) as session:
        kits = (
            await session.execute(
                select(Device.status, func.count())
                .where(Device.asset_tag.like("KIT-%"))
                .group_by(Device.status)
            )
        ).all()
        actions = (
            await session.execute(
                select(AuditEntry.action, func.count())
                .where(AuditEntry.actor == PROVISIONER.actor)
                .group_by(AuditEntry.action)
            )
        ).all()
        creds = (await session.execute(select(func.count()).select_from(DeviceCredential))).scalar_one()
    await engine.dispose()
    return dict(kits), dict(actions), creds


async def test_thirty_simulated_kits_are_provisioned_at_once_and_recorded(tmp_path: Path) -> None:
    cfg = await _seeded(tmp_path)
    out = io.StringIO()
    console = Console(file=out, width=160)
    rows = await provision_bench(
        cfg,
        school="north-primary",
        room="AI Lab",
        ports=[],
        all_ports=False,
        state_file=tmp_path / "state.json",
        bench=30,
        seed=5,
        console=console,
    )
    assert len(rows) == 30
    assert [(r.result.outcome, r.recorded) for r in rows] == [(Outcome.PROVISIONED, "recorded")] * 30
    assert {(r.result.firmware_before, r.result.firmware_after) for r in rows} == {
        ("1.0.0", "3.5.0"),
        ("none", "1.1.0"),
        ("2.5.0", "2.5.1"),
    }  # Firmata: the profile's Intel HEX
    kits, actions, creds = await _counts(cfg)
    assert kits == {"provisioned": 30}
    assert actions == {
        "device.create": 30,
        "device.registered": 30,
        "device.transition": 30,
        "device.provision_provisioned": 30,
    }
    assert creds == 20  # Firmata kits keep no settings: the edge agent enrolls them when it bridges them
    state = (tmp_path / "state.json").read_text()
    assert state.count('"outcome": "provisioned"') == 30 and "mqtt_password" not in state
    console.print(result_table(rows))
    text = out.getvalue()
    assert "KIT-robot-" in text and "1.0.0 -> 3.5.0" in text


async def test_a_second_run_matches_kits_to_their_inventory_records_instead_of_registering_again(
    tmp_path: Path,
) -> None:
    cfg = await _seeded(tmp_path)
    console = Console(file=io.StringIO())
    kwargs = {
        "school": "north-primary",
        "room": None,
        "ports": [],
        "all_ports": False,
        "state_file": None,
        "bench": 4,
        "seed": 9,
        "console": console,
    }
    first = await provision_bench(cfg, **kwargs)
    second = await provision_bench(cfg, **kwargs)
    assert [r.asset_tag for r in first] == [r.asset_tag for r in second]
    kits, actions, _ = await _counts(cfg)
    assert kits == {"provisioned": 4}
    assert actions["device.registered"] == 4 and actions["device.provision_provisioned"] == 8


async def test_unknown_school_is_a_clear_error(tmp_path: Path) -> None:
    import pytest

    from fleet.errors import NotFound

    url = f"sqlite+aiosqlite:///{tmp_path}/empty.db"
    await asyncio.to_thread(upgrade_sync, url)
    cfg = Settings(database_url=url)
    with pytest.raises(NotFound, match="school 'nowhere' not found"):
        await provision_bench(
            cfg,
            school="nowhere",
            room=None,
            ports=[],
            all_ports=False,
            state_file=None,
            bench=1,
            seed=0,
            console=Console(file=io.StringIO()),
        )


def test_at_80_columns_the_result_table_never_cuts_the_identity_or_the_asset_tag() -> None:
    from rich.console import Console

    from drivers.provisioning import Outcome, ProvisionResult
    from drivers.types import Family
    from fleet.cli.provision import Row, result_table

    long_id = "usb-2341-0043-85736323930351E0A1C1"  # a Uno is known by its USB serial: the longest identity
    rows = [
        Row(
            "/dev/serial/by-id/usb-Arduino__www.arduino.cc__0043_85736323930351E0A1C1-if00",
            ProvisionResult(long_id, Family.FIRMATA, Outcome.PROVISIONED, "", "kit-uno", "2.5.0", "2.5.1"),
            f"KIT-{long_id}",
            "recorded",
        ),
        Row(
            "/dev/ttyUSB1",
            ProvisionResult("robot-5594aa6b5d0a", Family.ROBOT, Outcome.FAILED, reason="flash: " + "x" * 60),
            "KIT-robot-5594aa6b5d0a",
            "recorded",
        ),
    ]
    console = Console(width=80, record=True, color_system=None)
    console.print(result_table(rows))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    for whole in (long_id, f"KIT-{long_id}", "robot-5594aa6b5d0a", "KIT-robot-5594aa6b5d0a"):
        assert whole in text, f"{whole} was cut:\n{text}"
    assert "…" not in text
