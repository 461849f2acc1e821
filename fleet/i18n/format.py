"""Numbers, money, dates and times for the reader's locale (Babel), times in the school's own time zone."""

from __future__ import annotations

import functools
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from babel import Locale
from babel import dates as bdates
from babel import numbers as bnumbers
from babel.numbers import NumberPattern

from fleet.i18n import current_locale

# The district's budgets are kept in yuan; one currency for the whole product.
CURRENCY = "CNY"


def _loc(locale: str | None) -> str:
    return locale or current_locale()


# What bnumbers.format_decimal and format_percent do on every call, done once: parse the locale and the
# pattern (a live cockpit formats thousands of numbers a second; the parsing was ~80% of each call).
@functools.lru_cache(maxsize=64)
def _locale(name: str) -> Locale:
    return Locale.parse(name)


@functools.lru_cache(maxsize=64)
def _pattern(fmt: str) -> NumberPattern:
    return bnumbers.parse_pattern(fmt)


def number(value: float | Decimal, locale: str | None = None, *, digits: int | None = None) -> str:
    loc = _locale(_loc(locale))
    if digits is not None:
        pattern = _pattern(f"#,##0.{'0' * digits}" if digits else "#,##0")
    else:
        pattern = _pattern(loc.decimal_formats[None].pattern)
    return pattern.apply(value, loc)


def percent(value: float, locale: str | None = None) -> str:
    return _pattern("#,##0.0%").apply(value, _locale(_loc(locale)))


def money(value: float | Decimal, locale: str | None = None) -> str:
    return bnumbers.format_currency(value, CURRENCY, locale=_loc(locale))


def day(value: date, locale: str | None = None, *, fmt: str = "medium") -> str:
    return bdates.format_date(value, format=fmt, locale=_loc(locale))


def moment(
    value: datetime, tz: str | ZoneInfo | None = None, locale: str | None = None, *, fmt: str = "medium"
) -> str:
    """A stored (UTC) instant shown in the school's zone (or UTC when none is given)."""
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    return bdates.format_datetime(value, format=fmt, tzinfo=zone, locale=_loc(locale))
