"""`labfleet seed demo`: a small district to explore (3 schools, rooms, timetables, models, devices)."""

from __future__ import annotations

from datetime import date, time
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.clock import Clock
from fleet.domain.permissions import Principal
from fleet.errors import Conflict
from fleet.persistence.models import District
from fleet.services.inventory import (
    DeviceModelService,
    DeviceService,
    DistrictService,
    RoomService,
    SchoolService,
)
from fleet.services.timetable import BellPeriodService, CalendarService

DEMO_DISTRICT = "Demo District"
# Profile keys match firmware_profiles/*.yaml.
DEMO_MODELS = [
    ("EduTech", "LT-100", "terminal", "mqtt", "329.00", 36, "EduTech Supply Co.", "terminal-lt100"),
    ("EduTech", "LT-200", "terminal", "mqtt", "459.00", 36, "EduTech Supply Co.", "terminal-lt200"),
    ("RoboLearn", "EduBot-R2", "robot", "serial", "1290.00", 24, "RoboLearn Ltd.", "robot-edubot-r2"),
    ("MakerKits", "ESP32-MPY", "mcu_kit", "serial", "39.00", 12, "Maker Wholesale", "kit-esp32-mpy"),
    ("MakerKits", "UNO-FIRMATA", "mcu_kit", "serial", "29.00", 12, "Maker Wholesale", "kit-uno-firmata"),
    ("AirSense", "S1", "sensor", "mqtt", "89.00", 24, "AirSense GmbH", "sensor-air-s1"),
]
DEMO_SCHOOLS = [
    ("north-primary", "North Primary School", 200),
    ("east-middle", "East Middle School", 500),
    ("west-high", "West High School", 1000),
]
# A typical day: 8 lessons of 40 minutes between 08:00 and 15:40, with breaks.
BELLS = [
    ("P1", time(8, 0), time(8, 40)),
    ("P2", time(8, 50), time(9, 30)),
    ("P3", time(9, 50), time(10, 30)),
    ("P4", time(10, 40), time(11, 20)),
    ("P5", time(13, 30), time(14, 10)),
    ("P6", time(14, 20), time(15, 0)),
    ("P7", time(15, 10), time(15, 40)),
]


async def seed_demo(
    session: AsyncSession, principal: Principal, clock: Clock, *, timezone: str = "UTC"
) -> dict[str, int]:
    """Create the demo district; refuses to run twice."""
    if (await session.execute(select(District).where(District.name == DEMO_DISTRICT))).first():
        raise Conflict("the demo district already exists")
    counts = {"schools": 0, "rooms": 0, "models": 0, "devices": 0, "periods": 0}
    district = await DistrictService(session, principal, clock).create({"name": DEMO_DISTRICT})
    models = []
    for vendor, number, kind, transport, price, warranty, supplier, profile in DEMO_MODELS:
        models.append(
            await DeviceModelService(session, principal, clock).create(
                {
                    "vendor": vendor,
                    "model_number": number,
                    "kind": kind,
                    "transport": transport,
                    "unit_price": Decimal(price),
                    "warranty_months": warranty,
                    "supplier": supplier,
                    "profile_key": profile,
                }
            )
        )
        counts["models"] += 1
    term_start, term_end = date(clock.now().year, 9, 1), date(clock.now().year + 1, 1, 20)
    serial = 0
    for s_idx, (code, name, uplink) in enumerate(DEMO_SCHOOLS):
        school = await SchoolService(session, principal, clock).create(
            {
                "district_id": district.id,
                "code": code,
                "name": name,
                "uplink_mbps": uplink,
                "timezone": timezone,
            }
        )
        counts["schools"] += 1
        for weekday in range(5):
            for pname, start, end in BELLS:
                await BellPeriodService(session, principal, clock).create(
                    {
                        "school_id": school.id,
                        "room_id": None,
                        "weekday": weekday,
                        "name": pname,
                        "start_time": start,
                        "end_time": end,
                    }
                )
                counts["periods"] += 1
        cal = CalendarService(session, principal, clock)
        await cal.create(
            {
                "school_id": school.id,
                "kind": "term",
                "name": "Autumn term",
                "start_date": term_start,
                "end_date": term_end,
            }
        )
        await cal.create(
            {
                "school_id": school.id,
                "kind": "holiday",
                "name": "National Day week",
                "start_date": date(term_start.year, 10, 1),
                "end_date": date(term_start.year, 10, 7),
            }
        )
        await cal.create(
            {
                "school_id": school.id,
                "kind": "exam_day",
                "name": "Mid-term exams",
                "start_date": date(term_start.year, 11, 12),
                "end_date": date(term_start.year, 11, 13),
            }
        )
        rooms = []
        for r in range(3 + s_idx):
            rooms.append(
                (
                    "terminal",
                    await RoomService(session, principal, clock).create(
                        {
                            "school_id": school.id,
                            "name": f"Classroom {r + 1}",
                            "kind": "smart_classroom",
                            "tier": None,
                            "capacity": 30,
                        }
                    ),
                )
            )
        rooms.append(
            (
                "lab",
                await RoomService(session, principal, clock).create(
                    {
                        "school_id": school.id,
                        "name": "Digital Lab",
                        "kind": "digital_lab",
                        "tier": None,
                        "capacity": 20,
                    }
                ),
            )
        )
        rooms.append(
            (
                "ai",
                await RoomService(session, principal, clock).create(
                    {
                        "school_id": school.id,
                        "name": "AI Lab",
                        "kind": "ai_lab",
                        "tier": ["basic_experience", "subject_integration", "advanced_research"][s_idx],
                        "capacity": 12,
                    }
                ),
            )
        )
        counts["rooms"] += len(rooms)
        for role, room in rooms:
            plan = {"terminal": [(0, 24), (5, 1)], "lab": [(1, 20), (3, 6)], "ai": [(2, 4), (3, 6), (4, 6)]}[
                role
            ]
            for model_idx, count in plan:
                model = models[model_idx]
                for _ in range(count):
                    serial += 1
                    await DeviceService(session, principal, clock).create(
                        {
                            "serial_number": f"{model.model_number}-{serial:06d}",
                            "asset_tag": f"LF-{serial:06d}",
                            "model_id": model.id,
                            "school_id": school.id,
                            "room_id": room.id,
                            "status": "in_service",
                            "order_number": f"PO-{term_start.year}-{1 + model_idx:03d}",
                            "purchase_date": date(term_start.year - (serial % 3), 8, 15),
                            "unit_cost": model.unit_price,
                            "funding_source": "AI education grant",
                            "ownership": "leased"
                            if model.kind == "terminal" and serial % 5 == 0
                            else "owned",
                        }
                    )
                    counts["devices"] += 1
    return counts
