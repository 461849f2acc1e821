"""Migration 0040 renames the edge agent's kit identities to forms without ':' (serial, enrollment asset tag,
broker credential, dead letters), leaves other devices alone, and its downgrade restores the old forms
exactly."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

from alembic import command
from sqlalchemy import MetaData, Table, insert, select

from fleet.domain import credentials
from fleet.persistence.db import alembic_config, create_engine, session_factory, upgrade
from fleet.persistence.models import Device, DeviceModel, District, School
from fleet.persistence.models_mqtt import DeadLetter, DeviceCredential

NOW = datetime(2026, 11, 23, tzinfo=UTC)
# (model, serial stored by the old drivers) -> the serial after the migration
KITS = {
    ("kit", "robot:cafe42"): "robot-cafe42",
    ("kit", "mpy:30aea4c0ffee"): "mpy-30aea4c0ffee",
    ("kit", "usb:2341:0043:75830333238351D0E1C1"): "usb-2341-0043-75830333238351D0E1C1",
    ("kit", "usb-port:1a86:7523:1-1.3"): "usbport-1a86-7523-1-1.3",
    ("kit", "KIT-already-fine"): "KIT-already-fine",
    # A terminal is no kit: its serial is what its label says, even if it looks like one.
    ("terminal", "robot:lookalike"): "robot:lookalike",
}


async def _seed(url: str) -> None:
    sessions = session_factory(engine := create_engine(url))
    try:
        async with sessions() as s:
            district = District(name="Migration", created_at=NOW)
            s.add(district)
            await s.flush()
            school = School(
                district_id=district.id,
                code="S-MIG",
                name="S",
                uplink_mbps=100,
                timezone="UTC",
                created_at=NOW,
            )
            models = {
                kind: DeviceModel(
                    vendor="Acme",
                    model_number=kind,
                    kind=kind,
                    transport="serial" if kind == "kit" else "mqtt",
                    unit_price=Decimal(1),
                    warranty_months=12,
                    supplier="Acme",
                    profile_key=None,
                    created_at=NOW,
                )
                for kind in ("kit", "terminal")
            }
            s.add_all([school, *models.values()])
            await s.flush()
            conn = await s.connection()
            old = {
                name: await conn.run_sync(lambda c, n=name: Table(n, MetaData(), autoload_with=c))
                for name in ("device_credentials", "dead_letters")
            }
            for kind, serial in KITS:
                d = Device(
                    vendor="Acme",
                    serial_number=serial,
                    asset_tag=f"ENR-{serial}"[:64],
                    model_id=models[kind].id,
                    school_id=school.id,
                    room_id=None,
                    status="received",
                    created_at=NOW,
                    updated_at=NOW,
                )
                s.add(d)
                await s.flush()
                # The credential and dead-letter tables as they are at 0030, not as today's models map them
                # (later migrations add columns the old schema has not got).
                await s.execute(
                    insert(old["device_credentials"]).values(
                        device_id=d.id,
                        username=serial,
                        school_code="S-MIG",
                        password_hash=credentials.hash_password("pw"),
                        created_at=NOW,
                    )
                )
                await s.execute(
                    insert(old["dead_letters"]).values(
                        received_at=NOW,
                        reason="unknown_device",
                        topic=f"labfleet/v1/S-MIG/{serial}/x",
                        identity=serial,
                        payload=b"{}",
                        payload_size=2,
                        detail="",
                    )
                )
            await s.commit()
    finally:
        await engine.dispose()


async def _stored(url: str) -> list[tuple[str, str, str]]:
    """(serial, asset tag, credential username) per device, in seeding order; dead-letter identities
    appended."""
    sessions = session_factory(engine := create_engine(url))
    try:
        async with sessions() as s:
            rows = (
                await s.execute(
                    select(Device.serial_number, Device.asset_tag, DeviceCredential.username)
                    .join(DeviceCredential, DeviceCredential.device_id == Device.id)
                    .where(Device.vendor == "Acme")
                    .order_by(Device.id)
                )
            ).all()
            dead = (await s.execute(select(DeadLetter.identity).order_by(DeadLetter.id))).scalars().all()
        return [tuple(r) for r in rows] + [("dead", str(d), "") for d in dead]
    finally:
        await engine.dispose()


def _expected(serials: list[str]) -> list[tuple[str, str, str]]:
    return [(s, f"ENR-{s}"[:64], s) for s in serials] + [("dead", s, "") for s in serials]


async def _downgrade(url: str, revision: str) -> None:
    await asyncio.to_thread(command.downgrade, alembic_config(url), revision)


async def test_kit_identities_are_renamed_without_colon_and_back_on_downgrade(any_db_url: str) -> None:
    url = any_db_url
    await _downgrade(url, "0030")
    await _seed(url)  # as the old drivers enrolled them

    await upgrade(url)
    assert await _stored(url) == _expected(list(KITS.values()))

    await _downgrade(url, "0030")
    assert await _stored(url) == _expected([serial for _, serial in KITS])
    await upgrade(url)  # leave the database at head for the next test
