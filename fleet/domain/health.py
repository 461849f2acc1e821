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
    # More than this many boots inside reboot_window_s means a boot loop or a failing battery.
    max_reboots: int = 3
    reboot_window_s: int = 3600
    # Vendor error codes that make a device faulty at once (others only degrade it).
    fault_error_codes: tuple[str, ...] = ()


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str  # battery_low, temperature_high, storage_full, error_code, repeated_reboots
    severity: str  # warning (degraded) or critical (fault)
    detail: str


RULES = ("battery_low", "temperature_high", "storage_full", "error_code", "repeated_reboots", "unexpected_offline")


def evaluate(t: Thresholds, *, battery: int | None, charging: bool | None, temperature: float | None,
             storage: float | None, error_code: str | None, boots_ms: Sequence[int], now_ms: int) -> list[Finding]:
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
    if len(recent) > t.max_reboots:
        out.append(Finding("repeated_reboots", "warning", f"{len(recent)} boots in {t.reboot_window_s // 60} min"))
    return out


def state_of(findings: Sequence[Finding]) -> str:
    if any(f.severity == "critical" for f in findings):
        return "fault"
    return "degraded" if findings else "ok"


def thresholds_from_profile(profile: Mapping[str, Any] | None) -> Thresholds:
    """Read a profile's `health` mapping (any missing key keeps its default); None -> defaults."""
    if not profile:
        return DEFAULT_THRESHOLDS
    raw = profile.get("health") or profile.get("health_thresholds") or {}
    if not isinstance(raw, Mapping):
        return DEFAULT_THRESHOLDS
    fields = {f: raw[f] for f in Thresholds.__dataclass_fields__ if f in raw}
    if "fault_error_codes" in fields:
        fields["fault_error_codes"] = tuple(str(c) for c in fields["fault_error_codes"])
    try:
        return Thresholds(**fields)
    except TypeError:
        return DEFAULT_THRESHOLDS


ProfileLoader = Callable[[str], Mapping[str, Any] | None]


def thresholds_for(profile_key: str | None, load: ProfileLoader | None = None) -> Thresholds:
    """Thresholds for a model's profile key, falling back to defaults when the profile or loader is absent."""
    if not profile_key:
        return DEFAULT_THRESHOLDS
    if load is None:
        try:  # firmware_profiles is a sibling library landing separately; absent -> defaults
            from firmware_profiles import load_profile  # type: ignore[import-not-found]
        except ImportError:
            return DEFAULT_THRESHOLDS
        load = load_profile
    try:
        profile = load(profile_key)
    except Exception:  # noqa: BLE001 - a broken or missing profile must not stop ingest
        return DEFAULT_THRESHOLDS
    if profile is not None and not isinstance(profile, Mapping):
        profile = getattr(profile, "model_dump", lambda: None)() or None
    return thresholds_from_profile(profile)
