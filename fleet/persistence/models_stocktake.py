"""Room stocktakes (migration 0090): one count of one room, and a line per device it expected or met."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from fleet.persistence.base import Base, UtcDateTime


class Stocktake(Base):
    """A count of one room: who started and finished it, and the network window its pre-marks came from."""

    __tablename__ = "stocktakes"
    # The report reads "the last finished counts of each room"; the console "the open counts of a school".
    __table_args__ = (
        Index("ix_stocktakes_room_finished", "room_id", "finished_at"),
        Index("ix_stocktakes_school_started", "school_id", "started_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id"))
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id"))
    started_by: Mapped[str] = mapped_column(String(120))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # Devices that reported over MQTT from the room in [window_start, window_end) were pre-marked found;
    # both null: no network pre-marks, every device counted by hand.
    window_start: Mapped[datetime | None] = mapped_column(UtcDateTime())
    window_end: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_by: Mapped[str | None] = mapped_column(String(120))
    # The figures at finish (fleet.domain.stocktake.Tally), kept so a later move does not rewrite history.
    found: Mapped[int] = mapped_column(Integer, default=0)
    missing: Mapped[int] = mapped_column(Integer, default=0)
    unexpected: Mapped[int] = mapped_column(Integer, default=0)
    moved: Mapped[int] = mapped_column(Integer, default=0)
    lost: Mapped[int] = mapped_column(Integer, default=0)


class StocktakeLine(Base):
    """One device in one count: expected here or met here, and how it was found (or not)."""

    __tablename__ = "stocktake_lines"
    __table_args__ = (UniqueConstraint("stocktake_id", "device_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    stocktake_id: Mapped[int] = mapped_column(ForeignKey("stocktakes.id"), index=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    # fleet.domain.stocktake.LineStatus: found, missing, unexpected.
    status: Mapped[str] = mapped_column(String(16))
    seen_by_network: Mapped[bool] = mapped_column(Boolean, default=False)
    scanned_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # fleet.domain.stocktake.Resolution: moved_here, marked_lost; null while the difference stands.
    resolution: Mapped[str | None] = mapped_column(String(16))
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
