"""The time-range rules every input crosses: instants, calendar days, purchase dates and wall-clock times.

One place, so a route, a CSV import and the CLI refuse the same values with the same words, and nothing
downstream (UTC conversion, date arithmetic in reports, timetable comparisons) can overflow or compare an
aware value with a naive one.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time

# Instants (audit filters, lesson queries, token expiry): the service's data starts in 1970 (epoch clocks) and
# 2200 leaves any planning horizon room while keeping `+ timedelta` and `astimezone` far from year 1 and 9999.
EARLIEST_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_INSTANT = datetime(2200, 1, 1, tzinfo=UTC)

# Calendar days (term calendars, report periods): the same span as instants.
EARLIEST_DAY = EARLIEST_INSTANT.date()
LATEST_DAY = date(2199, 12, 31)

# Purchase dates: nothing in a school's inventory was bought before 1990, and an order may be dated at most a
# year ahead (a delivery note for next year's budget); a later date is a typo that would skew warranty and
# budget reports for the whole district.
EARLIEST_PURCHASE = date(1990, 1, 1)


class TimeRangeError(ValueError):
    """A time value outside what the service accepts; the message says the accepted range."""


def instant(value: datetime, what: str = "time") -> datetime:
    """An aware datetime whose date, as written, lies in [EARLIEST_DAY, LATEST_DAY]; returned in UTC.

    The written date (not the UTC one) is the rule, so the OpenAPI document can state it exactly as a pattern;
    either way the UTC value stays within a day of the range, far from year 1 and 9999.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise TimeRangeError(f"{what} needs a time zone offset, e.g. 2026-09-07T08:00:00+08:00")
    if not EARLIEST_DAY <= value.date() <= LATEST_DAY:
        raise TimeRangeError(f"{what} must be between {EARLIEST_DAY}T00:00:00 and {LATEST_DAY}T23:59:59")
    return value.astimezone(UTC)


def day(value: date, what: str = "date") -> date:
    """A calendar day inside [EARLIEST_DAY, LATEST_DAY]."""
    if not EARLIEST_DAY <= value <= LATEST_DAY:
        raise TimeRangeError(f"{what} must be between {EARLIEST_DAY} and {LATEST_DAY}")
    return value


def latest_purchase(today: date) -> date:
    """The same day a year later (28 February for a 29 February)."""
    try:
        return today.replace(year=today.year + 1)
    except ValueError:
        return today.replace(year=today.year + 1, day=28)


def purchase_date(value: date, today: date) -> date:
    """A purchase date inside [1990-01-01, today + 1 year]."""
    latest = latest_purchase(today)
    if not EARLIEST_PURCHASE <= value <= latest:
        raise TimeRangeError(f"purchase_date must be between {EARLIEST_PURCHASE} and {latest} (a year ahead)")
    return value


def wall_time(value: time, what: str = "time") -> time:
    """A local wall-clock time (a bell, a maintenance window): the school's zone applies, so no offset."""
    if value.tzinfo is not None:
        raise TimeRangeError(
            f"{what} is a local wall-clock time in the school's time zone; give it without an offset "
            "(08:00:00)"
        )
    return value
