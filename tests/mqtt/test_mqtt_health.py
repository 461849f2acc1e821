"""Health rules from firmware profiles, with defaults when a profile is absent."""

from __future__ import annotations

from fleet.domain import health
from fleet.domain.health import DEFAULT_THRESHOLDS, evaluate, state_of, thresholds_for

NOW = 1_788_764_400_000


def test_thresholds_come_from_the_real_terminal_profile() -> None:
    t = thresholds_for("terminal-lt100")
    assert (t.battery_low_pct, t.temperature_high_c, t.storage_full_pct) == (15, 50.0, 90.0)
    assert (t.reboot_count, t.reboot_window_s) == (3, 1800)
    assert "E_DISPLAY" in t.fault_error_codes and "E_WIFI_AUTH" not in t.fault_error_codes


def test_absent_or_broken_profile_falls_back_to_defaults() -> None:
    assert thresholds_for(None) is DEFAULT_THRESHOLDS
    assert thresholds_for("no-such-model") is DEFAULT_THRESHOLDS

    def broken(_: str) -> object:
        raise OSError("disk gone")

    assert thresholds_for("terminal-lt100", broken) is DEFAULT_THRESHOLDS


def test_rules_give_ok_degraded_and_fault() -> None:
    t = thresholds_for("terminal-lt100")
    ok = evaluate(
        t, battery=80, charging=False, temperature=30, storage=10, error_code=None, boots_ms=[], now_ms=NOW
    )
    assert state_of(ok) == "ok"
    low = evaluate(
        t, battery=10, charging=False, temperature=30, storage=10, error_code=None, boots_ms=[], now_ms=NOW
    )
    assert [f.rule for f in low] == ["battery_low"] and state_of(low) == "degraded"
    charging = evaluate(
        t, battery=10, charging=True, temperature=30, storage=10, error_code=None, boots_ms=[], now_ms=NOW
    )
    assert charging == []
    fault = evaluate(
        t,
        battery=80,
        charging=False,
        temperature=30,
        storage=95,
        error_code="E_DISPLAY",
        boots_ms=[NOW - 60_000 * k for k in range(3)],
        now_ms=NOW,
    )
    assert {f.rule for f in fault} == {"storage_full", "error_code", "repeated_reboots"}
    assert state_of(fault) == "fault"
    old_boots = evaluate(
        t,
        battery=None,
        charging=None,
        temperature=None,
        storage=None,
        error_code=None,
        boots_ms=[NOW - 3_600_000 * k for k in range(1, 5)],
        now_ms=NOW,
    )
    assert old_boots == []


def test_mains_powered_profile_switches_battery_rule_off() -> None:
    t = health.thresholds_from_profile(
        {
            "battery_low_percent": None,
            "temperature_high_c": 40,
            "repeated_reboots": {"count": 5, "window_minutes": 10},
        }
    )
    assert (
        evaluate(
            t,
            battery=1,
            charging=False,
            temperature=None,
            storage=None,
            error_code=None,
            boots_ms=[],
            now_ms=NOW,
        )
        == []
    )
