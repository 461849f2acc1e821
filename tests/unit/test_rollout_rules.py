"""Pure rollout rules: group plans, thresholds, the timetable gate, windows, budgets, the token bucket, and
the update command/progress codec."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest

from fleet.domain import wire
from fleet.domain.enums import CalendarKind
from fleet.domain.rollouts import (
    GroupPlan,
    GroupStrategy,
    GroupTally,
    GroupVerdict,
    MaintenanceWindow,
    SchoolTimetable,
    TokenBucket,
    Window,
    gate,
    judge_group,
    parse_windows,
    plan_groups,
    school_budget_bytes_per_second,
)
from fleet.domain.timetable import CalendarEntry, Period
from fleet.domain.update_wire import (
    Phase,
    Progress,
    UpdateArgs,
    UpdateProgress,
    decode_progress,
    encode_progress,
    parse_update_args,
    update_args,
)

SHA = "a" * 64
MONDAY = date(2026, 9, 7)


def at(hh: int, mm: int, day: date = MONDAY) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=UTC)


def test_canary_is_spread_over_schools_then_one_group_per_school() -> None:
    devices = [(i, 1) for i in range(1, 6)] + [(i, 2) for i in range(6, 9)]
    groups = plan_groups(devices, GroupPlan(canary_size=2, strategy=GroupStrategy.PER_SCHOOL))
    assert [(g.kind, g.device_ids) for g in groups] == [
        ("canary", (1, 6)),
        ("school", (2, 3, 4, 5)),
        ("school", (7, 8)),
    ]
    assert sorted(d for g in groups for d in g.device_ids) == list(range(1, 9))


def test_percent_groups_are_cumulative_and_cover_everyone() -> None:
    devices = [(i, 1) for i in range(1, 22)]
    groups = plan_groups(
        devices, GroupPlan(canary_percent=5, strategy=GroupStrategy.PERCENT, percents=(10.0, 50.0, 100.0))
    )
    sizes = [len(g.device_ids) for g in groups]
    assert groups[0].kind == "canary" and sizes[0] == 2  # ceil(5% of 21)
    assert sizes[1:] == [2, 8, 9]  # 10%, 50%, 100% of the 19 after the canary
    assert sum(sizes) == 21


@pytest.mark.parametrize(
    ("tally", "verdict"),
    [
        (GroupTally(10, 9, 0, 1), GroupVerdict.ADVANCE),
        (GroupTally(10, 5, 0, 5), GroupVerdict.WAIT),
        (GroupTally(10, 7, 2, 1), GroupVerdict.PAUSE),  # 20% failed: the error threshold wins
        (GroupTally(10, 9, 1, 0), GroupVerdict.ADVANCE),  # 10% failed, under the threshold
        (GroupTally(0, 0, 0, 0), GroupVerdict.ADVANCE),  # an empty group does not block
    ],
)
def test_judge_group_checks_errors_before_success(tally: GroupTally, verdict: GroupVerdict) -> None:
    assert judge_group(tally, success_threshold=0.9, error_threshold=0.2) == verdict


def _tt(**kw: object) -> SchoolTimetable:
    periods = tuple(
        Period(n, 0, time.fromisoformat(s), time.fromisoformat(e))
        for n, s, e in [("P1", "08:00", "08:40"), ("P2", "08:50", "09:30"), ("P3", "13:00", "14:30")]
    )
    return SchoolTimetable("UTC", periods, (), **kw)


@pytest.mark.parametrize(
    ("when", "mode", "need", "reason", "until"),
    [
        (at(8, 10), Window.OUTSIDE_LESSONS, 60, "lesson", None),
        (at(8, 40), Window.OUTSIDE_LESSONS, 300, "open", at(8, 50)),
        (at(8, 45), Window.OUTSIDE_LESSONS, 600, "too_close_to_lesson", None),
        (at(11, 0), Window.OUTSIDE_LESSONS, 600, "open", at(13, 0)),
        (at(11, 0), Window.AFTER_SCHOOL, 600, "school_day", None),
        (at(14, 30), Window.AFTER_SCHOOL, 600, "open", at(0, 0, date(2026, 9, 8))),
        (at(7, 0), Window.OUTSIDE_LESSONS, 600, "open", at(8, 0)),
    ],
)
def test_gate_opens_only_outside_lessons_with_room_to_finish(
    when: datetime, mode: Window, need: int, reason: str, until: datetime | None
) -> None:
    g = gate(_tt(), None, when, mode, need)
    assert g.reason == reason and g.open == (reason == "open") and g.until == until


def test_gate_is_shut_all_day_on_an_exam_day() -> None:
    tt = SchoolTimetable("UTC", _tt().periods, (CalendarEntry(CalendarKind.EXAM_DAY, MONDAY, MONDAY),))
    assert gate(tt, None, at(19, 0), Window.OUTSIDE_LESSONS, 60).reason == "exam_day"


def test_gate_keeps_to_maintenance_windows() -> None:
    tt = _tt(windows=(MaintenanceWindow(0, time(16, 30), time(22, 0)),))
    assert gate(tt, None, at(15, 0), Window.OUTSIDE_LESSONS, 60).reason == "maintenance_window"
    g = gate(tt, None, at(17, 0), Window.OUTSIDE_LESSONS, 60)
    assert g.open and g.until == at(22, 0)
    assert gate(tt, None, at(21, 55), Window.OUTSIDE_LESSONS, 600).reason == "window_too_short"


def test_gate_uses_the_rooms_own_timetable() -> None:
    lab = Period("Lab", 0, time(10, 0), time(12, 0), room_id=7)
    tt = SchoolTimetable("UTC", (*_tt().periods, lab), ())
    assert gate(tt, 7, at(11, 0), Window.OUTSIDE_LESSONS, 60).reason == "lesson"
    assert gate(tt, None, at(11, 0), Window.OUTSIDE_LESSONS, 60).open


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([{"weekday": 7, "start": "16:00", "end": "17:00"}], "windows[0].weekday"),
        ([{"weekday": 0, "start": "18:00", "end": "17:00"}], "end must be after start"),
        ([{"weekday": 0, "start": "soon"}], "windows[0]"),
    ],
)
def test_bad_maintenance_windows_name_the_entry(raw: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_windows(raw)


def test_school_budget_is_a_share_of_the_uplink_capped_absolutely() -> None:
    assert school_budget_bytes_per_second(100, 0.2, None) == 2_500_000
    assert school_budget_bytes_per_second(1000, 0.2, 2_500_000) == 2_500_000
    assert school_budget_bytes_per_second(10, 0.2, 10**9) == 250_000


def test_token_bucket_allows_a_burst_then_paces_to_its_rate() -> None:
    b = TokenBucket(rate=1000.0, burst=250.0)
    assert b.take(250, now=0.0) == 0.0
    assert b.take(500, now=0.0) == pytest.approx(0.5)
    # Taking 100 bytes every 0.1 s is exactly the rate: after the debt is paid, no more waiting accrues.
    waits = [b.take(100, now=0.5 + 0.1 * i) for i in range(1, 50)]
    assert max(waits) <= 0.1 + 1e-9 and waits[-1] == pytest.approx(0.0, abs=1e-9)


def test_update_args_round_trip_and_refuse_bad_fields() -> None:
    a = UpdateArgs(
        Phase.DOWNLOAD,
        "1.2.0",
        SHA,
        562,
        "/api/v1/artifacts/x/download?sig=1",
        None,
        "none",
        1000,
        1_788_800_000_000,
    )
    assert parse_update_args(update_args(a)) == a
    for bad, field in [
        ({"phase": "explode"}, "phase"),
        ({"sha256": "XYZ"}, "sha256"),
        ({"url": None}, "url"),
        ({"size": -1}, "size"),
        ({"not_after": 5}, "not_after"),
    ]:
        with pytest.raises(ValueError, match=field):
            parse_update_args(
                {**update_args(a), **bad}
                if bad.get("url", 1) is not None
                else {k: v for k, v in update_args(a).items() if k != "url"}
            )


def test_progress_decoder_counts_reasons_and_never_raises() -> None:
    p = UpdateProgress("c-1", 1_788_800_000_000, Progress.DOWNLOAD_PAUSED, offset=100, size=562)
    assert decode_progress(encode_progress(p)) == p
    cases = {
        b"\xff": wire.Reason.MALFORMED_JSON,
        b"[]": wire.Reason.MALFORMED_JSON,
        b'{"v":2}': wire.Reason.UNSUPPORTED_VERSION,
        b'{"v":1,"id":"c-1","ts":1,"state":"x"}': wire.Reason.SCHEMA,
        # a state the protocol does not define has its own reason (dead-lettered as such)
        b'{"v":1,"id":"c-1","ts":1788800000000,"state":"nope"}': wire.Reason.UNKNOWN_STATE,
        b'{"v":1,"id":"c-1","ts":1788800000000,"state":null}': wire.Reason.SCHEMA,
        b"{" * 5000: wire.Reason.OVERSIZED,
        b"[" * 3000 + b"]" * 3000: wire.Reason.OVERSIZED,
    }
    for payload, reason in cases.items():
        got = decode_progress(payload)
        assert isinstance(got, wire.Rejection) and got.reason == reason, payload[:20]
