"""Time-range rules that inputs cross; here the purchase-date bound shared by imports, creation and PATCH.

(The general instant/day rules are h7's; this file starts with the part the import needs, with the same names.)
"""

from __future__ import annotations

from datetime import date

# Purchase dates: nothing in a school's inventory was bought before 1990, and an order may be dated at most a
# year ahead (a delivery note for next year's budget); a later date is a typo that would skew warranty and
# budget reports for the whole district.
EARLIEST_PURCHASE = date(1990, 1, 1)


class TimeRangeError(ValueError):
    """A time value outside what the service accepts; the message says the accepted range."""


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
