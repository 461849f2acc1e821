"""Tables of the MQTT device plane (migration 0010): enrollment, credentials, latest state, roll-ups,
dead letters, presence, alerts and commands. Imported by fleet.persistence.models so Base sees them."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

# Roll-up bucket widths: a rule of the device-state reducer, which assigns messages to buckets.
from fleet.domain.device_state import ACTIVE_BUCKET_SECONDS, BYTES_BUCKET_SECONDS
from fleet.persistence.base import Base

__all__ = ["ACTIVE_BUCKET_SECONDS", "BYTES_BUCKET_SECONDS"]


class ClaimToken(Base):
    __tablename__ = "claim_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id"), index=True)
    # Public lookup key (the characters after "ct_"); the secret part is stored only as a hash.
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(128))
    label: Mapped[str] = mapped_column(String(120), default="")
    max_uses: Mapped[int] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    # When true, a serial number missing from the inventory is registered as `received` at this school.
    allow_unknown: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DeviceCredential(Base):
    __tablename__ = "device_credentials"
    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), unique=True)
    # MQTT username = client id = the topic's device level (protocol section 2).
    username: Mapped[str] = mapped_column(String(64), unique=True)
    # The topic's school level at enrollment; ACLs are built from (school_code, username).
    school_code: Mapped[str] = mapped_column(String(64))
    # mosquitto's PBKDF2-SHA512 format ("$7$..."), so the same hash serves mosquitto's password file and
    # the embedded broker's plugin. The plaintext is shown once at enrollment or rotation, never stored.
    password_hash: Mapped[str] = mapped_column(String(255))
    claim_token_id: Mapped[int | None] = mapped_column(ForeignKey("claim_tokens.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # CONNECTs refused because the credentials are revoked (migration 0080), counted by the broker's auth
    # check in memory and added here at most once a minute (fleet/runtime/refused_connects.py); the time is
    # that of the write, so within a minute of the last attempt.
    refused_connects: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_refused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Rotation over MQTT (migration 0085, fleet/services/credential_rotation.py): the command that carries the
    # new password, the grace period chosen when the rotation started, and once the command is sent the new
    # password's hash (never the password) and when the old one stops at the latest. Both passwords open a
    # session until the device acks or the grace period ends; then pending_hash becomes password_hash.
    rotation_command_id: Mapped[int | None] = mapped_column(Integer)
    rotation_grace_s: Mapped[int | None] = mapped_column(Integer)
    pending_hash: Mapped[str | None] = mapped_column(String(255))
    pending_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DeviceState(Base):
    """The latest known state of one device; written by ingest, guarded by sequence number."""

    __tablename__ = "device_state"
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Highest sequence number seen, and a bitmask of the 62 below it (bit i = seq last_seq-1-i seen), so a
    # redelivered or reordered message is recognised across workers.
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    seq_mask: Mapped[int] = mapped_column(BigInteger, default=0)
    last_ts_ms: Mapped[int | None] = mapped_column(BigInteger)
    state_seq: Mapped[int] = mapped_column(
        BigInteger, default=0
    )  # seq of the telemetry the fields below are from
    battery_pct: Mapped[int | None] = mapped_column(Integer)
    charging: Mapped[bool | None] = mapped_column(Boolean)
    temperature_c: Mapped[float | None] = mapped_column(Float)
    storage_used_pct: Mapped[float | None] = mapped_column(Float)
    firmware_version: Mapped[str | None] = mapped_column(String(64))
    app: Mapped[str | None] = mapped_column(String(128))
    rssi_dbm: Mapped[int | None] = mapped_column(Integer)
    bytes_up_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_down_total: Mapped[int] = mapped_column(BigInteger, default=0)
    messages_total: Mapped[int] = mapped_column(BigInteger, default=0)
    duplicates_total: Mapped[int] = mapped_column(BigInteger, default=0)
    # Epoch minute of the last activity counted in usage_active, so each minute counts once.
    last_active_minute: Mapped[int] = mapped_column(BigInteger, default=0)
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    online_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    health: Mapped[str] = mapped_column(String(16), default="unknown")
    health_reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # Device timestamps (ms) of recent boot events, newest last, at most 10: the repeated-reboots rule.
    recent_boots: Mapped[list[Any]] = mapped_column(JSON, default=list)
    last_error_code: Mapped[str | None] = mapped_column(String(64))
    # HMAC pseudonym of the signed-in account (never the account itself); null when nobody is signed in.
    session_pseudonym: Mapped[str | None] = mapped_column(String(64))
    session_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class UsageBytes(Base):
    """Bytes up and down per school and room per BYTES_BUCKET_SECONDS bucket (bandwidth against uplink)."""

    __tablename__ = "usage_bytes"
    __table_args__ = (UniqueConstraint("school_id", "room_id", "bucket_start"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id"))
    # 0 = devices not placed in a room (a real NULL would defeat the unique upsert key).
    room_id: Mapped[int] = mapped_column(Integer, default=0)
    bucket_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    bytes_up: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_down: Mapped[int] = mapped_column(BigInteger, default=0)


class UsageActive(Base):
    """Active minutes per device per ACTIVE_BUCKET_SECONDS bucket (utilisation)."""

    __tablename__ = "usage_active"
    __table_args__ = (
        UniqueConstraint("device_id", "bucket_start"),
        # Reports (migration 0030): covers "active minutes per device over a date range, for some schools", so
        # a year of 10,000 devices' roll-ups (~5.5M rows) is read from the index in device order, with no
        # table lookups or sort whatever order ingest wrote the rows in (SQLite otherwise fetches every row:
        # ~3x slower).
        Index("ix_usage_active_report", "device_id", "bucket_start", "school_id", "active_minutes"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    school_id: Mapped[int] = mapped_column(Integer, index=True)
    room_id: Mapped[int] = mapped_column(Integer, default=0)
    bucket_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    active_minutes: Mapped[int] = mapped_column(Integer, default=0)


# The screen-time report's covering indexes (migration 0070), in the order the report groups by.
SCREEN_TERMINAL_COLUMNS = (
    "device_id",
    "school_id",
    "room_id",
    "day",
    "use_seconds",
    "sessions",
    "long_sessions",
    "breaks",
    "limit_locks",
    "unmanaged_sessions",
    "longest_seconds",
    "session_limit_min",
    "daily_limit_min",
)
SCREEN_DAY_COLUMNS = (
    "day",
    "school_id",
    "use_seconds",
    "sessions",
    "long_sessions",
    "breaks",
    "limit_locks",
    "unmanaged_sessions",
    "daily_limit_min",
)


class UsageScreen(Base):
    """Screen time per device per local day, from `screen_session` events (migration 0070): the screen-time
    report for myopia prevention. One row per terminal and school day (~1.9M a school year for 10,000)."""

    __tablename__ = "usage_screen"
    __table_args__ = (
        UniqueConstraint("device_id", "day"),
        # The report reads a school year of rows twice, grouped per terminal and per day. Each read is covered
        # by its index, in group order: without them SQLite fetched every row from the table (or sorted all
        # of them), ~4x the CPU over the benchmark's 1.65M rows (benchmarks/reports.py).
        Index("ix_usage_screen_report", *SCREEN_TERMINAL_COLUMNS),
        Index("ix_usage_screen_day", *SCREEN_DAY_COLUMNS),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    school_id: Mapped[int] = mapped_column(Integer)
    # 0 = a device not placed in a room (as in usage_bytes).
    room_id: Mapped[int] = mapped_column(Integer, default=0)
    # The school's local day the sessions started in (protocol 5.3.1).
    day: Mapped[date] = mapped_column(Date)
    use_seconds: Mapped[int] = mapped_column(Integer, default=0)
    sessions: Mapped[int] = mapped_column(Integer, default=0)
    long_sessions: Mapped[int] = mapped_column(Integer, default=0)  # longer than the policy in force allowed
    breaks: Mapped[int] = mapped_column(Integer, default=0)  # sessions the policy ended with a break
    limit_locks: Mapped[int] = mapped_column(Integer, default=0)  # sessions the daily limit ended
    unmanaged_sessions: Mapped[int] = mapped_column(Integer, default=0)  # sessions with no policy in force
    longest_seconds: Mapped[int] = mapped_column(Integer, default=0)
    # The policy's limits last reported that day; None: no session of the day had a policy.
    session_limit_min: Mapped[int | None] = mapped_column(Integer)
    daily_limit_min: Mapped[int | None] = mapped_column(Integer)


class UsageConcurrency(Base):
    """Peak devices online per school per lesson period per day (concurrency at lesson peaks)."""

    __tablename__ = "usage_concurrency"
    __table_args__ = (UniqueConstraint("school_id", "day", "period"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id"))
    day: Mapped[date] = mapped_column(Date, index=True)
    period: Mapped[str] = mapped_column(String(64))
    peak_online: Mapped[int] = mapped_column(Integer, default=0)
    peak_sessions: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DeadLetter(Base):
    """Refused MQTT messages kept for inspection; bounded (oldest pruned) by the ingest writer."""

    __tablename__ = "dead_letters"
    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    reason: Mapped[str] = mapped_column(String(32), index=True)
    topic: Mapped[str] = mapped_column(String(256))
    identity: Mapped[str | None] = mapped_column(String(64))
    # Raw payload, at most the protocol's 4 KiB; login user fields are scrubbed before storing.
    payload: Mapped[bytes | None] = mapped_column(LargeBinary)
    payload_size: Mapped[int] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(String(300), default="")


class PresenceTransition(Base):
    __tablename__ = "presence_transitions"
    __table_args__ = (Index("ix_presence_transitions_device_at", "device_id", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    school_id: Mapped[int] = mapped_column(Integer, index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    online: Mapped[bool] = mapped_column(Boolean)
    # For offline: whether the timetable expected it (no lesson in the room). Null for online.
    expected: Mapped[bool | None] = mapped_column(Boolean)
    # status, lwt, shutdown, heartbeat_timeout, message
    cause: Mapped[str] = mapped_column(String(32))


class Alert(Base):
    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_school_status", "school_id", "status"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    school_id: Mapped[int] = mapped_column(Integer)
    room_id: Mapped[int | None] = mapped_column(Integer, index=True)
    rule: Mapped[str] = mapped_column(String(48))
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))  # open, acknowledged, resolved
    # "<device_id>:<rule>" while unresolved, NULL once resolved: a unique key that deduplicates open alerts
    # on SQLite and PostgreSQL alike (NULLs never collide).
    dedup_key: Mapped[str | None] = mapped_column(String(80), unique=True)
    detail: Mapped[str] = mapped_column(String(300), default="")
    occurrences: Mapped[int] = mapped_column(Integer, default=1)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acknowledged_by: Mapped[str | None] = mapped_column(String(120))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_by: Mapped[str | None] = mapped_column(String(120))


class DeviceCommand(Base):
    __tablename__ = "device_commands"
    __table_args__ = (Index("ix_device_commands_device_status", "device_id", "status"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    correlation_id: Mapped[str] = mapped_column(String(64), unique=True)
    # Commands sent together (to a room or school) share a batch id; progress is reported per batch.
    batch_id: Mapped[str] = mapped_column(String(64), index=True)
    target_kind: Mapped[str] = mapped_column(String(16))  # device, room, school
    target_id: Mapped[int] = mapped_column(Integer)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    school_id: Mapped[int] = mapped_column(Integer, index=True)
    name: Mapped[str] = mapped_column(String(32))
    args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # queued, sent, acked, succeeded, failed, rejected, timed_out, expired, cancelled
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # TTL while the device is offline
    timeout_seconds: Mapped[int] = mapped_column(Integer)  # from sent to result
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ack_reason: Mapped[str | None] = mapped_column(String(64))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result_code: Mapped[str | None] = mapped_column(String(64))
    result_detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
