"""District simulation spec: YAML, validated with pydantic at the edge, expanded into plain frozen values.

Errors name the file and the key path (`rollout-2027.yaml: school_groups.0.rooms.1.devices.robot: ...`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from simulators.district.labs import hardware_serial

# The MQTT identity rule of docs/protocol-mqtt.md section 2: serials and school codes are topic levels.
IDENTITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
# A spec larger than this is not a district but a mistake (10,000 terminals is the 2027 plan; 10x headroom).
MAX_DEVICES = 100_000
# One spec file is a few kilobytes; refuse anything that looks like it is not a spec at all.
MAX_SPEC_BYTES = 1024 * 1024

SCENARIOS = (
    "bell-storm",
    "lesson-peak",
    "exam-day",
    "wifi-flap",
    "broker-restart",
    "bad-firmware",
    "malformed",
    "battery-drain",
    "screen-overuse",
)
ROOM_KINDS = ("smart_classroom", "digital_lab", "ai_lab")
TIERS = ("basic_experience", "subject_integration", "advanced_research")
DEVICE_KINDS = ("terminal", "robot", "mcu_kit", "sensor")


_OWN_PATH = re.compile(r"^[A-Za-z_][\w.\-]*: ")


class SpecError(ValueError):
    """A spec file that cannot be used; the message names the file and the key path."""


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Code = Annotated[str, Field(pattern=IDENTITY.pattern)]
Share = Annotated[float, Field(ge=0.0, le=1.0)]


class PeriodIn(_M):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    start: time
    end: time

    @model_validator(mode="after")
    def _order(self) -> PeriodIn:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class TimetableIn(_M):
    weekdays: list[Annotated[int, Field(ge=0, le=6)]] = [0, 1, 2, 3, 4]
    periods: Annotated[list[PeriodIn], Field(min_length=1, max_length=16)]

    @model_validator(mode="after")
    def _no_overlap(self) -> TimetableIn:
        ps = sorted(self.periods, key=lambda p: p.start)
        for a, b in itertools.pairwise(ps):
            if b.start < a.end:
                raise ValueError(f"periods {a.name!r} and {b.name!r} overlap")
        return self


class ModelIn(_M):
    vendor: Annotated[str, Field(min_length=1, max_length=120)]
    model_number: Annotated[str, Field(min_length=1, max_length=120)]
    kind: Literal["terminal", "robot", "mcu_kit", "sensor"]
    transport: Literal["mqtt", "serial"]
    unit_price: Annotated[float, Field(ge=0, le=1_000_000)] = 0
    warranty_months: Annotated[int, Field(ge=0, le=600)] = 24
    supplier: Annotated[str, Field(min_length=1, max_length=200)] = "Simulated Supplier"
    profile_key: str | None = None
    firmware: Annotated[str, Field(min_length=1, max_length=64)] = "1.0.0"


class BurstIn(_M):
    # Chance per terminal per lesson that it pulls a content pack (a video, a model) at the lesson start.
    probability: Share = 0.1
    bytes_down: Annotated[int, Field(ge=0, le=10**10)] = 20_000_000


class ScreenPolicyIn(_M):
    """A screen-time policy (protocol 6.1 `set_policy`), as a technician set it before the run."""

    session_minutes: Annotated[int, Field(ge=1, le=480)] = 40
    daily_minutes: Annotated[int, Field(ge=1, le=1440)] = 180
    break_minutes: Annotated[int, Field(ge=0, le=120)] = 10

    @model_validator(mode="after")
    def _order(self) -> ScreenPolicyIn:
        if self.session_minutes > self.daily_minutes:
            raise ValueError("session_minutes cannot exceed daily_minutes")
        return self


class TrafficIn(_M):
    telemetry_interval_s: Annotated[int, Field(ge=5, le=3600)] = 60
    heartbeat_interval_s: Annotated[int, Field(ge=5, le=3600)] = 60
    bytes_up_per_lesson_minute: Annotated[int, Field(ge=0, le=10**9)] = 150_000
    bytes_down_per_lesson_minute: Annotated[int, Field(ge=0, le=10**9)] = 1_500_000
    idle_bytes_per_minute: Annotated[int, Field(ge=0, le=10**9)] = 5_000
    burst: BurstIn = BurstIn()
    # Terminals wake this long before the bell, spread uniformly (simulated seconds).
    wake_jitter_s: Annotated[int, Field(ge=0, le=3600)] = 300
    # Share of terminals that are used in a lesson (absences, broken screens, teacher's choice).
    attendance: Share = 0.95
    battery_drain_pct_per_hour: Annotated[float, Field(ge=0, le=100)] = 8.0
    # Terminals stay up this long after the last bell, then shut down cleanly for the night.
    after_school_s: Annotated[int, Field(ge=0, le=6 * 3600)] = 1800
    # Screen time (protocol 5.3.1): the policy most terminals got before the run (a lesson's 40 minutes, then
    # a 10-minute break; 180 minutes a day, about four lessons), and the share that got it; the others have
    # none, as terminals enrolled after the technician's last set_policy.
    screen_policy: ScreenPolicyIn = ScreenPolicyIn()
    screen_policy_share: Share = 0.95


class RoomIn(_M):
    kind: Literal["smart_classroom", "digital_lab", "ai_lab"]
    count: Annotated[int, Field(ge=1, le=1000)] = 1
    name: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    tier: Literal["basic_experience", "subject_integration", "advanced_research"] | None = None
    # device model key -> count per room
    devices: dict[str, Annotated[int, Field(ge=0, le=500)]] = {}

    @model_validator(mode="after")
    def _tier(self) -> RoomIn:
        if self.tier is not None and self.kind != "ai_lab":
            raise ValueError("only an ai_lab has a tier")
        return self


class SchoolIn(_M):
    code: Code
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    uplink_mbps: Annotated[int, Field(ge=1, le=1_000_000)]
    timezone: str = "UTC"
    timetable: str = "standard"
    rooms: Annotated[list[RoomIn], Field(min_length=1)]

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v


class SchoolGroupIn(_M):
    """N schools from one template: codes are code_prefix + a zero-padded number."""

    count: Annotated[int, Field(ge=1, le=5000)]
    code_prefix: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9-]{0,40}$")]
    name_prefix: str = "School"
    uplink_mbps: Annotated[int, Field(ge=1, le=1_000_000)]
    timezone: str = "UTC"
    timetable: str = "standard"
    rooms: Annotated[list[RoomIn], Field(min_length=1)]

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return SchoolIn._tz(v)


class VerdictIn(_M):
    min_enroll_success: Share = 1.0
    max_lost: Annotated[int, Field(ge=0)] = 0
    max_duplicated: Annotated[int, Field(ge=0)] = 0
    max_p99_connect_to_online_s: Annotated[float, Field(gt=0)] = 2.0
    max_p99_publish_to_state_s: Annotated[float, Field(gt=0)] = 1.0
    # Peak reported bandwidth over the school's uplink; above 1.0 the uplink is the bottleneck.
    max_uplink_utilisation: Annotated[float, Field(gt=0)] = 1.0
    # Share of terminals that must be connected at the end of the storm.
    min_connected_share: Share = 1.0


class ScenarioParamsIn(_M):
    storm_window_s: Annotated[float, Field(gt=0, le=600)] = (
        10.0  # bell-storm: real seconds for all to connect
    )
    peak_telemetry_interval_s: Annotated[int, Field(ge=5, le=3600)] = 30  # lesson-peak
    flap_room: str | None = None  # wifi-flap: "SCHOOL/Room name"; default the first smart classroom
    flap_at_s: Annotated[float, Field(ge=0)] = 600  # simulated seconds after the first bell
    flap_down_s: Annotated[float, Field(gt=0, le=3600)] = 30  # simulated seconds the room is dark
    restart_at_s: Annotated[float, Field(ge=0)] = (
        900  # broker-restart: simulated seconds after the first bell
    )
    bad_firmware_version: Annotated[str, Field(min_length=1, max_length=64)] = "9.9.9-bad"
    bad_firmware_share: Share = 0.1
    bad_firmware_at_s: Annotated[float, Field(ge=0)] = 300
    malformed_share: Share = 0.05
    battery_drain_share: Share = 0.1
    # battery-drain: the affected terminals lose this many percent per simulated hour and never charge.
    battery_drain_pct_per_hour: Annotated[float, Field(gt=0, le=10_000)] = 400.0
    # screen-overuse: this share of terminals keeps its policy but a teacher lifts every break and the daily
    # lock by hand, so they report sessions longer than the policy allows and days over the daily limit.
    screen_overuse_share: Share = 0.05


class EdgeIn(_M):
    # Lab rooms whose robots and kits run on real ptys behind a real edge agent. Each pty device is a serial
    # session and a broker connection on this machine; the rest of the labs are declared and counted only.
    labs: Annotated[int, Field(ge=0, le=50)] = 2
    # Simulated seconds between health samples of a lab device (the agent publishes each as telemetry);
    # well inside the 180 s heartbeat timeout.
    health_interval_s: Annotated[float, Field(ge=5, le=600)] = 60.0


class SpecIn(_M):
    version: Literal[1] = 1
    district: Annotated[str, Field(min_length=1, max_length=200)]
    # Simulated start, in the schools' local time; the date picks the weekday.
    start: datetime
    speed: Annotated[float, Field(gt=0, le=3600)] = 60.0
    timetables: dict[str, TimetableIn]
    models: dict[str, ModelIn]
    traffic: dict[str, TrafficIn] = {}
    schools: list[SchoolIn] = []
    school_groups: list[SchoolGroupIn] = []
    verdict: VerdictIn = VerdictIn()
    scenario: ScenarioParamsIn = ScenarioParamsIn()
    edge: EdgeIn = EdgeIn()

    @model_validator(mode="after")
    def _refs(self) -> SpecIn:
        if not self.schools and not self.school_groups:
            raise ValueError("needs at least one of schools, school_groups")
        lists: tuple[tuple[str, Sequence[SchoolIn | SchoolGroupIn]], ...] = (
            ("schools", self.schools),
            ("school_groups", self.school_groups),
        )
        for where, items in lists:
            for i, s in enumerate(items):
                if s.timetable not in self.timetables:
                    raise ValueError(f"{where}.{i}.timetable: unknown timetable {s.timetable!r}")
                for j, r in enumerate(s.rooms):
                    for key in r.devices:
                        if key not in self.models:
                            raise ValueError(
                                f"{where}.{i}.rooms.{j}.devices.{key}: unknown model key {key!r}"
                            )
        for key in self.traffic:
            if key not in DEVICE_KINDS:
                raise ValueError(f"traffic.{key}: not a device kind ({', '.join(DEVICE_KINDS)})")
        return self


# ---------------------------------------------------------------- expanded, plain values


@dataclass(frozen=True, slots=True)
class Period:
    name: str
    start: time
    end: time


@dataclass(frozen=True, slots=True)
class Timetable:
    key: str
    weekdays: tuple[int, ...]
    periods: tuple[Period, ...]

    def periods_on(self, weekday: int) -> tuple[Period, ...]:
        return self.periods if weekday in self.weekdays else ()


@dataclass(frozen=True, slots=True)
class Model:
    key: str
    vendor: str
    model_number: str
    kind: str
    transport: str
    unit_price: float
    warranty_months: int
    supplier: str
    profile_key: str | None
    firmware: str


@dataclass(frozen=True, slots=True)
class Device:
    serial: str
    asset_tag: str
    model: str  # model key
    kind: str
    transport: str
    # The spec's name for the device; lab devices on ptys derive their simulated hardware (and so the identity
    # their driver reads back, which is their serial) from it.
    name: str = ""


@dataclass(frozen=True, slots=True)
class Room:
    name: str
    kind: str
    tier: str | None
    devices: tuple[Device, ...]


@dataclass(frozen=True, slots=True)
class School:
    code: str
    name: str
    uplink_mbps: int
    timezone: str
    timetable: str
    rooms: tuple[Room, ...]


@dataclass(frozen=True, slots=True)
class District:
    name: str
    source: str
    start: datetime  # naive: local time of each school
    speed: float
    timetables: dict[str, Timetable]
    models: dict[str, Model]
    traffic: dict[str, TrafficIn]
    schools: tuple[School, ...]
    verdict: VerdictIn
    scenario: ScenarioParamsIn
    edge: EdgeIn = field(default_factory=EdgeIn)

    def devices(self) -> list[tuple[School, Room, Device]]:
        return [(s, r, d) for s in self.schools for r in s.rooms for d in r.devices]

    def count(self, kind: str | None = None, transport: str | None = None) -> int:
        return sum(
            1
            for _, _, d in self.devices()
            if (kind is None or d.kind == kind) and (transport is None or d.transport == transport)
        )

    def traffic_for(self, kind: str) -> TrafficIn:
        return self.traffic.get(kind) or TrafficIn()

    def first_bell(self) -> datetime:
        """The first lesson start on the start date at or after the start time (naive local)."""
        day = self.start.date()
        starts = [
            datetime.combine(day, p.start)
            for s in self.schools
            for p in self.timetables[s.timetable].periods_on(day.weekday())
        ]
        later = [t for t in starts if t >= self.start]
        return min(later) if later else (min(starts) if starts else self.start + timedelta(minutes=5))


_ROOM_ABBR = {"smart_classroom": "C", "digital_lab": "L", "ai_lab": "A"}
_ROOM_NAME = {"smart_classroom": "Classroom", "digital_lab": "Digital lab", "ai_lab": "AI lab"}
_KIND_ABBR = {"terminal": "T", "robot": "R", "mcu_kit": "K", "sensor": "S"}


def _expand_school(
    code: str, name: str, uplink: int, tz: str, timetable: str, rooms: list[RoomIn], models: dict[str, Model]
) -> School:
    out: list[Room] = []
    counters: dict[str, int] = {}
    for r in rooms:
        for _ in range(r.count):
            n = counters[r.kind] = counters.get(r.kind, 0) + 1
            room_name = f"{r.name or _ROOM_NAME[r.kind]} {n}"
            tag = f"{_ROOM_ABBR[r.kind]}{n:02d}"
            devs = []
            for key, cnt in r.devices.items():
                m = models[key]
                for i in range(1, cnt + 1):
                    label = f"{code}-{tag}-{_KIND_ABBR[m.kind]}{key[:1].upper()}{i:02d}"
                    serial = hardware_serial(m.kind, label) if m.transport == "serial" else label
                    devs.append(Device(serial, f"A-{label}", key, m.kind, m.transport, label))
            out.append(Room(room_name, r.kind, r.tier, tuple(devs)))
    return School(code, name, uplink, tz, timetable, tuple(out))


def parse_spec(data: Any, source: str = "<spec>") -> District:
    """Validate plain data (from YAML) and expand it; raise SpecError naming source and key path."""
    try:
        spec = SpecIn.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"])
            msg = e["msg"].removeprefix("Value error, ")
            # Cross-reference checks run on the whole spec and name their own key path in the message.
            lines.append(f"{source}: {loc}: {msg}" if loc or not _OWN_PATH.match(msg) else f"{source}: {msg}")
        raise SpecError("\n".join(lines)) from None
    models = {
        k: Model(
            k,
            m.vendor,
            m.model_number,
            m.kind,
            m.transport,
            m.unit_price,
            m.warranty_months,
            m.supplier,
            m.profile_key,
            m.firmware,
        )
        for k, m in spec.models.items()
    }
    schools: list[School] = []
    for s in spec.schools:
        schools.append(
            _expand_school(
                s.code,
                s.name or f"School {s.code}",
                s.uplink_mbps,
                s.timezone,
                s.timetable,
                list(s.rooms),
                models,
            )
        )
    for g in spec.school_groups:
        width = max(3, len(str(g.count)))
        for i in range(1, g.count + 1):
            code = f"{g.code_prefix}{i:0{width}d}"
            schools.append(
                _expand_school(
                    code,
                    f"{g.name_prefix} {code}",
                    g.uplink_mbps,
                    g.timezone,
                    g.timetable,
                    list(g.rooms),
                    models,
                )
            )
    codes = [s.code for s in schools]
    dupes = sorted({c for c in codes if codes.count(c) > 1}) if len(set(codes)) != len(codes) else []
    if dupes:
        raise SpecError(f"{source}: schools: school code(s) repeat: {', '.join(dupes[:5])}")
    n = sum(len(r.devices) for s in schools for r in s.rooms)
    if n > MAX_DEVICES:
        raise SpecError(f"{source}: schools: {n} devices is over the {MAX_DEVICES} limit")
    for school in schools:
        for room in school.rooms:
            for device in room.devices:
                if not IDENTITY.match(device.serial):
                    raise SpecError(
                        f"{source}: schools.{school.code}: generated serial {device.serial!r} is not a legal "
                        "MQTT identity (shorten the school code or model key)"
                    )
    timetables = {
        k: Timetable(
            k,
            tuple(sorted(set(t.weekdays))),
            tuple(Period(p.name, p.start, p.end) for p in sorted(t.periods, key=lambda p: p.start)),
        )
        for k, t in spec.timetables.items()
    }
    start = spec.start.replace(tzinfo=None)
    return District(
        spec.district,
        source,
        start,
        spec.speed,
        timetables,
        models,
        dict(spec.traffic),
        tuple(schools),
        spec.verdict,
        spec.scenario,
        spec.edge,
    )


def load_spec(path: str | Path) -> District:
    """Read and validate a spec file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise SpecError(f"{p}: cannot read: {err.strerror or err}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"{p}: larger than {MAX_SPEC_BYTES} bytes")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise SpecError(f"{p}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{p}: (top level): expected a mapping")
    return parse_spec(data, p.name)


def parse_scenarios(text: str) -> tuple[str, ...]:
    """`bell-storm,lesson-peak` -> a tuple; unknown names are an error listing the known ones."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    bad = [n for n in names if n not in SCENARIOS]
    if bad:
        raise SpecError(f"unknown scenario(s) {', '.join(bad)}; choose from {', '.join(SCENARIOS)}")
    return names
