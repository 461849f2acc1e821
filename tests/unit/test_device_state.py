"""The device-state reducer on its own: pure values in, new state and effects out; no database, no broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.domain import wire
from fleet.domain.device_state import (
    ActiveMinute,
    AlertOpened,
    AlertResolved,
    BytesUsed,
    CommandAcked,
    CommandFinished,
    Context,
    DeviceRef,
    DeviceState,
    Effect,
    FirmwareReported,
    HealthChanged,
    PresenceChanged,
    SessionChanged,
    apply,
    pseudonym,
    reduce,
)
from fleet.domain.health import Thresholds

NOW = datetime(2026, 9, 7, 8, 4, 59, 500_000, tzinfo=UTC)  # 08:04:59.5: half a second before a bucket edge
DEV = DeviceRef(7, 1, 3, "pk1", "dev-7", False, "LT-100", "terminal", "smart_classroom")
KEY = "pseudonym-key"


def ctx(now: datetime = NOW, *, expected: bool = False) -> Context:
    return Context(now, KEY, lambda _ref, _at: expected)


def tel(seq: int, **kw: object) -> wire.Telemetry:
    return wire.Telemetry(seq=seq, ts_ms=1_000 * seq, **kw)  # test shorthand


def event(seq: int, type_: wire.EventType, **kw: object) -> wire.Event:
    return wire.Event(seq=seq, ts_ms=1_000 * seq, type=type_, **kw)  # shorthand


def run(
    state: DeviceState, *values: wire.Uplink, at: datetime = NOW, c: Context | None = None
) -> tuple[DeviceState, list[Effect]]:
    return reduce(state, [(v, at) for v in values], DEV, c or ctx())


ONLINE = DeviceState(
    7, last_seen_at=NOW - timedelta(minutes=1), online=True, online_changed_at=NOW, health="ok"
)


def kinds(effects: list[Effect]) -> list[type]:
    return [type(e) for e in effects]


# ------------------------------------------------------------------ the sequence window
@pytest.mark.parametrize(
    ("last_seq", "mask", "seq", "new"),
    [
        (0, 0, 1, True),  # first message ever
        (5, 0, 6, True),  # next
        (5, 0, 5, False),  # the same again (redelivery)
        (5, 0b1, 4, False),  # just below, already seen
        (5, 0b0, 4, True),  # just below, not seen yet (reordered)
        (100, 0, 30, False),  # older than the 62-message window: counted as seen, never twice
        (5, 0, 500, True),  # a jump past the window
    ],
)
def test_a_seq_is_counted_once_whatever_the_arrival_order(
    last_seq: int, mask: int, seq: int, new: bool
) -> None:
    before = ONLINE._replace(last_seq=last_seq, seq_mask=mask, messages_total=10, duplicates_total=2)
    after, effects = run(before, wire.Heartbeat(seq=seq, ts_ms=1))
    assert (after.messages_total, after.duplicates_total) == ((11, 2) if new else (10, 3))
    if not new:
        assert after._replace(duplicates_total=2) == before and effects == []


def test_a_duplicate_is_not_a_sign_of_life() -> None:
    offline = DeviceState(7, last_seq=9, last_seen_at=NOW - timedelta(hours=1), online_changed_at=NOW)
    after, effects = run(offline, tel(9, bytes_up=10))
    assert effects == [] and not after.online and after.last_seen_at == offline.last_seen_at


def test_a_late_older_telemetry_counts_its_bytes_but_keeps_the_newer_readings() -> None:
    before = ONLINE._replace(last_seq=10, seq_mask=0, state_seq=10, battery_pct=80, app="math")
    after, effects = run(before, tel(8, battery_pct=30, app="old", bytes_up=5, bytes_down=7))
    assert (after.battery_pct, after.app, after.state_seq) == (80, "math", 10)
    assert (after.bytes_up_total, after.bytes_down_total) == (5, 7)
    assert [e for e in effects if isinstance(e, BytesUsed)] == [
        BytesUsed(datetime(2026, 9, 7, 8, 0, tzinfo=UTC), 5, 7)
    ]


# ------------------------------------------------------------------ presence
@pytest.mark.parametrize(
    ("reason", "expected", "cause", "alert"),
    [
        ("lwt", False, "lwt", True),
        ("shutdown", False, "shutdown", True),
        (None, False, "status", True),
        ("lwt", True, "lwt", False),  # no lesson in the room: expected, no alert
    ],
)
def test_going_offline_records_the_cause_and_alerts_only_during_a_lesson(
    reason: str | None, expected: bool, cause: str, alert: bool
) -> None:
    after, effects = run(ONLINE, wire.Status(False, reason=reason), c=ctx(expected=expected))
    assert not after.online and after.online_changed_at == NOW
    assert effects[0] == PresenceChanged(False, NOW, expected, cause)
    opened = [e for e in effects if isinstance(e, AlertOpened)]
    alert_row = AlertOpened("unexpected_offline", "warning", f"offline ({cause}) during a lesson", NOW)
    assert opened == ([alert_row] if alert else [])


def test_offline_twice_is_one_transition_but_a_never_seen_device_gets_its_first() -> None:
    offline = ONLINE._replace(online=False)
    assert run(offline, wire.Status(False))[1] == []
    fresh, effects = run(DeviceState(7), wire.Status(False))
    assert kinds(effects)[0] is PresenceChanged and fresh.online_changed_at == NOW


@pytest.mark.parametrize(
    ("value", "cause"),
    [
        (wire.Status(True), "status"),
        (wire.Heartbeat(seq=1, ts_ms=1), "message"),
        (wire.Ack(id="c1", ts_ms=1, accepted=True), "message"),
    ],
)
def test_any_sign_of_life_brings_a_device_online_and_resolves_its_offline_alert(
    value: wire.Uplink, cause: str
) -> None:
    offline = DeviceState(7, online=False, online_changed_at=NOW - timedelta(hours=1))
    after, effects = run(offline, value)
    assert after.online and after.last_seen_at == NOW and after.online_changed_at == NOW
    assert PresenceChanged(True, NOW, None, cause) in effects
    assert AlertResolved("unexpected_offline") in effects


def test_last_seen_never_moves_back() -> None:
    after, _ = run(
        ONLINE._replace(last_seen_at=NOW), wire.Heartbeat(seq=1, ts_ms=1), at=NOW - timedelta(seconds=3)
    )
    assert after.last_seen_at == NOW


# ------------------------------------------------------------------ health and alerts
def test_a_low_battery_opens_one_alert_and_its_recovery_resolves_it() -> None:
    low, effects = run(ONLINE, tel(1, battery_pct=15))
    assert AlertOpened("battery_low", "warning", "battery 15%", NOW) in effects
    assert HealthChanged("degraded") in effects and low.health_reasons == ("battery_low",)
    lower, effects = run(low, tel(2, battery_pct=12))
    assert [e for e in effects if isinstance(e, AlertOpened | HealthChanged)] == []  # already open
    ok, effects = run(lower, tel(3, battery_pct=60))
    assert AlertResolved("battery_low") in effects and HealthChanged("ok") in effects
    assert ok.health == "ok" and ok.health_reasons == ()


def test_a_reading_that_comes_and_goes_inside_one_batch_opens_no_alert() -> None:
    after, effects = run(
        ONLINE._replace(battery_pct=60, state_seq=0), tel(1, battery_pct=3), tel(2, battery_pct=60)
    )
    assert [e for e in effects if isinstance(e, AlertOpened | HealthChanged)] == [] and after.health == "ok"


def test_the_first_reading_settles_an_unknown_health_even_when_nothing_changed() -> None:
    after, effects = run(DeviceState(7), tel(1))
    assert after.health == "ok" and HealthChanged("ok") in effects


def test_a_fault_code_from_the_profile_makes_the_device_faulty() -> None:
    dev = DeviceRef(
        7, 1, 3, "pk1", "dev-7", False, "X", "robot", None, Thresholds(fault_error_codes=("E42",))
    )
    after, effects = reduce(ONLINE, [(event(1, wire.EventType.ERROR, code="E42"), NOW)], dev, ctx())
    assert after.health == "fault" and AlertOpened("error_code", "critical", "error E42", NOW) in effects


def test_a_boot_clears_the_error_and_the_session_and_three_boots_are_a_boot_loop() -> None:
    st0 = ONLINE._replace(
        last_error_code="E1", session_pseudonym="p", session_started_at=NOW, health="degraded"
    )
    st0 = st0._replace(health_reasons=("error_code",))
    now_ms = int(NOW.timestamp() * 1000)
    boots = [wire.Event(seq=i, ts_ms=now_ms - 1000 * i, type=wire.EventType.BOOT) for i in (1, 2, 3)]
    after, effects = run(st0, *boots)
    assert (
        after.last_error_code is None and after.session_pseudonym is None and after.session_started_at is None
    )
    assert len(after.recent_boots) == 3 and after.health_reasons == ("repeated_reboots",)
    assert AlertResolved("error_code") in effects and kinds(effects).count(AlertOpened) == 1


def test_boots_older_than_the_window_are_no_boot_loop() -> None:
    two_hours_ago = int(NOW.timestamp() * 1000) - 2 * 3600 * 1000
    boots = [wire.Event(seq=i, ts_ms=two_hours_ago + i, type=wire.EventType.BOOT) for i in (1, 2, 3)]
    after, _ = run(ONLINE, *boots)
    assert len(after.recent_boots) == 3 and after.health_reasons == () and after.health == "ok"


def test_only_the_last_ten_boots_are_kept() -> None:
    after, _ = run(ONLINE, *(event(i, wire.EventType.BOOT) for i in range(1, 15)))
    assert after.recent_boots == tuple(1_000 * i for i in range(5, 15))


# ------------------------------------------------------------------ sessions, commands, firmware
def test_a_login_keeps_only_a_keyed_pseudonym_and_a_logout_clears_it() -> None:
    after, effects = run(ONLINE, event(1, wire.EventType.LOGIN, user="student-42"))
    assert after.session_pseudonym == pseudonym(KEY, "student-42") != "student-42"
    assert len(after.session_pseudonym) == 32 and "student-42" not in repr((after, effects))
    assert SessionChanged(after.session_pseudonym) in effects and after.session_started_at == NOW
    out, effects = run(after, event(2, wire.EventType.LOGOUT))
    assert (
        out.session_pseudonym is None and out.session_started_at is None and SessionChanged(None) in effects
    )


def test_a_login_under_another_key_is_another_pseudonym() -> None:
    a, _ = run(ONLINE, event(1, wire.EventType.LOGIN, user="u"))
    b, _ = reduce(
        ONLINE,
        [(event(1, wire.EventType.LOGIN, user="u"), NOW)],
        DEV,
        Context(NOW, "other", lambda *_: False),
    )
    assert a.session_pseudonym != b.session_pseudonym


def test_command_replies_become_effects_in_arrival_order() -> None:
    values: list[wire.Uplink] = [
        wire.Ack(id="c1", ts_ms=1, accepted=True),
        wire.Ack(id="c2", ts_ms=1, accepted=False, reason="busy"),
        wire.Result(id="c1", ts_ms=2, ok=True, code="done", detail={"n": 1}),
    ]
    _, effects = run(ONLINE, *values)
    assert effects == [
        CommandAcked("c1", True, None, NOW),
        CommandAcked("c2", False, "busy", NOW),
        CommandFinished("c1", True, "done", {"n": 1}, NOW),
    ]


def test_a_reported_firmware_is_an_effect_and_an_absent_one_keeps_the_last() -> None:
    after, effects = run(ONLINE, tel(1, firmware="2.4.1"))
    assert FirmwareReported("2.4.1") in effects
    again, effects = run(after, tel(2))
    assert again.firmware_version == "2.4.1" and not any(isinstance(e, FirmwareReported) for e in effects)


# ------------------------------------------------------------------ usage roll-ups
def test_bytes_add_up_per_bucket_and_split_at_the_bucket_edge() -> None:
    before_edge, after_edge = NOW, NOW + timedelta(seconds=1)  # 08:04:59.5 and 08:05:00.5
    after, effects = reduce(
        ONLINE,
        [
            (tel(1, bytes_up=1, bytes_down=2), before_edge),
            (tel(2, bytes_up=10, bytes_down=20), before_edge),
            (tel(3, bytes_up=100, bytes_down=200), after_edge),
        ],
        DEV,
        ctx(),
    )
    assert [e for e in effects if isinstance(e, BytesUsed)] == [
        BytesUsed(datetime(2026, 9, 7, 8, 0, tzinfo=UTC), 11, 22),
        BytesUsed(datetime(2026, 9, 7, 8, 5, tzinfo=UTC), 100, 200),
    ]
    assert (after.bytes_up_total, after.bytes_down_total) == (111, 222)


def test_an_active_minute_counts_once_and_lands_in_its_hour() -> None:
    t0 = datetime(2026, 9, 7, 8, 59, 10, tzinfo=UTC)
    msgs = [
        (wire.Heartbeat(seq=i + 1, ts_ms=1), t)
        for i, t in enumerate([t0, t0 + timedelta(seconds=30), t0 + timedelta(seconds=60)])
    ]
    after, effects = reduce(ONLINE, msgs, DEV, ctx())
    assert [e for e in effects if isinstance(e, ActiveMinute)] == [
        ActiveMinute(datetime(2026, 9, 7, 8, 0, tzinfo=UTC)),
        ActiveMinute(datetime(2026, 9, 7, 9, 0, tzinfo=UTC)),
    ]
    assert after.last_active_minute == int((t0 + timedelta(seconds=60)).timestamp()) // 60


def test_apply_is_reduce_of_one_message() -> None:
    m = tel(1, battery_pct=50, bytes_up=3)
    assert apply(ONLINE, m, NOW, DEV, ctx()) == run(ONLINE, m)


# ------------------------------------------------------------------ properties
_uplinks = st.one_of(
    st.builds(
        wire.Telemetry,
        seq=st.integers(1, 80),
        ts_ms=st.integers(0, 10**6),
        battery_pct=st.none() | st.integers(0, 100),
        charging=st.none() | st.booleans(),
        temperature_c=st.none() | st.sampled_from([30.0, 65.0, 80.0]),
        bytes_up=st.integers(0, 100),
        firmware=st.none() | st.sampled_from(["1.0", "2.0"]),
    ),
    st.builds(wire.Heartbeat, seq=st.integers(1, 80), ts_ms=st.integers(0, 10**6)),
    st.builds(
        wire.Event,
        seq=st.integers(1, 80),
        ts_ms=st.integers(0, 10**6),
        type=st.sampled_from(list(wire.EventType)),
        code=st.none() | st.just("E1"),
        user=st.none() | st.just("u"),
    ),
    st.builds(wire.Status, online=st.booleans(), reason=st.none() | st.sampled_from(["lwt", "shutdown"])),
    st.builds(wire.Ack, id=st.just("c"), ts_ms=st.just(1), accepted=st.booleans()),
)
_messages = st.lists(
    st.tuples(_uplinks, st.integers(0, 900).map(lambda s: NOW + timedelta(seconds=s))), max_size=25
)


@settings(max_examples=200, deadline=None)
@given(_messages, st.integers(0, 25))
def test_where_a_batch_is_cut_never_changes_the_final_state(msgs: list, cut: int) -> None:
    """Health is settled once a batch, yet the state two batches leave equals the state one batch leaves."""
    whole, _ = reduce(DeviceState(7), msgs, DEV, ctx())
    first, _ = reduce(DeviceState(7), msgs[:cut], DEV, ctx())
    second, _ = reduce(first, msgs[cut:], DEV, ctx())
    assert second == whole


@settings(max_examples=200, deadline=None)
@given(_messages)
def test_every_seq_carrying_message_is_counted_new_or_duplicate(msgs: list) -> None:
    after, effects = reduce(DeviceState(7), msgs, DEV, ctx())
    carrying = [v for v, _ in msgs if isinstance(v, wire.Telemetry | wire.Heartbeat | wire.Event)]
    assert after.messages_total + after.duplicates_total == len(carrying)
    seqs = {v.seq for v in carrying}
    assert after.messages_total <= len(seqs)
    if seqs and max(seqs) - min(seqs) < 62:  # all inside one window: every distinct seq is new exactly once
        assert after.messages_total == len(seqs)
    assert sum(isinstance(e, PresenceChanged) for e in effects) <= len(msgs)


# ------------------------------------------------------------------ screen time (protocol 5.3.1)
def screen(seq: int, start_ms: int, use_s: int, end: wire.ScreenEnd, slim: int | None, dlim: int | None):
    session = wire.ScreenSession(start_ms, use_s, end, slim, dlim)
    return wire.Event(seq, start_ms + 1000 * use_s, wire.EventType.SCREEN_SESSION, screen=session)


def test_a_screen_session_counts_in_the_schools_local_day_and_is_long_past_its_limit() -> None:
    from dataclasses import replace
    from datetime import date

    from fleet.domain.device_state import ScreenUsed

    # 23:30 UTC on 6 Sept is 07:30 on 7 Sept in Shanghai: the session belongs to the 7th there.
    start = int(datetime(2026, 9, 6, 23, 30, tzinfo=UTC).timestamp() * 1000)
    shanghai = replace(DEV, timezone="Asia/Shanghai")
    c = ctx()
    _, effects = reduce(
        ONLINE,
        [
            (screen(10, start, 2400, wire.ScreenEnd.BREAK, 40, 180), NOW),  # exactly 40 min: not long
            (screen(11, start, 2401, wire.ScreenEnd.IDLE, 40, 180), NOW),  # one second over: long
            (screen(12, start, 9000, wire.ScreenEnd.IDLE, None, None), NOW),  # no policy: never long
            (screen(11, start, 2401, wire.ScreenEnd.IDLE, 40, 180), NOW),  # a redelivery: not again
        ],
        shanghai,
        c,
    )
    used = [e for e in effects if isinstance(e, ScreenUsed)]
    assert used == [
        ScreenUsed(date(2026, 9, 7), 2400, wire.ScreenEnd.BREAK, False, 40, 180),
        ScreenUsed(date(2026, 9, 7), 2401, wire.ScreenEnd.IDLE, True, 40, 180),
        ScreenUsed(date(2026, 9, 7), 9000, wire.ScreenEnd.IDLE, False, None, None),
    ]
    # In UTC the same session is on the 6th.
    _, effects = reduce(ONLINE, [(screen(10, start, 60, wire.ScreenEnd.IDLE, 40, 180), NOW)], DEV, c)
    assert [e.day for e in effects if isinstance(e, ScreenUsed)] == [date(2026, 9, 6)]
