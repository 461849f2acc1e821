"""The simulated terminal keeps screen time as protocol 5.3.1 says: sessions, enforced breaks, the daily
limit, pauses that do or do not end a session, and a terminal whose limits are lifted by hand."""

from __future__ import annotations

from datetime import date

from simulators.district.screentime import Ended, ScreenTime

DAY = date(2026, 9, 7)
T0 = 1_788_768_000_000  # ms; a Monday morning
POLICY = {"session_minutes": 40, "daily_minutes": 90, "break_minutes": 10}


def run(st: ScreenTime, plan: list[tuple[int, bool]], *, day: date = DAY) -> tuple[list[bool], list[Ended]]:
    """Minute ticks: (minutes, using) spans in a row, from T0."""
    now, used, ended = T0, [], []
    for minutes, using in plan:
        for _ in range(minutes):
            now += 60_000
            u, e = st.step(now, day, 60.0, using)
            used.append(u)
            ended += e
    return used, ended


def test_a_break_is_enforced_after_the_session_limit_and_use_resumes_after_it() -> None:
    st = ScreenTime(POLICY)
    used, ended = run(st, [(45, True), (10, True)])
    # 40 minutes of use, then the break: minutes 41..50 are refused although the pupil wants the screen.
    assert ended[0] == Ended(T0, 2400, "break", 40, 90)
    assert used[:40] == [True] * 40 and used[40:50] == [False] * 10
    # After the 10-minute break a new session starts at minute 51 (5 minutes in use so far, still open).
    assert used[50:] == [True] * 5 and len(ended) == 1 and st.use_s == 300


def test_the_daily_limit_locks_until_the_next_day() -> None:
    st = ScreenTime({"session_minutes": 60, "daily_minutes": 90, "break_minutes": 10})
    # 60 (break) + 10 rest + 30 more reaches 90: locked for the rest of the day.
    used, ended = run(st, [(60, True), (10, False), (30, True), (20, True)])
    assert [(e.use_s, e.end) for e in ended] == [(3600, "break"), (1800, "daily_limit")]
    assert used[-20:] == [False] * 20
    # The next local day the count starts over.
    u, e = st.step(T0 + 200 * 60_000, date(2026, 9, 8), 60.0, True)
    assert u and e == [] and st.day_use_s == 60


def test_a_short_pause_continues_the_session_and_a_rest_ends_it() -> None:
    st = ScreenTime(POLICY)
    # 20 in use, a 5-minute pause (shorter than the 10-minute rest: same session), 10 in use, then a rest.
    _used, ended = run(st, [(20, True), (5, False), (10, True), (10, False)])
    assert ended == [Ended(T0, 1800, "idle", 40, 90)]  # 30 minutes of use; the pause does not count


def test_without_a_policy_sessions_are_never_cut_and_report_no_limits() -> None:
    st = ScreenTime()
    _used, ended = run(st, [(100, True), (10, False)])
    assert ended == [Ended(T0, 6000, "idle", None, None)]


def test_a_terminal_unlocked_past_its_limits_reports_long_sessions_and_an_over_limit_day() -> None:
    st = ScreenTime(POLICY, enforce=False)
    _used, ended = run(st, [(95, True), (10, False)])
    assert ended == [Ended(T0, 5700, "idle", 40, 90)]  # 95 > 40 a session, 95 > 90 a day


def test_shutdown_and_lock_end_the_open_session() -> None:
    st = ScreenTime(POLICY)
    run(st, [(15, True)])
    assert st.shutdown() == Ended(T0, 900, "shutdown", 40, 90)
    assert st.shutdown() is None
    st2 = ScreenTime(POLICY)
    run(st2, [(5, True)])
    now = T0 + 5 * 60_000
    ended = []
    for i in range(10):
        ended += st2.step(now + (i + 1) * 60_000, DAY, 60.0, True, locked=True)[1]
    assert ended == [Ended(T0, 300, "locked", 40, 90)]
