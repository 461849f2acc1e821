"""A small fixture district written straight into the tables, with every date chosen so figures can be worked
out by hand in the tests (see the comments there)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.persistence.db import unit_of_work
from fleet.persistence.models import Device, DeviceModel, DeviceTransition, District, Room, School
from fleet.persistence.models_mqtt import Alert, PresenceTransition, UsageActive
from fleet.persistence.models_rollouts import Rollout, RolloutDevice, RolloutGroup


def at(y: int, m: int, d: int, h: int = 0) -> datetime:
    return datetime(y, m, d, h, tzinfo=UTC)


@dataclass
class Fixture:
    district: int
    school_a: int
    school_b: int
    devices: dict[str, int]


# name: (model, school, room, order, purchase, cost, funding, ownership, status now, transitions)
DEVICES = {
    "a1": (
        "LT",
        "A",
        "A-101",
        "PO-1",
        date(2024, 3, 15),
        "300.00",
        "city",
        "owned",
        "in_service",
        [
            (at(2024, 3, 20), "received"),
            (at(2024, 4, 1), "in_service"),
            (at(2026, 2, 1), "in_repair"),
            (at(2026, 2, 11), "in_service"),
            (at(2026, 5, 1), "in_repair"),
            (at(2026, 5, 6), "in_service"),
        ],
    ),
    "a2": (
        "LT",
        "A",
        "A-101",
        "PO-1",
        date(2024, 3, 15),
        "300.00",
        "city",
        "owned",
        "in_service",
        [(at(2024, 3, 20), "received"), (at(2024, 4, 1), "in_service")],
    ),
    "a3": (
        "R1",
        "A",
        "A-AI",
        "PO-2",
        date(2025, 7, 1),
        "1000.00",
        "state",
        "owned",
        "in_service",
        [
            (at(2025, 7, 5), "received"),
            (at(2025, 7, 10), "in_service"),
            (at(2026, 3, 1), "in_repair"),
            (at(2026, 3, 3), "in_service"),
        ],
    ),
    "a4": (
        "LT",
        "A",
        "A-Lab",
        "PO-0",
        date(2023, 1, 10),
        "280.00",
        "city",
        "owned",
        "in_repair",
        [(at(2023, 1, 15), "received"), (at(2023, 2, 1), "in_service"), (at(2026, 6, 20), "in_repair")],
    ),
    "a5": (
        "LT",
        "A",
        "A-Lab",
        None,
        None,
        None,
        None,
        "owned",
        "provisioned",
        [(at(2026, 1, 5), "received"), (at(2026, 1, 6), "provisioned")],
    ),
    "b1": (
        "LT",
        "B",
        "B-101",
        "PO-3",
        date(2026, 2, 1),
        "300.00",
        "lease-co",
        "leased",
        "in_service",
        [(at(2026, 2, 5), "received"), (at(2026, 2, 10), "in_service")],
    ),
    "b2": (
        "LT",
        "B",
        "B-101",
        "PO-00",
        date(2021, 1, 1),
        "250.00",
        "state",
        "owned",
        "retired",
        [(at(2021, 1, 5), "received"), (at(2021, 2, 1), "in_service"), (at(2026, 4, 1), "retired")],
    ),
}


async def build_district(sessions: async_sessionmaker[AsyncSession]) -> Fixture:
    now = at(2026, 9, 1)
    async with unit_of_work(sessions) as s:
        d = District(name="Fixture District", created_at=now)
        s.add(d)
        await s.flush()
        schools = {}
        for tag in ("A", "B"):
            school = School(
                district_id=d.id,
                code=f"school-{tag.lower()}",
                name=f"School {tag}",
                uplink_mbps=100,
                timezone="UTC",
                created_at=now,
            )
            s.add(school)
            await s.flush()
            schools[tag] = school.id
        rooms = {}
        for name, tag, kind, tier, cap in (
            ("A-101", "A", "smart_classroom", None, 2),
            ("A-Lab", "A", "digital_lab", None, 1),
            ("A-AI", "A", "ai_lab", "basic_experience", 0),
            ("B-101", "B", "smart_classroom", None, 3),
        ):
            room = Room(school_id=schools[tag], name=name, kind=kind, tier=tier, capacity=cap, created_at=now)
            s.add(room)
            await s.flush()
            rooms[name] = room.id
        models = {}
        for key, vendor, number, kind, transport, price, months, supplier in (
            ("LT", "EduTech", "LT-100", "terminal", "mqtt", "300.00", 24, "EduTech Supply"),
            ("R1", "RoboCo", "R1", "robot", "serial", "1000.00", 12, "RoboCo"),
        ):
            m = DeviceModel(
                vendor=vendor,
                model_number=number,
                kind=kind,
                transport=transport,
                unit_price=Decimal(price),
                warranty_months=months,
                supplier=supplier,
                created_at=now,
            )
            s.add(m)
            await s.flush()
            models[key] = m.id
        devices = {}
        for name, (model, tag, room, order, bought, cost, funding, own, status, history) in DEVICES.items():
            dev = Device(
                vendor="x",
                serial_number=f"SN-{name}",
                asset_tag=f"AT-{name}",
                model_id=models[model],
                school_id=schools[tag],
                room_id=rooms[room],
                status=status,
                order_number=order,
                purchase_date=bought,
                unit_cost=Decimal(cost) if cost else None,
                funding_source=funding,
                ownership=own,
                created_at=history[0][0],
                updated_at=history[-1][0],
            )
            s.add(dev)
            await s.flush()
            devices[name] = dev.id
            prev = None
            for when, to in history:
                s.add(
                    DeviceTransition(
                        device_id=dev.id, from_status=prev, to_status=to, actor="fixture", at=when
                    )
                )
                prev = to
        # a2: offline unexpectedly 22:00 -> 02:00 over new year (2 h inside 2026), 08:00 -> 14:00 on 10 March
        # (6 h), and offline as expected 18:00 -> 07:00 (not downtime).
        for when, online, expected in (
            (at(2025, 12, 31, 22), False, False),
            (at(2026, 1, 1, 2), True, None),
            (at(2026, 3, 10, 8), False, False),
            (at(2026, 3, 10, 14), True, None),
            (at(2026, 3, 10, 18), False, True),
            (at(2026, 3, 11, 7), True, None),
        ):
            s.add(
                PresenceTransition(
                    device_id=devices["a2"],
                    school_id=schools["A"],
                    at=when,
                    online=online,
                    expected=expected,
                    cause="status",
                )
            )
        s.add(
            Alert(
                device_id=devices["a4"],
                school_id=schools["A"],
                room_id=rooms["A-Lab"],
                rule="error_code",
                severity="critical",
                status="open",
                dedup_key=f"{devices['a4']}:error_code",
                detail="E42",
                opened_at=at(2026, 6, 19, 9),
                last_seen_at=at(2026, 6, 19, 9),
            )
        )
        s.add(
            Alert(
                device_id=devices["a2"],
                school_id=schools["A"],
                room_id=rooms["A-101"],
                rule="battery_low",
                severity="warning",
                status="open",
                dedup_key=f"{devices['a2']}:battery_low",
                detail="",
                opened_at=at(2026, 6, 1, 9),
                last_seen_at=at(2026, 6, 1, 9),
            )
        )
        # Usage in June 2026 (the 4-week range 1..28 June), plus rows just outside it that must not count.
        usage = {
            "a1": [
                (at(2026, 6, 1, 8), 60),
                (at(2026, 6, 8, 9), 60),
                (at(2026, 6, 15, 10), 40),
                (at(2026, 5, 31, 23), 60),
                (at(2026, 6, 29, 8), 60),
            ],
            "a2": [(at(2026, 6, 2, 8), 20)],
            "a3": [(at(2026, 6, d, 9), 60) for d in range(1, 11)],
            "b1": [(at(2026, 6, 3, 8), 50), (at(2026, 6, 4, 8), 50)],
        }
        for name, rows in usage.items():
            dev_tag = DEVICES[name][1]
            for when, minutes in rows:
                s.add(
                    UsageActive(
                        device_id=devices[name],
                        school_id=schools[dev_tag],
                        room_id=rooms[DEVICES[name][2]],
                        bucket_start=when,
                        active_minutes=minutes,
                    )
                )
        # A firmware rollout of LT-100: finished in the range a1 and b1 succeeded, a2 failed, a4 rolled back;
        # a5 finished before the range; a3's entry (another model's device, for the test) was cancelled.
        rollout = Rollout(
            name="LT 2.1",
            model_id=models["LT"],
            profile_key="terminal-lt100",
            target_version="2.1",
            artifact_sha256="0" * 64,
            success_threshold=0.9,
            error_threshold=0.2,
            max_attempts=3,
            state="finished",
            created_by="fixture",
            created_at=now,
            updated_at=now,
        )
        s.add(rollout)
        await s.flush()
        group = RolloutGroup(rollout_id=rollout.id, position=0, name="all", kind="rest", state="succeeded")
        s.add(group)
        await s.flush()
        for name, state, finished in (
            ("a1", "succeeded", at(2026, 3, 1)),
            ("b1", "succeeded", at(2026, 3, 2)),
            ("a2", "failed", at(2026, 3, 1)),
            ("a4", "rolled_back", at(2026, 4, 1)),
            ("a5", "succeeded", at(2025, 12, 1)),
            ("a3", "cancelled", at(2026, 3, 1)),
        ):
            s.add(
                RolloutDevice(
                    rollout_id=rollout.id,
                    group_id=group.id,
                    device_id=devices[name],
                    school_id=schools[DEVICES[name][1]],
                    state=state,
                    from_version="2.0",
                    to_version="2.1",
                    created_at=now,
                    updated_at=now,
                    finished_at=finished,
                )
            )
    return Fixture(district=d.id, school_a=schools["A"], school_b=schools["B"], devices=devices)
