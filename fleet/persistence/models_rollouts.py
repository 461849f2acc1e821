"""Tables of firmware rollouts (migration 0020): artifacts, rollouts, their groups and devices, the per-device
timeline, and per-school update policy (maintenance windows, download caps). Imported by
fleet.persistence.models so Base sees them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from fleet.persistence.base import Base, UtcDateTime


class FirmwareArtifact(Base):
    """One image in the content-addressed store (var/artifacts/<sha[:2]>/<sha>); the row is its catalogue."""

    __tablename__ = "firmware_artifacts"
    __table_args__ = (UniqueConstraint("profile_key", "version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    profile_key: Mapped[str] = mapped_column(String(120), index=True)
    version: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(255))
    # "none", "hmac-sha256" or "ed25519"; the signature is over the sha256 digest, hex-encoded.
    signature_alg: Mapped[str] = mapped_column(String(16), default="none")
    signature: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Rollout(Base):
    __tablename__ = "rollouts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    model_id: Mapped[int] = mapped_column(ForeignKey("device_models.id"), index=True)
    profile_key: Mapped[str] = mapped_column(String(120))
    target_version: Mapped[str] = mapped_column(String(64))
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    # Targets. Empty list = no restriction on that axis; devices enrolled later that match are picked up.
    school_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    room_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    from_versions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # {"canary": {"size": 5} | {"percent": 2}, "strategy": "per_school" | "percent", "percents": [25, 50,
    # 100]}
    group_plan: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Fractions of a group's devices: success starts the next group, errors pause the rollout.
    success_threshold: Mapped[float] = mapped_column(Float)
    error_threshold: Mapped[float] = mapped_column(Float)
    max_attempts: Mapped[int] = mapped_column(Integer)
    # Timetable policy: download_mode outside_lessons | between_periods; install_mode outside_lessons |
    # after_school.
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), index=True)
    state_reason: Mapped[str | None] = mapped_column(String(300))
    current_group: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    paused_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class RolloutGroup(Base):
    __tablename__ = "rollout_groups"
    __table_args__ = (UniqueConstraint("rollout_id", "position"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(120))
    # canary | school | percent | rest
    kind: Mapped[str] = mapped_column(String(16))
    school_id: Mapped[int | None] = mapped_column(Integer)
    percent: Mapped[float | None] = mapped_column(Float)
    # pending | running | succeeded | halted | cancelled
    state: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class RolloutDevice(Base):
    __tablename__ = "rollout_devices"
    __table_args__ = (
        UniqueConstraint("rollout_id", "device_id"),
        Index("ix_rollout_devices_rollout_state", "rollout_id", "state"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"))
    group_id: Mapped[int] = mapped_column(ForeignKey("rollout_groups.id"), index=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    school_id: Mapped[int] = mapped_column(Integer, index=True)
    room_id: Mapped[int | None] = mapped_column(Integer)
    # pending | scheduled | downloading | installing | succeeded | failed | rolled_back | cancelled
    state: Mapped[str] = mapped_column(String(16))
    from_version: Mapped[str | None] = mapped_column(String(64))
    to_version: Mapped[str] = mapped_column(String(64))
    # Version the device last reported (after a rollback: its old version).
    reported_version: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(String(300))
    correlation_id: Mapped[str | None] = mapped_column(String(64), index=True)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    scheduled_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    download_started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    install_started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class RolloutDeviceEvent(Base):
    """The per-device timeline: every command sent and every progress report, as it happened."""

    __tablename__ = "rollout_device_events"
    __table_args__ = (Index("ix_rollout_device_events_device_at", "device_id", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), index=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    # e.g. scheduled, download_started, download_resumed, downloaded, install_started, rebooting, succeeded,
    # failed, rolled_back, cancelled
    event: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(String(300))


class SchoolUpdatePolicy(Base):
    """Per-school maintenance windows and download caps; a school without a row uses the settings'
    defaults."""

    __tablename__ = "school_update_policies"
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id"), primary_key=True)
    # [{"weekday": 0-6 (Monday = 0), "start": "HH:MM", "end": "HH:MM"}] in the school's timezone;
    # empty = any time outside lessons.
    windows: Mapped[list[Any]] = mapped_column(JSON, default=list)
    max_concurrent_downloads: Mapped[int | None] = mapped_column(Integer)
    # Share of the school's uplink updates may use, as a fraction (0.2 = 20%).
    uplink_share: Mapped[float | None] = mapped_column(Float)
    # An absolute cap in bytes per second; the lower of this and the uplink share applies.
    max_bytes_per_second: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
