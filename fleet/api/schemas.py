"""API request and response bodies. Unknown fields are refused; lengths match the database columns."""

from __future__ import annotations

import re
import types
import typing
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from fleet.domain import timebounds
from fleet.domain.enums import (
    AiLabTier,
    CalendarKind,
    DeviceKind,
    DeviceStatus,
    Ownership,
    Role,
    RoomKind,
    Transport,
)


def _no_control(value: Any) -> Any:
    # On the raw value, before stripping: what the documented pattern refuses is exactly what is refused.
    if isinstance(value, str) and any(ord(c) < 32 and c != "\t" for c in value):
        raise ValueError("control characters are not allowed")
    return value


def _text(max_length: int, min_length: int = 1) -> StringConstraints:
    return StringConstraints(strip_whitespace=True, min_length=min_length, max_length=max_length)


# No control character but the tab; a required text also holds at least one character that is not a space
# (values are stripped of surrounding spaces before their length is checked).
_PLAIN = r"[^\x00-\x08\x0a-\x1f]"
TEXT_PATTERN = rf"^{_PLAIN}*[^\s\x00-\x1f]{_PLAIN}*$"
TEXT_OR_EMPTY_PATTERN = rf"^{_PLAIN}*$"


def _text_doc(max_length: int, min_length: int = 1) -> WithJsonSchema:
    pattern = TEXT_PATTERN if min_length else TEXT_OR_EMPTY_PATTERN
    doc = {"type": "string", "minLength": min_length, "maxLength": max_length, "pattern": pattern}
    return WithJsonSchema(doc)


# Text fields, stripped, without control characters, as long as their database columns.
_NO_CONTROL = BeforeValidator(_no_control)
Text64 = Annotated[str, _text(64), _NO_CONTROL, _text_doc(64)]
Text120 = Annotated[str, _text(120), _NO_CONTROL, _text_doc(120)]
Text200 = Annotated[str, _text(200), _NO_CONTROL, _text_doc(200)]
Text500 = Annotated[str, _text(500), _NO_CONTROL, _text_doc(500)]
Text120OrEmpty = Annotated[str, _text(120, min_length=0), _NO_CONTROL, _text_doc(120, min_length=0)]


# An IANA time zone key, as zoneinfo knows it on this host: the list is the contract.
Zone = Annotated[
    str,
    StringConstraints(max_length=64),
    WithJsonSchema({"type": "string", "enum": sorted(available_timezones()), "examples": ["Asia/Shanghai"]}),
]

# Ids are 32-bit in every backend; anything larger is a 422, not a database error.
Id = Annotated[int, Field(ge=1, le=2**31 - 1)]
# An amount in yuan: a number or a decimal string, 0 to 9,999,999,999.99, in whole fen (two decimals at most).
MONEY_PATTERN = r"^[0-9]{1,10}(\.[0-9]{1,2})?$"
_MONEY = re.compile(MONEY_PATTERN)


def _money_text(value: Any) -> Any:
    if isinstance(value, str) and not _MONEY.fullmatch(value):
        raise ValueError("an amount is digits with at most two decimals, e.g. 3299.00")
    return value


Money = Annotated[
    Decimal,
    BeforeValidator(_money_text),
    Field(ge=0, le=Decimal("9999999999.99"), max_digits=12, decimal_places=2),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 9999999999.99, "multipleOf": 0.01},
                {"type": "string", "pattern": MONEY_PATTERN},
            ]
        }
    ),
]
Count = Annotated[int, Field(ge=0, le=1_000_000)]


def _instant_in(value: datetime, info: ValidationInfo) -> datetime:
    return timebounds.instant(value, info.field_name or "time")


def _day_in(value: date, info: ValidationInfo) -> date:
    return timebounds.day(value, info.field_name or "date")


def _wall_in(value: time, info: ValidationInfo) -> time:
    return timebounds.wall_time(value, info.field_name or "time")


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive values for DateTime(timezone=True) columns; every stored instant is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _aware_iso(value: datetime) -> str:
    return _aware(value).isoformat()


_WALL_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?$"
_WALL_SCHEMA = {
    "type": "string",
    "pattern": _WALL_PATTERN,
    "description": "local wall-clock time in the school's time zone, without an offset (HH:MM[:SS])",
    "examples": ["08:00:00"],
}

# How an input day or instant is written, stated exactly in the OpenAPI document and checked before parsing:
# a year from 1970 to 2199 (fleet.domain.timebounds), RFC 3339 with seconds, and for instants an offset.
_YEARS = r"(19[7-9][0-9]|2[01][0-9]{2})"
_DATE = rf"{_YEARS}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
DAY_PATTERN = rf"^{_DATE}$"
_CLOCK = r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
_OFFSET = r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
INSTANT_PATTERN = rf"^{_DATE}T{_CLOCK}{_OFFSET}$"
_DAY_RE = re.compile(DAY_PATTERN)
_INSTANT_RE = re.compile(INSTANT_PATTERN)


def _written_day(value: Any) -> Any:
    # pydantic's lax mode would also read 0 or "0.5" as a Unix timestamp, or a datetime as a day.
    if not isinstance(value, str) or not _DAY_RE.fullmatch(value):
        raise ValueError("a day is written YYYY-MM-DD, from 1970-01-01 to 2199-12-31")
    return value


def _written_instant(value: Any) -> Any:
    if not isinstance(value, str) or not _INSTANT_RE.fullmatch(value):
        raise ValueError(
            "a time is written YYYY-MM-DDTHH:MM:SS with an offset (Z or +08:00), "
            "e.g. 2026-09-07T08:00:00+08:00, from 1970 to 2199"
        )
    return value


# Input instants: an offset is required and the date as written lies in the range of fleet.domain.timebounds.
Instant = Annotated[
    datetime,
    BeforeValidator(_written_instant),
    AfterValidator(_instant_in),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": INSTANT_PATTERN}),
]
# Input calendar days, inside the range of fleet.domain.timebounds.
Day = Annotated[
    date,
    BeforeValidator(_written_day),
    AfterValidator(_day_in),
    WithJsonSchema({"type": "string", "format": "date", "pattern": DAY_PATTERN}),
]
# A bell or window time is the school's local wall-clock time: refused with an offset, documented as such.
WallTime = Annotated[
    time,
    AfterValidator(_wall_in),
    PlainSerializer(lambda v: v.isoformat(), return_type=str, when_used="json"),
    WithJsonSchema(_WALL_SCHEMA),
]
# Output instants: always with an offset (stored instants are UTC), whatever the backend returned.
UtcOut = Annotated[
    datetime,
    BeforeValidator(lambda v: _aware(v) if isinstance(v, datetime) else v),
    PlainSerializer(_aware_iso, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]

T = TypeVar("T")


def _admits(annotation: Any, kind: type) -> bool:
    """Whether a field's annotation accepts `kind` (looking through Optional, Annotated, lists)."""
    if annotation is kind or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _admits(typing.get_args(annotation)[0], kind)
    if origin in (typing.Union, types.UnionType, typing.Literal):
        return any(_admits(a, kind) for a in typing.get_args(annotation))
    return False


class In(BaseModel):
    """A request body: unknown fields refused, and booleans and numbers never stand in for each other."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _bool_is_not_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode stores `true` as 1 and `1` as true; a client sending either has a bug.
        field = cls.model_fields.get(info.field_name or "")
        if field is None:
            return value
        items = value if isinstance(value, list) else [value]
        wants_bool = _admits(field.annotation, bool)
        for item in items:
            if isinstance(item, bool) and not wants_bool:
                raise ValueError("a boolean is not accepted here")
            if wants_bool and not isinstance(item, bool) and isinstance(item, (int, float)):
                raise ValueError("must be true or false, not a number")
        return value


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    total: int
    next_cursor: str | None
    limit: int


class ErrorOut(BaseModel):
    error: str
    message: str
    details: Any = None


def keep() -> Any:
    """A PATCH field its column cannot hold empty: absent keeps the stored value; null is refused (422)."""
    return Field(default=None, json_schema_extra=_no_default)


def _no_default(schema: dict[str, Any]) -> None:
    # The absent value is not a value the field takes: no "default": null in the contract.
    schema.pop("default", None)


# -- districts, schools, rooms -------------------------------------------------------------------
class DistrictIn(In):
    name: Text200


class DistrictPatch(In):
    name: Text200 = keep()


class DistrictOut(Out):
    id: int
    name: str
    created_at: UtcOut


class SchoolIn(In):
    district_id: Id
    code: Text64
    name: Text200
    uplink_mbps: Annotated[int, Field(ge=1, le=1_000_000, description="uplink capacity in Mbit/s")]
    timezone: Zone | None = None


class SchoolPatch(In):
    code: Text64 = keep()
    name: Text200 = keep()
    uplink_mbps: Annotated[int, Field(ge=1, le=1_000_000)] = keep()
    timezone: Zone = keep()


class SchoolOut(Out):
    id: int
    district_id: int
    code: str
    name: str
    uplink_mbps: int
    timezone: str
    created_at: UtcOut


class RoomIn(In):
    """An ai_lab room has a tier (basic_experience, subject_integration, advanced_research); no other kind
    has one."""

    school_id: Id
    name: Text120
    kind: RoomKind
    tier: AiLabTier | None = None
    capacity: Count = 0


class RoomPatch(In):
    """As on creation, an ai_lab room has a tier and no other kind has one (checked on the result)."""

    name: Text120 = keep()
    kind: RoomKind = keep()
    tier: AiLabTier | None = None
    capacity: Count = keep()


class RoomOut(Out):
    id: int
    school_id: int
    name: str
    kind: RoomKind
    tier: AiLabTier | None
    capacity: int
    created_at: UtcOut


# -- device models and devices -------------------------------------------------------------------
class DeviceModelIn(In):
    vendor: Text120
    model_number: Text120
    kind: DeviceKind
    transport: Transport
    unit_price: Money
    warranty_months: Annotated[int, Field(ge=0, le=600)]
    supplier: Text200
    profile_key: Text120 | None = None


class DeviceModelPatch(In):
    vendor: Text120 = keep()
    model_number: Text120 = keep()
    kind: DeviceKind = keep()
    transport: Transport = keep()
    unit_price: Money = keep()
    warranty_months: Annotated[int, Field(ge=0, le=600)] = keep()
    supplier: Text200 = keep()
    profile_key: Text120 | None = None


class DeviceModelOut(Out):
    id: int
    vendor: str
    model_number: str
    kind: DeviceKind
    transport: Transport
    unit_price: Decimal
    warranty_months: int
    supplier: str
    profile_key: str | None
    created_at: UtcOut


class DeviceIn(In):
    """purchase_date lies in [1990-01-01, today + 1 year]; room_id is a room of school_id."""

    serial_number: Text120
    asset_tag: Text64
    model_id: Id
    school_id: Id
    room_id: Id | None = None
    status: DeviceStatus = DeviceStatus.RECEIVED
    order_number: Text64 | None = None
    purchase_date: Day | None = None
    unit_cost: Money | None = None
    funding_source: Text120 | None = None
    ownership: Ownership = Ownership.OWNED


class DevicePatch(In):
    """Placement and procurement data; the status changes only through transitions. purchase_date lies in
    [1990-01-01, today + 1 year]; room_id is a room of the device's school."""

    serial_number: Text120 = keep()
    asset_tag: Text64 = keep()
    model_id: Id = keep()
    school_id: Id = keep()
    room_id: Id | None = None
    order_number: Text64 | None = None
    purchase_date: Day | None = None
    unit_cost: Money | None = None
    funding_source: Text120 | None = None
    ownership: Ownership = keep()


class DeviceOut(Out):
    id: int
    vendor: str
    serial_number: str
    asset_tag: str
    model_id: int
    school_id: int
    room_id: int | None
    status: DeviceStatus
    order_number: str | None
    purchase_date: date | None
    unit_cost: Decimal | None
    funding_source: str | None
    ownership: Ownership
    created_at: UtcOut
    updated_at: UtcOut


class TransitionIn(In):
    to: DeviceStatus
    reason: Text500 | None = None


class TransitionOut(Out):
    id: int
    device_id: int
    from_status: DeviceStatus | None
    to_status: DeviceStatus
    actor: str
    reason: str | None
    at: UtcOut


# -- timetables ----------------------------------------------------------------------------------
class BellPeriodIn(In):
    """A period ends after it starts (end_time > start_time), in the school's local wall-clock time."""

    school_id: Id
    room_id: Id | None = None
    weekday: Annotated[int, Field(ge=0, le=6, description="0 = Monday ... 6 = Sunday")]
    name: Text64
    start_time: WallTime
    end_time: WallTime


class BellPeriodPatch(In):
    """A period ends after it starts (end_time > start_time), checked on the result."""

    weekday: Annotated[int, Field(ge=0, le=6)] = keep()
    name: Text64 = keep()
    start_time: WallTime = keep()
    end_time: WallTime = keep()


class BellPeriodOut(Out):
    id: int
    school_id: int
    room_id: int | None
    weekday: int
    name: str
    start_time: WallTime
    end_time: WallTime


class CalendarIn(In):
    """An entry ends on or after the day it starts (end_date >= start_date)."""

    school_id: Id
    kind: CalendarKind
    name: Text120OrEmpty = ""
    start_date: Day
    end_date: Day


class CalendarPatch(In):
    """An entry ends on or after the day it starts (end_date >= start_date), checked on the result."""

    kind: CalendarKind = keep()
    name: Text120OrEmpty = keep()
    start_date: Day = keep()
    end_date: Day = keep()


class CalendarOut(Out):
    id: int
    school_id: int
    kind: CalendarKind
    name: str
    start_date: date
    end_date: date


class LessonStateOut(BaseModel):
    room_id: int
    at: UtcOut
    in_lesson: bool
    period: str | None
    reason: str
    exam_day: bool
    local_time: UtcOut | None


# -- tokens, audit, imports ----------------------------------------------------------------------
class TokenIn(In):
    name: Text120
    role: Role
    school_ids: Annotated[list[Id], Field(max_length=1000)] = []
    district_wide: bool = False
    expires_at: Instant | None = None


class TokenOut(Out):
    id: int
    name: str
    prefix: str
    role: Role
    district_wide: bool
    school_ids: list[int]
    created_at: UtcOut
    expires_at: UtcOut | None
    revoked_at: UtcOut | None
    last_used_at: UtcOut | None = Field(None, description="last request made with it, to the minute")


class TokenCreatedOut(TokenOut):
    token: str = Field(description="the secret token; shown only this once")


class AuditOut(Out):
    id: int
    at: UtcOut
    actor: str
    action: str
    object_type: str
    object_id: str | None
    school_id: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    summary: str | None
    seq: int = Field(description="position in the audit hash chain")
    prev_hash: str = Field(description="sha256 of the record before (64 zeros for the first)")
    hash: str = Field(description="sha256 of this record (see `labfleet audit verify`)")


class AuditBreakOut(BaseModel):
    seq: int
    id: int | None
    reason: str = Field(description="edited | missing | reordered | prev_mismatch | tail_missing | duplicate")
    detail: str


class AuditVerifyOut(BaseModel):
    ok: bool
    checked: int
    last_seq: int
    last_hash: str
    break_: AuditBreakOut | None = Field(alias="break")

    model_config = ConfigDict(populate_by_name=True)


class ImportOut(BaseModel):
    kind: str
    created: int
    dry_run: bool
