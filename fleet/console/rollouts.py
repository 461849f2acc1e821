"""Rollouts: the list, a new rollout with a preview of its groups, one rollout's groups with live progress and
its devices, a device's timeline, and pause, resume, start and abort."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import APIRouter, Response

from fleet.console.app import ConsoleRoute, UserPage
from fleet.domain.permissions import Permission
from fleet.domain.rollouts import GroupPlan, GroupStrategy, RolloutStatus, Window
from fleet.errors import Conflict, IllegalTransition, InvalidInput, NotFound
from fleet.i18n import N_, _
from fleet.services.common import MAX_PAGE_SIZE
from fleet.services.rollouts import MAX_BYTES_PER_SECOND, MIN_BYTES_PER_SECOND, RolloutService, RolloutSpec

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
BUSY = N_("Another rollout of this model is running or paused: let it finish or abort it first.")
STATES = [s.value for s in RolloutStatus]
WINDOWS = [w.value for w in Window]
STRATEGIES = [s.value for s in GroupStrategy]
# The form's defaults: the API's (fleet/api/routes/rollouts.py), in the units people type.
DEFAULTS = {
    "canary_size": "1",
    "canary_percent": "",
    "strategy": GroupStrategy.PER_SCHOOL.value,
    "percents": "25, 50, 100",
    "success_pct": "90",
    "error_pct": "20",
    "download_window": Window.OUTSIDE_LESSONS.value,
    "install_window": Window.OUTSIDE_LESSONS.value,
    "max_mbps": "",
    "start": "on",
}
# Service fields (fleet/services/rollout_specs.py) -> the form's inputs, where their units differ.
FORM_FIELD = {
    "success_threshold": "success_pct",
    "error_threshold": "error_pct",
    "max_bytes_per_second": "max_mbps",
    "max_attempts": "form",
    "install_seconds": "form",
}


@router.get("/rollouts")
async def rollouts(page: UserPage, state: str = "", cursor: str | None = None) -> Response:
    svc = RolloutService(page.db, page.principal, page.now)
    result = await svc.list(cursor=cursor, limit=MAX_PAGE_SIZE, state=state if state in STATES else None)
    return page.render(
        "rollouts.html",
        nav="rollouts",
        result=result,
        state=state,
        states=STATES,
        may_create=page.can(Permission.MANAGE_ROLLOUTS),
    )


# --- a new rollout ---------------------------------------------------------------------------------------


@dataclass
class Form:
    """The new-rollout form as typed: values to show again, the spec they make, and reasons per field."""

    values: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)
    spec: RolloutSpec | None = None


def _ids(raw: list[Any]) -> list[int]:
    return [int(v) for v in raw if isinstance(v, str) and v.isdigit() and len(v) <= 10]


def _number(text: str, lo: Decimal | int, hi: Decimal | int) -> Decimal | None:
    """A number typed in either locale's style (a comma or a full-width digit is not a number here)."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() and lo <= value <= hi else None


async def _read_form(page: UserPage) -> Form:
    raw = await page.request.form()  # parsed once per request; getlist for the multi-selects
    values: dict[str, Any] = {k: page.field(k, DEFAULTS.get(k, "")) for k in (*DEFAULTS, "name")}
    values["start"] = page.field("start")
    values["model_id"] = page.field("model_id")
    values["target_version"] = page.field("target_version")
    values["school_ids"] = _ids(raw.getlist("school_ids"))
    values["room_ids"] = _ids(raw.getlist("room_ids"))
    f = Form(values)
    err = f.errors
    name = values["name"]
    if not name or len(name) > 200:
        err["name"] = _("Give the rollout a name (at most 200 characters).")
    if not values["model_id"].isdigit() or len(values["model_id"]) > 10:
        err["model_id"] = _("Choose a model.")
    if not values["target_version"] or len(values["target_version"]) > 64:
        err["target_version"] = _("Choose a version.")
    canary = _number(values["canary_size"], 1, 1000)
    if canary is None or canary != int(canary):
        err["canary_size"] = _("A whole number from 1 to 1000.")
    canary_pct = _number(values["canary_percent"], Decimal("0.01"), 50) if values["canary_percent"] else None
    if values["canary_percent"] and canary_pct is None:
        err["canary_percent"] = _("Empty, or a percentage above 0 and at most 50.")
    strategy = values["strategy"] if values["strategy"] in STRATEGIES else None
    if strategy is None:
        err["strategy"] = _("Choose how the groups are formed.")
    parts = [_number(p, Decimal("0.01"), 100) for p in values["percents"].replace("%", "").split(",")[:20]]
    steps = [p for p in parts if p is not None]
    if not steps or len(steps) != len(parts) or steps != sorted(steps) or steps[-1] != 100:
        err["percents"] = _(
            "Rising percentages separated by commas, ending at 100 (for example 25, 50, 100)."
        )
    success = _number(values["success_pct"], 0, 100)
    if success is None:
        err["success_pct"] = _("A percentage from 0 to 100.")
    error = _number(values["error_pct"], 0, 100)
    if error is None:
        err["error_pct"] = _("A percentage from 0 to 100.")
    for key in ("download_window", "install_window"):
        if values[key] not in WINDOWS:
            err[key] = _("Choose a window.")
    cap = None
    if values["max_mbps"]:
        mbps = _number(
            values["max_mbps"],
            Decimal(MIN_BYTES_PER_SECOND * 8) / 10**6,
            Decimal(MAX_BYTES_PER_SECOND * 8) / 10**6,
        )
        if mbps is None:
            err["max_mbps"] = _("Empty for no cap, or from {lo} to {hi} Mbit/s.", lo="0.128", hi="10000")
        else:
            cap = int(mbps * 10**6 / 8)
    if err:
        return f
    assert canary is not None and success is not None and error is not None and strategy is not None
    f.spec = RolloutSpec(
        name=name,
        model_id=int(values["model_id"]),
        target_version=values["target_version"],
        school_ids=tuple(values["school_ids"]),
        room_ids=tuple(values["room_ids"]),
        plan=GroupPlan(
            int(canary),
            float(canary_pct) if canary_pct is not None else None,
            GroupStrategy(strategy),
            tuple(float(p) for p in steps),
        ),
        success_threshold=float(success / 100),
        error_threshold=float(error / 100),
        download_window=Window(values["download_window"]),
        install_window=Window(values["install_window"]),
        max_bytes_per_second=cap,
        start=values["start"] == "on",
    )
    return f


def _reason(err: InvalidInput | NotFound) -> tuple[str, str]:
    """The form input a service's refusal is about, and the reason in the user's language."""
    details = err.details if isinstance(err.details, list) else []
    d = details[0] if details and isinstance(details[0], dict) else {}
    where, why = str(d.get("field", "form")), str(d.get("reason", ""))
    messages = {
        ("model_id", "not_found"): _("Choose a model."),
        ("model_id", "no_profile"): _("This model has no firmware profile, so it cannot be updated."),
        ("model_id", "bad_profile"): _("This model's firmware profile cannot be read; ask an administrator."),
        ("target_version", "unknown_version"): _("This version is not in the model's firmware profile."),
        ("target_version", "no_artifact"): _("No firmware image of this version has been imported yet."),
        ("school_ids", "not_found"): _("Choose among your schools."),
        ("room_ids", "not_found"): _("Each room must be in one of the chosen schools."),
    }
    text = messages.get((where, why)) or _("Not accepted: {reason}", reason=err.message)
    return FORM_FIELD.get(where, where), text


async def _form_page(
    page: UserPage, f: Form | None = None, preview: Any = None, status: int = 200
) -> Response:
    svc = RolloutService(page.db, page.principal, page.now)
    opts = await svc.choices()
    partial = bool(page.request.headers.get("hx-request"))
    return page.render(
        "rollout_form.html" if partial else "rollout_new.html",
        # An htmx swap only takes 2xx answers: the form with its reasons is the answer either way.
        status=200 if partial else status,
        nav="rollouts",
        opts=opts,
        v=(f.values if f else {**DEFAULTS, "school_ids": [], "room_ids": []}),
        errors=f.errors if f else {},
        preview=preview,
        schools={s.id: s for s in opts.schools},
        windows=WINDOWS,
        strategies=STRATEGIES,
    )


@router.get("/rollouts/new")
async def new(page: UserPage) -> Response:
    return await _form_page(page)


async def _checked(page: UserPage, *, create: bool) -> Response:
    svc = RolloutService(page.db, page.principal, page.now)
    await svc.choices()  # the permission check comes first, whatever the form holds
    f = await _read_form(page)
    if f.spec is None:
        return await _form_page(page, f, status=422)
    try:
        if not create:
            return await _form_page(page, f, preview=await svc.preview(f.spec))
        r = await svc.create(f.spec)
    except (InvalidInput, NotFound) as err:
        await page.rollback()
        where, text = _reason(err)
        f.errors[where] = text
        return await _form_page(page, f, status=422)
    except Conflict:
        await page.rollback()
        f.errors["form"] = _(BUSY)
        return await _form_page(page, f, status=409)
    return page.redirect(f"/rollouts/{r.id}")


@router.post("/rollouts/preview")
async def preview(page: UserPage) -> Response:
    """The devices per group the form's rollout would start with; nothing is written."""
    return await _checked(page, create=False)


@router.post("/rollouts/new")
async def create(page: UserPage) -> Response:
    return await _checked(page, create=True)


# --- one rollout -----------------------------------------------------------------------------------------


async def _detail(page: UserPage, rollout_id: int, template: str, error: str | None = None) -> Response:
    detail = await RolloutService(page.db, page.principal, page.now).get(rollout_id)
    return page.render(
        template,
        nav="rollouts",
        d=detail,
        r=detail.rollout,
        may_control=page.can(Permission.MANAGE_ROLLOUTS),
        error=error,
    )


@router.get("/rollouts/{rollout_id}")
async def rollout(page: UserPage, rollout_id: int) -> Response:
    return await _detail(page, rollout_id, "rollout.html")


@router.get("/rollouts/{rollout_id}/progress")
async def progress(page: UserPage, rollout_id: int) -> Response:
    """The groups table alone; the rollout page polls it while the rollout runs."""
    return await _detail(page, rollout_id, "rollout_progress.html")


@router.get("/rollouts/{rollout_id}/devices/{device_id}")
async def device_timeline(page: UserPage, rollout_id: int, device_id: int) -> Response:
    """One device's way through the rollout: commands sent, progress reported, retries and the outcome."""
    svc = RolloutService(page.db, page.principal, page.now)
    events = await svc.timeline(rollout_id, device_id)
    detail = await svc.get(rollout_id)
    return page.render(
        "rollout_device.html", nav="rollouts", r=detail.rollout, device_id=device_id, events=events
    )


@router.post("/rollouts/{rollout_id}/{action}")
async def control(page: UserPage, rollout_id: int, action: str) -> Response:
    svc = RolloutService(page.db, page.principal, page.now)
    try:
        if action == "pause":
            await svc.pause(rollout_id)
            page.state.metrics.rollout_paused("manual")
        elif action == "resume":
            await svc.resume(rollout_id)
        elif action == "start":
            await svc.start(rollout_id)
        elif action == "abort":
            engine = page.state.rollout_engine
            if engine is None:
                await svc.abort(rollout_id)
            else:
                await page.db.commit()  # the engine uses its own transaction
                await engine.abort(page.principal, rollout_id, page.now)
        else:
            return await _detail(page, rollout_id, "rollout.html", _("Unknown action."))
    except IllegalTransition:
        await page.rollback()
        return await _detail(
            page, rollout_id, "rollout.html", _("Not possible in the rollout's current state.")
        )
    except Conflict:
        await page.rollback()
        return await _detail(page, rollout_id, "rollout.html", _(BUSY))
    return page.redirect(f"/rollouts/{rollout_id}")
