"""Numbers, money, dates and times for the reader's locale (Babel), times in the school's own time zone."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from babel import dates as bdates
from babel import numbers as bnumbers

from fleet.i18n import current_locale

# The district's budgets are kept in yuan; one currency for the whole product.
CURRENCY = "CNY"


def _loc(locale: str | None) -> str:
    return locale or current_locale()


def number(value: float | Decimal, locale: str | None = None, *, digits: int | None = None) -> str:
    if digits is not None:
        return bnumbers.format_decimal(
            value, format=f"#,##0.{'0' * digits}" if digits else "#,##0", locale=_loc(locale)
        )
    return bnumbers.format_decimal(value, locale=_loc(locale))


def percent(value: float, locale: str | None = None) -> str:
    return bnumbers.format_percent(value, format="#,##0.0%", locale=_loc(locale))


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
