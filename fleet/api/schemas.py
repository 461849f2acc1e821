"""API request and response bodies. Unknown fields are refused; lengths match the database columns."""

from __future__ import annotations

import re
import types
import typing
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

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


def _no_control(value: str) -> str:
    if any(ord(c) < 32 and c not in "\t" for c in value):
        raise ValueError("control characters are not allowed")
    return value


def _text(max_length: int, min_length: int = 1) -> StringConstraints:
    return StringConstraints(strip_whitespace=True, min_length=min_length, max_length=max_length)


# Text fields, stripped, without control characters, as long as their database columns.
_NO_CONTROL = AfterValidator(_no_control)
Text64 = Annotated[str, _text(64), _NO_CONTROL]
Text120 = Annotated[str, _text(120), _NO_CONTROL]
Text200 = Annotated[str, _text(200), _NO_CONTROL]
Text500 = Annotated[str, _text(500), _NO_CONTROL]
Text120OrEmpty = Annotated[str, _text(120, min_length=0), _NO_CONTROL]


# Ids are 32-bit in every backend; anything larger is a 422, not a database error.
Id = Annotated[int, Field(ge=1, le=2**31 - 1)]
Money = Annotated[Decimal, Field(ge=0, le=Decimal("9999999999.99"), max_digits=12, decimal_places=2)]
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

_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _not_a_number(value: Any) -> Any:
    # pydantic's lax mode reads 0 or "0.5" as a Unix timestamp; the contract says an ISO 8601 string.
    if isinstance(value, bool | int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("an ISO 8601 string is expected, not a number")
    return value


# Input instants: an offset is required and the value lies in the range of fleet.domain.timebounds.
Instant = Annotated[datetime, BeforeValidator(_not_a_number), AfterValidator(_instant_in)]
# Input calendar days, inside the range of fleet.domain.timebounds.
Day = Annotated[date, BeforeValidator(_not_a_number), AfterValidator(_day_in)]
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


# -- districts, schools, rooms -------------------------------------------------------------------
class DistrictIn(In):
    name: Text200


class DistrictPatch(In):
    name: Text200 | None = None


class DistrictOut(Out):
    id: int
    name: str
    created_at: UtcOut


class SchoolIn(In):
    district_id: Id
    code: Text64
    name: Text200
    uplink_mbps: Annotated[int, Field(ge=1, le=1_000_000, description="uplink capacity in Mbit/s")]
    timezone: Text64 | None = None


class SchoolPatch(In):
    code: Text64 | None = None
    name: Text200 | None = None
    uplink_mbps: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    timezone: Text64 | None = None


class SchoolOut(Out):
    id: int
    district_id: int
    code: str
    name: str
    uplink_mbps: int
    timezone: str
    created_at: UtcOut


class RoomIn(In):
    school_id: Id
    name: Text120
    kind: RoomKind
    tier: AiLabTier | None = None
    capacity: Count = 0


class RoomPatch(In):
    name: Text120 | None = None
    kind: RoomKind | None = None
    tier: AiLabTier | None = None
    capacity: Count | None = None


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
    vendor: Text120 | None = None
    model_number: Text120 | None = None
    kind: DeviceKind | None = None
    transport: Transport | None = None
    unit_price: Money | None = None
    warranty_months: Annotated[int, Field(ge=0, le=600)] | None = None
    supplier: Text200 | None = None
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
    """Placement and procurement data; the status changes only through transitions."""

    serial_number: Text120 | None = None
    asset_tag: Text64 | None = None
    model_id: Id | None = None
    school_id: Id | None = None
    room_id: Id | None = None
    order_number: Text64 | None = None
    purchase_date: Day | None = None
    unit_cost: Money | None = None
    funding_source: Text120 | None = None
    ownership: Ownership | None = None


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
    school_id: Id
    room_id: Id | None = None
    weekday: Annotated[int, Field(ge=0, le=6, description="0 = Monday ... 6 = Sunday")]
    name: Text64
    start_time: WallTime
    end_time: WallTime


class BellPeriodPatch(In):
    weekday: Annotated[int, Field(ge=0, le=6)] | None = None
    name: Text64 | None = None
    start_time: WallTime | None = None
    end_time: WallTime | None = None


class BellPeriodOut(Out):
    id: int
    school_id: int
    room_id: int | None
    weekday: int
    name: str
    start_time: WallTime
    end_time: WallTime


class CalendarIn(In):
    school_id: Id
    kind: CalendarKind
    name: Text120OrEmpty = ""
    start_date: Day
    end_date: Day


class CalendarPatch(In):
    kind: CalendarKind | None = None
    name: Text120OrEmpty | None = None
    start_date: Day | None = None
    end_date: Day | None = None


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
