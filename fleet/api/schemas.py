"""API request and response bodies. Unknown fields are refused; lengths match the database columns."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

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


def Text(max_length: int, min_length: int = 1) -> Any:
    return Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=min_length, max_length=max_length),
        AfterValidator(_no_control),
    ]


# Ids are 32-bit in every backend; anything larger is a 422, not a database error.
Id = Annotated[int, Field(ge=1, le=2**31 - 1)]
Money = Annotated[Decimal, Field(ge=0, le=Decimal("9999999999.99"), max_digits=12, decimal_places=2)]
Count = Annotated[int, Field(ge=0, le=1_000_000)]

T = TypeVar("T")


class In(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    name: Text(200)  # type: ignore[valid-type]


class DistrictPatch(In):
    name: Text(200) | None = None  # type: ignore[valid-type]


class DistrictOut(Out):
    id: int
    name: str
    created_at: datetime


class SchoolIn(In):
    district_id: Id
    code: Text(64)  # type: ignore[valid-type]
    name: Text(200)  # type: ignore[valid-type]
    uplink_mbps: Annotated[int, Field(ge=1, le=1_000_000, description="uplink capacity in Mbit/s")]
    timezone: Text(64) | None = None  # type: ignore[valid-type]


class SchoolPatch(In):
    code: Text(64) | None = None  # type: ignore[valid-type]
    name: Text(200) | None = None  # type: ignore[valid-type]
    uplink_mbps: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    timezone: Text(64) | None = None  # type: ignore[valid-type]


class SchoolOut(Out):
    id: int
    district_id: int
    code: str
    name: str
    uplink_mbps: int
    timezone: str
    created_at: datetime


class RoomIn(In):
    school_id: Id
    name: Text(120)  # type: ignore[valid-type]
    kind: RoomKind
    tier: AiLabTier | None = None
    capacity: Count = 0


class RoomPatch(In):
    name: Text(120) | None = None  # type: ignore[valid-type]
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
    created_at: datetime


# -- device models and devices -------------------------------------------------------------------
class DeviceModelIn(In):
    vendor: Text(120)  # type: ignore[valid-type]
    model_number: Text(120)  # type: ignore[valid-type]
    kind: DeviceKind
    transport: Transport
    unit_price: Money
    warranty_months: Annotated[int, Field(ge=0, le=600)]
    supplier: Text(200)  # type: ignore[valid-type]
    profile_key: Text(120) | None = None  # type: ignore[valid-type]


class DeviceModelPatch(In):
    vendor: Text(120) | None = None  # type: ignore[valid-type]
    model_number: Text(120) | None = None  # type: ignore[valid-type]
    kind: DeviceKind | None = None
    transport: Transport | None = None
    unit_price: Money | None = None
    warranty_months: Annotated[int, Field(ge=0, le=600)] | None = None
    supplier: Text(200) | None = None  # type: ignore[valid-type]
    profile_key: Text(120) | None = None  # type: ignore[valid-type]


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
    created_at: datetime


class DeviceIn(In):
    serial_number: Text(120)  # type: ignore[valid-type]
    asset_tag: Text(64)  # type: ignore[valid-type]
    model_id: Id
    school_id: Id
    room_id: Id | None = None
    status: DeviceStatus = DeviceStatus.RECEIVED
    order_number: Text(64) | None = None  # type: ignore[valid-type]
    purchase_date: date | None = None
    unit_cost: Money | None = None
    funding_source: Text(120) | None = None  # type: ignore[valid-type]
    ownership: Ownership = Ownership.OWNED


class DevicePatch(In):
    """Placement and procurement data; the status changes only through transitions."""

    serial_number: Text(120) | None = None  # type: ignore[valid-type]
    asset_tag: Text(64) | None = None  # type: ignore[valid-type]
    model_id: Id | None = None
    school_id: Id | None = None
    room_id: Id | None = None
    order_number: Text(64) | None = None  # type: ignore[valid-type]
    purchase_date: date | None = None
    unit_cost: Money | None = None
    funding_source: Text(120) | None = None  # type: ignore[valid-type]
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
    created_at: datetime
    updated_at: datetime


class TransitionIn(In):
    to: DeviceStatus
    reason: Text(500) | None = None  # type: ignore[valid-type]


class TransitionOut(Out):
    id: int
    device_id: int
    from_status: DeviceStatus | None
    to_status: DeviceStatus
    actor: str
    reason: str | None
    at: datetime


# -- timetables ----------------------------------------------------------------------------------
class BellPeriodIn(In):
    school_id: Id
    room_id: Id | None = None
    weekday: Annotated[int, Field(ge=0, le=6, description="0 = Monday ... 6 = Sunday")]
    name: Text(64)  # type: ignore[valid-type]
    start_time: time
    end_time: time


class BellPeriodPatch(In):
    weekday: Annotated[int, Field(ge=0, le=6)] | None = None
    name: Text(64) | None = None  # type: ignore[valid-type]
    start_time: time | None = None
    end_time: time | None = None


class BellPeriodOut(Out):
    id: int
    school_id: int
    room_id: int | None
    weekday: int
    name: str
    start_time: time
    end_time: time


class CalendarIn(In):
    school_id: Id
    kind: CalendarKind
    name: Text(120, min_length=0) = ""  # type: ignore[valid-type]
    start_date: date
    end_date: date


class CalendarPatch(In):
    kind: CalendarKind | None = None
    name: Text(120, min_length=0) | None = None  # type: ignore[valid-type]
    start_date: date | None = None
    end_date: date | None = None


class CalendarOut(Out):
    id: int
    school_id: int
    kind: CalendarKind
    name: str
    start_date: date
    end_date: date


class LessonStateOut(BaseModel):
    room_id: int
    at: datetime
    in_lesson: bool
    period: str | None
    reason: str
    exam_day: bool
    local_time: datetime | None


# -- tokens, audit, imports ----------------------------------------------------------------------
class TokenIn(In):
    name: Text(120)  # type: ignore[valid-type]
    role: Role
    school_ids: Annotated[list[Id], Field(max_length=1000)] = []
    district_wide: bool = False
    expires_at: datetime | None = None


class TokenOut(Out):
    id: int
    name: str
    prefix: str
    role: Role
    district_wide: bool
    school_ids: list[int]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenCreatedOut(TokenOut):
    token: str = Field(description="the secret token; shown only this once")


class AuditOut(Out):
    id: int
    at: datetime
    actor: str
    action: str
    object_type: str
    object_id: str | None
    school_id: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    summary: str | None


class ImportOut(BaseModel):
    kind: str
    created: int
    dry_run: bool
