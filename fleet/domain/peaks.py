"""Lesson-peak arithmetic: a school day's period windows, and peak rates from fixed-width usage buckets.

Pure functions over plain values; `fleet.services.peaks` feeds them the roll-up rows the ingest writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from fleet.domain.timetable import Period, periods_for_room


@dataclass(frozen=True, slots=True)
class PeriodWindow:
    """One bell period on one date, as aware datetimes in the school's time zone."""

    name: str
    start: datetime
    end: datetime

    @property
    def midpoint(self) -> datetime:
        return self.start + (self.end - self.start) / 2

    def utc_dates(self) -> frozenset[date]:
        """UTC dates the window touches (the concurrency roll-up is keyed by UTC date)."""
        end = self.end - timedelta(microseconds=1)
        return frozenset({self.start.astimezone(UTC).date(), end.astimezone(UTC).date()})


def day_windows(periods: Iterable[Period], day: date, tz: ZoneInfo) -> list[PeriodWindow]:
    """The school-wide bell periods of `day`'s weekday, in start order."""
    today = [p for p in periods_for_room(periods, None) if p.weekday == day.weekday()]
    return [
        PeriodWindow(
            p.name, datetime.combine(day, p.start, tzinfo=tz), datetime.combine(day, p.end, tzinfo=tz)
        )
        for p in sorted(today, key=lambda p: (p.start, p.name))
    ]


@dataclass(frozen=True, slots=True)
class BucketPeak:
    """The busiest bucket overlapping a window: its average rate in bytes per second, up and down."""

    bytes_per_second: float  # up + down
    up_bytes_per_second: float
    down_bytes_per_second: float
    bucket_start: datetime | None  # None when no bucket overlapped (no traffic recorded)
    # The busier direction's peak, over all overlapping buckets: what a full-duplex uplink saturates on, and
    # what the Prometheus rule school:uplink_utilisation:ratio measures.
    busier_direction_bytes_per_second: float = 0.0


def peak_rate(
    buckets: Mapping[datetime, tuple[int, int]], start: datetime, end: datetime, width_s: int, now: datetime
) -> BucketPeak:
    """Peak of (up + down) / seconds over the buckets that overlap [start, end).

    A bucket still filling at `now` is divided by the seconds elapsed in it (at least one), not by its full
    width, so a period in progress is not under-reported. Rates are bucket averages: a burst shorter than a
    bucket is spread over it.
    """
    width = timedelta(seconds=width_s)
    best = BucketPeak(0.0, 0.0, 0.0, None)
    busier = 0.0
    for bucket, (up, down) in buckets.items():
        if not (bucket < end and bucket + width > start):
            continue
        seconds = float(width_s)
        if bucket <= now < bucket + width:
            seconds = max(1.0, (now - bucket).total_seconds())
        rate = (up + down) / seconds
        busier = max(busier, up / seconds, down / seconds)
        if best.bucket_start is None or rate > best.bytes_per_second:
            best = BucketPeak(rate, up / seconds, down / seconds, bucket)
    return BucketPeak(
        best.bytes_per_second, best.up_bytes_per_second, best.down_bytes_per_second, best.bucket_start, busier
    )


def utilisation_pct(bytes_per_second: float, uplink_mbps: float) -> float | None:
    """Share of the uplink a byte rate uses, in percent; None without a configured capacity."""
    if uplink_mbps <= 0:
        return None
    return bytes_per_second * 8 / (uplink_mbps * 1_000_000) * 100
