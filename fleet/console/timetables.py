"""Administration: a school's timetable editor, bell periods and term calendar (list, add, edit, delete), and
its time zone, through the same services as the API (`BellPeriodService`, `CalendarService`,
`SchoolService`): same permission, scope, validation and audit. The form parses what the browser sent; the
service's refusals (end before start, overlapping periods, an unknown zone) show beside the field, translated.
"""

from __future__ import annotations

import re
from datetime import date, time
from typing import Any

from babel.dates import get_day_names
from fastapi import APIRouter, Response

from fleet.console.app import ConsoleRoute, Page, UserPage
from fleet.console.choices import choices
from fleet.domain.enums import CalendarKind
from fleet.errors import InvalidInput
from fleet.i18n import _
from fleet.i18n.labels import label
from fleet.services.common import MAX_PAGE_SIZE, require
from fleet.services.inventory import SchoolService
from fleet.services.timetable import BellPeriodService, CalendarService

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

BASE = "/admin/timetables"
# Wall-clock times as the browser's <input type="time"> sends them; an offset has no place in a bell time.
WALL_TIME = re.compile(r"^\d{2}:\d{2}(:\d{2})?$")
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Offered in the time zone field (any IANA name is accepted; these are the ones Chinese districts use).
COMMON_ZONES = ("Asia/Shanghai", "Asia/Urumqi", "Asia/Hong_Kong", "Asia/Macau", "Asia/Taipei", "UTC")
KINDS = [k.value for k in CalendarKind]


def weekday_names(locale: str) -> list[str]:
    names = get_day_names("wide", locale=locale)
    return [str(names[i]) for i in range(7)]


def _id(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) <= 10 else None


def service_errors(err: InvalidInput) -> dict[str, str]:
    """A service's refusal, field by field, in the user's language (the API answers the same in English)."""
    out: dict[str, str] = {}
    for d in err.details if isinstance(err.details, list) else []:
        if not isinstance(d, dict):
            continue
        name, code = str(d.get("field", "")), d.get("code")
        if code == "end_before_start":
            out[name] = _("Must be after the start.")
        elif code == "overlap":
            out[name] = _(
                "Overlaps period {period} ({span}) on the same day.",
                period=str(d.get("period", "")),
                span=str(d.get("span", "")),
            )
        elif name == "room_id":
            out[name] = _("That room is not in this school.")
        elif name == "timezone":
            out[name] = _("Not a known time zone. Use a name such as Asia/Shanghai.")
        elif name:
            out[name] = _("Check this value.")
    return out or {"form": _("The change was refused: {reason}", reason=err.message)}


def _wall_time(page: Page, key: str, errors: dict[str, str]) -> time | None:
    raw = page.field(key)
    if WALL_TIME.match(raw):
        try:
            return time.fromisoformat(raw)
        except ValueError:
            pass
    errors[key] = _("Enter a time as HH:MM, e.g. 08:00.")
    return None


def _day(page: Page, key: str, errors: dict[str, str]) -> date | None:
    raw = page.field(key)
    if DAY.match(raw):
        try:
            return date.fromisoformat(raw)
        except ValueError:
            pass
    errors[key] = _("Enter a date as YYYY-MM-DD.")
    return None


def period_form(page: Page) -> tuple[dict[str, Any], dict[str, str]]:
    """The bell period the form describes, and what is wrong with it before the service sees it."""
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    weekday = page.field("weekday")
    if weekday in {str(i) for i in range(7)}:
        values["weekday"] = int(weekday)
    else:
        errors["weekday"] = _("Choose a day.")
    name = page.field("name")
    if 1 <= len(name) <= 64:
        values["name"] = name
    else:
        errors["name"] = _("1 to 64 characters.")
    values["start_time"] = _wall_time(page, "start_time", errors)
    values["end_time"] = _wall_time(page, "end_time", errors)
    room = page.field("room_id")
    if room and _id(room) is None:
        errors["room_id"] = _("Choose a room of this school.")
    values["room_id"] = _id(room)
    return values, errors


def calendar_form(page: Page) -> tuple[dict[str, Any], dict[str, str]]:
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    kind = page.field("kind")
    if kind in KINDS:
        values["kind"] = kind
    else:
        errors["kind"] = _("Choose a kind.")
    name = page.field("name")
    if len(name) <= 120:
        values["name"] = name
    else:
        errors["name"] = _("At most 120 characters.")
    values["start_date"] = _day(page, "start_date", errors)
    values["end_date"] = _day(page, "end_date", errors)
    return values, errors


async def _page(
    page: Page,
    school_id: int | None,
    *,
    edit: str = "",
    active: str = "",
    errors: dict[str, str] | None = None,
    status: int = 200,
    done: str = "",
) -> Response:
    opts = await choices(page)
    if school_id is None and opts["schools"]:
        school_id = opts["schools"][0].id
    school = None
    periods: list[Any] = []
    calendar: list[Any] = []
    if school_id is not None:
        school = await SchoolService(page.db, page.principal, page.state.clock).get(school_id)
        periods = list(
            (
                await BellPeriodService(page.db, page.principal, page.state.clock).list(
                    cursor=None, limit=MAX_PAGE_SIZE, school=school_id
                )
            ).items
        )
        calendar = list(
            (
                await CalendarService(page.db, page.principal, page.state.clock).list(
                    cursor=None, limit=MAX_PAGE_SIZE, school=school_id
                )
            ).items
        )
    rooms = [r for r in opts["rooms"] if r.school_id == school_id]
    room_names = {r.id: r.name for r in rooms}
    periods.sort(
        key=lambda p: (p.room_id is not None, room_names.get(p.room_id, ""), p.weekday, p.start_time)
    )
    calendar.sort(key=lambda c: (c.start_date, c.end_date))
    days = weekday_names(page.locale)
    kind, _sep, obj = edit.partition("-")
    editing = None
    if obj.isdigit():
        pool = periods if kind == "period" else calendar if kind == "calendar" else []
        editing = next((o for o in pool if o.id == int(obj)), None)
    return page.render(
        "timetables.html",
        status=status,
        nav="admin",
        sub="timetables",
        opts=opts,
        school=school,
        periods=periods,
        calendar=calendar,
        rooms=rooms,
        room_names=room_names,
        days=days,
        day_options=list(enumerate(days)),
        room_options=[("", _("Whole school")), *((r.id, r.name) for r in rooms)],
        kind_options=[(k, label(k)) for k in KINDS],
        zones=COMMON_ZONES,
        edit=edit if editing is not None else "",
        editing=editing,
        active=active,
        errors=errors or {},
        form=page.form,
        done=done,
    )


async def _refused(
    page: Page, school_id: int, active: str, errors: dict[str, str], edit: str = ""
) -> Response:
    await page.rollback()
    return await _page(page, school_id, edit=edit, active=active, errors=errors, status=422)


@router.get(BASE)
async def timetable(page: UserPage, school: str = "", edit: str = "", done: str = "") -> Response:
    return await _page(page, _id(school), edit=edit[:40], done=done[:20])


@router.post(BASE + "/{school_id}/periods")
async def add_period(page: UserPage, school_id: int) -> Response:
    require(page.principal, BellPeriodService.write)  # a refusal before any form message
    values, errors = period_form(page)
    if not errors:
        try:
            await BellPeriodService(page.db, page.principal, page.state.clock).create(
                {"school_id": school_id, **values}
            )
        except InvalidInput as err:
            errors = service_errors(err)
    if errors:
        return await _refused(page, school_id, "period-new", errors)
    return page.redirect(f"{BASE}?school={school_id}&done=period#periods")


@router.post(BASE + "/periods/{period_id}")
async def edit_period(page: UserPage, period_id: int) -> Response:
    require(page.principal, BellPeriodService.write)
    svc = BellPeriodService(page.db, page.principal, page.state.clock)
    school_id = (await svc.get(period_id)).school_id
    values, errors = period_form(page)
    if not errors:
        try:
            await svc.update(period_id, values)
        except InvalidInput as err:
            errors = service_errors(err)
    if errors:
        edit = f"period-{period_id}"
        return await _refused(page, school_id, edit, errors, edit)
    return page.redirect(f"{BASE}?school={school_id}&done=period#periods")


@router.post(BASE + "/periods/{period_id}/delete")
async def delete_period(page: UserPage, period_id: int) -> Response:
    require(page.principal, BellPeriodService.write)
    svc = BellPeriodService(page.db, page.principal, page.state.clock)
    school_id = (await svc.get(period_id)).school_id
    await svc.delete(period_id)
    return page.redirect(f"{BASE}?school={school_id}&done=deleted#periods")


@router.post(BASE + "/{school_id}/calendar")
async def add_calendar_entry(page: UserPage, school_id: int) -> Response:
    require(page.principal, CalendarService.write)
    values, errors = calendar_form(page)
    if not errors:
        try:
            await CalendarService(page.db, page.principal, page.state.clock).create(
                {"school_id": school_id, **values}
            )
        except InvalidInput as err:
            errors = service_errors(err)
    if errors:
        return await _refused(page, school_id, "calendar-new", errors)
    return page.redirect(f"{BASE}?school={school_id}&done=calendar#calendar")


@router.post(BASE + "/calendar/{entry_id}")
async def edit_calendar_entry(page: UserPage, entry_id: int) -> Response:
    require(page.principal, CalendarService.write)
    svc = CalendarService(page.db, page.principal, page.state.clock)
    school_id = (await svc.get(entry_id)).school_id
    values, errors = calendar_form(page)
    if not errors:
        try:
            await svc.update(entry_id, values)
        except InvalidInput as err:
            errors = service_errors(err)
    if errors:
        edit = f"calendar-{entry_id}"
        return await _refused(page, school_id, edit, errors, edit)
    return page.redirect(f"{BASE}?school={school_id}&done=calendar#calendar")


@router.post(BASE + "/calendar/{entry_id}/delete")
async def delete_calendar_entry(page: UserPage, entry_id: int) -> Response:
    require(page.principal, CalendarService.write)
    svc = CalendarService(page.db, page.principal, page.state.clock)
    school_id = (await svc.get(entry_id)).school_id
    await svc.delete(entry_id)
    return page.redirect(f"{BASE}?school={school_id}&done=deleted#calendar")


@router.post(BASE + "/{school_id}/timezone")
async def set_timezone(page: UserPage, school_id: int) -> Response:
    require(page.principal, SchoolService.write)
    zone = page.field("timezone")
    errors: dict[str, str] = {}
    if not 1 <= len(zone) <= 64:
        errors["timezone"] = _("Not a known time zone. Use a name such as Asia/Shanghai.")
    else:
        try:
            await SchoolService(page.db, page.principal, page.state.clock).update(
                school_id, {"timezone": zone}
            )
        except InvalidInput as err:
            errors = service_errors(err)
    if errors:
        return await _refused(page, school_id, "timezone", errors)
    return page.redirect(f"{BASE}?school={school_id}&done=timezone")
