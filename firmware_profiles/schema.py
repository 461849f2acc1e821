"""The firmware profile schema: frozen pydantic models, one per YAML block.

Profiles are an edge (files written by people), so pydantic validates them; everything downstream gets
frozen models. This module imports nothing from `fleet`: the device kinds are restated here on purpose.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

DeviceKind = Literal["terminal", "robot", "mcu_kit", "sensor"]
TransportKind = Literal["mqtt", "serial"]

# 4 GiB: the largest terminal OS image we expect; anything bigger is a typo in `size`.
MAX_ARTIFACT_BYTES = 4 * 1024**3
# Serial rates the drivers support; anything else is almost certainly a typo.
SERIAL_BAUDS = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)

_SLUG = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX4 = re.compile(r"^[0-9a-f]{4}$")
_APP_ID = re.compile(r"^[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+$")
_ERROR_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,31}$")


def _slug(value: str) -> str:
    if not _SLUG.match(value):
        raise ValueError("must be lowercase letters, digits, '-' or '_' (e.g. terminal-lt100)")
    return value


def _semver(value: str) -> str:
    if not _SEMVER.match(value):
        raise ValueError("not a semantic version (e.g. 1.2.0)")
    return value


def _sha256(value: str) -> str:
    if not _HEX64.match(value):
        raise ValueError("not a hex digest (64 lowercase hex characters)")
    return value


def _hex4(value: str) -> str:
    if not _HEX4.match(value):
        raise ValueError("not a 4-digit lowercase hex USB id")
    return value


def _relative_path(value: str) -> str:
    parts = value.split("/")
    if not value or value.startswith("/") or "\\" in value or any(p in ("", ".", "..") for p in parts):
        raise ValueError("must be a relative path inside the profiles folder (no '/', '..' or '\\' tricks)")
    return value


def _app_id(value: str) -> str:
    if not _APP_ID.match(value):
        raise ValueError("not an app id (reverse-DNS, e.g. org.labfleet.reader)")
    return value


def _error_code(value: str) -> str:
    if not _ERROR_CODE.match(value):
        raise ValueError("not an error code (UPPER_SNAKE, e.g. E_MOTOR_STALL)")
    return value


Slug = Annotated[str, AfterValidator(_slug)]
SemVer = Annotated[str, AfterValidator(_semver)]
Sha256 = Annotated[str, AfterValidator(_sha256)]
UsbHex = Annotated[str, AfterValidator(_hex4)]
RelPath = Annotated[str, AfterValidator(_relative_path)]
AppId = Annotated[str, AfterValidator(_app_id)]
ErrorCode = Annotated[str, AfterValidator(_error_code)]


class _Frozen(BaseModel):
    # Unknown keys are errors: a misspelt threshold silently ignored is a threshold that never fires.
    model_config = ConfigDict(frozen=True, extra="forbid")


class MqttTransport(_Frozen):
    # 60 s: the MQTT default; the broker declares a device gone after 1.5x this without traffic.
    keepalive_seconds: int = Field(60, ge=5, le=1200)
    qos: Literal[0, 1] = 1
    # Telemetry is ~150 bytes; 64 KiB leaves room for diagnostics bundles and still caps hostile input.
    max_payload_bytes: int = Field(4096, ge=64, le=65536)
    tls: bool = True


class UsbId(_Frozen):
    vid: UsbHex
    pid: UsbHex


class SerialTransport(_Frozen):
    protocol: Slug  # the wire protocol: robot, micropython-raw-repl, firmata
    baud: int
    usb_ids: tuple[UsbId, ...] = ()
    # Pulsing DTR resets many boards on open (Arduino bootloader); robots must not reset mid-program.
    reset_on_open: bool = False

    @field_validator("baud")
    @classmethod
    def _known_baud(cls, value: int) -> int:
        if value not in SERIAL_BAUDS:
            raise ValueError(f"unsupported baud rate {value} (one of {', '.join(map(str, SERIAL_BAUDS))})")
        return value


class FirmwareVersion(_Frozen):
    version: SemVer
    artifact: RelPath
    size: int = Field(ge=1, le=MAX_ARTIFACT_BYTES)
    sha256: Sha256
    min_hardware_revision: int = Field(1, ge=1, le=99)
    release_notes: str = Field(min_length=1, max_length=4000)


class WithdrawnVersion(_Frozen):
    """A version devices must not run any more (a security flaw, a bricking bug): the inspection report lists
    devices still on it. It need not be among `versions`: a withdrawn image is often deleted, and devices
    can still run it."""

    version: SemVer
    reason: str = Field(min_length=1, max_length=300)
    # When it was withdrawn (YYYY-MM-DD); optional, for the record.
    since: date | None = None


class ScreenTimePolicy(_Frozen):
    """Myopia-prevention defaults; schools may tighten them."""

    per_session_minutes: int = Field(ge=5, le=240)
    per_day_minutes: int = Field(ge=5, le=720)
    break_minutes: int = Field(10, ge=0, le=60)

    @field_validator("per_day_minutes")
    @classmethod
    def _day_covers_session(cls, value: int, info: ValidationInfo) -> int:
        session = info.data.get("per_session_minutes")
        if session is not None and value < session:
            raise ValueError(f"must be at least per_session_minutes ({session})")
        return value


class DeviceSettings(_Frozen):
    telemetry_interval_seconds: int = Field(ge=1, le=3600)
    screen_time: ScreenTimePolicy | None = None
    allowed_apps: tuple[AppId, ...] = ()

    @field_validator("allowed_apps")
    @classmethod
    def _unique_apps(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        dupes = sorted({a for a in value if value.count(a) > 1})
        if dupes:
            raise ValueError(f"duplicate app {dupes[0]}")
        return value


class ErrorCodeRule(_Frozen):
    code: ErrorCode
    severity: Literal["degraded", "fault"]
    description: str = Field(min_length=1, max_length=200)


class RebootRule(_Frozen):
    count: int = Field(ge=2, le=100)
    window_minutes: int = Field(ge=1, le=1440)


class HealthRules(_Frozen):
    """Thresholds: crossing a *_low/_high/_nearly_full one degrades a device, a *_critical one faults it."""

    battery_low_percent: int | None = Field(None, ge=1, le=99)  # None: mains powered
    battery_critical_percent: int | None = Field(None, ge=1, le=98)
    temperature_high_c: float = Field(ge=20, le=120)
    temperature_critical_c: float | None = Field(None, ge=21, le=150)
    storage_nearly_full_percent: int | None = Field(None, ge=50, le=100)  # None: no user storage
    error_codes: tuple[ErrorCodeRule, ...] = ()
    repeated_reboots: RebootRule

    @field_validator("battery_critical_percent")
    @classmethod
    def _critical_below_low(cls, value: int | None, info: ValidationInfo) -> int | None:
        low = info.data.get("battery_low_percent")
        if value is not None and low is None:
            raise ValueError("needs battery_low_percent too")
        if value is not None and low is not None and value >= low:
            raise ValueError(f"must be below battery_low_percent ({low})")
        return value

    @field_validator("temperature_critical_c")
    @classmethod
    def _critical_above_high(cls, value: float | None, info: ValidationInfo) -> float | None:
        high = info.data.get("temperature_high_c")
        if value is not None and high is not None and value <= high:
            raise ValueError(f"must be above temperature_high_c ({high:g})")
        return value

    @property
    def fault_error_codes(self) -> tuple[str, ...]:
        """Error codes that fault a device at once (the others degrade it)."""
        return tuple(rule.code for rule in self.error_codes if rule.severity == "fault")

    @field_validator("error_codes")
    @classmethod
    def _unique_codes(cls, value: tuple[ErrorCodeRule, ...]) -> tuple[ErrorCodeRule, ...]:
        seen: set[str] = set()
        for rule in value:
            if rule.code in seen:
                raise ValueError(f"duplicate error code {rule.code}")
            seen.add(rule.code)
        return value


class FirmwareProfile(_Frozen):
    """One device model's profile: driver and transport, firmware versions, settings, health rules."""

    model: Slug
    vendor: str = Field(min_length=1, max_length=100)
    name: str = Field(min_length=1, max_length=200)
    kind: DeviceKind
    driver: Slug
    transport: TransportKind
    # Exactly the block named by `transport` must be present; validate_default makes a missing one an error.
    mqtt: MqttTransport | None = Field(None, validate_default=True)
    serial: SerialTransport | None = Field(None, validate_default=True)
    versions: tuple[FirmwareVersion, ...] = Field(min_length=1)
    target_version: SemVer
    withdrawn: tuple[WithdrawnVersion, ...] = ()
    settings: DeviceSettings
    health: HealthRules

    @field_validator("mqtt", "serial")
    @classmethod
    def _transport_block(cls, value: object, info: ValidationInfo) -> object:
        transport = info.data.get("transport")
        if transport is None:
            return value
        if info.field_name == transport and value is None:
            raise ValueError(f"required for transport {transport}")
        if info.field_name != transport and value is not None:
            raise ValueError(f"not allowed with transport {transport}")
        return value

    @field_validator("versions")
    @classmethod
    def _unique_versions(cls, value: tuple[FirmwareVersion, ...]) -> tuple[FirmwareVersion, ...]:
        seen: dict[str, int] = {}
        for i, v in enumerate(value):
            if v.version in seen:
                raise ValueError(f"version {v.version} appears at [{seen[v.version]}] and [{i}]")
            seen[v.version] = i
        return value

    @field_validator("target_version")
    @classmethod
    def _target_is_a_version(cls, value: str, info: ValidationInfo) -> str:
        versions = info.data.get("versions")
        if versions is not None and value not in {v.version for v in versions}:
            known = ", ".join(v.version for v in versions)
            raise ValueError(f"{value} is not one of the versions ({known})")
        return value

    @field_validator("withdrawn")
    @classmethod
    def _withdrawn_once_and_not_the_target(
        cls, value: tuple[WithdrawnVersion, ...], info: ValidationInfo
    ) -> tuple[WithdrawnVersion, ...]:
        seen: dict[str, int] = {}
        for i, w in enumerate(value):
            if w.version in seen:
                raise ValueError(f"version {w.version} is withdrawn twice, at [{seen[w.version]}] and [{i}]")
            seen[w.version] = i
        target = info.data.get("target_version")
        if target is not None and target in seen:
            raise ValueError(
                f"the target version {target} is withdrawn; set target_version to a version devices may run"
            )
        return value

    @field_validator("settings")
    @classmethod
    def _terminals_have_screen_time(cls, value: DeviceSettings, info: ValidationInfo) -> DeviceSettings:
        if info.data.get("kind") == "terminal" and value.screen_time is None:
            raise ValueError("screen_time is required for terminals (myopia-prevention defaults)")
        return value

    def version(self, version: str) -> FirmwareVersion:
        """The named version; KeyError if the profile does not list it."""
        for v in self.versions:
            if v.version == version:
                return v
        raise KeyError(version)

    @property
    def target(self) -> FirmwareVersion:
        return self.version(self.target_version)

    @property
    def withdrawn_versions(self) -> dict[str, WithdrawnVersion]:
        return {w.version: w for w in self.withdrawn}
