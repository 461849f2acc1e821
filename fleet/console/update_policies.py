"""Administration: a school's update policy (maintenance windows and download caps for rollouts), viewed by
everyone who sees the school and edited by whoever may manage rollouts, through `fleet.services.update_policy`
as the API's PUT is: same permission, scope, validation and audit."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from fleet.console.app import ConsoleRoute, Page, UserPage
from fleet.console.choices import choices
from fleet.console.timetables import WALL_TIME, weekday_names
from fleet.domain.permissions import Permission
from fleet.domain.rollouts import parse_windows
from fleet.errors import InvalidInput
from fleet.i18n import _
from fleet.services import update_policy
from fleet.services.common import require

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

BASE = "/admin/update-policies"
# The API takes at most 50 windows; the form offers the current ones plus a few empty rows to fill.
MAX_WINDOWS = 50
SPARE_ROWS = 3
# The form speaks Mbit/s (as a school's uplink does); the service stores bytes per second.
BYTES_PER_MBIT = 125_000
MAX_MBPS = 800_000  # the API's 10**11 bytes/s cap, rounded down to whole Mbit/s
MAX_SLOTS = 10_000


def _window_rows(page: Page, errors: dict[str, str]) -> list[dict[str, Any]]:
    """The filled window rows of the form; a row left empty is dropped, a half-filled one is refused."""
    windows: list[dict[str, Any]] = []
    for i in range(MAX_WINDOWS):
        day, start, end = (page.field(f"w{i}-{k}") for k in ("weekday", "start", "end"))
        if not (day or start or end):
            continue
        row_errors = len(errors)
        if day not in {str(d) for d in range(7)}:
            errors[f"w{i}-weekday"] = _("Choose a day.")
        for key, value in (("start", start), ("end", end)):
            if not WALL_TIME.match(value):
                errors[f"w{i}-{key}"] = _("Enter a time as HH:MM, e.g. 08:00.")
        if len(errors) > row_errors:
            continue
        window = {"weekday": int(day), "start": start[:5], "end": end[:5]}
        try:
            parse_windows([window])  # the domain's rule for one window, so the message sits on its row
        except ValueError:
            errors[f"w{i}-end"] = _("Must be after the start.")
            continue
        windows.append(window)
    return windows


def _number(page: Page, key: str, top: float, errors: dict[str, str], *, whole: bool) -> float | None:
    raw = page.field(key).replace(",", "")
    if not raw:
        return None
    try:
        value = float(raw) if not whole else int(raw)
    except ValueError:
        value = -1
    if not 0 < value <= top:  # NaN fails this too
        shown = format(top, ",.0f")
        errors[key] = _("A number from 1 to {top}, or empty for the district default.", top=shown)
        return None
    return value


def policy_form(page: Page) -> tuple[update_policy.PolicySpec | None, dict[str, str]]:
    errors: dict[str, str] = {}
    windows = _window_rows(page, errors)
    slots = _number(page, "max_concurrent_downloads", MAX_SLOTS, errors, whole=True)
    share = _number(page, "uplink_percent", 100, errors, whole=False)
    mbps = _number(page, "max_mbps", MAX_MBPS, errors, whole=False)
    if errors:
        return None, errors
    return (
        update_policy.PolicySpec(
            windows=windows,
            max_concurrent_downloads=int(slots) if slots is not None else None,
            uplink_share=round(share / 100, 4) if share is not None else None,
            max_bytes_per_second=max(1, round(mbps * BYTES_PER_MBIT)) if mbps is not None else None,
        ),
        errors,
    )


def _form_of(policy: Any) -> dict[str, str]:
    """The form fields for a stored policy (what the page shows before any edit)."""
    out: dict[str, str] = {}
    if policy is None:
        return out
    for i, w in enumerate(policy.windows or []):
        out |= {
            f"w{i}-weekday": str(w["weekday"]),
            f"w{i}-start": str(w["start"]),
            f"w{i}-end": str(w["end"]),
        }
    if policy.max_concurrent_downloads is not None:
        out["max_concurrent_downloads"] = str(policy.max_concurrent_downloads)
    if policy.uplink_share is not None:
        out["uplink_percent"] = f"{policy.uplink_share * 100:g}"
    if policy.max_bytes_per_second is not None:
        out["max_mbps"] = f"{policy.max_bytes_per_second / BYTES_PER_MBIT:g}"
    return out


async def _page(
    page: Page,
    school_id: int | None,
    *,
    errors: dict[str, str] | None = None,
    status: int = 200,
    done: str = "",
) -> Response:
    opts = await choices(page)
    if school_id is None and opts["schools"]:
        school_id = opts["schools"][0].id
    policy = None
    school = None
    if school_id is not None:
        policy = await update_policy.get(page.db, page.principal, school_id)  # 404 outside the caller's scope
        school = next((s for s in opts["schools"] if s.id == school_id), None)
    form = page.form if errors else _form_of(policy)
    used = [i for i in range(MAX_WINDOWS) if any(form.get(f"w{i}-{k}") for k in ("weekday", "start", "end"))]
    rows = min(MAX_WINDOWS, (max(used) + 1 if used else 0) + SPARE_ROWS)
    days = weekday_names(page.locale)
    return page.render(
        "update_policies.html",
        status=status,
        nav="admin",
        sub="policies",
        opts=opts,
        school=school,
        policy=policy,
        form=form,
        rows=rows,
        days=days,
        day_options=[("", "—"), *((str(i), d) for i, d in enumerate(days))],
        bytes_per_mbit=BYTES_PER_MBIT,
        errors=errors or {},
        done=done,
    )


@router.get(BASE)
async def policies(page: UserPage, school: str = "", done: str = "") -> Response:
    return await _page(page, int(school) if school.isdigit() and len(school) <= 10 else None, done=done[:20])


@router.post(BASE + "/{school_id}")
async def save(page: UserPage, school_id: int) -> Response:
    require(page.principal, Permission.MANAGE_ROLLOUTS)  # a refusal before any form message
    spec, errors = policy_form(page)
    if spec is not None:
        try:
            await update_policy.put(
                page.db, page.principal, page.state.clock, school_id, spec, page.state.pacer
            )
        except InvalidInput as err:
            errors = {"form": _("The change was refused: {reason}", reason=err.message)}
    if errors:
        await page.rollback()
        return await _page(page, school_id, errors=errors, status=422)
    return page.redirect(f"{BASE}?school={school_id}&done=saved")
