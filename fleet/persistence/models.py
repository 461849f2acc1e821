"""SQLAlchemy 2 models. Alembic migrations must match these (tests/test_migrations.py checks)."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    Time,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from fleet.persistence.base import Base, UtcDateTime

Money = Numeric(12, 2)


class District(Base):
    __tablename__ = "districts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class School(Base):
    __tablename__ = "schools"
    id: Mapped[int] = mapped_column(primary_key=True)
    district_id: Mapped[int] = mapped_column(ForeignKey("districts.id"), index=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    uplink_mbps: Mapped[int] = mapped_column(Integer)
    timezone: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Room(Base):
    __tablename__ = "rooms"
    __table_args__ = (UniqueConstraint("school_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(32))
    tier: Mapped[str | None] = mapped_column(String(32))
    # The room's planned device quota (seats), used by coverage reports.
    capacity: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class DeviceModel(Base):
    __tablename__ = "device_models"
    __table_args__ = (UniqueConstraint("vendor", "model_number"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    vendor: Mapped[str] = mapped_column(String(120))
    model_number: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(32))
    transport: Mapped[str] = mapped_column(String(16))
    unit_price: Mapped[Decimal] = mapped_column(Money)
    warranty_months: Mapped[int] = mapped_column(Integer)
    supplier: Mapped[str] = mapped_column(String(200))
    profile_key: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (
        UniqueConstraint("vendor", "serial_number"),
        Index("ix_devices_school_status", "school_id", "status"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    # Copied from the model so "serial number unique per vendor" is a plain constraint.
    vendor: Mapped[str] = mapped_column(String(120))
    serial_number: Mapped[str] = mapped_column(String(120))
    asset_tag: Mapped[str] = mapped_column(String(64), unique=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("device_models.id"), index=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id"), index=True)
    room_id: Mapped[int | None] = mapped_column(ForeignKey("rooms.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    order_number: Mapped[str | None] = mapped_column(String(64), index=True)
    purchase_date: Mapped[date | None] = mapped_column(Date)
    unit_cost: Mapped[Decimal | None] = mapped_column(Money)
    funding_source: Mapped[str | None] = mapped_column(String(120))
    ownership: Mapped[str] = mapped_column(String(16), default="owned")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())

    model: Mapped[DeviceModel] = relationship(lazy="raise")


class DeviceTransition(Base):
    __tablename__ = "device_transitions"
    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(120))
    reason: Mapped[str | None] = mapped_column(String(500))
    at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class BellPeriod(Base):
    __tablename__ = "bell_periods"
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id"), index=True)
    # Null: the school's bell schedule. Set: a room-specific override.
    room_id: Mapped[int | None] = mapped_column(ForeignKey("rooms.id"), index=True)
    weekday: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    start_time: Mapped[time] = mapped_column(Time)
    end_time: Mapped[time] = mapped_column(Time)


class CalendarDay(Base):
    __tablename__ = "calendar_entries"
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(120), default="")
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date] = mapped_column(Date)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    # Public lookup key (first characters of the token); the secret part is stored only as a hash.
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    district_wide: Mapped[bool] = mapped_column(Boolean, default=False)
    school_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # When a request last authenticated with it (migration 0080), to the minute: written at most once a
    # minute per token, so it costs one UPDATE a minute for a token in constant use. Null: never used.
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class AuditEntry(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(120), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    object_type: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str | None] = mapped_column(String(64))
    school_id: Mapped[int | None] = mapped_column(Integer, index=True)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    summary: Mapped[str | None] = mapped_column(Text)
    # The hash chain (fleet.domain.auditchain): position, the previous record's hash, this record's hash.
    seq: Mapped[int] = mapped_column(Integer, unique=True, index=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64), nullable=False)


class PseudonymKeyEpoch(Base):
    """Each switch of the pseudonym key an ingest worker started with (migration 0080), the key known by a
    fingerprint, never itself: the inspection report says when the key last changed."""

    __tablename__ = "pseudonym_key_epochs"
    id: Mapped[int] = mapped_column(primary_key=True)
    # HMAC-SHA256 of a fixed label under the key (fleet.domain.privacy.key_fingerprint): names the key
    # without revealing it. Not unique: switching back to an earlier key is a change too.
    fingerprint: Mapped[str] = mapped_column(String(64))
    first_seen_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AuditChainHead(Base):
    """The one row appends lock (fleet.services.audit): the last record's seq and hash."""

    __tablename__ = "audit_chain"
    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[str] = mapped_column(String(64))
