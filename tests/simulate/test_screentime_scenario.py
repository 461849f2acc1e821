"""Screen time end to end: simulated terminals keep their policy and report sessions over a real broker, the
service's ingest rolls them up, and the screentime report shows enforced breaks for the terminals that keep
the policy and long sessions and days over the limit for the ones whose limits are lifted (screen-overuse)."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import select

from fleet.persistence.models import Device
from fleet.persistence.models_mqtt import UsageScreen
from simulators.district.spec import parse_spec

from .harness import run, service, small_spec

# 10-minute sessions, a 2-minute break, 30 minutes a day: 10 + 2 + 10 + 2 + 10 = 34 minutes of the 45-minute
# first lesson (08:00-08:45) hold three sessions, two breaks and the daily limit, with room for a loaded
# machine's late ticks.
POLICY = {"session_minutes": 10, "daily_minutes": 30, "break_minutes": 2}


async def test_terminals_report_breaks_and_the_overused_ones_long_sessions_and_days_over_the_limit(
    sqlite_url: str, tmp_path: Path
) -> None:
    spec = small_spec(screen_overuse_share=0.25)
    spec["speed"] = 600  # 9 real seconds: 07:59:30 to 09:29:30, the first lesson and its break
    spec["traffic"]["terminal"].update(screen_policy=POLICY, screen_policy_share=1.0)
    d = parse_spec(spec, "test.yaml")
    async with service(sqlite_url, tmp_path) as sut:
        r = await run(sut, d, ("bell-storm", "screen-overuse"), duration_s=9.0)
        assert sut.sessions is not None
        async with sut.sessions() as s:
            rows = (
                await s.execute(
                    select(
                        Device.serial_number,
                        UsageScreen.use_seconds,
                        UsageScreen.breaks,
                        UsageScreen.limit_locks,
                        UsageScreen.long_sessions,
                        UsageScreen.session_limit_min,
                        UsageScreen.daily_limit_min,
                    ).join(Device, Device.id == UsageScreen.device_id)
                )
            ).all()
        async with httpx.AsyncClient(base_url=sut.api) as client:
            report = await client.get(
                "/api/v1/reports/screentime",
                params={"start": "2026-09-07", "end": "2026-09-07"},
                headers={"Authorization": f"Bearer {sut.token}"},
            )
    overused = set(r["outcome"]["screen_overuse"])
    assert len(overused) == 4  # a quarter of the 16 terminals
    by_serial = {row[0]: row[1:] for row in rows}
    # On a loaded machine a terminal's first session may still be on its way when the run ends; every session
    # that arrived is judged exactly, and both kinds of terminal must be among them.
    assert len(by_serial) >= 12 and overused & set(by_serial) and set(by_serial) - overused, sorted(by_serial)
    for serial, (use_s, breaks, locks, long, slim, dlim) in by_serial.items():
        assert (slim, dlim) == (10, 30), serial
        if serial in overused:
            # The whole lesson in one session (up to 45 minutes > 10), ended by the rest after the bell.
            assert long >= 1 and breaks == 0 and locks == 0 and use_s > 30 * 60, (serial, use_s)
        else:
            # 10 minutes and a break, twice, then 10 more reach the daily limit: never more than 30.
            assert long == 0 and breaks == 2 and locks == 1 and use_s == 30 * 60, (serial, use_s)
    assert report.status_code == 200, report.text
    summary = report.json()["summary"]
    over, kept = len(overused & set(by_serial)), len(set(by_serial) - overused)
    assert summary["terminals"] == len(by_serial) and summary["terminals_over_limit"] == over
    assert summary["breaks"] == 2 * kept and summary["limit_locks"] == kept
