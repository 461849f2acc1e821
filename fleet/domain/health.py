"""Health rules: from a device's latest state and its model's thresholds to ok / degraded / fault."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Health thresholds of one device model; defaults apply when its firmware profile has none."""

    battery_low_pct: int = 20
    battery_critical_pct: int = 5
    temperature_high_c: float = 60.0
    temperature_critical_c: float = 75.0
    storage_full_pct: float = 90.0
    # This many boots inside reboot_window_s means a boot loop or a failing battery.
    reboot_count: int = 3
    reboot_window_s: int = 1800
    # Vendor error codes that make a device faulty at once (others only degrade it).
    fault_error_codes: tuple[str, ...] = ()


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str  # battery_low, temperature_high, storage_full, error_code, repeated_reboots
    severity: str  # warning (degraded) or critical (fault)
    detail: str


RULES = (
    "battery_low",
    "temperature_high",
    "storage_full",
    "error_code",
    "repeated_reboots",
    "unexpected_offline",
)


def evaluate(
    t: Thresholds,
    *,
    battery: int | None,
    charging: bool | None,
    temperature: float | None,
    storage: float | None,
    error_code: str | None,
    boots_ms: Sequence[int],
    now_ms: int,
) -> list[Finding]:
    out: list[Finding] = []
    if battery is not None and not charging:
        if battery <= t.battery_critical_pct:
            out.append(Finding("battery_low", "critical", f"battery {battery}%"))
        elif battery <= t.battery_low_pct:
            out.append(Finding("battery_low", "warning", f"battery {battery}%"))
    if temperature is not None:
        if temperature >= t.temperature_critical_c:
            out.append(Finding("temperature_high", "critical", f"{temperature:.1f} C"))
        elif temperature >= t.temperature_high_c:
            out.append(Finding("temperature_high", "warning", f"{temperature:.1f} C"))
    if storage is not None and storage >= t.storage_full_pct:
        out.append(Finding("storage_full", "warning", f"storage {storage:.0f}% used"))
    if error_code is not None:
        sev = "critical" if error_code in t.fault_error_codes else "warning"
        out.append(Finding("error_code", sev, f"error {error_code}"))
    recent = [b for b in boots_ms if now_ms - b <= t.reboot_window_s * 1000]
    if len(recent) >= t.reboot_count:
        out.append(
            Finding("repeated_reboots", "warning", f"{len(recent)} boots in {t.reboot_window_s // 60} min")
        )
    return out


def state_of(findings: Sequence[Finding]) -> str:
    if any(f.severity == "critical" for f in findings):
        return "fault"
    return "degraded" if findings else "ok"


def thresholds_from_profile(health: Any) -> Thresholds:
    """Map a firmware profile's `health` block (firmware_profiles.HealthRules or a plain mapping) to
    Thresholds.

    Absent fields keep their defaults; `battery_low_percent: null` (mains powered) and
    `storage_nearly_full_percent: null` (no user storage) switch those rules off.
    """
    if health is None:
        return DEFAULT_THRESHOLDS
    get = health.get if isinstance(health, Mapping) else (lambda k, d=None: getattr(health, k, d))
    d = DEFAULT_THRESHOLDS
    battery = get("battery_low_percent", d.battery_low_pct)
    temp = get("temperature_high_c", d.temperature_high_c)
    storage = get("storage_nearly_full_percent", d.storage_full_pct)
    battery_crit = get("battery_critical_percent", None)
    temp_crit = get("temperature_critical_c", None)
    reboots = get("repeated_reboots", None)
    r_get = reboots.get if isinstance(reboots, Mapping) else (lambda k, dflt=None: getattr(reboots, k, dflt))
    codes = get("error_codes", ()) or ()
    fault_codes = []
    for rule in codes:
        sev = rule.get("severity") if isinstance(rule, Mapping) else getattr(rule, "severity", None)
        code = rule.get("code") if isinstance(rule, Mapping) else getattr(rule, "code", None)
        if sev == "fault" and code:
            fault_codes.append(str(code))
    try:
        return Thresholds(
            battery_low_pct=-1 if battery is None else int(battery),
            # Critical battery is a quarter of the low mark (5 % for the default 20 %).
            battery_critical_pct=-1
            if battery is None
            else (int(battery_crit) if battery_crit is not None else max(1, int(battery) // 4)),
            temperature_high_c=float(temp),
            # 15 degrees over the warning mark is where SoCs throttle hard or shut down.
            temperature_critical_c=float(temp_crit) if temp_crit is not None else float(temp) + 15.0,
            storage_full_pct=101.0 if storage is None else float(storage),
            reboot_count=int(r_get("count", d.reboot_count)) if reboots is not None else d.reboot_count,
            reboot_window_s=int(r_get("window_minutes", d.reboot_window_s // 60)) * 60
            if reboots is not None
            else d.reboot_window_s,
            fault_error_codes=tuple(fault_codes),
        )
    except (TypeError, ValueError):
        return DEFAULT_THRESHOLDS


ProfileLoader = Callable[[str], Any]


def _load_from_library(profile_key: str) -> Any:
    from firmware_profiles.loader import load_profile_key

    return load_profile_key(profile_key)


def thresholds_for(profile_key: str | None, load: ProfileLoader | None = None) -> Thresholds:
    """Thresholds for a model's profile key; defaults when there is no key, no profile, or a broken one."""
    if not profile_key:
        return DEFAULT_THRESHOLDS
    try:
        profile = (load or _load_from_library)(profile_key)
    except Exception:  # noqa: BLE001 - a missing or broken profile must not stop ingest
        return DEFAULT_THRESHOLDS
    if profile is None:
        return DEFAULT_THRESHOLDS
    health = profile.get("health") if isinstance(profile, Mapping) else getattr(profile, "health", None)
    return thresholds_from_profile(health)
