"""Across a simulated school day, no terminal in a room with a lesson, or at a school on an exam day,
downloads, installs or reboots: asserted from the per-device timeline the engine records."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path

from fleet.domain.rollouts import Window
from fleet.domain.timetable import lesson_at
from fleet.services.timetable import load_school_timetable
from tests.rollouts.harness import NEW, OLD, Lab, lab

MONDAY_0730 = datetime(2026, 9, 7, 7, 30, tzinfo=UTC)
BELLS = [
    ("P1", "08:00", "08:40"),
    ("P2", "08:50", "09:30"),
    ("P3", "09:40", "10:20"),
    ("P4", "10:30", "11:10"),
    ("P5", "13:00", "13:40"),
    ("P6", "13:50", "14:30"),
]
# Room 2 of school A is a lab with its own timetable: a long morning block and an afternoon block to 16:00.
LAB_BLOCKS = [("Lab AM", "08:00", "12:00"), ("Lab PM", "13:00", "16:00")]
# Events that mean the device is busy installing or rebooting, or moving bytes.
INSTALL_EVENTS = {"install_sent", "install_started", "rebooting", "succeeded", "rolled_back"}
DOWNLOAD_START_EVENTS = {"scheduled", "download_started", "download_resumed"}


async def _school_day(lb: Lab) -> tuple[int, int, list[int], list[int], list[int]]:
    a = await lb.add_school("S-A", rooms=2)
    b = await lb.add_school("S-B", rooms=1)
    for school in (a, b):
        for name, start, end in BELLS:
            for weekday in range(5):
                await lb.post(
                    "/api/v1/bell-periods",
                    {
                        "school_id": school,
                        "weekday": weekday,
                        "name": name,
                        "start_time": start,
                        "end_time": end,
                    },
                )
        await lb.post(
            "/api/v1/calendar-entries",
            {
                "school_id": school,
                "kind": "term",
                "name": "Autumn",
                "start_date": "2026-09-01",
                "end_date": "2027-01-20",
            },
        )
    for name, start, end in LAB_BLOCKS:
        await lb.post(
            "/api/v1/bell-periods",
            {
                "school_id": a,
                "room_id": lb.rooms[a][1],
                "weekday": 0,
                "name": name,
                "start_time": start,
                "end_time": end,
            },
        )
    await lb.post(
        "/api/v1/calendar-entries",
        {
            "school_id": b,
            "kind": "exam_day",
            "name": "Entrance exam",
            "start_date": "2026-09-07",
            "end_date": "2026-09-07",
        },
    )
    # A slow Wi-Fi link (0.5 byte/s for a 562-byte image, ~19 minutes) and two downloads at a time at school
    # A: downloads cross period boundaries, pause at the bell and resume with Range after it.
    await lb.client.put(
        f"/api/v1/schools/{a}/update-policy",
        json={"max_concurrent_downloads": 2},
        headers=await lb.api.admin(),
    )
    room1 = await lb.add_terminals(a, 6, room_index=0, link_rate=0.5)
    room2 = await lb.add_terminals(a, 4, room_index=1, link_rate=0.5)
    exam = await lb.add_terminals(b, 4, link_rate=0.5)
    return a, b, room1, room2, exam


async def _assert_timeline_respects_timetable(
    lb: Lab, rollout_id: int, *, after_school: bool
) -> dict[str, int]:
    seen: dict[str, int] = {}
    async with lb.api.sessions() as s:
        tables = {sid: await load_school_timetable(s, sid) for sid in lb.schools}
    rows = await lb.device_rows(rollout_id)
    for ev in await lb.timeline(rollout_id):
        seen[ev.event] = seen.get(ev.event, 0) + 1
        row = rows[ev.device_id]
        periods, calendar = tables[row.school_id]
        st = lesson_at(periods, calendar, ev.at, "UTC", room_id=row.room_id)
        if ev.event in INSTALL_EVENTS or ev.event in DOWNLOAD_START_EVENTS:
            assert not st.in_lesson, f"device {ev.device_id}: {ev.event} at {ev.at:%H:%M} during {st.period}"
            assert not st.exam_day, f"device {ev.device_id}: {ev.event} at {ev.at:%H:%M} on an exam day"
        if after_school and ev.event in INSTALL_EVENTS:
            last_end = max(
                time.fromisoformat(e)
                for _, _, e in (LAB_BLOCKS if row.room_id == lb.rooms[lb.schools[0]][1] else BELLS)
            )
            assert ev.at.time() >= last_end, (
                f"device {ev.device_id}: {ev.event} at {ev.at:%H:%M} before school ended"
            )
    # Every simulated terminal's own record agrees: nothing installed or rebooted in a lesson.
    for dev, sim in lb.sims.items():
        if dev not in rows:
            continue
        row = rows[dev]
        periods, calendar = tables[row.school_id]
        for at, what in sim.timeline:
            if what in ("installing", "rebooting", "succeeded", "rolled_back"):
                st = lesson_at(periods, calendar, at, "UTC", room_id=row.room_id)
                assert not st.in_lesson and not st.exam_day, (dev, what, at)
    return seen


async def test_no_download_install_or_reboot_during_lessons_or_on_exam_day(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with lab(sqlite_url, tmp_path, MONDAY_0730) as lb:
        a, b, room1, room2, exam = await _school_day(lb)
        r = await lb.create_rollout(
            groups={"canary_size": 2, "strategy": "per_school"}, success_threshold=0.5, school_ids=[a, b]
        )
        await lb.run(seconds=10 * 3600, step=120)  # 07:30 to 17:30
        seen = await _assert_timeline_respects_timetable(lb, r["id"], after_school=False)
        # The day was used: downloads paused at a bell and resumed later, installs happened between periods.
        assert seen.get("download_paused", 0) > 0 and seen.get("download_resumed", 0) > 0
        rows = await lb.device_rows(r["id"])
        assert all(rows[d].state == "succeeded" and lb.sims[d].version == NEW for d in room1 + room2)
        installs_in_day = [
            e
            for e in await lb.timeline(r["id"])
            if e.event == "install_started"
            and e.at.time() < time(14, 30)
            and rows[e.device_id].room_id == lb.rooms[a][0]
        ]
        assert installs_in_day, "room 1 had long breaks; some installs should have used them"
        # The exam-day school did nothing at all that day.
        assert all(rows[d].state == "pending" and rows[d].scheduled_at is None for d in exam)
        assert all(lb.sims[d].version == OLD and not lb.sims[d].requests for d in exam)


async def test_installs_wait_for_after_school_when_asked(sqlite_url: str, tmp_path: Path) -> None:
    async with lab(sqlite_url, tmp_path, MONDAY_0730) as lb:
        a, _b, _room1, _room2, _exam = await _school_day(lb)
        r = await lb.create_rollout(
            groups={"canary_size": 2, "strategy": "per_school"},
            success_threshold=0.5,
            school_ids=[a],
            install_window=Window.AFTER_SCHOOL.value,
        )
        await lb.run(seconds=10 * 3600, step=120)  # 07:30 to 17:30
        seen = await _assert_timeline_respects_timetable(lb, r["id"], after_school=True)
        assert seen.get("downloaded", 0) >= 10 and seen.get("succeeded", 0) == 10
        assert date(2026, 9, 7) == (await lb.timeline(r["id"]))[-1].at.date()
